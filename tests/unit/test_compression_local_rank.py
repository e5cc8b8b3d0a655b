"""Tests of companion.compression.local_rank: backends, rank of known Jacobians, binned MI, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from companion import backend
from companion.compression import binned_mutual_information, jacobian_local_rank, layer_jacobians
from companion.compression import local_rank as lr_module

NO_GPU = "needs CuPy and a CUDA device; none is usable here"
GPU = [pytest.mark.gpu, pytest.mark.skipif(not backend.cupy_available(), reason=NO_GPU)]
BACKENDS = ["numpy", "numba", pytest.param("cupy", marks=GPU)]


def _low_rank_jacobians(rng, n, p, d, ranks):
    """Jacobians with exactly the given ranks, singular values in [0.5, 2]."""
    out = np.empty((n, p, d))
    for i, r in enumerate(ranks):
        u = np.linalg.qr(rng.standard_normal((p, p)))[0][:, :r]
        v = np.linalg.qr(rng.standard_normal((d, d)))[0][:, :r]
        out[i] = (u * rng.uniform(0.5, 2.0, r)) @ v.T
    return out


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("shape", [(8, 6), (6, 8), (5, 5)])
def test_rank_of_known_jacobians(name, shape):
    rng = np.random.default_rng(sum(shape))
    p, d = shape
    ranks = rng.integers(0, min(p, d) + 1, 12)
    j = _low_rank_jacobians(rng, 12, p, d, ranks)
    got = jacobian_local_rank(j, tol=1e-6, backend=name)
    got = got.get() if hasattr(got, "get") else got
    np.testing.assert_array_equal(got, ranks)
    np.testing.assert_array_equal(jacobian_local_rank(j, tol=1e-6, relative=False, backend=name).tolist()
                                  if name != "cupy" else ranks, ranks)


@pytest.mark.parametrize("name", ["numba", pytest.param("cupy", marks=GPU)])
def test_backends_agree_on_random_input_and_thresholds(name):
    rng = np.random.default_rng(1)
    j = rng.standard_normal((3, 4, 7, 5)) * np.logspace(0, -4, 5)  # spread of singular values
    for tol in (1e-1, 1e-2, 1e-3):
        ref = jacobian_local_rank(j, tol=tol, backend="numpy")
        got = jacobian_local_rank(j, tol=tol, backend=name)
        assert got.shape == (3, 4)
        np.testing.assert_array_equal(got.get() if hasattr(got, "get") else got, ref)
    assert lr_module.local_rank is jacobian_local_rank


def test_rank_falls_as_the_threshold_rises():
    j = np.diag([1.0, 0.5, 0.1, 0.01, 0.001])[None]
    counts = [int(jacobian_local_rank(j, tol=t)[0]) for t in (1e-4, 5e-3, 5e-2, 0.2, 0.9)]
    assert counts == [5, 4, 3, 2, 1]


def test_layer_jacobians_of_a_relu_layer():
    torch.manual_seed(0)
    w = torch.randn(6, 4, dtype=torch.float64)
    x = torch.randn(10, 4, dtype=torch.float64)
    j = layer_jacobians(lambda v: torch.relu(w @ v), x)
    active = (x @ w.T > 0).to(torch.float64)  # (n, 6)
    torch.testing.assert_close(j, active[:, :, None] * w[None])
    ranks = jacobian_local_rank(j, tol=1e-9)
    expected = [int(np.linalg.matrix_rank(j[i].numpy())) for i in range(10)]
    assert ranks.tolist() == expected


def test_binned_mutual_information_properties():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 4, 800)
    informative = y[:, None] + 0.01 * rng.standard_normal((800, 1))
    noise = rng.standard_normal((800, 1))
    h_y = -sum(np.mean(y == c) * np.log2(np.mean(y == c)) for c in range(4))
    i_xt, i_ty = binned_mutual_information(informative, y, n_bins=4, adaptive=False)  # one bin per class
    assert np.isclose(i_ty, h_y) and np.isclose(i_xt, h_y)
    i_xt, i_ty = binned_mutual_information(informative, y, n_bins=8)  # quantile bins straddle classes
    assert h_y - 0.3 < i_ty <= h_y + 1e-12 and i_xt >= i_ty - 1e-12
    i_xt_n, i_ty_n = binned_mutual_information(noise, y, n_bins=8)
    assert i_xt_n > 2.5 and i_ty_n < 0.2
    both = np.hstack([informative, noise])
    i_xt_b, i_ty_b = binned_mutual_information(both, y, n_bins=8, adaptive=False)
    assert i_xt_b <= np.log2(800) + 1e-12 and i_ty_b <= 2.0 + 1e-9


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="tol must be > 0.0"):
        jacobian_local_rank(np.zeros((2, 3, 3)), tol=0.0)
    with pytest.raises(ValueError, match="jacobians must have at least 2 dimensions"):
        jacobian_local_rank(np.zeros(3))
    with pytest.raises(ValueError, match="jacobians must contain only finite values"):
        jacobian_local_rank(np.full((1, 2, 2), np.inf))
    with pytest.raises(TypeError, match="x must be a torch tensor"):
        layer_jacobians(lambda v: v, np.zeros((2, 3)))
    with pytest.raises(TypeError, match="feature_fn must be callable"):
        layer_jacobians(3, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="labels must have one entry per row of features"):
        binned_mutual_information(np.zeros((4, 2)), np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match="n_bins must be >= 2"):
        binned_mutual_information(np.zeros((4, 2)), np.zeros(4, dtype=int), n_bins=1)

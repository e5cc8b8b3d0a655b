"""Tests of companion.compression.rate_reduction: backends, closed forms, eps convention, torch gradients, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from companion import backend
from companion.compression import coding_rate, coding_rate_reduction
from companion.compression import rate_reduction as rr_module

NO_GPU = "needs CuPy and a CUDA device; none is usable here"
GPU = [pytest.mark.gpu, pytest.mark.skipif(not backend.cupy_available(), reason=NO_GPU)]
BACKENDS = ["numpy", "numba", pytest.param("cupy", marks=GPU)]


def _direct_rate(z, eps):
    """Independent formula straight from the paper: 1/2 logdet(I_d + d/(m eps^2) Z^T Z), z (m, d)."""
    m, d = z.shape
    return 0.5 * np.linalg.slogdet(np.eye(d) + d / (m * eps**2) * z.T @ z)[1]


def _direct_reduction(z, labels, eps):
    m = len(z)
    total = _direct_rate(z, eps)
    for c in np.unique(labels):
        zc = z[labels == c]
        total -= len(zc) / m * 0.5 * np.linalg.slogdet(np.eye(z.shape[1]) + z.shape[1] / (len(zc) * eps**2) * zc.T @ zc)[1]
    return total


def _host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("shape", [(7, 3), (3, 7), (2, 5, 20, 6), (4, 9, 9)])
def test_backends_match_the_paper_formula(name, shape):
    rng = np.random.default_rng(sum(shape))
    z = rng.standard_normal(shape)
    labels = rng.integers(0, 3, shape[-2])
    eps = 0.7
    expected_rate = np.vectorize(lambda i: _direct_rate(z.reshape(-1, *shape[-2:])[i], eps))(
        np.arange(int(np.prod(shape[:-2])))).reshape(shape[:-2])
    expected_rr = np.vectorize(lambda i: _direct_reduction(z.reshape(-1, *shape[-2:])[i], labels, eps))(
        np.arange(int(np.prod(shape[:-2])))).reshape(shape[:-2])
    np.testing.assert_allclose(_host(coding_rate(z, eps, backend=name)), expected_rate, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(_host(coding_rate_reduction(z, labels, eps, backend=name)), expected_rr,
                               rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ["numpy", "numba"])
def test_per_batch_labels_and_absent_classes(name):
    rng = np.random.default_rng(1)
    z = rng.standard_normal((3, 12, 4))
    labels = rng.integers(0, 4, (3, 12))
    labels[0] = np.where(labels[0] == 2, 0, labels[0])  # class 2 absent from the first entry
    got = coding_rate_reduction(z, labels, 0.5, backend=name)
    expected = [_direct_reduction(z[b], labels[b], 0.5) for b in range(3)]
    np.testing.assert_allclose(got, expected, rtol=1e-9)


def test_closed_forms_and_eps_convention():
    # k orthonormal rows of R^d, each once: Z^T Z = diag(1, ..., 1, 0, ...)
    d, k = 6, 4
    z = np.eye(d)[:k]
    for eps in (0.1, 0.5, 2.0):
        assert np.isclose(float(coding_rate(z, eps)), 0.5 * k * np.log1p(d / (k * eps**2)))
    # CRATE's eps=0.01 in p/(m*eps) is eps=0.1 here
    m = k
    crate = 0.5 * np.linalg.slogdet(np.eye(d) + d / (m * 0.01) * z.T @ z)[1]
    assert np.isclose(float(coding_rate(z, 0.1)), crate)
    # one class: rate reduction is zero; orthogonal classes: positive
    assert abs(float(coding_rate_reduction(z, np.zeros(k, dtype=int), 0.5))) < 1e-12
    assert float(coding_rate_reduction(z, np.arange(k), 0.5)) > 0
    assert rr_module.rate_reduction is coding_rate_reduction


def test_rate_reduction_prefers_orthogonal_classes():
    rng = np.random.default_rng(2)
    basis = np.linalg.qr(rng.standard_normal((8, 8)))[0]
    labels = np.repeat([0, 1], 50)
    orth = np.concatenate([rng.standard_normal((50, 2)) @ basis[:2], rng.standard_normal((50, 2)) @ basis[2:4]])
    same = np.concatenate([rng.standard_normal((50, 2)) @ basis[:2], rng.standard_normal((50, 2)) @ basis[:2]])
    assert float(coding_rate_reduction(orth, labels, 0.5)) > float(coding_rate_reduction(same, labels, 0.5)) + 1.0


def test_torch_inputs_and_gradients():
    rng = np.random.default_rng(3)
    z_np = rng.standard_normal((2, 10, 4))
    labels = rng.integers(0, 2, 10)
    z = torch.tensor(z_np, requires_grad=True)
    out = coding_rate_reduction(z, labels, 0.5)
    assert isinstance(out, torch.Tensor) and out.shape == (2,) and out.requires_grad
    np.testing.assert_allclose(out.detach().numpy(), coding_rate_reduction(z_np, labels, 0.5), rtol=1e-9)
    out.sum().backward()
    assert torch.isfinite(z.grad).all()
    assert torch.autograd.gradcheck(lambda t: coding_rate(t, 0.8), (torch.tensor(z_np[0], requires_grad=True),))
    with torch.no_grad():
        plain = coding_rate(torch.tensor(z_np), 0.5)
    assert isinstance(plain, torch.Tensor) and not plain.requires_grad


def test_bad_input_raises_clear_errors():
    z = np.zeros((5, 3))
    with pytest.raises(ValueError, match="eps must be > 0.0; got 0.0"):
        coding_rate(z, 0.0)
    with pytest.raises(ValueError, match="eps must be > 0.0; got -1.0"):
        coding_rate_reduction(z, np.zeros(5, dtype=int), -1.0)
    with pytest.raises(ValueError, match="eps must be finite"):
        coding_rate(z, np.inf)
    with pytest.raises(ValueError, match="labels must have one entry per row of z: expected shape \\(..., 5\\).*got shape \\(4,\\)"):
        coding_rate_reduction(z, np.zeros(4, dtype=int), 0.5)
    with pytest.raises(ValueError, match="labels must be non-negative"):
        coding_rate_reduction(z, np.array([0, 1, -1, 0, 0]), 0.5)
    with pytest.raises(TypeError, match="labels must have a signed integer or unsigned integer dtype"):
        coding_rate_reduction(z, np.zeros(5), 0.5)
    with pytest.raises(ValueError, match="z must have at least 2 dimensions"):
        coding_rate(np.zeros(5), 0.5)
    with pytest.raises(ValueError, match="z must not be empty"):
        coding_rate(np.zeros((0, 3)), 0.5)
    with pytest.raises(ValueError, match="z must contain only finite values"):
        coding_rate(np.full((2, 2), np.nan), 0.5)
    with pytest.raises(TypeError, match="z must have a floating dtype"):
        coding_rate(np.zeros((2, 2), dtype=int), 0.5)
    with pytest.raises(ValueError, match="do not broadcast"):
        coding_rate_reduction(np.zeros((2, 5, 3)), np.zeros((3, 5), dtype=int), 0.5)

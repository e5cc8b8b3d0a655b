"""Tests of companion.memory.linear_attention: the scan equals the quadratic form."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from companion import backend
from companion.memory import causal_linear_attention

NO_GPU = "needs CuPy and a CUDA device; none is usable here"
GPU = [pytest.mark.gpu, pytest.mark.skipif(not backend.cupy_available(), reason=NO_GPU)]
BACKENDS = ["numpy", "numba", pytest.param("cupy", marks=GPU)]


def _quadratic(q, k, v, phi, normalize, eps=1e-6):
    """Independent reference, written from the definition with explicit loops over t."""
    fq, fk = phi(q.astype(np.float64)), phi(k.astype(np.float64))
    out = np.zeros(q.shape[:-1] + (v.shape[-1],))
    for t in range(q.shape[-2]):
        w = np.einsum("...d,...sd->...s", fq[..., t, :], fk[..., : t + 1, :])  # (..., t+1)
        num = np.einsum("...s,...sc->...c", w, v[..., : t + 1, :])
        out[..., t, :] = num / (w.sum(-1, keepdims=True) + eps) if normalize else num
    return out


PHI = {
    "elu+1": lambda x: np.where(x > 0, x + 1, np.exp(np.minimum(x, 0))),
    "relu": lambda x: np.maximum(x, 0),
    "identity": lambda x: x,
}


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("feature_map", list(PHI))
def test_scan_equals_quadratic_form(name, dtype, feature_map):
    rng = np.random.default_rng(len(feature_map))
    q, k = rng.standard_normal((2, 2, 3, 33, 8)).astype(dtype)
    v = rng.standard_normal((2, 3, 33, 5)).astype(dtype)
    normalize = feature_map != "identity"
    got = causal_linear_attention(q, k, v, feature_map=feature_map, normalize=normalize, backend=name)
    expected = _quadratic(q, k, v, PHI[feature_map], normalize)
    assert isinstance(got, np.ndarray) and got.dtype == dtype and got.shape == (2, 3, 33, 5)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)


def test_outputs_are_causal_and_the_state_is_an_outer_product_memory():
    rng = np.random.default_rng(1)
    q, k, v = rng.standard_normal((3, 20, 6))
    base = causal_linear_attention(q, k, v, feature_map="identity", normalize=False)
    k2, v2 = k.copy(), v.copy()
    k2[12:], v2[12:] = 9.0, -9.0  # change the future only
    np.testing.assert_allclose(causal_linear_attention(q, k2, v2, feature_map="identity", normalize=False)[:12],
                               base[:12], atol=1e-12)
    memory = k.T @ v  # S_n = sum_s k_s v_s^T, (d, dv)
    np.testing.assert_allclose(base[-1], q[-1] @ memory, atol=1e-12)
    # normalised elu+1 outputs are convex combinations of the values seen so far
    out = causal_linear_attention(q, k, v, eps=0.0)
    assert (out <= np.maximum.accumulate(v, axis=0) + 1e-9).all()
    assert (out >= np.minimum.accumulate(v, axis=0) - 1e-9).all()


def test_torch_round_trip():
    q, k, v = torch.randn(3, 2, 10, 4)
    got = causal_linear_attention(q, k, v, backend="numba")
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), causal_linear_attention(q.numpy(), k.numpy(), v.numpy(),
                                                                    backend="numpy"), atol=1e-5)


def test_bad_input_raises_clear_errors():
    x = np.zeros((2, 8, 4))
    with pytest.raises(ValueError, match="q, k, v must have shapes"):
        causal_linear_attention(x, np.zeros((2, 7, 4)), x)
    with pytest.raises(ValueError, match="q, k, v must have shapes"):
        causal_linear_attention(x, x, np.zeros((2, 9, 4)))
    with pytest.raises(ValueError, match="v must contain only finite values"):
        causal_linear_attention(x, x, np.full_like(x, np.nan))
    with pytest.raises(ValueError, match="q must not be empty"):
        causal_linear_attention(np.zeros((2, 0, 4)), x, x)
    with pytest.raises(ValueError, match="feature_map must be one of"):
        causal_linear_attention(x, x, x, feature_map="softmax")
    with pytest.raises(ValueError, match="eps must be >= 0.0"):
        causal_linear_attention(x, x, x, eps=-1.0)
    with pytest.raises(TypeError, match="k must have a floating dtype"):
        causal_linear_attention(x, x.astype(int), x)
    with pytest.raises(TypeError, match="normalize must be a bool"):
        causal_linear_attention(x, x, x, normalize="yes")

"""Tests of companion.memory.long_conv: FFT convolution equals the direct causal sum."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from companion import backend
from companion.memory import causal_long_conv, sgconv_kernel

NO_GPU = "needs CuPy and a CUDA device; none is usable here"
GPU = [pytest.mark.gpu, pytest.mark.skipif(not backend.cupy_available(), reason=NO_GPU)]
BACKENDS = ["numpy", "numba", pytest.param("cupy", marks=GPU)]


def _direct(u, kernel):
    """Independent reference: numpy.convolve per channel, truncated to the causal part."""
    u = np.asarray(u, dtype=np.float64)
    kernel = np.broadcast_to(kernel, (u.shape[-2], kernel.shape[-1]))
    out = np.empty_like(u)
    for idx in np.ndindex(u.shape[:-1]):
        out[idx] = np.convolve(u[idx], kernel[idx[-1]])[: u.shape[-1]]
    return out


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("method", ["fft", "direct"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,length", [(1, 1), (37, 37), (100, 13), (64, 200), (129, 1)])
def test_matches_direct_convolution(name, method, dtype, n, length):
    rng = np.random.default_rng(n * 1000 + length)
    u = rng.standard_normal((2, 3, n)).astype(dtype)
    kernel = rng.standard_normal((3, length)).astype(dtype)
    got = causal_long_conv(u, kernel, method=method, backend=name)
    assert isinstance(got, np.ndarray) and got.dtype == dtype and got.shape == u.shape
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(got, _direct(u, kernel), rtol=tol, atol=tol)


def test_shared_kernel_impulse_response_and_causality():
    rng = np.random.default_rng(1)
    kernel = rng.standard_normal(50)
    impulse = np.zeros((4, 50))
    impulse[:, 0] = 1.0
    for name in ("numpy", "numba"):
        np.testing.assert_allclose(causal_long_conv(impulse, kernel, backend=name), np.tile(kernel, (4, 1)),
                                   atol=1e-12)
    u = rng.standard_normal((2, 80))
    v = u.copy()
    v[:, 40:] = 5.0
    np.testing.assert_allclose(causal_long_conv(v, kernel)[:, :40], causal_long_conv(u, kernel)[:, :40], atol=1e-12)


def test_torch_round_trip():
    u, k = torch.randn(2, 3, 16), torch.randn(3, 16)
    got = causal_long_conv(u, k)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), _direct(u.numpy(), k.numpy()), atol=1e-4)


def test_sgconv_kernel_structure():
    rng = np.random.default_rng(2)
    subs = rng.standard_normal((4, 2, 4))
    k = sgconv_kernel(subs, 60, decay=0.5)
    assert k.shape == (2, 60)
    np.testing.assert_allclose(k[:, :4], subs[0])  # the first scale is used as is
    np.testing.assert_allclose(k[:, [4, 11]], 0.5 * subs[1][:, [0, 3]])  # stretched ends, scaled by decay
    np.testing.assert_allclose(k[:, 12:28][:, [0, -1]], 0.25 * subs[2][:, [0, 3]])
    np.testing.assert_array_equal(sgconv_kernel(subs, 80)[:, 60:], 0.0)  # 4 * (2**4 - 1) = 60 taps, then padding
    np.testing.assert_allclose(sgconv_kernel(subs, 10), k[:, :10])


def test_bad_input_raises_clear_errors():
    u = np.zeros((2, 3, 10))
    with pytest.raises(ValueError, match=r"kernel must have shape \(channels, L\) with channels = u.shape\[-2\] = 3"):
        causal_long_conv(u, np.zeros((2, 5)))
    with pytest.raises(ValueError, match="u must contain only finite values"):
        causal_long_conv(np.full((3, 4), np.inf), np.ones(2))
    with pytest.raises(ValueError, match="kernel must contain only finite values"):
        causal_long_conv(u, np.full(3, np.nan))
    with pytest.raises(ValueError, match="u must not be empty"):
        causal_long_conv(np.zeros((3, 0)), np.ones(2))
    with pytest.raises(ValueError, match="kernel must not be empty"):
        causal_long_conv(u, np.zeros((3, 0)))
    with pytest.raises(ValueError, match="u must have at least 2 dimensions"):
        causal_long_conv(np.zeros(5), np.ones(2))
    with pytest.raises(ValueError, match="method must be one of"):
        causal_long_conv(u, np.ones(2), method="winograd")
    with pytest.raises(ValueError, match="decay must be <= 1.0"):
        sgconv_kernel(np.ones((2, 1, 2)), 8, decay=2.0)
    with pytest.raises(ValueError, match="sub_kernels must have 3 dimensions"):
        sgconv_kernel(np.ones((2, 2)), 8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_fft_path_long_signal_lead_dims_and_threads(dtype):
    """The CPU fast path (scipy.fft in the input precision, workers = numba threads) vs numpy.fft."""
    import numba

    rng = np.random.default_rng(3)
    u = rng.standard_normal((2, 3, 4, 3000)).astype(dtype)  # n + L - 1 = 4999: padded to 8192
    kernel = (rng.standard_normal(2000) * np.exp(-np.arange(2000) / 300)).astype(dtype)  # shared 1-D kernel
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        got = causal_long_conv(u, kernel, backend="numba")
    finally:
        numba.set_num_threads(threads)
    expected = causal_long_conv(u.astype(np.float64), kernel.astype(np.float64), backend="numpy")
    assert got.dtype == dtype and got.shape == u.shape
    tol = 2e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)
    np.testing.assert_allclose(got[0, 1, 2, :50], _direct(u[0, 1, 2:3, :50], kernel[None, :50])[0], atol=tol)


def test_fast_fft_path_non_contiguous_input():
    rng = np.random.default_rng(4)
    u = rng.standard_normal((40, 3)).astype(np.float32).T  # (channels=3, n=40), a transposed view
    kernel = rng.standard_normal((3, 40)).astype(np.float32)
    np.testing.assert_allclose(causal_long_conv(u, kernel, backend="numba"), _direct(u, kernel), atol=1e-4)

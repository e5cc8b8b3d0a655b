"""Causal long convolution through the FFT, and SGConv's multiscale kernel.

Paper: Li et al., "What Makes Convolutional Models Great on Long Sequence
Modeling?" (2022). A convolution whose kernel is as long as the sequence lets
every position read every earlier one, like attention, but with weights that
depend only on the distance. Computed directly it costs ``O(n L)``; through the
FFT (zero-pad to at least ``n + L - 1`` so the circular product is a linear
one) it costs ``O(n log n)``.

The paper names two properties that make such a kernel work: its parameters
should grow slowly with the length (it builds the kernel from a few short
sub-kernels, each stretched to twice the span of the previous one) and its
weights should **decay** with distance (each coarser sub-kernel is scaled down).
:func:`sgconv_kernel` builds that kernel.

Three layers: :func:`causal_long_conv` validates and dispatches; the NumPy
backend is the reference (``numpy.fft`` for ``method="fft"``, a shift-and-add
loop for ``"direct"``); the "numba" (fast CPU) backend computes ``"fft"`` with
``scipy.fft`` (pocketfft: SIMD, in the input's precision, multithreaded over the
channels with the numba thread count; see :func:`_long_conv_fft_fast`) and
``"direct"`` with a numba loop; CuPy uses ``cupy.fft`` (or a RawKernel for the
direct sum).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numba
import numpy as np

from .._validation import check_array, check_choice, check_float, check_int
from ..backend import array_module, dispatch, for_backend, to_kind, to_numpy

__all__ = ["causal_long_conv", "sgconv_kernel", "CONV_METHODS"]

CONV_METHODS = ("fft", "direct")


def _fft_size(n: int, length: int) -> int:
    """Smallest power of two holding the linear convolution (no wrap-around)."""
    return 1 << max(1, math.ceil(math.log2(n + length - 1)))


# --------------------------------------------------------- NumPy reference
def _long_conv_numpy(u, kernel, method: str):
    """Reference. ``u`` (rows, channels, n), ``kernel`` (channels, L) -> (rows, channels, n)."""
    n, length = u.shape[-1], kernel.shape[-1]
    if method == "fft":
        size = _fft_size(n, length)
        spectrum = np.fft.rfft(u, size) * np.fft.rfft(kernel, size)  # (rows, channels, size//2+1)
        return np.fft.irfft(spectrum, size)[..., :n].astype(u.dtype, copy=False)
    out = np.zeros_like(u)
    for s in range(min(n, length)):  # y[t] += k[s] * u[t - s]
        out[..., s:] += kernel[:, s, None] * u[..., : n - s]
    return out


# ----------------------------------------------------------- CPU fast path
def _long_conv_fft_fast(u, kernel, size: int, workers: int):
    """FFT convolution of every (row, channel) with its channel's kernel, through ``scipy.fft``.

    ``scipy.fft.rfft`` / ``irfft`` (pocketfft, SIMD, batched over all rows and
    channels, split over ``workers`` threads) in the input's precision: float32
    signals give complex64 spectra. The kernel spectrum is taken once per
    channel and multiplied into the signal spectrum in place (broadcast over
    rows); the inverse transform overwrites that spectrum. Returns the first
    ``n`` samples, a view of shape (rows, channels, n).
    """
    import scipy.fft

    n = u.shape[-1]
    spectrum = scipy.fft.rfft(u, size, axis=-1, workers=workers)  # (rows, channels, size // 2 + 1)
    spectrum *= scipy.fft.rfft(kernel, size, axis=-1, workers=workers)  # (channels, size // 2 + 1)
    return scipy.fft.irfft(spectrum, size, axis=-1, workers=workers, overwrite_x=True)[..., :n]


# ----------------------------------------------------------- numba kernels
@numba.njit(cache=True, parallel=True, fastmath={"reassoc", "contract", "nsz", "arcp"})
def _long_conv_direct_numba(u, kernel, out):  # pragma: no cover - jitted
    """``out[b, c, t] = sum_{s <= min(t, L-1)} kernel[c, s] u[b, c, t - s]``."""
    rows, channels, n = u.shape
    length = kernel.shape[1]
    for task in numba.prange(rows * channels):
        b = task // channels
        c = task % channels
        for t in range(n):
            acc = 0.0
            for s in range(min(t + 1, length)):
                acc += kernel[c, s] * u[b, c, t - s]
            out[b, c, t] = acc


def _long_conv_numba(u, kernel, method: str):
    if method == "fft":
        size = _fft_size(u.shape[-1], kernel.shape[-1])
        return _long_conv_fft_fast(u, kernel, size, numba.get_num_threads())
    out = np.empty_like(u)
    _long_conv_direct_numba(u, kernel, out)
    return out


# ------------------------------------------------------------- CuPy kernels
_DIRECT_CUDA = r"""
extern "C" __global__ void long_conv_direct(
    const T* __restrict__ u, const T* __restrict__ kernel, const long long rows, const int channels,
    const long long n, const long long length, T* __restrict__ out)
{
    const long long total = rows * channels * n;
    for (long long p = blockIdx.x * (long long)blockDim.x + threadIdx.x; p < total;
         p += (long long)blockDim.x * gridDim.x) {
        const long long t = p % n;
        const long long row = p / n;            // (b * channels + c)
        const int c = (int)(row % channels);
        const long long last = t < length - 1 ? t : length - 1;
        T acc = (T)0;
        for (long long s = 0; s <= last; ++s) acc += kernel[c * length + s] * u[row * n + t - s];
        out[p] = acc;
    }
}
"""


@functools.lru_cache(maxsize=None)
def _cupy_direct_kernel(ctype: str):
    import cupy

    return cupy.RawKernel(f"typedef {ctype} T;\n" + _DIRECT_CUDA, "long_conv_direct")


def _long_conv_cupy(u, kernel, method: str):
    import cupy

    n, length = u.shape[-1], kernel.shape[-1]
    if method == "fft":
        size = _fft_size(n, length)
        spectrum = cupy.fft.rfft(u, size) * cupy.fft.rfft(kernel, size)  # cuFFT, batched over rows
        return cupy.fft.irfft(spectrum, size)[..., :n].astype(u.dtype, copy=False)
    out = cupy.empty_like(u)
    dtype = np.dtype(u.dtype)
    threads = 256
    blocks = max(1, min((u.size + threads - 1) // threads, 1 << 20))
    _cupy_direct_kernel("float" if dtype == np.float32 else "double")(
        (blocks,), (threads,),
        (u, kernel, np.int64(u.shape[0]), np.int32(u.shape[1]), np.int64(n), np.int64(length), out),
    )
    return out


_KERNELS = {"numpy": _long_conv_numpy, "numba": _long_conv_numba, "cupy": _long_conv_cupy}


# ----------------------------------------------------------- public entry
def causal_long_conv(u: Any, kernel: Any, *, method: str = "fft", backend: str | None = None) -> Any:
    """Causal depthwise convolution ``y[..., c, t] = sum_{s=0}^{t} kernel[c, s] u[..., c, t - s]``.

    Every channel has its own kernel, which may be as long as the sequence (a
    *long* convolution); taps past the sequence length are never used.

    Parameters
    ----------
    u : array of shape (..., channels, n)
        Input signal: floating NumPy array, CuPy array or torch tensor; finite.
    kernel : array of shape (channels, L) or (L,)
        Kernel per channel (a 1-D kernel is shared by all channels); finite.
        Any ``L >= 1``.
    method : {"fft", "direct"}, default "fft"
        ``"fft"``: zero-pad to a power of two ``>= n + L - 1`` and multiply
        spectra, ``O(n log n)`` per channel; ``"direct"``: the sum as written,
        ``O(n L)``.
    backend : {None, "auto", "numpy", "numba", "cupy"}, optional
        Kernel choice through :func:`companion.backend.dispatch`.

    Returns
    -------
    array of shape (..., channels, n)
        Same kind and dtype as ``u`` (float16/bfloat16 computed in float32).
        The FFT works in the input's precision (complex64 spectra for float32
        input) except on the NumPy backend, whose ``numpy.fft`` works in complex128.

    Raises
    ------
    TypeError
        non-floating inputs.
    ValueError
        empty inputs, NaN/inf, a kernel whose channel count differs from ``u``'s,
        unknown ``method`` or ``backend``.

    References
    ----------
    Li et al., "What Makes Convolutional Models Great on Long Sequence Modeling?", 2022.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.memory import causal_long_conv
    >>> u = np.array([[1.0, 0.0, 0.0, 2.0]])           # (channels=1, n=4)
    >>> (causal_long_conv(u, np.array([[1.0, 0.5]])).round(6) + 0.0).tolist()
    [[1.0, 0.5, 0.0, 2.0]]
    """
    kind = check_array(u, "u", min_ndim=2, dtype_kind="f")
    check_array(kernel, "kernel", ndim=(1, 2), dtype_kind="f")
    method = check_choice(method, "method", CONV_METHODS)
    channels, n = u.shape[-2], u.shape[-1]
    k_shape = tuple(kernel.shape)
    if len(k_shape) == 2 and k_shape[0] != channels:
        raise ValueError(
            f"kernel must have shape (channels, L) with channels = u.shape[-2] = {channels}, or (L,); "
            f"got {k_shape} for u of shape {tuple(u.shape)}"
        )
    name, fn = dispatch(_KERNELS, backend, u, kernel)
    if kind == "torch":
        import torch

        work = u.dtype if u.dtype in (torch.float32, torch.float64) else torch.float32
        ub = for_backend(u.detach().to(work), name)
    else:
        work = u.dtype if u.dtype in (np.float32, np.float64) else np.dtype(np.float32)
        ub = for_backend(u, name).astype(work, copy=False)
    xp = array_module(ub)
    kb = for_backend(kernel.detach() if hasattr(kernel, "detach") else kernel, name).astype(ub.dtype, copy=False)
    length = min(kb.shape[-1], n)  # taps beyond the sequence are never read
    kb = xp.ascontiguousarray(xp.broadcast_to(kb[..., :length], (channels, length)))  # (channels, L)
    lead = tuple(u.shape[:-2])
    rows = int(np.prod(lead)) if lead else 1
    u3 = xp.ascontiguousarray(ub.reshape(rows, channels, n))  # (rows, channels, n)
    out = fn(u3, kb, method).reshape(lead + (channels, n))
    result = to_kind(out, kind, like=u)
    return result.to(u.dtype) if kind == "torch" else result.astype(u.dtype, copy=False)


# ------------------------------------------------------------- SGConv kernel
def sgconv_kernel(sub_kernels: Any, length: int, *, decay: float = 0.5) -> np.ndarray:
    """SGConv's multiscale kernel: short sub-kernels stretched over doubling spans, decaying.

    Sub-kernel ``i`` (``base`` taps) is linearly interpolated to ``base * 2**i``
    taps and multiplied by ``decay**i``; the pieces are concatenated (scale 0
    covers the most recent ``base`` positions, scale 1 the next ``2 base``, ...)
    and the result is cut or zero-padded to ``length``. The number of
    parameters grows only with the number of scales, ``log2(length / base)``.

    Parameters
    ----------
    sub_kernels : array of shape (scales, channels, base)
        Floating NumPy array (or CuPy/torch, read on the host); finite.
    length : int
        Taps of the returned kernel (>= 1), usually the sequence length.
    decay : float, default 0.5
        Weight ratio between consecutive scales, in ``(0, 1]``.

    Returns
    -------
    numpy.ndarray of shape (channels, length)

    References
    ----------
    Li et al., "What Makes Convolutional Models Great on Long Sequence Modeling?", 2022.

    Examples
    --------
    >>> import numpy as np
    >>> k = sgconv_kernel(np.ones((3, 1, 2)), 14, decay=0.5)
    >>> k.round(3).tolist()
    [[1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25]]
    """
    check_array(sub_kernels, "sub_kernels", ndim=3, dtype_kind="f")
    length = check_int(length, "length", minimum=1)
    decay = check_float(decay, "decay", minimum=0.0, maximum=1.0, strict_min=True)
    subs = np.asarray(to_numpy(sub_kernels), dtype=np.float64)
    scales, channels, base = subs.shape
    pieces = []
    for i in range(scales):
        span = base * 2**i
        src = np.linspace(0.0, base - 1, span) if base > 1 else np.zeros(span)
        grid = np.arange(base, dtype=np.float64)
        stretched = np.stack([np.interp(src, grid, subs[i, c]) for c in range(channels)])  # (channels, span)
        pieces.append(stretched * decay**i)
    full = np.concatenate(pieces, axis=1)  # (channels, base * (2**scales - 1))
    if full.shape[1] >= length:
        return full[:, :length]
    return np.pad(full, ((0, 0), (0, length - full.shape[1])))

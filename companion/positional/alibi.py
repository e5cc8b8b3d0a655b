"""ALiBi: attention with linear biases.

Paper: Press, Smith and Lewis, "Train Short, Test Long: Attention with Linear
Biases Enables Input Length Extrapolation" (ICLR 2022).

No position is added to the tokens. Instead each head ``h`` subtracts
``slope_h * distance`` from every attention score, so far-away keys are
penalised linearly, more steeply in some heads than in others. The slopes form
a geometric sequence fixed before training.

Three layers: :func:`alibi_attention_scores` validates and dispatches;
``_alibi_scores_numpy`` is the reference (matrix product plus the bias of
:func:`alibi_bias`); the numba and CuPy kernels add the bias on the fly, never
build a ``(heads, q_len, k_len)`` bias tensor, and skip the dot products the
causal mask would discard.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numba
import numpy as np

from .._validation import check_array, check_float, check_int
from ..backend import dispatch, for_backend, to_kind, to_numpy

__all__ = ["alibi_slopes", "alibi_bias", "alibi_attention_scores"]


# ------------------------------------------------------------------ slopes
def alibi_slopes(n_heads: int) -> np.ndarray:
    """Per-head ALiBi slopes.

    For a power of two ``n``, slope ``h`` is ``2 ** (-8 (h + 1) / n)``: a
    geometric sequence from ``2 ** (-8 / n)`` down to ``2 ** -8``. For other
    ``n``, the paper's rule: take the slopes of the largest power of two
    ``m < n``, then fill the remaining ``n - m`` heads with the odd-numbered
    slopes of the ``2m``-head sequence (``2 ** (-4 (2h + 1) / m)``), which lie
    between the first ones.

    Parameters
    ----------
    n_heads : int
        Number of attention heads, >= 1.

    Returns
    -------
    numpy.ndarray of shape (n_heads,), float64

    References
    ----------
    Press, Smith and Lewis, "Train Short, Test Long: Attention with Linear
    Biases Enables Input Length Extrapolation", ICLR 2022.

    Example
    -------
    >>> from companion.positional import alibi_slopes
    >>> alibi_slopes(4).tolist()
    [0.25, 0.0625, 0.015625, 0.00390625]
    """
    n = check_int(n_heads, "n_heads", minimum=1)
    m = 1 << (n.bit_length() - 1)  # largest power of two <= n
    slopes = np.exp2(-8.0 / m * np.arange(1, m + 1, dtype=np.float64))  # (m,)
    if m == n:
        return slopes
    odd = np.arange(1, 2 * (n - m), 2, dtype=np.float64)  # 1, 3, 5, ... (n - m values)
    extra = np.exp2(-8.0 / (2 * m) * odd)  # (n - m,)
    return np.concatenate([slopes, extra])


def _check_slopes(slopes: Any, n_heads: int) -> np.ndarray:
    if slopes is None:
        return alibi_slopes(n_heads)
    check_array(slopes, "slopes", ndim=1, dtype_kind="iuf")
    if slopes.shape[0] != n_heads:
        raise ValueError(f"slopes must have shape (n_heads,) = ({n_heads},); got shape {tuple(slopes.shape)}")
    return np.asarray(to_numpy(slopes), dtype=np.float64)


def _bias_numpy(slopes: np.ndarray, q_len: int, k_len: int) -> np.ndarray:
    """Reference bias in float64: ``-slope_h * |(i + k_len - q_len) - j|``."""
    query_pos = np.arange(q_len)[:, None] + (k_len - q_len)  # (q_len, 1): queries end-aligned to keys
    key_pos = np.arange(k_len)[None, :]  # (1, k_len)
    distance = np.abs(query_pos - key_pos).astype(np.float64)  # (q_len, k_len)
    return -slopes[:, None, None] * distance[None]  # (heads, q_len, k_len)


# -------------------------------------------------------------------- bias
def alibi_bias(n_heads: int, q_len: int, k_len: int, *, slopes: Any = None) -> np.ndarray:
    """The ALiBi bias added to attention scores.

    ``bias[h, i, j] = -slope_h * |(i + k_len - q_len) - j|``: query ``i`` sits at
    position ``i + k_len - q_len``, i.e. the queries are the *last* ``q_len`` of
    the ``k_len`` keys (the decoding convention with a KV cache). Causal masking
    is separate: this bias is symmetric in distance, and a causal model must
    still mask ``j > i + k_len - q_len`` (see :func:`alibi_attention_scores`).

    Parameters
    ----------
    n_heads : int
        Number of heads, >= 1.
    q_len, k_len : int
        Number of queries and keys, >= 1.
    slopes : array of shape (n_heads,), optional
        Per-head slopes; default :func:`alibi_slopes` ``(n_heads)``.

    Returns
    -------
    numpy.ndarray of shape (n_heads, q_len, k_len), float32

    References
    ----------
    Press, Smith and Lewis, "Train Short, Test Long: Attention with Linear
    Biases Enables Input Length Extrapolation", ICLR 2022.

    Example
    -------
    >>> from companion.positional import alibi_bias
    >>> alibi_bias(1, 3, 3, slopes=[0.5])[0].tolist()
    [[-0.0, -0.5, -1.0], [-0.5, -0.0, -0.5], [-1.0, -0.5, -0.0]]
    """
    n_heads = check_int(n_heads, "n_heads", minimum=1)
    q_len = check_int(q_len, "q_len", minimum=1)
    k_len = check_int(k_len, "k_len", minimum=1)
    if isinstance(slopes, (list, tuple)):
        slopes = np.asarray(slopes, dtype=np.float64)
    slopes = _check_slopes(slopes, n_heads)
    return _bias_numpy(slopes, q_len, k_len).astype(np.float32)


# --------------------------------------------------------- NumPy reference
def _alibi_scores_numpy(q, k, slopes, scale, causal):
    """Reference: ``scale * q @ k^T + bias``, then ``-inf`` above the causal diagonal."""
    q_len, k_len = q.shape[2], k.shape[2]
    scores = (q @ np.swapaxes(k, -1, -2)) * q.dtype.type(scale)  # (batch, heads, q_len, k_len)
    scores += _bias_numpy(slopes, q_len, k_len).astype(q.dtype)
    if causal:
        future = np.arange(k_len)[None, :] > np.arange(q_len)[:, None] + (k_len - q_len)  # (q_len, k_len)
        scores[..., future] = -np.inf
    return scores


def _kernel_dtype(dtype) -> np.dtype:
    return np.dtype(dtype) if np.dtype(dtype) in (np.float32, np.float64) else np.dtype(np.float32)


# ------------------------------------------------------------ numba kernel
@numba.njit(cache=True)
def _alibi_one_head(q, k, bh, slopes, scale, causal, out):  # pragma: no cover - jitted
    """Scores of one (batch, head) pair; the bias is added on the fly, masked products skipped."""
    n_heads, q_len, d = q.shape[1], q.shape[2], q.shape[3]
    k_len = k.shape[2]
    b = np.int64(bh) // n_heads
    h = np.int64(bh) - b * n_heads
    offset = k_len - q_len
    k_t = np.empty((d, k_len), dtype=q.dtype)  # this head's keys, transposed: inner loop runs over keys
    acc = np.empty((4, k_len), dtype=q.dtype)  # accumulators of four query rows
    for j in range(k_len):
        for t in range(d):
            k_t[t, j] = k[b, h, j, t]
    slope = slopes[h]
    # Four query rows share each pass over the keys: every key value loaded feeds
    # four multiply-adds instead of one (the loop is bound by loads, not FLOPs).
    for i0 in range(0, q_len, 4):
        rows = min(4, q_len - i0)
        last = i0 + rows - 1 + offset
        visible = min(last + 1, k_len) if causal else k_len
        if visible < 0:
            visible = 0
        for r in range(4):
            for j in range(visible):
                acc[r, j] = 0.0
        for t in range(d):
            q0 = q[b, h, i0, t]
            # rows past the end of the block reuse the last row; their sums are never written
            q1 = q[b, h, min(i0 + 1, q_len - 1), t]
            q2 = q[b, h, min(i0 + 2, q_len - 1), t]
            q3 = q[b, h, min(i0 + 3, q_len - 1), t]
            for j in range(visible):
                kv = k_t[t, j]
                acc[0, j] += q0 * kv
                acc[1, j] += q1 * kv
                acc[2, j] += q2 * kv
                acc[3, j] += q3 * kv
        for r in range(rows):
            pos = i0 + r + offset
            row_visible = min(pos + 1, k_len) if causal else k_len
            if row_visible < 0:
                row_visible = 0
            for j in range(row_visible):
                out[b, h, i0 + r, j] = acc[r, j] * scale - slope * abs(pos - j)
            for j in range(row_visible, k_len):
                out[b, h, i0 + r, j] = -np.inf


@numba.njit(cache=True, parallel=True)
def _alibi_scores_kernel(q, k, slopes, scale, causal, out):  # pragma: no cover - jitted
    n_bh = q.shape[0] * q.shape[1]
    for bh in numba.prange(n_bh):  # (batch, head) pairs in parallel, each with private buffers
        _alibi_one_head(q, k, bh, slopes, scale, causal, out)


def _alibi_scores_numba(q, k, slopes, scale, causal):
    dtype = _kernel_dtype(q.dtype)
    qc = np.ascontiguousarray(q, dtype=dtype)
    kc = np.ascontiguousarray(k, dtype=dtype)
    out = np.empty(q.shape[:3] + (k.shape[2],), dtype=dtype)  # (batch, heads, q_len, k_len)
    _alibi_scores_kernel(qc, kc, slopes, float(scale), bool(causal), out)
    return out.astype(q.dtype, copy=False)


# ------------------------------------------------------------- CuPy kernel
_ALIBI_TILE = 16
_ALIBI_CUDA = r"""
extern "C" __global__ void alibi_scores(
    const T* __restrict__ q, const T* __restrict__ k, const double* __restrict__ slopes,
    const int n_heads, const int q_len, const int k_len, const int d, const double scale,
    const int causal, const long long bh_offset, T* __restrict__ out)
{
    __shared__ T qs[TILE][TILE + 1];
    __shared__ T ks[TILE][TILE + 1];
    const long long bh = bh_offset + blockIdx.z;
    const int h = (int)(bh % n_heads);
    const int i0 = blockIdx.y * TILE, j0 = blockIdx.x * TILE;
    const int i = i0 + threadIdx.y, j = j0 + threadIdx.x;
    const long long offset = (long long)k_len - q_len;
    const T neg_inf = (T)(-__longlong_as_double(0x7ff0000000000000LL));  /* -infinity */
    T* out_bh = out + bh * (long long)q_len * k_len;
    const int i_last = min(i0 + TILE, q_len) - 1;
    if (causal && (long long)j0 > i_last + offset) {  /* tile wholly in the future: no dot products */
        if (i < q_len && j < k_len) out_bh[(long long)i * k_len + j] = neg_inf;
        return;
    }
    const T* q_bh = q + bh * (long long)q_len * d;
    const T* k_bh = k + bh * (long long)k_len * d;
    T acc = 0;
    for (int t0 = 0; t0 < d; t0 += TILE) {
        const int tt = t0 + threadIdx.x;
        const int qi = i0 + threadIdx.y, kj = j0 + threadIdx.y;
        qs[threadIdx.y][threadIdx.x] = (qi < q_len && tt < d) ? q_bh[(long long)qi * d + tt] : (T)0;
        ks[threadIdx.y][threadIdx.x] = (kj < k_len && tt < d) ? k_bh[(long long)kj * d + tt] : (T)0;
        __syncthreads();
#pragma unroll
        for (int t = 0; t < TILE; ++t) acc += qs[threadIdx.y][t] * ks[threadIdx.x][t];
        __syncthreads();
    }
    if (i < q_len && j < k_len) {
        const long long pos = i + offset;
        T val;
        if (causal && (long long)j > pos) val = neg_inf;
        else val = (T)((double)acc * scale - slopes[h] * fabs((double)(pos - j)));
        out_bh[(long long)i * k_len + j] = val;
    }
}
"""


@functools.lru_cache(maxsize=None)
def _cupy_alibi_kernel(ctype: str):
    import cupy

    source = f"typedef {ctype} T;\n#define TILE {_ALIBI_TILE}\n" + _ALIBI_CUDA
    return cupy.RawKernel(source, "alibi_scores")


def _alibi_scores_cupy(q, k, slopes, scale, causal):
    import cupy

    dtype = _kernel_dtype(q.dtype)
    qc = cupy.ascontiguousarray(q, dtype=dtype)
    kc = cupy.ascontiguousarray(k, dtype=dtype)
    n_batch, n_heads, q_len, d = q.shape
    k_len = k.shape[2]
    out = cupy.empty((n_batch, n_heads, q_len, k_len), dtype=dtype)
    kernel = _cupy_alibi_kernel("float" if dtype == np.float32 else "double")
    tile = _ALIBI_TILE
    grid_xy = ((k_len + tile - 1) // tile, (q_len + tile - 1) // tile)
    slopes_d = cupy.asarray(slopes, dtype=cupy.float64)
    n_bh = n_batch * n_heads
    for start in range(0, n_bh, 65535):  # gridDim.z is at most 65535
        chunk = min(65535, n_bh - start)
        kernel(
            grid_xy + (chunk,), (tile, tile, 1),
            (qc, kc, slopes_d, np.int32(n_heads), np.int32(q_len), np.int32(k_len), np.int32(d),
             np.float64(scale), np.int32(bool(causal)), np.int64(start), out),
        )
    return out.astype(q.dtype, copy=False)


_KERNELS = {"numpy": _alibi_scores_numpy, "numba": _alibi_scores_numba, "cupy": _alibi_scores_cupy}


# ----------------------------------------------------------- public entry
def alibi_attention_scores(
    q: Any,
    k: Any,
    *,
    slopes: Any = None,
    causal: bool = True,
    scale: float | None = None,
    backend: str = "auto",
) -> Any:
    """Attention logits with ALiBi: ``scale * q . k + bias``, causally masked.

    ``scores[b, h, i, j] = scale * sum_t q[b, h, i, t] k[b, h, j, t]
    - slope_h * |(i + k_len - q_len) - j|``, and ``-inf`` where
    ``j > i + k_len - q_len`` when ``causal`` (queries are the last ``q_len``
    positions of the keys, as when decoding with a cache). Apply a softmax over
    the last axis to get attention weights.

    Parameters
    ----------
    q : array of shape (batch, heads, q_len, d)
        Queries; floating NumPy array, CuPy array or torch tensor; finite.
    k : array of shape (batch, heads, k_len, d)
        Keys; same kind and dtype as ``q``.
    slopes : array of shape (heads,), optional
        Per-head slopes; default :func:`alibi_slopes` ``(heads)``.
    causal : bool, default True
        Mask keys in each query's future with ``-inf`` (needs ``q_len <= k_len``).
        The numba and CuPy kernels skip those dot products (the CuPy kernel in
        16 x 16 tiles).
    scale : float, optional
        Multiplies ``q . k``; default ``1 / sqrt(d)``.
    backend : {"auto", "numpy", "numba", "cupy"}, default "auto"

    Returns
    -------
    array of shape (batch, heads, q_len, k_len)
        Same kind, dtype and device as ``q``. Not differentiable for torch input.

    References
    ----------
    Press, Smith and Lewis, "Train Short, Test Long: Attention with Linear
    Biases Enables Input Length Extrapolation", ICLR 2022.

    Example
    -------
    >>> import numpy as np
    >>> from companion.positional import alibi_attention_scores
    >>> rng = np.random.default_rng(0)
    >>> q = rng.standard_normal((1, 2, 3, 4)).astype(np.float32)
    >>> k = rng.standard_normal((1, 2, 5, 4)).astype(np.float32)
    >>> s = alibi_attention_scores(q, k)
    >>> s.shape, bool(np.isinf(s[0, 0, 0, 4])), bool(np.isfinite(s[0, 0, 2]).all())
    ((1, 2, 3, 5), True, True)
    """
    kind = check_array(q, "q", ndim=4, dtype_kind="f")
    k_kind = check_array(k, "k", ndim=4, dtype_kind="f")
    if k_kind != kind:
        raise TypeError(f"k must be the same kind of array as q ({kind}); got {k_kind}")
    if k.dtype != q.dtype:
        raise TypeError(f"k must have the same dtype as q ({q.dtype}); got {k.dtype}")
    n_batch, n_heads, q_len, d = tuple(q.shape)
    if (k.shape[0], k.shape[1], k.shape[3]) != (n_batch, n_heads, d):
        raise ValueError(
            f"k must have shape (batch, heads, k_len, d) = ({n_batch}, {n_heads}, k_len, {d}); "
            f"got shape {tuple(k.shape)}"
        )
    k_len = k.shape[2]
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"causal must be a bool; got {type(causal).__name__}")
    if causal and q_len > k_len:
        raise ValueError(
            f"causal scores need q_len <= k_len (queries are the last keys); got q_len={q_len}, k_len={k_len}"
        )
    scale = 1.0 / math.sqrt(d) if scale is None else check_float(scale, "scale")
    if isinstance(slopes, (list, tuple)):
        slopes = np.asarray(slopes, dtype=np.float64)
    slopes = _check_slopes(slopes, n_heads)
    name, kernel = dispatch(_KERNELS, backend, q, k)
    q_in, k_in = q, k
    if kind == "torch" and str(q.dtype) not in ("torch.float16", "torch.float32", "torch.float64"):
        q_in, k_in = q.float(), k.float()  # e.g. bfloat16, which NumPy cannot hold
    out = kernel(for_backend(q_in, name), for_backend(k_in, name), slopes, scale, bool(causal))
    out = to_kind(out, kind, like=q)
    return out.to(q.dtype) if kind == "torch" else out

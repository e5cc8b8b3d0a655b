"""Nearest-codeword assignment: the inner loop of k-means, vector and product quantization.

Given points ``x`` of shape ``(n, d)`` and codewords (centroids) of shape
``(k, d)``, :func:`nearest_centroid` returns for every point the index of the
closest codeword under squared Euclidean distance and that distance,

.. math:: \\ell_i = \\arg\\min_j \\lVert x_i - c_j \\rVert^2 .

The distance is summed coordinate by coordinate from the differences (in
float64), not expanded as ``|x|^2 - 2 x.c + |c|^2``: the expansion is faster
with a matrix product but cancels catastrophically for nearby points, and can
then pick the wrong codeword. Ties go to the lower index, in every backend.

Three layers: :func:`nearest_centroid` validates and dispatches;
``_nearest_numpy`` is the readable reference (row blocks, broadcasting);
``_nearest_rows_numba`` (one row per iteration, distances to all codewords
vectorized across codewords) and the CuPy ``nearest_centroid`` kernel (one
thread per row) are the fast paths. For ``d >= 24`` the numba backend first
screens codewords with a float64 matrix product and then measures exactly every
codeword the product's rounding could not rule out (``_nearest_screened``): the
speed of a matrix product, the answer of the exact kernel.
"""

from __future__ import annotations

import functools
from typing import Any

import numba
import numpy as np

from .._validation import check_array
from ..backend import dispatch, for_backend, to_kind

__all__ = ["nearest_centroid"]

_BLOCK_BYTES = 1 << 24  # the NumPy reference builds (rows, k, d) float64 blocks of at most 16 MB


# --------------------------------------------------------- NumPy reference
def _nearest_numpy(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference: float64 differences, summed over coordinates, first minimum wins."""
    n, d = x.shape
    k = centroids.shape[0]
    c = centroids.astype(np.float64)  # (k, d)
    labels = np.empty(n, dtype=np.int64)
    sq = np.empty(n, dtype=np.float64)
    rows = max(1, _BLOCK_BYTES // (8 * k * max(d, 1)))
    for start in range(0, n, rows):
        block = x[start:start + rows].astype(np.float64)  # (rows, d)
        dist = ((block[:, None, :] - c[None, :, :]) ** 2).sum(axis=-1)  # (rows, k)
        lab = dist.argmin(axis=1)  # argmin returns the first minimum: ties -> lower index
        labels[start:start + rows] = lab
        sq[start:start + rows] = dist[np.arange(len(lab)), lab]
    return labels, sq


# ------------------------------------------------------------ numba kernel
@numba.njit(cache=True, parallel=True)
def _nearest_rows_numba(x, c_t, labels, sq, bad):  # pragma: no cover - jitted
    """For every row of ``x`` (n, d) the nearest column of ``c_t`` (d, k), float64.

    Rows are processed in blocks (one scratch vector of ``k`` distances per
    block); the inner loop runs over codewords, so it vectorizes even when
    ``d`` is as small as a product-quantization subspace. ``bad[i]`` flags a
    row holding NaN or infinity (checked during the same pass).
    """
    n, d = x.shape
    k = c_t.shape[1]
    block = 256
    n_blocks = (n + block - 1) // block
    for b in numba.prange(n_blocks):
        dist = np.empty(k, dtype=np.float64)
        for i in range(b * block, min(n, (b + 1) * block)):
            for m in range(k):
                dist[m] = 0.0
            flag = False
            for j in range(d):
                xv = np.float64(x[i, j])
                z = xv * 0.0
                flag |= z != z
                for m in range(k):
                    t = xv - c_t[j, m]
                    dist[m] += t * t
            best = dist[0]
            arg = 0
            for m in range(1, k):
                if dist[m] < best:  # strict: the lower index keeps a tie
                    best = dist[m]
                    arg = m
            labels[i] = arg
            sq[i] = best
            bad[i] = flag


@numba.njit(cache=True, parallel=True)
def _refine_candidates_numba(x64, c64, approx, limit, labels, sq):  # pragma: no cover - jitted
    """Exact float64 distances for the codewords whose screened distance is within ``limit``.

    ``approx[i, j]`` is ``|c_j|^2 - 2 x_i.c_j`` from a matrix product; every codeword
    with ``approx[i, j] <= limit[i]`` may be the nearest and is measured exactly, with
    the same coordinate-by-coordinate sum as :func:`_nearest_rows_numba`, so the
    result is the one that kernel would return.
    """
    n, d = x64.shape
    k = c64.shape[0]
    for i in numba.prange(n):
        best = np.inf
        arg = -1
        for j in range(k):
            if approx[i, j] <= limit[i]:
                acc = 0.0
                for t in range(d):
                    diff = x64[i, t] - c64[j, t]
                    acc += diff * diff
                if acc < best or arg < 0:  # strict: the lower index keeps a tie
                    best = acc
                    arg = j
        labels[i] = arg
        sq[i] = best


def _nearest_screened(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact nearest codeword via a float64 matrix-product screen, then exact refinement.

    ``|x - c|^2 = |x|^2 + |c|^2 - 2 x.c`` computed with a matrix product is off by at
    most about ``(d + 2) u (|x|^2 + |c|^2)`` (``u`` the float64 unit roundoff); every
    codeword within four times that bound of the screened minimum is then measured
    exactly. Usually one codeword survives, so the cost is the matrix product.
    """
    n, d = x.shape
    c64 = np.ascontiguousarray(centroids, dtype=np.float64)  # (k, d)
    c_sq = np.einsum("kd,kd->k", c64, c64)  # (k,)
    c_sq_max = float(c_sq.max())
    labels = np.empty(n, dtype=np.int64)
    sq = np.empty(n, dtype=np.float64)
    rows = max(1, _BLOCK_BYTES // (8 * c64.shape[0]))
    unit = np.finfo(np.float64).eps / 2
    for start in range(0, n, rows):
        xb = np.ascontiguousarray(x[start:start + rows], dtype=np.float64)  # (rows, d)
        if not np.isfinite(xb).all():
            raise ValueError("x must contain only finite values; found NaN or infinity")
        approx = c_sq[None, :] - 2.0 * (xb @ c64.T)  # (rows, k), without the constant |x|^2
        x_sq = np.einsum("nd,nd->n", xb, xb)
        slack = 4.0 * (d + 4) * unit * (x_sq + c_sq_max) + 1e-300
        limit = approx.min(axis=1) + 2.0 * slack  # (rows,)
        _refine_candidates_numba(xb, c64, approx, limit, labels[start:start + rows], sq[start:start + rows])
    return labels, sq


_SCREEN_MIN_D = 24  # below this a matrix product over d is not worth its setup; the direct kernel wins


def _nearest_numba(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if x.shape[1] >= _SCREEN_MIN_D and centroids.shape[0] >= 8:
        return _nearest_screened(x, centroids)
    return _nearest_rows_numba_call(x, centroids)


def _nearest_rows_numba_call(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The direct numba kernel (every codeword measured exactly), with its buffers."""
    n = x.shape[0]
    x = np.ascontiguousarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float32)
    c_t = np.ascontiguousarray(centroids.astype(np.float64).T)  # (d, k)
    labels = np.empty(n, dtype=np.int64)
    sq = np.empty(n, dtype=np.float64)
    bad = np.zeros(n, dtype=np.bool_)
    _nearest_rows_numba(x, c_t, labels, sq, bad)
    if bad.any():
        raise ValueError("x must contain only finite values; found NaN or infinity")
    return labels, sq


# ------------------------------------------------------------- CuPy kernel
_NEAREST_CUDA = r"""
extern "C" __global__ void nearest_centroid(
    const T* __restrict__ x, const double* __restrict__ c, const long long n,
    const int k, const int d, long long* __restrict__ labels, double* __restrict__ sq)
{
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        const T* row = x + i * (long long)d;
        double best = 0.0;
        long long arg = 0;
        for (int m = 0; m < k; ++m) {
            const double* cm = c + (long long)m * d;
            double acc = 0.0;
            for (int j = 0; j < d; ++j) {
                const double t = (double)row[j] - cm[j];
                acc = __dadd_rn(acc, __dmul_rn(t, t));  /* no FMA: same rounding as the CPU paths */
            }
            if (m == 0 || acc < best) {  /* strict: the lower index keeps a tie */
                best = acc;
                arg = m;
            }
        }
        labels[i] = arg;
        sq[i] = best;
    }
}
"""


@functools.lru_cache(maxsize=None)
def _cupy_nearest_kernel(ctype: str):
    import cupy

    return cupy.RawKernel(f"typedef {ctype} T;\n" + _NEAREST_CUDA, "nearest_centroid")


def _nearest_cupy(x, centroids):
    import cupy

    if x.dtype not in (cupy.float32, cupy.float64):
        x = x.astype(cupy.float32)
    x = cupy.ascontiguousarray(x)
    c = cupy.ascontiguousarray(centroids, dtype=cupy.float64)  # (k, d)
    n, d = x.shape
    labels = cupy.empty(n, dtype=cupy.int64)
    sq = cupy.empty(n, dtype=cupy.float64)
    threads = 128
    blocks = max(1, min((n + threads - 1) // threads, 1 << 16))
    kernel = _cupy_nearest_kernel("float" if x.dtype == cupy.float32 else "double")
    kernel((blocks,), (threads,), (x, c, np.int64(n), np.int32(c.shape[0]), np.int32(d), labels, sq))
    return labels, sq


_KERNELS = {"numpy": _nearest_numpy, "numba": _nearest_numba, "cupy": _nearest_cupy}


# ----------------------------------------------------------- public entry
def _torch_to_float(x: Any) -> Any:
    """torch float16/bfloat16 -> float32 (NumPy has no bfloat16)."""
    import torch

    if x.dtype not in (torch.float32, torch.float64):
        return x.detach().to(torch.float32)
    return x.detach()


def nearest_centroid(x: Any, centroids: Any, *, backend: str | None = None) -> tuple[Any, Any]:
    """Index of, and squared distance to, the nearest centroid of every point.

    Distances are computed exactly as sums of squared coordinate differences
    in float64; among equally near centroids the lower index wins (every
    backend gives the same labels).

    Parameters
    ----------
    x : array of shape (n, d)
        Points: floating NumPy array, CuPy array or torch tensor; finite, n >= 1.
    centroids : array of shape (k, d)
        Codewords, same kind as ``x``; finite, k >= 1.
    backend : {None, "auto", "numpy", "numba", "cupy"}, optional
        Kernel to run; ``None``/``"auto"`` picks CuPy for GPU input, numba otherwise.

    Returns
    -------
    labels : array of shape (n,), int64
        ``labels[i]`` is the index of the centroid nearest to ``x[i]``.
    sq_distances : array of shape (n,)
        ``|x[i] - centroids[labels[i]]|^2`` in the floating dtype common to
        ``x`` and ``centroids`` (float32 for two float32 inputs, float64 otherwise).
        Both outputs are the same kind of array as ``x``.

    Raises
    ------
    TypeError
        Not an array, or not floating.
    ValueError
        Wrong number of dimensions, empty input, mismatched ``d``, NaN or
        infinity, unknown backend.

    References
    ----------
    Lloyd, "Least squares quantization in PCM", 1982 (the assignment step of k-means).

    Examples
    --------
    >>> import numpy as np
    >>> from companion.kernels import nearest_centroid
    >>> x = np.array([[0.0, 0.1], [2.0, 1.9], [1.0, 1.0]])
    >>> c = np.array([[0.0, 0.0], [2.0, 2.0]])
    >>> labels, sq = nearest_centroid(x, c)
    >>> labels.tolist(), sq.round(3).tolist()
    ([0, 1, 0], [0.01, 0.01, 2.0])
    """
    kind = check_array(x, "x", ndim=2, dtype_kind="f", finite=False)
    c_kind = check_array(centroids, "centroids", ndim=2, dtype_kind="f")
    if x.shape[1] != centroids.shape[1]:
        raise ValueError(
            f"x and centroids must have the same number of columns d; got x {tuple(x.shape)} "
            f"and centroids {tuple(centroids.shape)}"
        )
    if kind != c_kind:
        raise TypeError(f"x and centroids must be the same kind of array; got {kind} and {c_kind}")
    if kind == "torch":
        x_in, c_in = _torch_to_float(x), _torch_to_float(centroids)
    else:
        x_in, c_in = x, centroids
    name, kernel = dispatch(_KERNELS, backend, x_in, c_in)
    if name != "numba":  # the numba kernel checks finiteness during its single pass
        check_array(x, "x", ndim=2, dtype_kind="f")
    labels, sq = kernel(for_backend(x_in, name), for_backend(c_in, name))
    out_dtype = np.result_type(_np_dtype(x_in), _np_dtype(c_in))
    sq = sq.astype(out_dtype, copy=False)
    return to_kind(labels, kind, like=x), to_kind(sq, kind, like=x)


def _np_dtype(a: Any) -> np.dtype:
    """NumPy dtype of a NumPy/CuPy array or a float32/float64 torch tensor."""
    dt = a.dtype
    if hasattr(dt, "is_floating_point"):  # torch dtype
        import torch

        return np.dtype(np.float64) if dt == torch.float64 else np.dtype(np.float32)
    return np.dtype(dt)

"""Kernels of the outer-product associative memory (chapter M1); private to :mod:`companion.memory.associative`.

Two loops dominate the memory's cost, and each comes in three versions (NumPy
reference, numba, CuPy) selected by :func:`companion.backend.dispatch`:

* **class sums** (the write): when values come from a table of ``n_classes``
  output embeddings, ``sum_i w_i u_{y_i} k_i^T = U^T A`` with
  ``A[c] = sum_{i: y_i = c} w_i k_i``. Building ``A`` is a scatter-add over the
  keys, one pass and no BLAS; ``U^T A`` is then a small matrix product.
* **scored read** (argmax or softmax over candidates): the scores of ``n``
  queries against ``m`` candidate rows are a matrix product (BLAS does that
  part best), but the full ``(n, m)`` score matrix is never needed for argmax.
  The numba and CuPy paths walk the queries in tiles, score one tile with
  BLAS/cuBLAS and reduce it in a kernel (argmax, or a stable softmax written
  straight into the output), so the extra memory is one tile.

On the CPU the tiles are shared by ``numba.get_num_threads()`` Python threads
(:func:`parallel_tiles`): NumPy's BLAS and the numba kernels release the GIL,
and the BLAS is pinned to one thread meanwhile, so each core runs whole
tiles (product then reduction, the tile still in its cache) with no thread
barrier per product. A tile of about a thousand queries also keeps OpenBLAS
at its single-core rate: one ``(65536, 1024) @ (1024, 64)`` call runs at
less than half of it on the course machine.
"""

from __future__ import annotations

import numba
import numpy as np
from numba.core import types
from numba.extending import overload

from .. import _threads
from .._fastmath import exp_f32, exp_f64, maxnum

#: Queries per tile of the blocked reads (fewer when there are many candidates).
QUERY_TILE = 1024
#: Score entries per tile at most (while a tile keeps at least ``_MIN_TILE`` queries).
_TILE_SCORES = 1 << 18
_MIN_TILE = 64
#: Below this many multiply-adds a read runs on one thread (no thread start-up).
_SMALL_WORK = _threads.SMALL_WORK


# ----------------------------------------------------------- threading helpers
def parallel_tiles(tiles, work, make_scratch, workers: int) -> None:
    """Call ``work(lo, hi, scratch)`` for every ``(lo, hi)`` of ``tiles`` on ``workers`` threads.

    See :func:`companion._threads.run_tasks`: each thread owns one ``make_scratch()``,
    the BLAS is pinned to one thread while several run, and the first exception of a
    worker is re-raised. ``work`` should spend its time in code that releases the GIL
    (NumPy's BLAS, ``nogil`` numba kernels).
    """
    _threads.run_tasks(tiles, lambda tile, scratch: work(tile[0], tile[1], scratch), make_scratch, workers)


def default_workers(work: int) -> int:
    """``numba.get_num_threads()`` for ``work`` multiply-adds of at least ``_SMALL_WORK``, else 1."""
    return _threads.default_workers(work, _SMALL_WORK)


def fast_exp(x):  # pragma: no cover - typed by the overload below, only called inside njit code
    """Vectorisable ``exp`` of the dtype of ``x`` (:mod:`companion._fastmath`)."""
    raise NotImplementedError


@overload(fast_exp, inline="always")
def _fast_exp_overload(x):
    if x == types.float32:
        return lambda x: exp_f32(x)
    return lambda x: exp_f64(x)


# ------------------------------------------------------------- class sums
def class_sums_numpy(keys: np.ndarray, labels: np.ndarray, weights: np.ndarray, n_classes: int) -> np.ndarray:
    """Reference: ``A[c] = sum_{i: labels[i] = c} weights[i] * keys[i]``, shape (n_classes, d_key)."""
    sums = np.zeros((n_classes, keys.shape[1]), dtype=keys.dtype)  # (n_classes, d_key)
    np.add.at(sums, labels, keys * weights[:, None].astype(keys.dtype))
    return sums


@numba.njit(cache=True)
def _class_sums_kernel(keys, labels, weights, out):  # pragma: no cover - jitted
    n, d = keys.shape
    for i in range(n):
        w = weights[i]
        if w == 0:
            continue
        c = labels[i]
        for j in range(d):
            out[c, j] += w * keys[i, j]


def class_sums_numba(keys: np.ndarray, labels: np.ndarray, weights: np.ndarray, n_classes: int) -> np.ndarray:
    """numba scatter-add; rows with weight 0 are skipped (a thresholded rule stores few of them)."""
    keys = np.ascontiguousarray(keys)
    out = np.zeros((n_classes, keys.shape[1]), dtype=keys.dtype)
    _class_sums_kernel(keys, np.ascontiguousarray(labels, dtype=np.int64),
                       np.ascontiguousarray(weights, dtype=keys.dtype), out)
    return out


_CLASS_SUMS_CUDA = r"""
extern "C" __global__ void class_sums(const T* __restrict__ keys, const long long* __restrict__ labels,
                                      const T* __restrict__ weights, const long long n, const int d,
                                      T* __restrict__ out)
{
    const long long total = n * (long long)d;
    for (long long p = blockIdx.x * (long long)blockDim.x + threadIdx.x; p < total;
         p += (long long)blockDim.x * gridDim.x) {
        const long long i = p / d;
        const int j = (int)(p - i * d);
        const T w = weights[i];
        if (w != (T)0) atomicAdd(&out[labels[i] * d + j], w * keys[p]);
    }
}
"""


def _cupy_kernel(source: str, name: str, ctype: str):
    import cupy

    return _compiled(source, name, ctype, cupy)


_KERNEL_CACHE: dict = {}


def _compiled(source, name, ctype, cupy):
    key = (name, ctype)
    if key not in _KERNEL_CACHE:
        _KERNEL_CACHE[key] = cupy.RawKernel(f"typedef {ctype} T;\n" + source, name)
    return _KERNEL_CACHE[key]


def class_sums_cupy(keys, labels, weights, n_classes: int):
    """CuPy RawKernel: one thread per key element, ``atomicAdd`` into its class row."""
    import cupy

    keys = cupy.ascontiguousarray(keys)
    ctype = "float" if keys.dtype == cupy.float32 else "double"
    out = cupy.zeros((n_classes, keys.shape[1]), dtype=keys.dtype)
    n, d = keys.shape
    threads = 256
    blocks = max(1, min((n * d + threads - 1) // threads, 1 << 20))
    kernel = _cupy_kernel(_CLASS_SUMS_CUDA, "class_sums", ctype)
    kernel((blocks,), (threads,),
           (keys, cupy.ascontiguousarray(labels, dtype=cupy.int64), cupy.ascontiguousarray(weights, dtype=keys.dtype),
            np.int64(n), np.int32(d), out))
    return out


# ------------------------------------------------------------ scored read
def argmax_read_numpy(queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Reference: ``argmax_c queries[i] . candidates[c]`` for every query (materialises the scores)."""
    scores = queries @ candidates.T  # (n_queries, n_candidates)
    return scores.argmax(axis=1).astype(np.int64)


def softmax_read_numpy(queries: np.ndarray, candidates: np.ndarray, beta: float) -> np.ndarray:
    """Reference: row-wise ``softmax(beta * queries @ candidates.T)``, shape (n_queries, n_candidates)."""
    scores = beta * (queries @ candidates.T)  # (n_queries, n_candidates)
    scores = scores - scores.max(axis=1, keepdims=True)
    expd = np.exp(scores)
    return expd / expd.sum(axis=1, keepdims=True)


@numba.njit(cache=True, nogil=True, fastmath=True)
def _argmax_rows_kernel(scores, out):  # pragma: no cover - jitted
    """``out[r] = argmax_c scores[r, c]`` (first index on ties) for one tile of scores.

    The row maximum is a vectorised ``maxnum`` reduction, then the first column
    equal to it is the answer (scores are finite: the inputs are validated).
    """
    rows, m = scores.shape
    for r in range(rows):
        top = scores[r, 0]
        for c in range(1, m):
            top = maxnum(top, scores[r, c])
        best = 0
        for c in range(m):
            if scores[r, c] == top:
                best = c
                break
        out[r] = best


@numba.njit(cache=True, nogil=True, fastmath=True)
def _softmax_rows_kernel(scores, beta, out):  # pragma: no cover - jitted
    """Stable ``softmax(beta * scores)`` of each row of one tile, written into ``out``.

    Row maximum (``maxnum``) and ``exp`` (range reduction + polynomial,
    :mod:`companion._fastmath`) vectorise in the scores' dtype; row sums in float64.
    """
    rows, m = scores.shape
    for r in range(rows):
        top = scores[r, 0]
        for c in range(1, m):
            top = maxnum(top, scores[r, c])
        total = 0.0  # float64 sum whatever the dtype
        for c in range(m):
            e = fast_exp(beta * (scores[r, c] - top))
            out[r, c] = e
            total += e
        inv = 1.0 / total
        for c in range(m):
            out[r, c] *= inv


def _numba_operands(queries, candidates):
    dtype = np.result_type(queries.dtype, candidates.dtype)
    return (np.ascontiguousarray(queries, dtype=dtype),
            np.ascontiguousarray(np.asarray(candidates, dtype=dtype).T))  # (d_key, n_candidates)


def _tiles(n: int, m: int):
    """Query tiles of ``QUERY_TILE`` rows, fewer when ``m`` candidates would make a tile's scores large."""
    tile = int(min(QUERY_TILE, max(_MIN_TILE, _TILE_SCORES // max(m, 1))))
    return tile, [(start, min(start + tile, n)) for start in range(0, n, tile)]


def argmax_read_numba(queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Tiled read: NumPy's BLAS scores one query tile, the numba kernel reduces it; tiles shared by threads.

    Each tile is one ``np.matmul`` (``sgemm``/``dgemm``, one BLAS thread) into a
    reused ``(tile, n_candidates)`` buffer and one ``nogil`` argmax kernel;
    :func:`parallel_tiles` spreads the tiles over ``numba.get_num_threads()``
    Python threads. (An all-numba version, calling ``np.dot`` in nopython mode,
    uses SciPy's BLAS, which warns and oversubscribes inside numba's parallel
    regions, so the tile loop stays in Python: 64 tiles for 65,536 queries.)
    """
    q, ct = _numba_operands(queries, candidates)
    n, d = q.shape
    m = ct.shape[1]
    out = np.empty(n, dtype=np.int64)
    tile, tiles = _tiles(n, m)

    def work(lo, hi, scores):
        s = scores[: hi - lo]
        np.matmul(q[lo:hi], ct, out=s)  # (tile, n_candidates)
        _argmax_rows_kernel(s, out[lo:hi])

    parallel_tiles(tiles, work, lambda: np.empty((tile, m), dtype=q.dtype), default_workers(n * d * m))
    return out


def softmax_read_numba(queries: np.ndarray, candidates: np.ndarray, beta: float) -> np.ndarray:
    """Tiled read: BLAS scores per query tile, numba stable softmax written into the output; tiles shared by threads."""
    q, ct = _numba_operands(queries, candidates)
    n, d = q.shape
    m = ct.shape[1]
    out = np.empty((n, m), dtype=q.dtype)
    tile, tiles = _tiles(n, m)
    b = q.dtype.type(beta)

    def work(lo, hi, scores):
        s = scores[: hi - lo]
        np.matmul(q[lo:hi], ct, out=s)
        _softmax_rows_kernel(s, b, out[lo:hi])

    parallel_tiles(tiles, work, lambda: np.empty((tile, m), dtype=q.dtype), default_workers(n * d * m))
    return out


_ARGMAX_ROWS_CUDA = r"""
extern "C" __global__ void argmax_rows(const T* __restrict__ scores, const long long rows, const int cols,
                                       long long* __restrict__ out)
{
    // one warp per row: each lane scans a strided slice, then a shuffle reduction
    const long long row = (blockIdx.x * (long long)blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;
    const T* s = scores + row * cols;
    T best = s[0];
    int arg = 0;
    for (int c = lane; c < cols; c += 32) {
        const T v = s[c];
        if (v > best || (v == best && c < arg)) { best = v; arg = c; }
    }
    for (int offset = 16; offset > 0; offset >>= 1) {
        const T ob = __shfl_down_sync(0xffffffff, best, offset);
        const int oa = __shfl_down_sync(0xffffffff, arg, offset);
        if (ob > best || (ob == best && oa < arg)) { best = ob; arg = oa; }
    }
    if (lane == 0) out[row] = arg;
}
"""


def argmax_read_cupy(queries, candidates):
    """cuBLAS scores per query tile + a warp-per-row argmax RawKernel (first index on ties)."""
    import cupy

    dtype = cupy.result_type(queries.dtype, candidates.dtype)
    q = cupy.ascontiguousarray(queries, dtype=dtype)
    ct = cupy.ascontiguousarray(cupy.asarray(candidates, dtype=dtype).T)  # (d_key, n_candidates)
    n, m = q.shape[0], ct.shape[1]
    out = cupy.empty(n, dtype=cupy.int64)
    kernel = _cupy_kernel(_ARGMAX_ROWS_CUDA, "argmax_rows", "float" if dtype == cupy.float32 else "double")
    tile = max(QUERY_TILE, (1 << 24) // max(m, 1))
    threads = 256
    for start in range(0, n, tile):
        stop = min(start + tile, n)
        scores = cupy.ascontiguousarray(q[start:stop] @ ct)  # (tile, n_candidates)
        rows = stop - start
        blocks = (rows * 32 + threads - 1) // threads
        kernel((blocks,), (threads,), (scores, np.int64(rows), np.int32(m), out[start:stop]))
    return out


def softmax_read_cupy(queries, candidates, beta: float):
    """cuBLAS scores per query tile + a fused (elementwise, reduction) stable softmax."""
    import cupy

    dtype = cupy.result_type(queries.dtype, candidates.dtype)
    q = cupy.ascontiguousarray(queries, dtype=dtype)
    ct = cupy.ascontiguousarray(cupy.asarray(candidates, dtype=dtype).T)
    out = cupy.empty((q.shape[0], ct.shape[1]), dtype=dtype)
    tile = max(QUERY_TILE, (1 << 24) // max(ct.shape[1], 1))
    for start in range(0, q.shape[0], tile):
        stop = min(start + tile, q.shape[0])
        scores = beta * (q[start:stop] @ ct)
        scores -= scores.max(axis=1, keepdims=True)
        cupy.exp(scores, out=scores)
        scores /= scores.sum(axis=1, keepdims=True)
        out[start:stop] = scores
    return out


CLASS_SUMS = {"numpy": class_sums_numpy, "numba": class_sums_numba, "cupy": class_sums_cupy}
ARGMAX_READ = {"numpy": argmax_read_numpy, "numba": argmax_read_numba, "cupy": argmax_read_cupy}
SOFTMAX_READ = {"numpy": softmax_read_numpy, "numba": softmax_read_numba, "cupy": softmax_read_cupy}


# ----------------------------------------------------- packed sign decoding
@numba.njit(cache=True)
def decode_sign_rows(bits, d, low, high, out):  # pragma: no cover - jitted
    """``out[r, j] = high`` if bit ``j`` of row ``r`` is set (MSB first, as ``np.unpackbits``), else ``low``."""
    for r in range(bits.shape[0]):
        for j in range(d):
            byte = bits[r, j >> 3]
            out[r, j] = high if (byte >> (7 - (j & 7))) & 1 else low

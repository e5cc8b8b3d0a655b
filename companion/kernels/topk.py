"""Exact top-k inner-product search, blocked over the keys.

For every query ``q`` (a row of ``queries``, shape (Q, d)) find the ``k`` keys
(rows of ``keys``, shape (N, d)) with the largest inner products ``q . key``,
sorted by descending score; equal scores are ordered by the lower key index.
This is the search a kNN language model or a Memorizing-Transformer memory
runs over its datastore, written without any approximate index: every score is
computed, so the answer is exact.

A (Q, N) score matrix does not fit in memory for large datastores (20,000
queries over 300,000 keys are 24 GB in float32), so every backend walks the
keys in blocks of ``block_size`` rows and merges each block into a running
best-``k`` list per query. Memory stays at ``O(Q k + Q_tile * block_size)``.

Three layers: :func:`topk_inner_product` validates and dispatches;
``_topk_numpy`` is the readable reference (BLAS block scores + ``argpartition``
+ a sort of the ``k`` survivors); ``_topk_numba`` computes block scores with
BLAS and merges them with a numba kernel that runs in parallel over queries and
keeps a small sorted list per query (a new score is compared with the current
``k``-th best and only inserted when it beats it, which after the first blocks
is rare); the CuPy path computes block scores with cuBLAS and merges them with
a RawKernel, one thread per query.

For a handful of queries (decoding; up to ``_DIRECT_MAX_QUERIES``) the ``"numba"``
backend runs a BLAS-free kernel instead (``_topk_numba_direct``): dot products and
selection in one pass, in parallel over ranges of keys (one running best-``k`` list
per range and query, merged at the end in key order so ties still keep the lower
index), with software prefetch of the keys a few kilobytes ahead. One query is
then a single read of the keys: on 262,144 keys of d = 64 (67 MB, float32), on one
core, it is as fast as BLAS ``sgemv`` followed by the merge and about 1.4 times
faster than ``torch.topk(q @ K.T)``; on two cores it also splits the selection,
which the BLAS path runs on one thread for one query (``benchmarks/bench_topk.py``).
From about eight queries on, the BLAS block scores win (the BLAS-free dot products
end in a horizontal sum per key and query); small searches run on the calling thread.
"""

from __future__ import annotations

import functools
from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from .._validation import check_array, check_int
from ..backend import array_kind, dispatch, for_backend, resolve_backend, to_kind, to_numpy

__all__ = ["topk_inner_product", "default_block_size"]

#: Score-tile budget in elements (float32: 64 MB) used to pick a default block size.
_TILE_ELEMENTS = 1 << 24
#: Queries per tile of the blocked loops.
_QUERY_TILE = 2048


def default_block_size(n_queries: int, n_keys: int) -> int:
    """Keys per block so that one (query tile, block) score tile holds about 16M numbers.

    Parameters
    ----------
    n_queries, n_keys : int
        Sizes of the search (>= 1).

    Returns
    -------
    int
        Between 256 and ``n_keys`` (``n_keys`` itself when it is smaller than 256).

    Example
    -------
    >>> from companion.kernels import default_block_size
    >>> default_block_size(1, 1000), default_block_size(20_000, 300_000)
    (1000, 8192)
    """
    n_queries = check_int(n_queries, "n_queries", minimum=1)
    n_keys = check_int(n_keys, "n_keys", minimum=1)
    rows = min(n_queries, _QUERY_TILE)
    return int(min(n_keys, max(256, _TILE_ELEMENTS // rows)))


# --------------------------------------------------------- NumPy reference
def _topk_numpy(queries: np.ndarray, keys: np.ndarray, k: int, block_size: int):
    """Reference: BLAS block scores, ``argpartition`` over (running best + block), sort the survivors.

    Ties: ``argpartition`` may keep either of two equal scores at the boundary,
    so rows whose k-th and (k+1)-th candidates tie are redone with a stable sort,
    which (best entries first, all of lower index than the block) keeps the lower index.
    """
    n_queries, n_keys = queries.shape[0], keys.shape[0]
    best_scores = np.full((n_queries, 0), -np.inf, dtype=queries.dtype)  # (Q, <=k)
    best_index = np.zeros((n_queries, 0), dtype=np.int64)
    rows = np.arange(n_queries)[:, None]
    for start in range(0, n_keys, block_size):
        block = keys[start : start + block_size]  # (B, d)
        scores = np.concatenate([best_scores, queries @ block.T], axis=1)  # (Q, kept + B)
        index = np.concatenate([best_index, np.broadcast_to(np.arange(start, start + len(block)), (n_queries, len(block)))], axis=1)
        keep = min(k, scores.shape[1])
        if keep < scores.shape[1]:
            part = np.argpartition(-scores, keep - 1, axis=1)  # (Q, kept + B)
            chosen = part[:, :keep]
            kth = scores[rows, part[:, keep - 1 : keep]]  # (Q, 1): the k-th best score
            tied = (scores == kth).sum(axis=1) > (scores[rows, chosen] == kth).sum(axis=1)
            if tied.any():  # a tie at the boundary: let a stable sort pick the lower index
                chosen[tied] = np.argsort(-scores[tied], axis=1, kind="stable")[:, :keep]
        else:
            chosen = np.broadcast_to(np.arange(keep), (n_queries, keep))
        best_scores, best_index = scores[rows, chosen], index[rows, chosen]
        order = np.lexsort((best_index, -best_scores), axis=1)  # descending score, then lower index
        best_scores, best_index = best_scores[rows, order], best_index[rows, order]
    return best_scores, best_index


# ------------------------------------------------------------ numba kernels
@numba.njit(cache=True, inline="always")
def _insert(best_s, best_i, q, score, index, filled, k):  # pragma: no cover - jitted
    """Insert (score, index) into row ``q`` of the sorted lists; return the new fill count.

    Keys arrive in increasing index order, so an equal score never displaces an
    earlier entry: the new entry goes after every entry with a score >= its own.
    """
    if filled < k:
        pos = filled
        filled += 1
    else:
        pos = k - 1
    while pos > 0 and best_s[q, pos - 1] < score:
        best_s[q, pos] = best_s[q, pos - 1]
        best_i[q, pos] = best_i[q, pos - 1]
        pos -= 1
    best_s[q, pos] = score
    best_i[q, pos] = index
    return filled


@numba.njit(cache=True, parallel=True)
def _merge_block_numba(scores, start, best_s, best_i, fill, row0, bad):  # pragma: no cover - jitted
    """Merge a (tile rows, B) block of scores for keys ``start ..`` into rows ``row0 ..`` of the best lists.

    ``bad[q]`` is set when a score is NaN or infinite: with finite queries that
    means a non-finite key (or an overflow), so the finite-value check of the
    keys rides along this pass instead of costing a separate read.
    """
    n_rows, n_cols = scores.shape
    k = best_s.shape[1]
    for r in numba.prange(n_rows):
        q = row0 + r
        filled = fill[q]
        threshold = best_s[q, k - 1]
        flag = False
        for j in range(n_cols):
            s = scores[r, j]
            z = s * 0
            flag |= z != z  # NaN for NaN and +-inf
            if filled < k or s > threshold:
                filled = _insert(best_s, best_i, q, s, start + j, filled, k)
                threshold = best_s[q, k - 1]
        fill[q] = filled
        bad[q] |= flag


#: Up to this many queries the BLAS-free kernel wins (a matrix-vector product per block costs more than it saves).
_DIRECT_MAX_QUERIES = 4


def _topk_numba(queries: np.ndarray, keys: np.ndarray, k: int, block_size: int):
    """BLAS block scores (query tile x key block), merged in parallel over queries by numba.

    A handful of queries (decoding) goes to the BLAS-free kernel instead.
    """
    n_queries, n_keys = queries.shape[0], keys.shape[0]
    if n_queries <= _DIRECT_MAX_QUERIES:
        return _topk_numba_direct(queries, keys, k, block_size)
    dtype = queries.dtype
    best_s = np.full((n_queries, k), -np.inf, dtype=dtype)  # (Q, k), sorted descending
    best_i = np.full((n_queries, k), -1, dtype=np.int64)
    fill = np.zeros(n_queries, dtype=np.int64)
    bad = np.zeros(n_queries, dtype=np.bool_)
    tile = min(n_queries, _QUERY_TILE)
    buffer = np.empty((tile, block_size), dtype=dtype)
    for row0 in range(0, n_queries, tile):
        q_tile = queries[row0 : row0 + tile]  # (tile, d)
        for start in range(0, n_keys, block_size):
            block = keys[start : start + block_size]  # (B, d)
            out = buffer[: len(q_tile), : len(block)]
            with np.errstate(over="ignore", invalid="ignore"):  # reported by the merge kernel instead
                np.matmul(q_tile, block.T, out=out)  # (tile, B)
            _merge_block_numba(out, start, best_s, best_i, fill, row0, bad)
    _raise_if_non_finite(bad.any(), keys)
    return best_s, best_i


#: Bytes of keys per block of the BLAS-free kernel: the block stays in L2 while every query reads it.
_DIRECT_BLOCK_BYTES = 1 << 16
#: Key ranges per numba thread in the BLAS-free kernel (more ranges than threads balance a busy machine).
_DIRECT_PARTS_PER_THREAD = 4
#: How far ahead (bytes of keys) the BLAS-free kernel asks for cache lines.
_PREFETCH_BYTES = 8192


@intrinsic
def _prefetch(typingctx, arr, index):
    """Software prefetch: ask for the cache line holding element ``index`` of the C-contiguous ``arr`` (flat index).

    Emits ``llvm.prefetch`` (read, keep in all cache levels). A prefetch never
    faults, so ``index`` may point past the end; the hardware then ignores it.
    Streaming ~8 kB ahead this way lifts a single-thread scan of keys that sit in
    L3 or DRAM from about 8 to about 14 GB/s here (the hardware prefetcher alone
    does not keep enough lines in flight).
    """
    if not isinstance(arr, types.Array) or not isinstance(index, types.Integer):
        return None
    sig = types.void(arr, index)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        i64 = ir.IntType(64)
        idx = context.cast(builder, args[1], signature.args[1], types.int64)
        item = context.get_abi_sizeof(context.get_data_type(signature.args[0].dtype))
        addr = builder.add(builder.ptrtoint(ary.data, i64), builder.mul(idx, ir.Constant(i64, item)))
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            "llvm.prefetch.p0")
        builder.call(fn, [builder.inttoptr(addr, i8p), ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


_FASTMATH = {"contract", "reassoc", "arcp", "nsz"}


@numba.njit(cache=True, inline="always", fastmath=_FASTMATH)
def _direct_range(queries, keys, block, ahead, lo, hi, best_s, best_i, fill):  # pragma: no cover - jitted
    """Keys ``lo .. hi``: dot products and selection into the sorted lists ``best_s/best_i`` (Q, k).

    The range is walked in blocks of ``block`` keys; for every query the block's
    scores are computed four keys at a time (the inner loop runs over the
    contiguous ``d`` values of a key and vectorizes) and each score is compared
    with the query's current ``k``-th best, and inserted only when it beats it.
    While the first query reads a group of four keys, the cache lines of the keys
    ``ahead`` rows further on are prefetched (:func:`_prefetch`). Returns True when
    a score is NaN or infinite (``s * 0`` is NaN then; fast-math without
    ``nnan``/``ninf`` keeps that test valid).
    """
    dim = keys.shape[1]
    n_queries = queries.shape[0]
    k = best_s.shape[1]
    line = max(1, 64 // keys.itemsize)  # elements per cache line
    zero = queries[0, 0] * 0
    nan_sum = zero  # sum of score * 0: NaN as soon as one score is NaN or infinite
    for b0 in range(lo, hi, block):
        b1 = min(hi, b0 + block)
        b4 = b0 + (b1 - b0) // 4 * 4
        for q in range(n_queries):
            filled = fill[q]
            threshold = best_s[q, k - 1]  # -inf until the list is full
            for j in range(b0, b4, 4):
                if q == 0:
                    for e in range((j + ahead) * dim, (j + ahead + 4) * dim, line):
                        _prefetch(keys, e)
                s0 = zero
                s1 = zero
                s2 = zero
                s3 = zero
                for c in range(dim):
                    x = queries[q, c]
                    s0 += x * keys[j, c]
                    s1 += x * keys[j + 1, c]
                    s2 += x * keys[j + 2, c]
                    s3 += x * keys[j + 3, c]
                nan_sum += s0 * 0 + s1 * 0 + s2 * 0 + s3 * 0
                if s0 > threshold or filled < k:
                    filled = _insert(best_s, best_i, q, s0, j, filled, k)
                    threshold = best_s[q, k - 1]
                if s1 > threshold or filled < k:
                    filled = _insert(best_s, best_i, q, s1, j + 1, filled, k)
                    threshold = best_s[q, k - 1]
                if s2 > threshold or filled < k:
                    filled = _insert(best_s, best_i, q, s2, j + 2, filled, k)
                    threshold = best_s[q, k - 1]
                if s3 > threshold or filled < k:
                    filled = _insert(best_s, best_i, q, s3, j + 3, filled, k)
                    threshold = best_s[q, k - 1]
            for j in range(b4, b1):
                s = zero
                for c in range(dim):
                    s += queries[q, c] * keys[j, c]
                nan_sum += s * 0
                if s > threshold or filled < k:
                    filled = _insert(best_s, best_i, q, s, j, filled, k)
                    threshold = best_s[q, k - 1]
            fill[q] = filled
    return nan_sum != nan_sum


@numba.njit(cache=True, parallel=True, fastmath=_FASTMATH)
def _topk_direct_kernel(queries, keys, block, ahead, part_s, part_i, part_fill, bad):  # pragma: no cover - jitted
    """BLAS-free: dot products and selection in one pass, in parallel over ranges of keys.

    The keys are cut into ``P = part_s.shape[0]`` contiguous ranges, one task each
    (``prange``), searched by :func:`_direct_range`. ``part_s/part_i`` (P, Q, k)
    receive each range's sorted best list and ``part_fill`` (P, Q) its length;
    :func:`_merge_parts_numba` merges them. ``bad[p]`` is set when a score of
    range ``p`` is NaN or infinite.
    """
    n_keys = keys.shape[0]
    n_parts = part_s.shape[0]
    per = (n_keys + n_parts - 1) // n_parts
    for p in numba.prange(n_parts):
        lo = min(n_keys, p * per)
        bad[p] = _direct_range(queries, keys, block, ahead, lo, min(n_keys, lo + per), part_s[p], part_i[p],
                               part_fill[p])


@numba.njit(cache=True, fastmath=_FASTMATH)
def _topk_direct_serial(queries, keys, block, ahead, part_s, part_i, part_fill, bad):  # pragma: no cover - jitted
    """:func:`_topk_direct_kernel` with one range, on the calling thread (small searches)."""
    bad[0] = _direct_range(queries, keys, block, ahead, 0, keys.shape[0], part_s[0], part_i[0], part_fill[0])


@numba.njit(cache=True)
def _merge_parts_numba(part_s, part_i, part_fill, best_s, best_i):  # pragma: no cover - jitted
    """Merge the per-range sorted lists (P, Q, k) into ``best_s/best_i`` (Q, k).

    Ranges are taken in key order and each list in its own order, so an equal
    score never displaces an earlier (lower-index) entry: ties keep the lower index.
    """
    n_parts, n_queries, k = part_s.shape
    for q in range(n_queries):
        filled = 0
        for p in range(n_parts):
            for t in range(part_fill[p, q]):
                s = part_s[p, q, t]
                if filled == k and not s > best_s[q, k - 1]:
                    break  # the rest of this sorted list scores no higher
                filled = _insert(best_s, best_i, q, s, part_i[p, q, t], filled, k)


#: Below this many multiply-adds (Q * N * d) the BLAS-free search runs on the calling thread:
#: waking the other numba threads costs tens of microseconds on a quiet machine, milliseconds on a busy one.
_PARALLEL_MIN_WORK = 1 << 18


def _topk_numba_direct(queries: np.ndarray, keys: np.ndarray, k: int, block_size: int):
    """BLAS-free numba search, parallel over ranges of keys (``block_size`` is unused: no score block is stored).

    Used by the ``"numba"`` backend for up to ``_DIRECT_MAX_QUERIES`` queries.
    """
    n_queries, dim = queries.shape
    n_keys = keys.shape[0]
    block = max(4, _DIRECT_BLOCK_BYTES // max(1, dim * keys.itemsize) // 4 * 4)
    ahead = max(4, _PREFETCH_BYTES // max(1, dim * keys.itemsize))
    if n_queries * n_keys * dim < _PARALLEL_MIN_WORK:
        n_parts, kernel = 1, _topk_direct_serial
    else:
        n_parts = int(max(1, min(numba.get_num_threads() * _DIRECT_PARTS_PER_THREAD, n_keys // max(block, k))))
        kernel = _topk_direct_kernel
    part_s = np.full((n_parts, n_queries, k), -np.inf, dtype=queries.dtype)
    part_i = np.full((n_parts, n_queries, k), -1, dtype=np.int64)
    part_fill = np.zeros((n_parts, n_queries), dtype=np.int64)
    bad = np.zeros(n_parts, dtype=np.bool_)
    kernel(queries, keys, block, ahead, part_s, part_i, part_fill, bad)
    _raise_if_non_finite(bad.any(), keys)
    if n_parts == 1:
        return part_s[0], part_i[0]
    best_s = np.full((n_queries, k), -np.inf, dtype=queries.dtype)
    best_i = np.full((n_queries, k), -1, dtype=np.int64)
    _merge_parts_numba(part_s, part_i, part_fill, best_s, best_i)
    return best_s, best_i


def _raise_if_non_finite(found: bool, keys: np.ndarray) -> None:
    """A kernel saw a NaN/inf score: name the cause (non-finite keys, or scores beyond the float range)."""
    if found:
        check_array(keys, "keys", ndim=2, dtype_kind="f")  # raises for NaN/inf keys
        raise ValueError("inner products overflow the floating range; rescale queries or keys")


# ------------------------------------------------------------- CuPy kernel
_MERGE_CUDA = r"""
extern "C" __global__ void topk_merge(
    const T* __restrict__ scores_t,   // (B, n_rows): the block's scores, transposed so reads coalesce
    const long long n_cols, const long long n_rows, const long long start, const long long row0,
    const int k, T* __restrict__ best_s, long long* __restrict__ best_i, long long* __restrict__ fill)
{
    const long long r = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (r >= n_rows) return;
    const long long q = row0 + r;
    T* s_row = best_s + q * k;
    long long* i_row = best_i + q * k;
    long long filled = fill[q];
    T threshold = s_row[k - 1];
    for (long long j = 0; j < n_cols; ++j) {
        const T s = scores_t[j * n_rows + r];
        if (filled < k || s > threshold) {
            long long pos;
            if (filled < k) { pos = filled; ++filled; } else { pos = k - 1; }
            while (pos > 0 && s_row[pos - 1] < s) {
                s_row[pos] = s_row[pos - 1];
                i_row[pos] = i_row[pos - 1];
                --pos;
            }
            s_row[pos] = s;
            i_row[pos] = start + j;
            threshold = s_row[k - 1];
        }
    }
    fill[q] = filled;
}
"""


@functools.lru_cache(maxsize=None)
def _cupy_merge_kernel(ctype: str):
    import cupy

    return cupy.RawKernel(f"typedef {ctype} T;\n" + _MERGE_CUDA, "topk_merge")


def _topk_cupy(queries, keys, k: int, block_size: int):
    """cuBLAS block scores (transposed), merged by one GPU thread per query."""
    import cupy

    n_queries, n_keys = queries.shape[0], keys.shape[0]
    dtype = queries.dtype
    best_s = cupy.full((n_queries, k), -cupy.inf, dtype=dtype)
    best_i = cupy.full((n_queries, k), -1, dtype=cupy.int64)
    fill = cupy.zeros(n_queries, dtype=cupy.int64)
    kernel = _cupy_merge_kernel("float" if dtype == np.float32 else "double")
    threads = 128
    tile = min(n_queries, 1 << 16)
    for row0 in range(0, n_queries, tile):
        q_tile = queries[row0 : row0 + tile]  # (tile, d)
        rows = q_tile.shape[0]
        for start in range(0, n_keys, block_size):
            block = keys[start : start + block_size]  # (B, d)
            scores_t = cupy.ascontiguousarray(block @ q_tile.T)  # (B, tile)
            kernel(
                ((rows + threads - 1) // threads,), (threads,),
                (scores_t, np.int64(block.shape[0]), np.int64(rows), np.int64(start), np.int64(row0),
                 np.int32(k), best_s, best_i, fill),
            )
    return best_s, best_i


_KERNELS = {"numpy": _topk_numpy, "numba": _topk_numba, "cupy": _topk_cupy}


def _topk_torch(queries, keys, k: int, block_size: int):
    """CUDA tensors without CuPy: blocked ``matmul`` + ``torch.topk`` on the device (ties unspecified)."""
    import torch

    best_s = torch.empty((queries.shape[0], 0), dtype=queries.dtype, device=queries.device)
    best_i = torch.empty((queries.shape[0], 0), dtype=torch.int64, device=queries.device)
    for start in range(0, keys.shape[0], block_size):
        block = keys[start : start + block_size]
        scores = torch.cat([best_s, queries @ block.T], dim=1)
        index = torch.cat([best_i, torch.arange(start, start + block.shape[0], device=queries.device).expand(queries.shape[0], -1)], dim=1)
        best_s, pos = torch.topk(scores, min(k, scores.shape[1]), dim=1, sorted=True)
        best_i = torch.gather(index, 1, pos)
    return best_s, best_i


# ------------------------------------------------------------ public function
def topk_inner_product(queries: Any, keys: Any, k: int, *, block_size: int | None = None, backend: str | None = None):
    """The ``k`` keys with the largest inner product for every query, exactly.

    Parameters
    ----------
    queries : array of shape (Q, d)
        Floating, finite (NumPy, CuPy or torch).
    keys : array of shape (N, d)
        Floating, finite, same kind as ``queries``; ``N >= k``.
    k : int
        Neighbours per query, ``1 <= k <= N``. A ``k`` larger than the number of
        keys is an error (there is no sensible k-th neighbour to return).
    block_size : int, optional
        Keys per block; default :func:`default_block_size`. Memory used by the
        scores is about ``min(Q, 2048) * block_size`` numbers.
    backend : {None, "auto", "numpy", "numba", "cupy"}
        Which implementation runs (see :mod:`companion.backend`).

    Returns
    -------
    scores : array of shape (Q, k)
        Inner products, sorted descending along each row; float32 when both
        inputs are float32 (or float16), else float64.
    indices : array of shape (Q, k), int64
        Row numbers of the keys; among equal scores the lower index comes first.
        Same kind as ``queries``.

    Raises
    ------
    ValueError
        Empty inputs, non-finite values, mismatched ``d``, ``k`` outside ``[1, N]``.
    TypeError
        Non-floating arrays, arrays of different kinds.

    Notes
    -----
    The search behind "On Retrieval Augmentation and the Limitations of Language
    Model Training" (kNN-LM datastores) and "Extended Mind Transformers" (top-k
    memories per attention head), without an approximate index. On a CUDA
    torch tensor without CuPy the search runs as blocked ``torch.topk`` on the
    device, whose order among exactly equal scores is unspecified.

    Example
    -------
    >>> import numpy as np
    >>> from companion.kernels import topk_inner_product
    >>> keys = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7], [-1.0, 0.0]])
    >>> scores, idx = topk_inner_product(np.array([[1.0, 0.2]]), keys, 2)
    >>> idx.tolist(), scores.round(2).tolist()
    ([[0, 2]], [[1.0, 0.84]])
    """
    return _topk_checked(queries, keys, k, block_size=block_size, backend=backend, check_keys=True)


def _resolved(backend, queries, keys) -> str:
    try:
        return resolve_backend(backend, queries, keys)
    except (TypeError, ValueError):  # let dispatch raise the proper error later
        return ""


def _topk_checked(queries: Any, keys: Any, k: int, *, block_size: int | None, backend: str | None, check_keys: bool):
    """Validate and search; ``check_keys=False`` skips the finite-value scan of ``keys``.

    For callers that validated their keys once and search them many times
    (:class:`companion.memory.Datastore`): at one query per call, scanning a large
    key matrix for NaN costs more than the search itself.
    """
    kind = check_array(queries, "queries", ndim=2, dtype_kind="f")
    # The numba kernels notice non-finite keys in their own pass (see _merge_block_numba): scan only otherwise.
    lazy = _resolved(backend, queries, keys) == "numba" and kind == "numpy"
    key_kind = check_array(keys, "keys", ndim=2, dtype_kind="f", finite=check_keys and not lazy)
    if key_kind != kind:
        raise TypeError(f"queries and keys must be the same kind of array; got {kind} and {key_kind}")
    if queries.shape[1] != keys.shape[1]:
        raise ValueError(
            f"queries and keys must have the same last dimension d; got {tuple(queries.shape)} and {tuple(keys.shape)}"
        )
    n_keys = int(keys.shape[0])
    k = check_int(k, "k", minimum=1)
    if k > n_keys:
        raise ValueError(f"k must be <= the number of keys ({n_keys}); got k={k}")
    block_size = default_block_size(int(queries.shape[0]), n_keys) if block_size is None else check_int(
        block_size, "block_size", minimum=1
    )
    name, kernel = dispatch(_KERNELS, backend, queries, keys)

    if kind == "torch" and queries.device.type == "cuda" and name != "cupy" and backend in (None, "auto"):
        import torch

        dtype = torch.float32 if (queries.dtype in (torch.float16, torch.bfloat16, torch.float32)
                                  and keys.dtype in (torch.float16, torch.bfloat16, torch.float32)) else torch.float64
        return _topk_torch(queries.detach().to(dtype), keys.detach().to(dtype), k, block_size)

    qb, kb = for_backend(queries, name), for_backend(keys, name)
    xp = np if name != "cupy" else __import__("cupy")
    both32 = np.dtype(qb.dtype).itemsize <= 4 and np.dtype(kb.dtype).itemsize <= 4
    dtype = np.float32 if both32 else np.float64
    qb = xp.ascontiguousarray(qb, dtype=dtype)
    kb = xp.ascontiguousarray(kb, dtype=dtype)
    scores, indices = kernel(qb, kb, k, block_size)
    return to_kind(scores, kind, like=queries), to_kind(indices, kind, like=queries)

"""Asymmetric distance computation (ADC): table lookups and a running top-k (private to C3).

A product-quantized database row is ``M`` small integers; the squared distance
from an *unquantized* query to the decoded row is the sum over subspaces of
``table[m, code[m]]``, where ``table[m, j] = |q_m - c_{m,j}|^2`` is computed
once per query. The scan over the database is therefore ``M`` lookups and
adds per row: the hot loop of product-quantization search.

Every backend accumulates ``table[0, .] + table[1, .] + ...`` in the table's
dtype in the same order, so the distances are bit-identical across backends;
the ``k`` smallest are returned in ascending order, ties to the lower row index
(a stable sort).
"""

from __future__ import annotations

import functools
from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

from .._validation import check_array, check_int
from ..backend import dispatch, for_backend, to_kind

__all__ = ["adc_search"]

_QUERY_BLOCK_BYTES = 1 << 26  # the NumPy/CuPy paths build (queries, n) distance blocks of at most 64 MB


# --------------------------------------------------------- NumPy reference
def _adc_distances_numpy(tables: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Distances (q, n): ``sum_m tables[:, m, codes[:, m]]``, accumulated over m in order."""
    dist = tables[:, 0, codes[:, 0]].copy()  # (q, n)
    for m in range(1, tables.shape[1]):
        dist += tables[:, m, codes[:, m]]
    return dist


def _adc_numpy(tables: np.ndarray, codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference: all distances, then a stable sort per query (ties -> lower index)."""
    q, n = tables.shape[0], codes.shape[0]
    out_d = np.empty((q, k), dtype=tables.dtype)
    out_i = np.empty((q, k), dtype=np.int64)
    step = max(1, _QUERY_BLOCK_BYTES // (tables.itemsize * n))
    for s in range(0, q, step):
        dist = _adc_distances_numpy(tables[s:s + step], codes)  # (block, n)
        order = np.argsort(dist, axis=1, kind="stable")[:, :k]
        out_i[s:s + step] = order
        out_d[s:s + step] = np.take_along_axis(dist, order, axis=1)
    return out_d, out_i


# ------------------------------------------------------------ numba kernel
#
# The fast path scans the codes once for a block of L queries (L = 16 float32 or 8
# float64: 64 bytes, one cache line): the tables of the block are interleaved as
# ``tt[(m * K + j) * L + lane]``, so the L partial distances of one database row
# advance together with one vector load and one vector add per subspace (the
# per-row order of the additions, subspace 0 first, is unchanged: the results are
# bit-identical to the reference). Rows go in blocks of ``_ROW_BLOCK`` (their
# partial sums stay in L1); a row whose L distances all fail their query's
# current k-th best (one vector compare) costs nothing more. The rows are cut into
# chunks, one task per (query block, chunk) in parallel, each with its own top-k;
# the chunk lists are merged in row order, so ties still go to the lower row.
# LLVM does not vectorize the 16-lane loops by itself here (too short for its
# unrolled vector loop), hence the three small intrinsics below.


def _line_ptr(context, builder, aryty, ary_val, idx_val, idx_ty, vec_ty):
    """Pointer to element ``idx`` of the C-contiguous array, as a pointer to ``vec_ty``."""
    ary = context.make_array(aryty)(context, builder, ary_val)
    i64 = ir.IntType(64)
    idx = context.cast(builder, idx_val, idx_ty, types.int64)
    item = context.get_abi_sizeof(context.get_data_type(aryty.dtype))
    addr = builder.add(builder.ptrtoint(ary.data, i64), builder.mul(idx, ir.Constant(i64, item)))
    return builder.inttoptr(addr, vec_ty.as_pointer())


def _line_type(dtype):
    """LLVM vector of 64 bytes of ``dtype`` (float32: 16 lanes, float64: 8)."""
    return ir.VectorType(ir.FloatType(), 16) if dtype == types.float32 else ir.VectorType(ir.DoubleType(), 8)


def _same_float_arrays(*arrays) -> bool:
    return all(isinstance(a, types.Array) for a in arrays) and len({a.dtype for a in arrays}) == 1 and \
        arrays[0].dtype in (types.float32, types.float64)


@intrinsic
def _copy_line(typingctx, dst, doff, src, soff):
    """``dst[doff:doff+L] = src[soff:soff+L]`` (64 bytes; C-contiguous arrays, no bounds check)."""
    if not _same_float_arrays(dst, src):
        return None

    def codegen(context, builder, signature, args):
        vt = _line_type(signature.args[0].dtype)
        d = _line_ptr(context, builder, signature.args[0], args[0], args[1], signature.args[1], vt)
        s = _line_ptr(context, builder, signature.args[2], args[2], args[3], signature.args[3], vt)
        builder.store(builder.load(s, align=4), d, align=4)
        return context.get_dummy_value()

    return types.void(dst, doff, src, soff), codegen


@intrinsic
def _add_line(typingctx, dst, doff, src, soff):
    """``dst[doff:doff+L] += src[soff:soff+L]`` (64 bytes, lane by lane; no bounds check)."""
    if not _same_float_arrays(dst, src):
        return None

    def codegen(context, builder, signature, args):
        vt = _line_type(signature.args[0].dtype)
        d = _line_ptr(context, builder, signature.args[0], args[0], args[1], signature.args[1], vt)
        s = _line_ptr(context, builder, signature.args[2], args[2], args[3], signature.args[3], vt)
        builder.store(builder.fadd(builder.load(d, align=4), builder.load(s, align=4)), d, align=4)
        return context.get_dummy_value()

    return types.void(dst, doff, src, soff), codegen


@intrinsic
def _any_less_line(typingctx, a, aoff, b):
    """``any(a[aoff:aoff+L] < b[:L])`` (64 bytes; no bounds check)."""
    if not _same_float_arrays(a, b):
        return None

    def codegen(context, builder, signature, args):
        vt = _line_type(signature.args[0].dtype)
        pa = _line_ptr(context, builder, signature.args[0], args[0], args[1], signature.args[1], vt)
        pb = _line_ptr(context, builder, signature.args[2], args[2], ir.Constant(ir.IntType(64), 0), types.int64, vt)
        less = builder.fcmp_ordered("<", builder.load(pa, align=4), builder.load(pb, align=4))
        bits = builder.bitcast(less, ir.IntType(vt.count))
        return builder.icmp_unsigned("!=", bits, ir.Constant(ir.IntType(vt.count), 0))

    return types.boolean(a, aoff, b), codegen


@numba.njit(cache=True)
def _insert(best_d, best_i, filled, k, acc, idx):  # pragma: no cover - jitted
    """Insert ``(acc, idx)`` into the sorted list ``best_*[:filled]`` (k at most); returns the new length.

    Strict comparisons: an equal value already in the list stays ahead.
    """
    p = filled if filled < k else k - 1
    while p > 0 and best_d[p - 1] > acc:  # strict: an equal earlier entry stays ahead
        best_d[p] = best_d[p - 1]
        best_i[p] = best_i[p - 1]
        p -= 1
    best_d[p] = acc
    best_i[p] = idx
    return filled + 1 if filled < k else filled


@numba.njit(cache=True, parallel=True)
def _adc_scan_numba(tt, codes, chunk, row_block, part_d, part_i, part_n):  # pragma: no cover - jitted
    """Top-k of every (query block, row chunk): ``part_*[b, c]`` (L, k) sorted, ``part_n[b, c]`` (L,) lengths.

    ``tt`` (blocks, M*K*L): the interleaved tables of each block of L queries;
    ``codes`` (n, M) C-contiguous; chunk ``c`` holds rows ``[c*chunk, (c+1)*chunk)``.
    """
    n_blocks = tt.shape[0]
    n_chunks = part_d.shape[1]
    lanes = part_d.shape[2]
    k = part_d.shape[3]
    n, n_sub = codes.shape
    n_codes = tt.shape[1] // (n_sub * lanes)
    for task in numba.prange(n_blocks * n_chunks):
        b = task // n_chunks
        ch = task - b * n_chunks
        tab = tt[b]
        start = ch * chunk
        stop = min(n, start + chunk)
        bd = part_d[b, ch]
        bi = part_i[b, ch]
        filled = part_n[b, ch]
        for q in range(lanes):
            filled[q] = 0
        thr = np.empty(lanes, dtype=tt.dtype)
        dist = np.empty(row_block * lanes, dtype=tt.dtype)  # (row_block, L) partial sums
        for s in range(start, stop, row_block):
            nr = min(row_block, stop - s)
            for r in range(nr):
                _copy_line(dist, r * lanes, tab, np.int64(codes[s + r, 0]) * lanes)
            for m in range(1, n_sub):
                base = m * n_codes
                for r in range(nr):
                    _add_line(dist, r * lanes, tab, (base + np.int64(codes[s + r, m])) * lanes)
            if s - start < k:  # the first k rows of the chunk fill every list
                for r in range(nr):
                    for q in range(lanes):
                        acc = dist[r * lanes + q]
                        if filled[q] < k or acc < bd[q, k - 1]:
                            filled[q] = _insert(bd[q], bi[q], filled[q], k, acc, s + r)
                for q in range(lanes):
                    thr[q] = bd[q, k - 1] if filled[q] == k else np.inf
            else:
                for r in range(nr):
                    if _any_less_line(dist, r * lanes, thr):  # strict: an equal later row stays out
                        for q in range(lanes):
                            acc = dist[r * lanes + q]
                            if acc < thr[q]:
                                _insert(bd[q], bi[q], k, k, acc, s + r)
                                thr[q] = bd[q, k - 1]


@numba.njit(cache=True)
def _adc_merge_numba(part_d, part_i, part_n, out_d, out_i):  # pragma: no cover - jitted
    """Merge the chunk lists of every query in row order (ties keep the lower row)."""
    n_chunks, lanes, k = part_d.shape[1], part_d.shape[2], part_d.shape[3]
    for qi in range(out_d.shape[0]):
        b = qi // lanes
        lane = qi - b * lanes
        bd = out_d[qi]
        bi = out_i[qi]
        filled = 0
        for ch in range(n_chunks):
            for t in range(part_n[b, ch, lane]):
                acc = part_d[b, ch, lane, t]
                if filled < k or acc < bd[k - 1]:
                    filled = _insert(bd, bi, filled, k, acc, part_i[b, ch, lane, t])


_ROW_BLOCK = 16  # rows whose partial sums (one 64-byte line each) advance together
_MIN_CHUNK = 8192  # rows per parallel chunk at least
_CHUNKS_PER_THREAD = 2  # tasks per numba thread (spread the work on a busy machine)


def _adc_numba(tables: np.ndarray, codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    q, n_sub, n_codes = tables.shape
    n = codes.shape[0]
    codes = np.ascontiguousarray(codes)
    lanes = 64 // tables.itemsize
    n_blocks = (q + lanes - 1) // lanes
    # interleaved tables: tt[b, (m*K + j)*L + lane] = tables[b*L + lane, m, j] (zeros past q)
    tt = np.zeros((n_blocks, n_sub * n_codes, lanes), dtype=tables.dtype)
    for b in range(n_blocks):
        block = tables[b * lanes:(b + 1) * lanes].reshape(-1, n_sub * n_codes)
        tt[b, :, :block.shape[0]] = block.T
    tt = tt.reshape(n_blocks, n_sub * n_codes * lanes)
    want = max(1, -(-_CHUNKS_PER_THREAD * numba.get_num_threads() // n_blocks))
    n_chunks = max(1, min(want, n // max(k, _MIN_CHUNK)))
    chunk = -(-n // n_chunks)
    n_chunks = -(-n // chunk)
    part_d = np.empty((n_blocks, n_chunks, lanes, k), dtype=tables.dtype)
    part_i = np.empty((n_blocks, n_chunks, lanes, k), dtype=np.int64)
    part_n = np.empty((n_blocks, n_chunks, lanes), dtype=np.int64)
    _adc_scan_numba(tt, codes, chunk, _ROW_BLOCK, part_d, part_i, part_n)
    out_d = np.empty((q, k), dtype=tables.dtype)
    out_i = np.empty((q, k), dtype=np.int64)
    _adc_merge_numba(part_d, part_i, part_n, out_d, out_i)
    return out_d, out_i


# ------------------------------------------------------------- CuPy kernel
_ADC_CUDA = r"""
extern "C" __global__ void adc_distances(
    const T* __restrict__ tables, const C* __restrict__ codes, const int q, const long long n,
    const int n_sub, const int n_codes, T* __restrict__ dist)
{
    /* one thread per (query, row); the tables of a query are small and stay in cache */
    const long long total = (long long)q * n;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)blockDim.x * gridDim.x) {
        const long long qi = t / n;
        const long long i = t - qi * n;
        const T* table = tables + qi * (long long)n_sub * n_codes;
        const C* row = codes + i * n_sub;
        T acc = table[(long long)row[0]];
        for (int m = 1; m < n_sub; ++m) {
            acc += table[(long long)m * n_codes + (long long)row[m]];
        }
        dist[t] = acc;
    }
}
"""

_CTYPES = {"uint8": "unsigned char", "uint16": "unsigned short", "int32": "int", "int64": "long long"}


@functools.lru_cache(maxsize=None)
def _cupy_adc_kernel(ftype: str, ctype: str):
    import cupy

    return cupy.RawKernel(f"typedef {ftype} T;\ntypedef {ctype} C;\n" + _ADC_CUDA, "adc_distances")


def _adc_cupy(tables, codes, k: int):
    import cupy

    tables = cupy.ascontiguousarray(tables)
    if codes.dtype.name not in _CTYPES:
        codes = codes.astype(cupy.int64)
    codes = cupy.ascontiguousarray(codes)
    q, n_sub, n_codes = tables.shape
    n = codes.shape[0]
    kernel = _cupy_adc_kernel("float" if tables.dtype == cupy.float32 else "double", _CTYPES[codes.dtype.name])
    out_d = cupy.empty((q, k), dtype=tables.dtype)
    out_i = cupy.empty((q, k), dtype=cupy.int64)
    step = max(1, _QUERY_BLOCK_BYTES // (tables.itemsize * n))
    threads = 256
    for s in range(0, q, step):
        block = tables[s:s + step]
        dist = cupy.empty((block.shape[0], n), dtype=tables.dtype)  # (block, n)
        blocks = max(1, min((dist.size + threads - 1) // threads, 1 << 20))
        kernel((blocks,), (threads,), (block, codes, np.int32(block.shape[0]), np.int64(n),
                                       np.int32(n_sub), np.int32(n_codes), dist))
        order = cupy.argsort(dist, axis=1)[:, :k]  # CuPy's sort is stable: ties -> lower index
        out_i[s:s + step] = order
        out_d[s:s + step] = cupy.take_along_axis(dist, order, axis=1)
    return out_d, out_i


_KERNELS = {"numpy": _adc_numpy, "numba": _adc_numba, "cupy": _adc_cupy}


# ----------------------------------------------------------- public entry
def adc_search(tables: Any, codes: Any, k: int, *, backend: str | None = None) -> tuple[Any, Any]:
    """The ``k`` database rows nearest to each query, from per-subspace distance tables.

    Row ``i`` is at distance ``sum_m tables[q, m, codes[i, m]]`` from query
    ``q`` (accumulated in the tables' dtype, subspace 0 first). Results are
    sorted ascending; ties go to the lower row index.

    Parameters
    ----------
    tables : array of shape (q, M, K)
        Floating distance tables (``tables[q, m, j]`` = squared distance from
        the ``m``-th slice of query ``q`` to codeword ``j`` of subspace ``m``); finite.
    codes : array of shape (n, M)
        Integer codes in ``[0, K)``, same kind of array as ``tables``.
    k : int
        Number of neighbours, ``1 <= k <= n``.
    backend : {None, "auto", "numpy", "numba", "cupy"}, optional
        Kernel; ``None``/``"auto"`` picks CuPy for GPU input, numba otherwise.

    Returns
    -------
    distances : array of shape (q, k)
        Tables' dtype, ascending along each row.
    indices : array of shape (q, k), int64
        Database rows. Both are the same kind of array as ``tables``.

    Raises
    ------
    TypeError
        Wrong dtypes or kinds.
    ValueError
        Shapes that do not agree, codes out of range, ``k`` outside ``[1, n]``, NaN.

    References
    ----------
    Jegou, Douze and Schmid, "Product Quantization for Nearest Neighbor Search", 2011.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.compression import adc_search
    >>> tables = np.array([[[0.0, 4.0], [1.0, 0.0]]])  # 1 query, M=2 subspaces, K=2 codewords
    >>> codes = np.array([[0, 0], [0, 1], [1, 1]])
    >>> d, i = adc_search(tables, codes, 2)
    >>> d.tolist(), i.tolist()
    ([[0.0, 1.0]], [[1, 0]])
    """
    kind = check_array(tables, "tables", ndim=3, dtype_kind="f")
    c_kind = check_array(codes, "codes", ndim=2, dtype_kind="iu", finite=False)
    if kind != c_kind:
        raise TypeError(f"tables and codes must be the same kind of array; got {kind} and {c_kind}")
    if codes.shape[1] != tables.shape[1]:
        raise ValueError(
            f"codes must have one column per subspace M = {tables.shape[1]}; got codes of shape {tuple(codes.shape)}"
        )
    n = codes.shape[0]
    k = check_int(k, "k", minimum=1)
    if k > n:
        raise ValueError(f"k must be <= the number of database rows n = {n}; got k = {k}")
    if kind == "torch":
        tables, codes = tables.detach(), codes.detach()
    name, kernel = dispatch(_KERNELS, backend, tables)
    tb, cb = for_backend(tables, name), for_backend(codes, name)
    if int(cb.min()) < 0 or int(cb.max()) >= tables.shape[2]:
        raise ValueError(f"codes must lie in [0, K) = [0, {tables.shape[2]}); got values in [{int(cb.min())}, {int(cb.max())}]")
    if tb.dtype not in (np.float32, np.float64):
        tb = tb.astype(np.float32)
    out_d, out_i = kernel(tb, cb, k)
    return to_kind(out_d, kind, like=tables), to_kind(out_i, kind, like=tables)

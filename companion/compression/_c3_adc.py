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
@numba.njit(cache=True, parallel=True)
def _adc_topk_numba(tables, codes, out_d, out_i):  # pragma: no cover - jitted
    """Scan all rows for every query, keeping the k best in a sorted insertion buffer."""
    q, n_sub, _ = tables.shape
    n = codes.shape[0]
    k = out_d.shape[1]
    for qi in numba.prange(q):
        table = tables[qi]  # (M, K)
        best_d = out_d[qi]
        best_i = out_i[qi]
        filled = 0
        for i in range(n):
            acc = table[0, codes[i, 0]]
            for m in range(1, n_sub):
                acc += table[m, codes[i, m]]
            if filled < k or acc < best_d[k - 1]:  # strict: an equal later row stays out
                p = filled if filled < k else k - 1
                while p > 0 and best_d[p - 1] > acc:  # strict: an equal earlier row stays ahead
                    best_d[p] = best_d[p - 1]
                    best_i[p] = best_i[p - 1]
                    p -= 1
                best_d[p] = acc
                best_i[p] = i
                if filled < k:
                    filled += 1


def _adc_numba(tables: np.ndarray, codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    tables = np.ascontiguousarray(tables)
    codes = np.ascontiguousarray(codes)
    out_d = np.empty((tables.shape[0], k), dtype=tables.dtype)
    out_i = np.empty((tables.shape[0], k), dtype=np.int64)
    _adc_topk_numba(tables, codes, out_d, out_i)
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

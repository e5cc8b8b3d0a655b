"""Block-sparse attention kernels: visit only the key blocks a block mask allows.

The sequence is cut into blocks of ``block_size`` tokens. A boolean block mask
``M`` of shape ``(n_query_blocks, n_key_blocks)`` says which key blocks each
query block may read. The kernels receive that mask in compressed-row form
(:func:`block_mask_to_csr`): for query block ``i`` the allowed key blocks are
``cols[row_ptr[i]:row_ptr[i + 1]]``. They loop over exactly those blocks and
never touch the others, so the work is proportional to the number of nonzero
blocks, not to ``n_query_blocks * n_key_blocks``.

Softmax over a row that arrives a chunk of key blocks at a time uses the
*online* softmax (a running maximum ``m``, a running normaliser ``l`` and an
unnormalised output ``acc``, rescaled whenever ``m`` grows), the same
bookkeeping as FlashAttention. With ``causal=True`` key ``j`` is visible to
query ``i`` only when ``j <= i``; blocks above the diagonal are skipped (the
public function removes them), and the diagonal block is cut to the triangle.

The CPU path (:func:`block_sparse_numba`) does the two matrix products of each
chunk (scores ``K Q^T`` and ``P^T V``) with NumPy's BLAS and the softmax in
between with numba kernels; consecutive query blocks that read the same key
blocks (the dense causal mask: all of them) are processed as one run of up to
256 queries, so the products are wide. The CuPy path is one RawKernel.

These are the low-level kernels; the validated public entry point is
:func:`companion.memory.block_sparse_attention`.
"""

from __future__ import annotations

import functools
from typing import Any

import numba
import numpy as np

from .._fastmath import _f32_bits, _f32_from_bits, exp_f64
from .._threads import SMALL_WORK, default_workers, run_tasks

__all__ = ["block_mask_to_csr", "block_sparse_numba", "block_sparse_cupy"]


def block_mask_to_csr(block_mask: Any) -> tuple[np.ndarray, np.ndarray]:
    """Compressed-row form of a boolean block mask.

    Parameters
    ----------
    block_mask : array of shape (n_query_blocks, n_key_blocks)
        Boolean (or 0/1) NumPy array; nonzero means "this query block reads
        this key block".

    Returns
    -------
    row_ptr : numpy.ndarray of shape (n_query_blocks + 1,), int64
        Query block ``i`` owns entries ``row_ptr[i]`` to ``row_ptr[i + 1] - 1``.
    cols : numpy.ndarray of shape (nnz,), int64
        Key-block indices, ascending within each row.

    Examples
    --------
    >>> import numpy as np
    >>> row_ptr, cols = block_mask_to_csr(np.array([[1, 0], [1, 1]], dtype=bool))
    >>> row_ptr.tolist(), cols.tolist()
    ([0, 1, 3], [0, 0, 1])
    """
    mask = np.asarray(block_mask).astype(bool)
    if mask.ndim != 2:
        raise ValueError(f"block_mask must have 2 dimensions; got shape {mask.shape}")
    counts = mask.sum(axis=1)  # (n_query_blocks,)
    row_ptr = np.zeros(mask.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=row_ptr[1:])
    cols = np.nonzero(mask)[1].astype(np.int64)  # row-major order: ascending within a row
    return row_ptr, cols


# ------------------------------------------------------------------ numba
_FAST = {"reassoc", "contract", "nsz", "arcp"}  # vectorised sums; infinities keep their meaning
_SCORE_BUDGET = 256 << 10  # bytes of one chunk's scores: rows of heads are processed in groups that fit


_F32 = np.float32
_LN2 = 0.6931471805599453
_LOG2E = 1.4426950408889634


@numba.njit(cache=True, inline="always", fastmath=_FAST)
def _exp2_softmax_f32(t):  # pragma: no cover - jitted
    """``2**t`` in float32 for the softmax's ``t <= 0`` (a few ulps above 0 allowed), branch-free.

    ``t`` is clamped at -125 (``2**-125`` is nothing beside the row maximum's
    ``2**0``); ``t = n + f`` with ``n`` the nearest integer and ``|f| <= 1/2``
    (exact); ``2**f`` is a degree-5 polynomial (near-minimax for the relative
    error on ``[-1/2, 1/2]``: 7.5e-8, 2.4e-7 once evaluated in float32); ``n``
    is added to the exponent bits (``2**f`` lies in [0.70, 1.42], so the result
    stays a normal float). About 14 vector instructions per 8 or 16 values,
    half of a general ``exp``: this is the softmax's inner loop.
    """
    t = max(_F32(t), _F32(-125.0))
    n = np.floor(t + _F32(0.5))
    f = t - n
    p = _F32(1.32765e-3)
    p = p * f + _F32(9.67554e-3)
    p = p * f + _F32(5.550713e-2)
    p = p * f + _F32(0.2402212)
    p = p * f + _F32(0.69314697)
    p = p * f + _F32(1.00000007)
    return _f32_from_bits(np.int32(_f32_bits(p) + (np.int32(n) << np.int32(23))))


@numba.njit(cache=True, inline="always", fastmath=_FAST)
def _exp2_key_row(row, r0, c2, single, m, l):  # pragma: no cover - jitted
    """``row[r] <- 2**(c2 * row[r] - m[r])`` and ``l[r] += row[r]`` for ``r >= r0``; ``row[r] <- 0`` below.

    The loop runs over the whole row with a select: a loop starting at a
    variable ``r0`` is not vectorised by numba/LLVM here (measured 5x slower
    on the diagonal region), the select costs one instruction per vector.
    """
    zero = row.dtype.type(0.0)
    if single:
        for r in range(row.shape[0]):
            e = _exp2_softmax_f32(row[r] * c2 - m[r])
            e = e if r >= r0 else zero
            row[r] = e
            l[r] += e
    else:
        for r in range(row.shape[0]):
            e = exp_f64((row[r] * c2 - m[r]) * _LN2)
            e = e if r >= r0 else zero
            row[r] = e
            l[r] += e


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _softmax_chunk(st, n_keys, n_diag, c2, single, first, m, l, acc, pv):  # pragma: no cover - jitted
    """One chunk of keys of the online softmax, scores stored key-major, in place.

    ``st`` (group, width, bs) holds ``st[g, c, r] = q_r . k_c`` for the chunk's
    keys ``c < n_keys``. Running state per (row of heads ``g``, query ``r``):
    maximum ``m`` of ``c2 * score`` (log2 units: ``c2 = scale * log2(e)``),
    normaliser ``l`` (group, bs), unnormalised output ``acc``
    (group, bs, dv); ``pv`` (group, bs, dv) is the previous chunk's ``P^T V``,
    not yet added (ignored when ``first``). The chunk's maximum updates ``m``;
    ``acc <- (acc + pv) * 2**(m_old - m_new)`` and ``l`` likewise; then
    ``st[g, c, r] <- 2**(c2 * st[g, c, r] - m_new) = exp(scale * (score - max))`` over the keys query ``r``
    sees (0 elsewhere), added to ``l``. The last ``n_diag`` keys (0: none) are the
    diagonal region, the keys of the queries' own tokens: its key ``c`` is seen by
    query ``r`` only when ``c <= r`` (``bs`` queries may span several blocks: the
    causal cut is per token). Key 0 of a chunk is seen by every query. Key-major storage makes every loop
    elementwise over the ``bs`` queries of one key row, so it vectorises;
    the exponential is :func:`_exp2_softmax_f32` (``single``) or ``exp_f64`` of
    :mod:`companion._fastmath`.
    """
    group, _, bs = st.shape
    dv = acc.shape[2]
    first_diag = n_keys - n_diag  # keys before the diagonal region: seen by every query
    diag = n_diag > 0
    cm = np.empty(bs, dtype=st.dtype)  # the chunk's maxima
    low = st.dtype.type(-np.inf)
    for g in range(group):
        s = st[g]
        mg = m[g]
        lg = l[g]
        for r in range(bs):
            cm[r] = s[0, r] * c2
        for c in range(1, first_diag):
            row = s[c]
            for r in range(bs):
                cm[r] = max(cm[r], row[r] * c2)
        if diag:
            for c in range(max(first_diag, 1), n_keys):
                row = s[c]
                r0 = c - first_diag
                for r in range(bs):  # whole row with a select: vectorised (see _exp2_key_row)
                    x = row[r] * c2 if r >= r0 else low
                    cm[r] = max(cm[r], x)
        if first:
            for r in range(bs):
                mg[r] = cm[r]
                lg[r] = 0.0
        else:
            for r in range(bs):
                m_new = max(mg[r], cm[r])
                corr = exp_f64((mg[r] - m_new) * _LN2)
                mg[r] = m_new
                lg[r] *= corr
                for t in range(dv):
                    acc[g, r, t] = (acc[g, r, t] + pv[g, r, t]) * corr
        for c in range(first_diag):
            _exp2_key_row(s[c], 0, c2, single, mg, lg)
        if diag:
            for c in range(first_diag, n_keys):
                _exp2_key_row(s[c], c - first_diag, c2, single, mg, lg)
    if first:
        acc[...] = 0.0


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _finish_rows(acc, pv, l, out):  # pragma: no cover - jitted
    """``out[g, r] = (acc[g, r] + pv[g, r]) / l[g, r]``: add the last chunk and normalise."""
    group, bs, dv = out.shape
    for g in range(group):
        for r in range(bs):
            inv = 1.0 / l[g, r]
            for t in range(dv):
                out[g, r, t] = (acc[g, r, t] + pv[g, r, t]) * inv


_SMALL_WORK = SMALL_WORK  # below this many multiply-adds one thread does everything (no thread start-up)
_CHUNK_KEYS = 512  # keys per chunk: a chunk's scores, chunk_keys x super_queries, stay in the L2 cache
_SUPER_QUERIES = 256  # queries of consecutive blocks with the same key blocks done together: wider gemms


class _Workspace:
    """Buffers one worker reuses across its tasks: chunk scores, gathered K and V, softmax state."""

    def __init__(self, group, bs, super_blocks, chunk_blocks, d, dv, dtype):
        nq = super_blocks * bs
        self.chunk_blocks = chunk_blocks
        self.scores = np.empty(group * chunk_blocks * bs * nq, dtype=dtype)  # (group, keys, queries), flat
        self.k_buf = np.empty((group, chunk_blocks, bs, d), dtype=dtype)
        self.v_buf = np.empty((group, chunk_blocks, bs, dv), dtype=dtype)
        self.m = np.empty(group * nq, dtype=dtype)
        self.l = np.empty(group * nq, dtype=dtype)
        self.acc = np.empty(group * nq * dv, dtype=dtype)
        self.pv = np.empty(group * nq * dv, dtype=dtype)


def _attend_query_blocks(q, k, v, c, i0, nqb, g0, g1, bs, causal, scale, ws, out):
    """Rows ``g0:g1`` of heads, query blocks ``i0 : i0 + nqb``, all over the key blocks ``c``.

    ``c`` is ascending and nonempty; with ``causal`` and ``c[-1] == i0 + nqb - 1``
    its last ``nqb`` blocks are the queries' own (``i0 ... i0 + nqb - 1``: the
    diagonal region, cut per token), the others lie before ``i0``.
    """
    gn = g1 - g0
    rows, n_k, d = k.shape
    dv = v.shape[2]
    nq = nqb * bs
    single = q.dtype == np.float32
    c2 = q.dtype.type(scale * _LOG2E)  # scores in log2 units: exp(scale * s) = 2**(c2 * s)
    q_t = q[g0:g1, i0 * bs:i0 * bs + nq].transpose(0, 2, 1)  # (gn, d, nq)
    cb = ws.chunk_blocks
    width = cb * bs
    scores = ws.scores[:gn * width * nq].reshape(gn, width, nq)
    m = ws.m[:gn * nq].reshape(gn, nq)
    l = ws.l[:gn * nq].reshape(gn, nq)
    acc = ws.acc[:gn * nq * dv].reshape(gn, nq, dv)
    pv = ws.pv[:gn * nq * dv].reshape(gn, nq, dv)
    n_diag_total = nq if causal and c[-1] == i0 + nqb - 1 else 0
    first = len(c) % cb or cb  # chunks aligned to the end: the diagonal region (<= cb blocks) is never cut
    for j0 in range(0, len(c), cb) if first == cb else [0, *range(first, len(c), cb)]:
        j1 = first if j0 == 0 else j0 + cb
        cj = c[j0:j1]
        nb = len(cj)
        n_keys = nb * bs
        if cj[-1] - cj[0] == nb - 1:  # consecutive blocks: views, nothing copied
            k_j = k[g0:g1, cj[0] * bs:(cj[-1] + 1) * bs]  # (gn, n_keys, d)
            v_j = v[g0:g1, cj[0] * bs:(cj[-1] + 1) * bs]  # (gn, n_keys, dv)
        else:
            np.take(k.reshape(rows, n_k // bs, bs, d)[g0:g1], cj, axis=1, out=ws.k_buf[:gn, :nb], mode="clip")
            np.take(v.reshape(rows, n_k // bs, bs, dv)[g0:g1], cj, axis=1, out=ws.v_buf[:gn, :nb], mode="clip")
            k_j = ws.k_buf[:gn, :nb].reshape(gn, n_keys, d)
            v_j = ws.v_buf[:gn, :nb].reshape(gn, n_keys, dv)
        st = scores[:, :n_keys]  # (gn, n_keys, nq): scores stored key-major
        np.matmul(k_j, q_t, out=st)  # BLAS gemm
        n_diag = n_diag_total if j1 == len(c) else 0
        _softmax_chunk(scores, n_keys, n_diag, c2, single, j0 == 0, m, l, acc, pv)
        np.matmul(st.transpose(0, 2, 1), v_j, out=pv)  # BLAS gemm: this chunk's P^T V
    _finish_rows(acc, pv, l, out[g0:g1, i0 * bs:i0 * bs + nq])


def _super_blocks(blocks, nnz, causal, max_super):
    """Runs ``(i0, nqb, key_blocks)`` of consecutive query blocks that can share their key blocks.

    Without ``causal``: equal lists. With ``causal``: block ``i0 + a`` reads the
    same blocks before ``i0`` plus ``i0 ... i0 + a`` (so the run reads the key
    blocks of its last query block, the diagonal region cut per token).
    """
    n_qb = len(blocks)
    runs = []
    i = 0
    while i < n_qb:
        if nnz[i] == 0:
            i += 1
            continue
        c0 = blocks[i]
        n = 1
        if causal:
            if c0[-1] == i:
                p = len(c0) - 1
                while n < max_super and i + n < n_qb:
                    cn = blocks[i + n]
                    if not (len(cn) == p + n + 1 and np.array_equal(cn[:p], c0[:p])
                            and cn[p] == i and cn[-1] - cn[p] == n):  # ascending and unique: i ... i + n
                        break
                    n += 1
        else:
            while n < max_super and i + n < n_qb and np.array_equal(blocks[i + n], c0):
                n += 1
        runs.append((i, n, blocks[i + n - 1]))
        i += n
    return runs


def block_sparse_numba(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    row_ptr: np.ndarray,
    cols: np.ndarray,
    block_size: int,
    causal: bool,
    scale: float,
    *,
    return_visits: bool = False,
    workers: int | None = None,
):
    """Block-sparse attention on the CPU, over the listed key blocks only.

    Inputs are not validated: call :func:`companion.memory.block_sparse_attention`.

    How it runs: a task is a run of up to ``256 / block_size`` consecutive
    query blocks that read the same key blocks (without ``causal``: equal
    lists; with it: the same blocks before the run plus each block's own
    diagonal, as in the dense causal mask), for a group of rows of heads; other
    query blocks are runs of one. 256-query runs make both products wide
    enough for the BLAS to run near its peak (about 130 GFLOP/s per core at
    inner dimension 64 against about 110 for 64 queries); the causal cut is
    applied per token inside the softmax kernel. The run's key blocks are taken
    in chunks of at most 512 keys (aligned to the end, so the diagonal region
    is never split), each chunk as one matrix ``K_i`` (a view when they are
    consecutive, else gathered with ``numpy.take`` into a reused buffer); the
    scores ``Q_i K_i^T`` and the output ``P_i V_i`` are two matrix products
    through NumPy's BLAS (``np.matmul``, float32 ``sgemm`` or float64
    ``dgemm``); between them one numba kernel applies the causal cut of the
    diagonal block, the row maximum, a vectorised polynomial ``exp``
    (:mod:`companion._fastmath`) and the row sums, and the output is divided by
    them last; the chunks are combined by the online softmax. Tasks, most work first, are shared by
    ``workers`` Python threads (the BLAS and the numba kernel release the GIL),
    each with its own buffers and the BLAS pinned to one thread meanwhile (via
    threadpoolctl), so the parallelism is coarse: no thread barrier per product.
    The work is proportional to the number of listed blocks; masked blocks are
    never read.

    Parameters
    ----------
    q : numpy.ndarray of shape (rows, n_q, d)
        Queries; ``rows`` is batch times heads; ``n_q`` a multiple of ``block_size``.
    k : numpy.ndarray of shape (rows, n_k, d)
        Keys.
    v : numpy.ndarray of shape (rows, n_k, dv)
        Values.
    row_ptr, cols : numpy.ndarray of int64
        The block mask from :func:`block_mask_to_csr`. With ``causal`` the
        blocks above the diagonal should already be removed (any left are skipped).
    block_size : int
        Tokens per block.
    causal : bool
        Cut the diagonal blocks to ``j <= i``.
    scale : float
        Multiplier of the dot products.
    return_visits : bool, default False
        Also return ``visits`` of shape (rows, n_query_blocks): how many key
        blocks were processed for each query block.
    workers : int, optional
        Threads; default ``numba.get_num_threads()``, and one for small jobs
        (under about 4 million multiply-adds).

    Returns
    -------
    numpy.ndarray of shape (rows, n_q, dv)
        Same dtype as ``q`` (float32 or float64); and ``visits`` when asked.
        A query row that reads no key gets zeros.
    """
    q = np.ascontiguousarray(q)
    dtype = q.dtype
    k = np.ascontiguousarray(k, dtype=dtype)
    v = np.ascontiguousarray(v, dtype=dtype)
    rows, n_q, d = q.shape
    dv = v.shape[2]
    bs = int(block_size)
    n_qb = n_q // bs
    row_ptr = np.asarray(row_ptr, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    out = np.empty((rows, n_q, dv), dtype=dtype)
    visits = np.zeros((rows, n_qb), dtype=np.int64)
    blocks = []  # key blocks of each query block, blocks above the diagonal dropped when causal
    for i in range(n_qb):
        c = cols[row_ptr[i]:row_ptr[i + 1]]
        blocks.append(c[c <= i] if causal else c)
    nnz = np.array([len(c) for c in blocks], dtype=np.int64)  # (n_qb,)
    for i in np.flatnonzero(nnz == 0):
        out[:, i * bs:(i + 1) * bs] = 0
    max_blocks = int(nnz.max(initial=0))
    if max_blocks == 0:
        return (out, visits) if return_visits else out
    chunk_blocks = min(max_blocks, max(1, _CHUNK_KEYS // bs))
    max_super = max(1, min(_SUPER_QUERIES // bs, _CHUNK_KEYS // bs))  # <= chunk_blocks whenever merged
    runs = _super_blocks(blocks, nnz, causal, max_super)
    super_blocks = max(n for _, n, _ in runs)
    group = int(max(1, min(rows, _SCORE_BUDGET // (chunk_blocks * bs * super_blocks * bs * dtype.itemsize))))
    order = np.argsort([-len(c) * n for _, n, c in runs], kind="stable")
    tasks = [(runs[t], g0) for t in order for g0 in range(0, rows, group)]
    work = int(nnz.sum()) * rows * bs * bs * (d + dv)  # multiply-adds of the two products
    if workers is None:
        workers = default_workers(work, _SMALL_WORK)
    workers = max(1, min(int(workers), len(tasks)))
    scale = float(scale)
    shape = (group, bs, super_blocks, chunk_blocks, d, dv, dtype)

    def attend(task, ws):
        (i0, nqb, c), g0 = task
        g1 = min(rows, g0 + group)
        _attend_query_blocks(q, k, v, c, i0, nqb, g0, g1, bs, causal, scale, ws, out)
        visits[g0:g1, i0:i0 + nqb] += nnz[i0:i0 + nqb]

    run_tasks(tasks, attend, lambda: _Workspace(*shape), workers)
    return (out, visits) if return_visits else out


# ------------------------------------------------------------------- CuPy
_BLOCK_SPARSE_CUDA = r"""
extern "C" __global__ void block_sparse_attention(
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
    const long long* __restrict__ row_ptr, const long long* __restrict__ cols,
    const int n_q, const int n_k, const int causal, const T scale, T* __restrict__ out)
{
    // grid (query block, row of heads); one thread per query row of the block
    const int qb = blockIdx.x;
    const long long b = blockIdx.y;
    const int r = threadIdx.x;
    const int i = qb * BS + r;
    __shared__ T k_tile[BS * D];
    __shared__ T v_tile[BS * DV];
    T q_row[D];
    T acc[DV];
    for (int t = 0; t < D; ++t) q_row[t] = q[(b * n_q + i) * D + t] * scale;
    for (int t = 0; t < DV; ++t) acc[t] = (T)0;
    T m = (T)(-3.0e38), l = (T)0;  // below any score: the first block rescales by exp(-huge) = 0
    for (long long p = row_ptr[qb]; p < row_ptr[qb + 1]; ++p) {
        const int k0 = (int)cols[p] * BS;
        __syncthreads();  // the previous tile is no longer read
        for (int idx = r; idx < BS * D; idx += BS) k_tile[idx] = k[(b * n_k + k0) * D + idx];
        for (int idx = r; idx < BS * DV; idx += BS) v_tile[idx] = v[(b * n_k + k0) * DV + idx];
        __syncthreads();
        int n_keys = BS;
        if (causal) n_keys = min(BS, i - k0 + 1);
        for (int c = 0; c < n_keys; ++c) {
            T s = (T)0;
            for (int t = 0; t < D; ++t) s += q_row[t] * k_tile[c * D + t];
            const T m_new = s > m ? s : m;
            const T correction = exp(m - m_new);
            const T w = exp(s - m_new);
            l = l * correction + w;
            for (int t = 0; t < DV; ++t) acc[t] = acc[t] * correction + w * v_tile[c * DV + t];
            m = m_new;
        }
    }
    const T inv = l > (T)0 ? (T)1 / l : (T)0;
    for (int t = 0; t < DV; ++t) out[(b * n_q + i) * DV + t] = acc[t] * inv;
}
"""


@functools.lru_cache(maxsize=None)
def _cupy_block_sparse_kernel(ctype: str, block_size: int, d: int, dv: int):
    import cupy

    header = f"typedef {ctype} T;\n#define BS {block_size}\n#define D {d}\n#define DV {dv}\n"
    return cupy.RawKernel(header + _BLOCK_SPARSE_CUDA, "block_sparse_attention")


def block_sparse_cupy(q, k, v, row_ptr, cols, block_size: int, causal: bool, scale: float):
    """Block-sparse attention on the GPU: a CuPy RawKernel over (query block, row of heads).

    Each thread owns one query row; the threads of a block load each listed key
    and value block into shared memory once and run the online softmax over it.
    Same arguments and result as :func:`block_sparse_numba` (CuPy arrays,
    C-contiguous, float32 or float64); ``block_size`` at most 1024.
    """
    import cupy

    dtype = np.dtype(q.dtype)
    ctype = "float" if dtype == np.float32 else "double"
    rows, n_q, d = q.shape
    n_k, dv = k.shape[1], v.shape[2]
    kernel = _cupy_block_sparse_kernel(ctype, int(block_size), int(d), int(dv))
    out = cupy.empty((rows, n_q, dv), dtype=dtype)
    kernel(
        (n_q // block_size, rows), (int(block_size),),
        (cupy.ascontiguousarray(q), cupy.ascontiguousarray(k), cupy.ascontiguousarray(v),
         cupy.asarray(row_ptr, dtype=cupy.int64), cupy.asarray(cols, dtype=cupy.int64),
         np.int32(n_q), np.int32(n_k), np.int32(bool(causal)), dtype.type(scale), out),
    )
    return out

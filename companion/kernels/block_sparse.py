"""Block-sparse attention kernels: visit only the key blocks a block mask allows.

The sequence is cut into blocks of ``block_size`` tokens. A boolean block mask
``M`` of shape ``(n_query_blocks, n_key_blocks)`` says which key blocks each
query block may read. The kernels receive that mask in compressed-row form
(:func:`block_mask_to_csr`): for query block ``i`` the allowed key blocks are
``cols[row_ptr[i]:row_ptr[i + 1]]``. They loop over exactly those blocks and
never touch the others, so the work is proportional to the number of nonzero
blocks, not to ``n_query_blocks * n_key_blocks``.

Softmax over a row that arrives one key block at a time uses the *online*
softmax (a running maximum ``m``, a running normaliser ``l`` and an unnormalised
output ``acc``, rescaled whenever ``m`` grows), the same bookkeeping as
FlashAttention. With ``causal=True`` key ``j`` is visible to query ``i`` only
when ``j <= i``; blocks above the diagonal must already be removed from the list
(the public function does that), and the diagonal block is cut to the triangle.

These are the low-level kernels; the validated public entry point is
:func:`companion.memory.block_sparse_attention`.
"""

from __future__ import annotations

import functools
from typing import Any

import numba
import numpy as np

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


@numba.njit(cache=True, parallel=True, fastmath=_FAST)
def _block_sparse_rows(q, k, v, row_ptr, cols, block_size, causal, scale, out, visits):  # pragma: no cover - jitted
    """Online-softmax attention of every (row of heads, query block) over its listed key blocks.

    ``q`` (bh, n_q, d), ``k`` (bh, n_k, d), ``v`` (bh, n_k, dv), ``out``
    (bh, n_q, dv); ``visits[b, i]`` counts the key blocks processed for query
    block ``i`` of row ``b`` (a test hook that proves masked blocks are skipped).
    """
    bh, n_q, d = q.shape
    dv = v.shape[2]
    n_qb = n_q // block_size
    for task in numba.prange(bh * n_qb):
        b = task // n_qb
        qb = task % n_qb
        q0 = qb * block_size
        m = np.full(block_size, -np.inf)  # running max per query row
        l = np.zeros(block_size)  # running normaliser
        acc = np.zeros((block_size, dv))  # unnormalised output
        s = np.empty(block_size)  # scores of one query row against one key block
        for ptr in range(row_ptr[qb], row_ptr[qb + 1]):
            k0 = cols[ptr] * block_size
            visits[b, qb] += 1
            for r in range(block_size):
                i = q0 + r
                n_keys = block_size
                if causal:
                    n_keys = min(block_size, i - k0 + 1)
                if n_keys <= 0:
                    continue
                row_max = m[r]
                for c in range(n_keys):
                    dot = 0.0
                    for t in range(d):
                        dot += q[b, i, t] * k[b, k0 + c, t]
                    s[c] = dot * scale
                    if s[c] > row_max:
                        row_max = s[c]
                correction = np.exp(m[r] - row_max)  # 0 on the first block (m = -inf)
                l[r] *= correction
                for t in range(dv):
                    acc[r, t] *= correction
                for c in range(n_keys):
                    p = np.exp(s[c] - row_max)
                    l[r] += p
                    for t in range(dv):
                        acc[r, t] += p * v[b, k0 + c, t]
                m[r] = row_max
        for r in range(block_size):
            inv = 1.0 / l[r] if l[r] > 0.0 else 0.0  # a row that sees no key outputs zeros
            for t in range(dv):
                out[b, q0 + r, t] = acc[r, t] * inv


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
):
    """Block-sparse attention on the CPU (numba), over the listed key blocks only.

    Inputs are not validated: call :func:`companion.memory.block_sparse_attention`.

    Parameters
    ----------
    q : numpy.ndarray of shape (rows, n_q, d)
        Queries; ``rows`` is batch times heads; ``n_q`` a multiple of ``block_size``.
    k : numpy.ndarray of shape (rows, n_k, d)
        Keys.
    v : numpy.ndarray of shape (rows, n_k, dv)
        Values.
    row_ptr, cols : numpy.ndarray of int64
        The block mask from :func:`block_mask_to_csr`, with blocks above the
        diagonal already removed when ``causal``.
    block_size : int
        Tokens per block.
    causal : bool
        Cut the diagonal blocks to ``j <= i``.
    scale : float
        Multiplier of the dot products.
    return_visits : bool, default False
        Also return ``visits`` of shape (rows, n_query_blocks): how many key
        blocks the kernel processed for each query block.

    Returns
    -------
    numpy.ndarray of shape (rows, n_q, dv)
        Same dtype as ``q`` (float32 or float64); and ``visits`` when asked.
    """
    out = np.empty((q.shape[0], q.shape[1], v.shape[2]), dtype=q.dtype)
    visits = np.zeros((q.shape[0], q.shape[1] // block_size), dtype=np.int64)
    _block_sparse_rows(q, k, v, row_ptr, cols, int(block_size), bool(causal), float(scale), out, visits)
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

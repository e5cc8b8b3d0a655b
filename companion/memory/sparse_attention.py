"""Block-sparse attention: which earlier tokens a query may read, decided block by block.

Papers: Child et al., "Generating Long Sequences with Sparse Transformers" (2019)
(strided and fixed patterns); Zaheer et al., "Big Bird: Transformers for Longer
Sequences" (2020) (window + global + random); Ainslie et al., "ETC: Encoding Long
and Structured Inputs in Transformers" (2020) (global-local attention).

A pattern is a boolean **block mask** of shape ``(n_blocks, n_blocks)``: entry
``(i, j)`` says that the tokens of query block ``i`` attend to the tokens of key
block ``j``. One kernel runs every pattern; only the builders differ:

============================== ============================================ ======================
builder                        key blocks of query block ``i``              blocks per row
============================== ============================================ ======================
``dense_block_mask``           all                                          ``n``
``sliding_window_block_mask``  ``|i - j| < window``                         ``O(window)``
``strided_block_mask``         the last ``stride`` blocks and every         ``O(sqrt n)``
                               ``stride``-th block before them
``fixed_block_mask``           its own chunk of ``stride`` blocks and the   ``O(sqrt n)``
                               last ``summary`` blocks of every chunk
``window_global_block_mask``   window, plus ``n_global`` global blocks      ``O(window + g)``
                               that read and are read by every block
``bigbird_block_mask``         window + global + ``n_random`` random blocks ``O(window + g + r)``
============================== ============================================ ======================

With ``stride ~ sqrt(n_blocks)`` the strided and fixed patterns cost
``O(n sqrt n)`` in all, the window patterns ``O(n)``, dense attention ``O(n^2)``.
With ``causal=True`` blocks above the diagonal are dropped and the diagonal
block is cut to the lower triangle, so a query never reads a later token.

Three layers: :func:`block_sparse_attention` validates and dispatches;
``_block_sparse_numpy`` is the readable reference (dense scores, masked);
:mod:`companion.kernels.block_sparse` holds the numba and CuPy kernels, which
visit only the allowed blocks.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._validation import check_array, check_int
from ..backend import dispatch, for_backend, to_kind, to_numpy
from ..kernels.block_sparse import block_mask_to_csr, block_sparse_cupy, block_sparse_numba
from ._m5_longrange import BlockMaskedTransformer, needle_task, needle_vocab_size

__all__ = [
    "block_sparse_attention",
    "token_mask",
    "dense_block_mask",
    "sliding_window_block_mask",
    "strided_block_mask",
    "fixed_block_mask",
    "window_global_block_mask",
    "bigbird_block_mask",
    "PATTERNS",
    "BlockMaskedTransformer",
    "needle_task",
    "needle_vocab_size",
]


# -------------------------------------------------------------- mask builders
def _n_blocks(n_blocks: Any) -> int:
    return check_int(n_blocks, "n_blocks", minimum=1)


def _finish(mask: np.ndarray, causal: bool) -> np.ndarray:
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"causal must be a bool; got {type(causal).__name__} {causal!r}")
    return np.tril(mask) if causal else mask


def dense_block_mask(n_blocks: int, *, causal: bool = True) -> np.ndarray:
    """Every query block reads every key block (lower triangle when causal).

    Parameters
    ----------
    n_blocks : int
        Blocks in the sequence (>= 1).
    causal : bool, default True
        Keep only key blocks ``j <= i``.

    Returns
    -------
    numpy.ndarray of shape (n_blocks, n_blocks), bool

    Examples
    --------
    >>> dense_block_mask(3).astype(int).tolist()
    [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    """
    n = _n_blocks(n_blocks)
    return _finish(np.ones((n, n), dtype=bool), causal)


def sliding_window_block_mask(n_blocks: int, window: int, *, causal: bool = True) -> np.ndarray:
    """Local attention: query block ``i`` reads key blocks ``j`` with ``|i - j| < window``.

    Parameters
    ----------
    n_blocks : int
        Blocks in the sequence (>= 1).
    window : int
        Width in blocks (>= 1); ``window=1`` keeps only the diagonal block.
    causal : bool, default True
        Keep only ``j <= i`` (then each block reads itself and ``window - 1`` earlier blocks).

    Returns
    -------
    numpy.ndarray of shape (n_blocks, n_blocks), bool

    Examples
    --------
    >>> sliding_window_block_mask(4, 2).astype(int).tolist()
    [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]
    """
    n = _n_blocks(n_blocks)
    window = check_int(window, "window", minimum=1)
    i = np.arange(n)
    return _finish(np.abs(i[:, None] - i[None, :]) < window, causal)


def strided_block_mask(n_blocks: int, stride: int, *, causal: bool = True) -> np.ndarray:
    """Strided pattern of the Sparse Transformer, in blocks.

    Query block ``i`` reads the ``stride`` most recent blocks (``0 <= i - j < stride``)
    and every block an exact multiple of ``stride`` back (``(i - j) % stride == 0``).
    Two layers of it connect any two blocks; with ``stride ~ sqrt(n_blocks)`` a row
    holds about ``2 sqrt(n_blocks)`` blocks.

    Parameters
    ----------
    n_blocks : int
        Blocks in the sequence (>= 1).
    stride : int
        Period in blocks (>= 1).
    causal : bool, default True
        Keep only ``j <= i``; with ``False`` the pattern is mirrored to ``|i - j|``.

    Returns
    -------
    numpy.ndarray of shape (n_blocks, n_blocks), bool

    References
    ----------
    Child et al., "Generating Long Sequences with Sparse Transformers", 2019.

    Examples
    --------
    >>> strided_block_mask(5, 2).astype(int).tolist()
    [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [1, 0, 1, 1, 1]]
    """
    n = _n_blocks(n_blocks)
    stride = check_int(stride, "stride", minimum=1)
    i = np.arange(n)
    gap = np.abs(i[:, None] - i[None, :])  # (n, n)
    return _finish((gap < stride) | (gap % stride == 0), causal)


def fixed_block_mask(n_blocks: int, stride: int, *, summary: int = 1, causal: bool = True) -> np.ndarray:
    """Fixed pattern of the Sparse Transformer, in blocks.

    Blocks are grouped in chunks of ``stride``. Query block ``i`` reads the blocks
    of its own chunk and the last ``summary`` blocks of every chunk, which act as
    the chunk's summary cells.

    Parameters
    ----------
    n_blocks : int
        Blocks in the sequence (>= 1).
    stride : int
        Chunk length in blocks (>= 1).
    summary : int, default 1
        Summary blocks at the end of each chunk, ``1 <= summary <= stride``.
    causal : bool, default True
        Keep only ``j <= i``.

    Returns
    -------
    numpy.ndarray of shape (n_blocks, n_blocks), bool

    References
    ----------
    Child et al., "Generating Long Sequences with Sparse Transformers", 2019.

    Examples
    --------
    >>> fixed_block_mask(4, 2).astype(int).tolist()
    [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 1, 1, 1]]
    """
    n = _n_blocks(n_blocks)
    stride = check_int(stride, "stride", minimum=1)
    summary = check_int(summary, "summary", minimum=1, maximum=stride)
    i = np.arange(n)
    same_chunk = (i[:, None] // stride) == (i[None, :] // stride)  # (n, n)
    is_summary = (i % stride) >= stride - summary  # (n,) key blocks that summarise their chunk
    return _finish(same_chunk | is_summary[None, :], causal)


def window_global_block_mask(n_blocks: int, window: int, n_global: int, *, causal: bool = True) -> np.ndarray:
    """Sliding window plus global blocks (ETC's global-local attention, Big Bird's ITC form).

    The first ``n_global`` blocks are global: every block reads them, and they
    read every block. Information can then travel between any two blocks in two
    steps through a global block.

    Parameters
    ----------
    n_blocks : int
        Blocks in the sequence (>= 1).
    window : int
        Width of the local window in blocks (>= 1), as in :func:`sliding_window_block_mask`.
    n_global : int
        Global blocks at the start of the sequence, ``0 <= n_global <= n_blocks``.
    causal : bool, default True
        Keep only ``j <= i``. Note that a causal global block at the start can
        only read what comes before it: global tokens summarise the whole
        sequence only in bidirectional (encoder) attention.

    Returns
    -------
    numpy.ndarray of shape (n_blocks, n_blocks), bool

    References
    ----------
    Ainslie et al., "ETC: Encoding Long and Structured Inputs in Transformers", 2020;
    Zaheer et al., "Big Bird: Transformers for Longer Sequences", 2020.

    Examples
    --------
    >>> window_global_block_mask(4, 1, 1, causal=False).astype(int).tolist()
    [[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 0, 1]]
    """
    n = _n_blocks(n_blocks)
    n_global = check_int(n_global, "n_global", minimum=0, maximum=n)
    mask = sliding_window_block_mask(n, window, causal=False)
    mask[:n_global, :] = True
    mask[:, :n_global] = True
    return _finish(mask, causal)


def bigbird_block_mask(
    n_blocks: int,
    window: int,
    n_global: int,
    n_random: int,
    rng: np.random.Generator,
    *,
    causal: bool = True,
) -> np.ndarray:
    """Big Bird's pattern: sliding window + global blocks + random blocks per row.

    Each query block additionally reads ``n_random`` key blocks drawn uniformly
    without replacement from the blocks it does not read yet (from the earlier
    blocks when causal; fewer when not enough are left).

    Parameters
    ----------
    n_blocks : int
        Blocks in the sequence (>= 1).
    window : int
        Width of the local window in blocks (>= 1).
    n_global : int
        Global blocks at the start, ``0 <= n_global <= n_blocks``.
    n_random : int
        Random key blocks per query block (>= 0).
    rng : numpy.random.Generator
        Source of the random blocks.
    causal : bool, default True
        Keep only ``j <= i``.

    Returns
    -------
    numpy.ndarray of shape (n_blocks, n_blocks), bool

    References
    ----------
    Zaheer et al., "Big Bird: Transformers for Longer Sequences", 2020.

    Examples
    --------
    >>> import numpy as np
    >>> m = bigbird_block_mask(8, 1, 1, 2, np.random.default_rng(0))
    >>> m.sum(axis=1).tolist()
    [1, 2, 3, 4, 4, 4, 4, 4]
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator; got {type(rng).__name__}")
    n_random = check_int(n_random, "n_random", minimum=0)
    mask = window_global_block_mask(n_blocks, window, n_global, causal=causal)
    for i in range(mask.shape[0]):
        limit = i + 1 if causal else mask.shape[1]
        free = np.flatnonzero(~mask[i, :limit])
        if len(free) and n_random:
            mask[i, rng.choice(free, size=min(n_random, len(free)), replace=False)] = True
    return mask


PATTERNS = {
    "dense": dense_block_mask,
    "sliding window": sliding_window_block_mask,
    "strided": strided_block_mask,
    "fixed": fixed_block_mask,
    "window + global": window_global_block_mask,
    "window + global + random": bigbird_block_mask,
}
"""Name -> builder of every pattern in this module."""


# --------------------------------------------------------------- token mask
def token_mask(block_mask: Any, block_size: int, *, causal: bool = True) -> np.ndarray:
    """Token-level boolean mask of a block mask (``True`` = may attend).

    Each block entry becomes a ``block_size x block_size`` tile; with
    ``causal=True`` the result is also cut to ``j <= i``. Useful for plotting
    and for models that apply the pattern as an additive ``-inf`` bias.

    Parameters
    ----------
    block_mask : array of shape (n_query_blocks, n_key_blocks)
        Boolean or 0/1 NumPy array.
    block_size : int
        Tokens per block (>= 1).
    causal : bool, default True
        Apply the token-level causal triangle too.

    Returns
    -------
    numpy.ndarray of shape (n_query_blocks * block_size, n_key_blocks * block_size), bool

    Examples
    --------
    >>> import numpy as np
    >>> token_mask(np.eye(2, dtype=bool), 2).astype(int).tolist()
    [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]
    """
    mask = _check_block_mask(block_mask)
    block_size = check_int(block_size, "block_size", minimum=1)
    tokens = np.kron(mask, np.ones((block_size, block_size), dtype=bool))  # (n_q, n_k)
    if causal:
        tokens &= np.tri(*tokens.shape, dtype=bool)
    return tokens


def _check_block_mask(block_mask: Any) -> np.ndarray:
    if isinstance(block_mask, (list, tuple)):
        block_mask = np.asarray(block_mask)
    kind = check_array(block_mask, "block_mask", ndim=2, dtype_kind="biuf")
    mask = np.asarray(to_numpy(block_mask))
    if kind != "numpy" or mask.dtype != bool:
        if not np.isin(mask, (0, 1)).all():
            raise ValueError("block_mask must hold only 0/1 (or booleans)")
        mask = mask.astype(bool)
    return mask


# --------------------------------------------------------- NumPy reference
def _block_sparse_numpy(q, k, v, block_mask, block_size, causal, scale):
    """Reference: dense scores, masked to the pattern, then softmax (rows that see nothing give 0)."""
    allowed = token_mask(block_mask, block_size, causal=causal)  # (n_q, n_k)
    scores = np.einsum("bid,bjd->bij", q, k) * scale  # (rows, n_q, n_k)
    scores = np.where(allowed, scores, -np.inf)
    row_max = scores.max(axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)
    weights = np.exp(scores - row_max)  # masked entries give exp(-inf) = 0
    total = weights.sum(axis=-1, keepdims=True)
    weights = weights / np.where(total > 0, total, 1.0)
    return (weights @ v).astype(q.dtype, copy=False)  # (rows, n_q, dv)


def _block_sparse_numba_call(q, k, v, block_mask, block_size, causal, scale):
    row_ptr, cols = block_mask_to_csr(block_mask)
    return block_sparse_numba(q, k, v, row_ptr, cols, block_size, causal, scale)


def _block_sparse_cupy_call(q, k, v, block_mask, block_size, causal, scale):
    limit = 48 * 1024
    need = block_size * (q.shape[-1] + v.shape[-1]) * np.dtype(q.dtype).itemsize
    if need > limit:
        raise ValueError(
            f"the CuPy kernel keeps one key and one value block in shared memory: block_size * (d + dv) * "
            f"itemsize = {need} bytes exceeds {limit}; use a smaller block_size or float32"
        )
    if block_size > 1024:
        raise ValueError(f"the CuPy kernel runs one thread per query row: block_size must be <= 1024; got {block_size}")
    row_ptr, cols = block_mask_to_csr(block_mask)
    return block_sparse_cupy(q, k, v, row_ptr, cols, block_size, causal, scale)


_KERNELS = {"numpy": _block_sparse_numpy, "numba": _block_sparse_numba_call, "cupy": _block_sparse_cupy_call}


# ------------------------------------------------------------ public entry
def block_sparse_attention(
    q: Any,
    k: Any,
    v: Any,
    block_mask: Any,
    *,
    block_size: int,
    causal: bool = True,
    scale: float | None = None,
    backend: str | None = None,
) -> Any:
    """Softmax attention restricted to the key blocks a block mask allows.

    ``out[i] = sum_j softmax_j(scale * q_i . k_j) v_j`` over the keys ``j`` whose
    block is allowed for the block of query ``i`` (and ``j <= i`` when causal).
    The numba and CuPy kernels loop over the allowed blocks only, so the cost is
    proportional to the number of nonzero blocks; with an all-ones mask the
    result is dense attention.

    Parameters
    ----------
    q : array of shape (..., n_q, d)
        Queries: floating NumPy array, CuPy array or torch tensor; finite.
    k : array of shape (..., n_k, d)
        Keys, same leading dimensions and ``d`` as ``q``.
    v : array of shape (..., n_k, dv)
        Values, same leading dimensions and ``n_k`` as ``k``.
    block_mask : array of shape (n_q // block_size, n_k // block_size)
        Boolean or 0/1 array, shared by every batch row and head (e.g. from
        :func:`strided_block_mask`).
    block_size : int
        Tokens per block (>= 1). ``n_q`` and ``n_k`` must be multiples of it:
        sequences are **not** padded; pad them yourself (and mask the padding
        keys out) or pick a block size that divides the length.
    causal : bool, default True
        Query ``i`` reads only keys ``j <= i`` (needs ``n_q == n_k``); mask
        entries above the diagonal are then ignored.
    scale : float, optional
        Dot-product scale; default ``1 / sqrt(d)``.
    backend : {None, "auto", "numpy", "numba", "cupy"}, optional
        Kernel choice through :func:`companion.backend.dispatch`.

    Returns
    -------
    array of shape (..., n_q, dv)
        Same kind as ``q`` and its dtype (float16 and bfloat16 are computed in
        float32). A query row that reads no key at all gets zeros.

    Raises
    ------
    TypeError
        non-floating q/k/v, a non-numeric mask, a non-integer block size.
    ValueError
        empty inputs, NaN/inf, mismatched shapes, lengths not divisible by
        ``block_size``, a block mask of the wrong shape or with values other
        than 0/1, ``causal`` with ``n_q != n_k``.

    References
    ----------
    Child et al., "Generating Long Sequences with Sparse Transformers", 2019;
    Zaheer et al., "Big Bird: Transformers for Longer Sequences", 2020;
    Ainslie et al., "ETC: Encoding Long and Structured Inputs in Transformers", 2020.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.memory import block_sparse_attention, strided_block_mask
    >>> rng = np.random.default_rng(0)
    >>> q, k, v = rng.standard_normal((3, 2, 64, 8))
    >>> out = block_sparse_attention(q, k, v, strided_block_mask(8, 3), block_size=8)
    >>> out.shape
    (2, 64, 8)
    >>> ref = block_sparse_attention(q, k, v, strided_block_mask(8, 3), block_size=8, backend="numpy")
    >>> bool(np.allclose(out, ref))
    True
    """
    kind = check_array(q, "q", min_ndim=2, dtype_kind="f")
    check_array(k, "k", min_ndim=2, dtype_kind="f")
    check_array(v, "v", min_ndim=2, dtype_kind="f")
    mask = _check_block_mask(block_mask)
    block_size = check_int(block_size, "block_size", minimum=1)
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"causal must be a bool; got {type(causal).__name__} {causal!r}")
    q_shape, k_shape, v_shape = tuple(q.shape), tuple(k.shape), tuple(v.shape)
    if q_shape[:-2] != k_shape[:-2] or k_shape[:-1] != v_shape[:-1] or q_shape[-1] != k_shape[-1]:
        raise ValueError(
            "q, k, v must have shapes (..., n_q, d), (..., n_k, d), (..., n_k, dv) with the same leading "
            f"dimensions; got {q_shape}, {k_shape}, {v_shape}"
        )
    n_q, n_k, d = q_shape[-2], k_shape[-2], q_shape[-1]
    for name, n in (("n_q", n_q), ("n_k", n_k)):
        if n % block_size:
            raise ValueError(
                f"sequence length {name} = {n} is not a multiple of block_size = {block_size}; "
                "pad the sequence (and mask the padding out) or choose a block size that divides it"
            )
    if mask.shape != (n_q // block_size, n_k // block_size):
        raise ValueError(
            f"block_mask must have shape (n_q // block_size, n_k // block_size) = "
            f"({n_q // block_size}, {n_k // block_size}); got {mask.shape}"
        )
    if causal:
        if n_q != n_k:
            raise ValueError(f"causal attention needs n_q == n_k; got n_q = {n_q}, n_k = {n_k}")
        mask = np.tril(mask)
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite; got {scale}")

    name, kernel = dispatch(_KERNELS, backend, q, k, v)
    if kind == "torch":
        import torch

        work = q.dtype if q.dtype in (torch.float32, torch.float64) else torch.float32
        qb, kb, vb = (for_backend(t.detach().to(work), name) for t in (q, k, v))
    else:
        work = q.dtype if q.dtype in (np.float32, np.float64) else np.dtype(np.float32)
        qb, kb, vb = (for_backend(a, name).astype(work, copy=False) for a in (q, k, v))
    lead = q_shape[:-2]
    rows = int(np.prod(lead)) if lead else 1
    xp = np if name != "cupy" else __import__("cupy")
    q3 = xp.ascontiguousarray(qb.reshape(rows, n_q, d))  # (rows, n_q, d)
    k3 = xp.ascontiguousarray(kb.reshape(rows, n_k, d).astype(q3.dtype, copy=False))
    v3 = xp.ascontiguousarray(vb.reshape(rows, n_k, v_shape[-1]).astype(q3.dtype, copy=False))
    out = kernel(q3, k3, v3, mask, block_size, bool(causal), scale)  # (rows, n_q, dv)
    out = out.reshape(lead + (n_q, v_shape[-1]))
    result = to_kind(out, kind, like=q)
    if kind == "torch":
        return result.to(q.dtype)
    return result.astype(q.dtype, copy=False)

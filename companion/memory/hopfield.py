"""Modern (continuous) Hopfield networks: retrieval is one step of softmax attention.

Papers: Ramsauer et al., "Hopfield Networks is All You Need" (ICLR 2021), for the
update rule and its energy; Niu et al., "Beyond Scaling Laws: Understanding
Transformer Performance with Associative Memory" (2024), which models each
transformer layer as such a memory. The classical binary network of Hopfield
(1982), the baseline, lives in :mod:`companion.memory._m2_classical` and is
re-exported here.

``N`` patterns ``x_1 .. x_N`` of dimension ``d`` are stored as the rows of ``X``
(shape ``(N, d)``). A state ``xi`` (a query) is updated by

    ``xi <- X^T softmax(beta X xi)``

that is, a weighted average of the stored patterns, the weights being a softmax
of the similarities. With queries as rows this is exactly attention with keys
and values both equal to ``X`` and scale ``beta``. Large ``beta`` makes the
softmax nearly one-hot and the state jumps to the closest pattern; small
``beta`` averages many patterns into a metastable mixture.

The update is the concave-convex step that never increases the energy

    ``E(xi) = -lse(beta, X xi) + xi.xi / 2 + log(N) / beta + M^2 / 2``

with ``lse(beta, z) = log(sum_i exp(beta z_i)) / beta`` and ``M`` the largest
pattern norm (:func:`hopfield_energy`).

Three layers: :func:`hopfield_retrieve` validates and dispatches;
``_retrieve_numpy`` is the readable reference (it builds the whole ``(Q, N)``
score matrix); ``_retrieve_numba`` streams over the patterns in blocks with an
online softmax (running maximum and sum, as in FlashAttention), so memory stays
``O(d + block)`` per query whatever ``N`` is, and runs queries in parallel;
``_retrieve_cupy`` does the same blocked streaming softmax on the GPU with
cuBLAS products and a fused rescaling kernel.
"""

from __future__ import annotations

import functools
from typing import Any

import numba
import numpy as np

from .._fastmath import maxnum
from .._validation import check_array, check_float, check_int
from ..backend import array_kind, array_module, dispatch, for_backend, to_kind, to_numpy
from . import _m1_kernels as _k
from ._m1_kernels import fast_exp
from ._m2_classical import classical_hopfield_energy, classical_hopfield_recall, hebbian_weights

__all__ = [
    "hopfield_retrieve",
    "hopfield_energy",
    "hopfield_weights",
    "nearest_pattern",
    "corrupt_patterns",
    "hebbian_weights",
    "classical_hopfield_recall",
    "classical_hopfield_energy",
]

_BLOCK = 1024  # patterns per block of the streaming softmax (CPU)
_QUERY_TILE = 256  # queries per tile (CPU): a tile's scores, 256 x 1024 float32 = 1 MB, stay in L2
_GPU_SCORE_BUDGET = 1 << 24  # score entries (Q * block) held at once on the GPU


# ------------------------------------------------------------------ validation
def _check_patterns_queries(patterns: Any, queries: Any, *, finite: bool = True) -> tuple[str, bool]:
    """Validate ``patterns`` (N, d) and ``queries`` (Q, d) or (d,); return (kind of queries, was 1-D)."""
    check_array(patterns, "patterns", ndim=2, dtype_kind="f", finite=finite)
    kind = check_array(queries, "queries", ndim=(1, 2), dtype_kind="f", finite=finite)
    if array_kind(patterns) != kind:
        raise TypeError(
            f"patterns and queries must be the same kind of array; got {array_kind(patterns)} and {kind}"
        )
    d = patterns.shape[1]
    if queries.shape[-1] != d:
        raise ValueError(
            f"queries must have the patterns' dimension d={d} in their last axis; "
            f"got patterns of shape {tuple(patterns.shape)} and queries of shape {tuple(queries.shape)}"
        )
    return kind, len(queries.shape) == 1


def _check_beta(beta: Any) -> float:
    return check_float(beta, "beta", minimum=0.0, strict_min=True)


def _result_dtype(patterns: Any, queries: Any) -> np.dtype:
    dtype = np.result_type(np.dtype(str(patterns.dtype).replace("torch.", "")),
                           np.dtype(str(queries.dtype).replace("torch.", "")))
    return dtype if dtype in (np.float32, np.float64) else np.dtype(np.float32)


# ------------------------------------------------------------ NumPy reference
def _softmax_rows(scores: np.ndarray) -> np.ndarray:
    """Softmax of each row, shifted by the row maximum so ``exp`` cannot overflow."""
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _retrieve_numpy(patterns: np.ndarray, queries: np.ndarray, beta: float, steps: int) -> np.ndarray:
    """Reference: ``steps`` updates ``xi <- X^T softmax(beta X xi)`` for every query (row) at once."""
    state = queries
    for _ in range(steps):
        weights = _softmax_rows(beta * state @ patterns.T)  # (Q, N): one softmax over patterns per query
        state = weights @ patterns  # (Q, d): weighted average of the stored patterns
    return state


# --------------------------------------------------------------- numba kernel
@numba.njit(cache=True, nogil=True, fastmath=True)
def _online_softmax_block(scores, b, m, total, acc, tmp):  # pragma: no cover - jitted
    """Online-softmax update of one block of patterns for one tile of queries, in place.

    ``scores[:, :b]`` (rows, b) holds the block's scaled scores ``beta * xi . x_j``.
    Per row ``i``: ``m[i]`` is the largest score seen so far (same dtype as the
    scores) and ``total[i]`` (float64) the sum of ``exp(score - m[i])`` so far;
    ``acc[i]`` plus ``tmp[i]`` (the previous block's weighted patterns, not yet
    added) is the weighted sum of patterns so far. A block that brings a larger
    maximum rescales both by ``exp(m_old - m_new)``. The scores become the
    unnormalised weights ``exp(s - m_new)`` for the next product. Row maximum
    (``llvm.maxnum``) and ``exp`` (range reduction + polynomial) vectorise.
    """
    rows, d = acc.shape
    for i in range(rows):
        block_max = scores[i, 0]
        for j in range(1, b):
            block_max = maxnum(block_max, scores[i, j])
        old = m[i]
        new = maxnum(old, block_max)
        scale = fast_exp(old - new)  # 0 on the first block (m starts at the lowest finite number)
        row_sum = scale - scale  # 0 in the scores' dtype
        for j in range(b):
            w = fast_exp(scores[i, j] - new)
            scores[i, j] = w
            row_sum += w
        total[i] = total[i] * scale + row_sum
        m[i] = new
        for k in range(d):
            acc[i, k] = (acc[i, k] + tmp[i, k]) * scale


@numba.njit(cache=True, nogil=True, fastmath=True)
def _finish_tile(acc, tmp, total, out):  # pragma: no cover - jitted
    """``out = (acc + tmp) / total``: the weighted average of the patterns, row by row."""
    rows, d = acc.shape
    for i in range(rows):
        inv = 1.0 / total[i]
        for k in range(d):
            out[i, k] = (acc[i, k] + tmp[i, k]) * inv


def _retrieve_tile(x: np.ndarray, qs: np.ndarray, out: np.ndarray, block: int, scores: np.ndarray) -> None:
    """One step for one tile of (already ``beta``-scaled) queries ``qs``, streaming ``x`` in blocks."""
    rows, d = qs.shape
    dtype = qs.dtype
    m = np.full(rows, np.finfo(dtype).min, dtype=dtype)
    total = np.zeros(rows)
    acc = np.zeros((rows, d), dtype=dtype)  # running weighted sum of patterns
    tmp = np.zeros((rows, d), dtype=dtype)  # the last block's weighted patterns
    for start in range(0, x.shape[0], block):
        xb = x[start:start + block]  # (b, d)
        b = xb.shape[0]
        s = scores[:, :b]  # (rows, b), leading dimension ``block``: still a BLAS operand
        np.matmul(qs, xb.T, out=s)  # BLAS gemm: scaled scores
        _online_softmax_block(scores, b, m, total, acc, tmp)
        np.matmul(s, xb, out=tmp)  # BLAS gemm: the block's weighted patterns
    _finish_tile(acc, tmp, total, out)


def _retrieve_numba(patterns: np.ndarray, queries: np.ndarray, beta: float, steps: int) -> np.ndarray:
    """Streaming softmax over blocks of ``_BLOCK`` patterns, tiles of ``_QUERY_TILE`` queries.

    For each tile of queries, each block of patterns costs two BLAS products
    through NumPy (``np.matmul``, float32 ``sgemm`` / float64 ``dgemm``: the
    scores ``(beta xi) X_b^T`` into a reused buffer, then the weights times
    ``X_b``) and, between them, one numba kernel (row maximum, vectorised
    polynomial ``exp``, row sums, online rescaling). Memory: a score buffer of
    ``_QUERY_TILE x _BLOCK`` per worker, whatever ``N`` is. Tiles are shared by
    ``numba.get_num_threads()`` Python threads (the BLAS and the numba kernels
    release the GIL) with the BLAS pinned to one thread meanwhile
    (:func:`companion.memory._m1_kernels.parallel_tiles`), so there is no
    thread barrier per product.
    """
    dtype = _result_dtype(patterns, queries)
    x = np.ascontiguousarray(patterns, dtype=dtype)  # (N, d)
    state = np.ascontiguousarray(queries, dtype=dtype)  # (Q, d)
    n, d = x.shape
    n_queries = state.shape[0]
    block = int(max(1, min(_BLOCK, n)))
    workers = _k.default_workers(n_queries * n * d)
    tile = int(max(1, min(_QUERY_TILE, -(-n_queries // workers))))  # every worker gets a tile
    tiles = [(lo, min(lo + tile, n_queries)) for lo in range(0, n_queries, tile)]
    for _ in range(steps):
        qs = dtype.type(beta) * state  # (Q, d): the reference's (beta * xi) @ X^T
        out = np.empty_like(qs)

        def work(lo, hi, scores, qs=qs, out=out):
            _retrieve_tile(x, qs[lo:hi], out[lo:hi], block, scores[: hi - lo])

        _k.parallel_tiles(tiles, work, lambda: np.empty((tile, block), dtype=dtype), workers)
        state = out
    return state


# ---------------------------------------------------------------- CuPy kernel
@functools.lru_cache(maxsize=None)
def _cupy_rescale_kernel():
    """Fused online-softmax bookkeeping: new running max, rescale factor, block weights."""
    import cupy

    return cupy.ElementwiseKernel(
        "T s, T m_old, T m_new", "T w, T scale",
        "w = exp(s - m_new); scale = exp(m_old - m_new)",
        "hopfield_online_softmax",
    )


def _retrieve_cupy(patterns, queries, beta: float, steps: int):
    """Blocked streaming softmax on the GPU: ``(Q, block)`` scores at a time, never ``(Q, N)``."""
    import cupy

    dtype = _result_dtype(patterns, queries)
    x = cupy.ascontiguousarray(patterns, dtype=dtype)  # (N, d)
    state = cupy.ascontiguousarray(queries, dtype=dtype)  # (Q, d)
    n = x.shape[0]
    n_queries = state.shape[0]
    block = int(max(1, min(n, _GPU_SCORE_BUDGET // max(1, n_queries))))
    rescale = _cupy_rescale_kernel()
    for _ in range(steps):
        m = cupy.full((n_queries, 1), -cupy.inf, dtype=dtype)
        total = cupy.zeros((n_queries, 1), dtype=dtype)
        acc = cupy.zeros_like(state)  # (Q, d)
        for start in range(0, n, block):
            xb = x[start:start + block]  # (B, d)
            scores = (state @ xb.T) * dtype.type(beta)  # (Q, B) via cuBLAS
            m_new = cupy.maximum(m, scores.max(axis=1, keepdims=True))  # (Q, 1)
            w, scale = rescale(scores, m, m_new)  # (Q, B), (Q, B): scale is constant along a row
            scale = scale[:, :1]
            total = total * scale + w.sum(axis=1, keepdims=True)
            acc = acc * scale + w @ xb
            m = m_new
        state = acc / total
    return state


_KERNELS = {"numpy": _retrieve_numpy, "numba": _retrieve_numba, "cupy": _retrieve_cupy}


# ------------------------------------------------------------------ torch path
def _retrieve_torch(patterns, queries, beta: float, steps: int):
    """Differentiable torch version: softmax attention with keys = values = patterns."""
    import torch

    state = queries
    for _ in range(steps):
        state = torch.softmax(beta * state @ patterns.T, dim=-1) @ patterns  # (Q, d)
    return state


# --------------------------------------------------------------- public entry
def hopfield_retrieve(patterns: Any, queries: Any, *, beta: float, steps: int = 1, backend: str | None = None) -> Any:
    """Retrieve stored patterns with the modern Hopfield update ``xi <- X^T softmax(beta X xi)``.

    Every query is updated independently ``steps`` times. One step is softmax
    attention whose keys and values are both the stored patterns.

    Parameters
    ----------
    patterns : array of shape (N, d)
        Stored patterns ``X``, one per row; floating, finite, ``N >= 1``.
        NumPy array, CuPy array or torch tensor.
    queries : array of shape (Q, d) or (d,)
        Initial states ``xi`` (e.g. corrupted patterns), same kind as ``patterns``.
    beta : float
        Inverse temperature, finite and > 0. Large ``beta``: the update snaps to
        the nearest pattern; small ``beta``: it averages many of them.
    steps : int, default 1
        Number of updates (>= 1); each starts from the previous result.
    backend : {None, "auto", "numpy", "numba", "cupy"}, optional
        ``None``/``"auto"`` picks CuPy for GPU input and numba otherwise. The
        numba and CuPy kernels stream over the patterns in blocks, so they never
        hold the ``(Q, N)`` score matrix. A torch tensor that requires grad, or
        (under ``"auto"``) a CUDA tensor when CuPy is missing, runs plain torch.

    Returns
    -------
    array of shape (Q, d) or (d,)
        The updated states, same kind (and device) as ``queries``; float32 for
        float32 inputs, float64 when either input is float64.

    Raises
    ------
    TypeError
        Non-floating arrays, arrays of different kinds, a non-numeric ``beta``
        or non-integer ``steps``.
    ValueError
        Empty patterns or queries, wrong number of dimensions, different ``d``,
        NaN/inf values, ``beta`` not finite or ``<= 0``, ``steps < 1``.

    References
    ----------
    Ramsauer et al., "Hopfield Networks is All You Need", ICLR 2021.
    Niu et al., "Beyond Scaling Laws: Understanding Transformer Performance with
    Associative Memory", 2024.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.memory import hopfield_retrieve
    >>> X = np.sign(np.random.default_rng(0).standard_normal((20, 64)))
    >>> noisy = X[:3].copy(); noisy[:, :16] *= -1          # flip a quarter of the signs
    >>> out = hopfield_retrieve(X, noisy, beta=1.0)
    >>> bool(np.allclose(out, X[:3], atol=1e-6))
    True
    """
    kind, one_d = _check_patterns_queries(patterns, queries)
    beta = _check_beta(beta)
    steps = check_int(steps, "steps", minimum=1)
    if kind == "torch":
        import torch

        needs_grad = torch.is_grad_enabled() and (patterns.requires_grad or queries.requires_grad)
        odd_dtype = any(a.dtype not in (torch.float32, torch.float64) for a in (patterns, queries))
        gpu_without_cupy = queries.device.type == "cuda" and backend in (None, "auto") and not _cupy_usable()
        if needs_grad or odd_dtype or gpu_without_cupy:
            q = queries[None, :] if one_d else queries
            out = _retrieve_torch(patterns, q.to(patterns.dtype), beta, steps)
            return out[0] if one_d else out
    name, kernel = dispatch(_KERNELS, backend, patterns, queries)
    x = for_backend(patterns, name)
    q = for_backend(queries, name)
    q = q[None, :] if one_d else q
    if name == "numpy":
        dtype = _result_dtype(x, q)
        x, q = x.astype(dtype, copy=False), q.astype(dtype, copy=False)
    out = kernel(x, q, beta, steps)
    out = out[0] if one_d else out
    return to_kind(out, kind, like=queries)


def _cupy_usable() -> bool:
    from ..backend import cupy_available

    return cupy_available()


# -------------------------------------------------------------------- weights
def _host_or_device(a: Any):
    """NumPy for NumPy/CPU torch input, CuPy for CuPy/CUDA torch input (when CuPy is usable)."""
    kind = array_kind(a)
    if kind == "cupy" or (kind == "torch" and a.device.type == "cuda" and _cupy_usable()):
        return for_backend(a, "cupy")
    return to_numpy(a)


def hopfield_weights(patterns: Any, queries: Any, *, beta: float) -> Any:
    """Softmax weights ``softmax(beta X xi)`` that one update gives each stored pattern.

    Parameters
    ----------
    patterns : array of shape (N, d)
        Stored patterns, floating and finite.
    queries : array of shape (Q, d) or (d,)
        States, same kind as ``patterns``.
    beta : float
        Inverse temperature, finite and > 0.

    Returns
    -------
    array of shape (Q, N) or (N,)
        Each row sums to 1; same kind as ``queries``. Builds the full score
        matrix, so use it for inspection, not for large ``N``.

    References
    ----------
    Ramsauer et al., "Hopfield Networks is All You Need", ICLR 2021.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.memory import hopfield_weights
    >>> X = np.eye(3)
    >>> hopfield_weights(X, np.array([1.0, 0.0, 0.0]), beta=50.0).round(3).tolist()
    [1.0, 0.0, 0.0]
    """
    kind, one_d = _check_patterns_queries(patterns, queries)
    beta = _check_beta(beta)
    x, q = _host_or_device(patterns), _host_or_device(queries)
    xp = array_module(x)
    q = q[None, :] if one_d else q
    scores = beta * (q @ x.T)  # (Q, N)
    w = xp.exp(scores - scores.max(axis=1, keepdims=True))
    w = w / w.sum(axis=1, keepdims=True)
    return to_kind(w[0] if one_d else w, kind, like=queries)


# --------------------------------------------------------------------- energy
def hopfield_energy(patterns: Any, states: Any, *, beta: float) -> Any:
    """Energy of the modern Hopfield network at each state; one update never raises it.

    ``E(xi) = -lse(beta, X xi) + xi.xi / 2 + log(N) / beta + M^2 / 2`` with
    ``lse(beta, z) = log(sum_i exp(beta z_i)) / beta`` and ``M`` the largest
    pattern norm. The constants make ``E >= 0``.

    Parameters
    ----------
    patterns : array of shape (N, d)
        Stored patterns, floating and finite.
    states : array of shape (Q, d) or (d,)
        States at which to evaluate the energy, same kind as ``patterns``.
    beta : float
        Inverse temperature, finite and > 0.

    Returns
    -------
    array of shape (Q,) or a 0-d array
        Energies in float64, same kind as ``states``.

    References
    ----------
    Ramsauer et al., "Hopfield Networks is All You Need", ICLR 2021.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.memory import hopfield_energy, hopfield_retrieve
    >>> rng = np.random.default_rng(1)
    >>> X, xi = rng.standard_normal((10, 8)), rng.standard_normal((4, 8))
    >>> before = hopfield_energy(X, xi, beta=0.5)
    >>> after = hopfield_energy(X, hopfield_retrieve(X, xi, beta=0.5), beta=0.5)
    >>> bool((after <= before + 1e-9).all())
    True
    """
    try:
        kind, one_d = _check_patterns_queries(patterns, states)
    except ValueError as err:
        raise ValueError(str(err).replace("queries", "states")) from None
    except TypeError as err:
        raise TypeError(str(err).replace("queries", "states")) from None
    beta = _check_beta(beta)
    x, s = _host_or_device(patterns), _host_or_device(states)
    xp = array_module(x)
    x = x.astype(xp.float64)
    s = s.astype(xp.float64)
    s = s[None, :] if one_d else s
    scores = beta * (s @ x.T)  # (Q, N)
    top = scores.max(axis=1)
    lse = (top + xp.log(xp.exp(scores - top[:, None]).sum(axis=1))) / beta  # (Q,)
    max_norm_sq = float((x * x).sum(axis=1).max())
    energy = -lse + 0.5 * (s * s).sum(axis=1) + np.log(x.shape[0]) / beta + 0.5 * max_norm_sq
    return to_kind(xp.asarray(energy[0] if one_d else energy), kind, like=states)


# -------------------------------------------------------- experiment helpers
def nearest_pattern(patterns: Any, states: Any) -> np.ndarray:
    """Index of the stored pattern closest (Euclidean distance) to each state.

    Parameters
    ----------
    patterns : array of shape (N, d)
    states : array of shape (Q, d)
        Same kind as ``patterns``; both floating and finite.

    Returns
    -------
    numpy.ndarray of shape (Q,), int64
        Always NumPy (a small result that usually feeds an accuracy count).

    Examples
    --------
    >>> import numpy as np
    >>> from companion.memory import nearest_pattern
    >>> nearest_pattern(np.eye(3), np.array([[0.1, 0.9, 0.0], [0.0, 0.2, 0.7]])).tolist()
    [1, 2]
    """
    _, one_d = _check_patterns_queries(patterns, states)
    x, s = _host_or_device(patterns), _host_or_device(states)
    xp = array_module(x)
    s = s[None, :] if one_d else s
    # |s - x|^2 = |s|^2 - 2 s.x + |x|^2; the |s|^2 term does not change the argmin
    dist = (x * x).sum(axis=1)[None, :] - 2.0 * (s @ x.T)  # (Q, N)
    idx = to_numpy(xp.asarray(dist.argmin(axis=1), dtype=xp.int64))
    return idx


def corrupt_patterns(patterns: np.ndarray, fraction: float, rng: np.random.Generator, *, mode: str = "flip") -> np.ndarray:
    """Corrupted copies of ``patterns``: a random ``fraction`` of each row's coordinates is damaged.

    Parameters
    ----------
    patterns : numpy.ndarray of shape (Q, d)
        Floating, finite.
    fraction : float
        Share of coordinates damaged per row, in ``[0, 1]`` (rounded to a whole
        number of coordinates, the same for every row).
    rng : numpy.random.Generator
        Chooses which coordinates (independently per row).
    mode : {"flip", "mask"}, default "flip"
        ``"flip"`` negates the chosen coordinates (for +-1 patterns, a bit flip);
        ``"mask"`` sets them to 0 (for centred data, "unknown").

    Returns
    -------
    numpy.ndarray of shape (Q, d)
        A new array, same dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.memory import corrupt_patterns
    >>> x = np.ones((2, 8))
    >>> (corrupt_patterns(x, 0.25, np.random.default_rng(0)) < 0).sum(axis=1).tolist()
    [2, 2]
    """
    check_array(patterns, "patterns", ndim=2, dtype_kind="f")
    if array_kind(patterns) != "numpy":
        raise TypeError(f"patterns must be a NumPy array; got a {array_kind(patterns)} array")
    fraction = check_float(fraction, "fraction", minimum=0.0, maximum=1.0)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator; got {type(rng).__name__}")
    if mode not in ("flip", "mask"):
        raise ValueError(f"mode must be 'flip' or 'mask'; got {mode!r}")
    q, d = patterns.shape
    k = int(round(fraction * d))
    out = patterns.copy()
    if k == 0:
        return out
    chosen = np.argsort(rng.random((q, d)), axis=1)[:, :k]  # (Q, k) distinct coordinates per row
    rows = np.arange(q)[:, None]
    if mode == "flip":
        out[rows, chosen] *= -1
    else:
        out[rows, chosen] = 0
    return out

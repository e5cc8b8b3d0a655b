"""KV-cache eviction kernels: attention-score accumulation, top-k selection of the entries to keep, merging.

A cache policy that works under a token budget does three things over and over:

1. **accumulate** how much attention every cached entry has received
   (:func:`accumulate_attention`; the "heavy hitter" statistic of H2O);
2. **select** which entries to keep: a few protected first entries (attention
   sinks), a protected window of the newest entries, and the best-scoring rest
   (:func:`select_keep`), then gather them (:func:`compress_kv`);
3. optionally **merge** every evicted entry into its most similar kept entry
   instead of dropping it (:func:`merge_evicted`; D2O, EMS). A merged entry is
   the count-weighted mean of the keys and values it absorbed and carries the
   count, so that attention can add ``log(count)`` to its logit.

Each function validates its input, then runs a readable NumPy reference
(``backend="numpy"``), a numba kernel (``"numba"``, one pass per row of
``batch * heads``; selection and gathering run in parallel over rows and
ranges of kept entries once the input is large enough to pay for waking the
other threads) or CuPy array code (``"cupy"``), chosen by
:func:`companion.backend.dispatch`. NumPy, CuPy and torch arrays are accepted
and the result has the kind of the input.

Papers: "D2O: Dynamic Discriminative Operations for Efficient Generative
Inference of Large Language Models"; "EMS: Adaptive Evict-then-Merge Strategy
for Head-wise KV Cache Compression Based on Global-Local Importance".
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from .._validation import check_array, check_float, check_int
from ..backend import dispatch, for_backend, to_kind

__all__ = ["accumulate_attention", "select_keep", "compress_kv", "merge_evicted"]


def _rows(x: np.ndarray, last: int) -> np.ndarray:
    """``x`` as a C-contiguous array of shape (rows, *last dims)."""
    return np.ascontiguousarray(x).reshape((-1,) + tuple(x.shape[-last:]))


# ====================================================== accumulate_attention
def _accumulate_numpy(scores, weights, decay):
    """Reference: ``decay * scores + sum over queries of weights``."""
    return decay * scores + weights.sum(axis=-2)  # (..., n)


@numba.njit(cache=True)
def _accumulate_rows_numba(scores, weights, decay, out):  # pragma: no cover - jitted
    rows, n_queries, n = weights.shape
    for r in range(rows):
        for j in range(n):
            out[r, j] = decay * scores[r, j]
        for q in range(n_queries):
            for j in range(n):
                out[r, j] += weights[r, q, j]


def _accumulate_numba(scores, weights, decay):
    dtype = np.result_type(scores.dtype, weights.dtype)
    s = _rows(scores.astype(dtype, copy=False), 1)  # (rows, n)
    w = _rows(weights.astype(dtype, copy=False), 2)  # (rows, queries, n)
    out = np.empty_like(s)
    _accumulate_rows_numba(s, w, dtype.type(decay), out)
    return out.reshape(scores.shape)


def _accumulate_cupy(scores, weights, decay):
    # one fused reduction plus an elementwise update: a single pass over the weights
    return decay * scores + weights.sum(axis=-2)


_ACCUMULATE = {"numpy": _accumulate_numpy, "numba": _accumulate_numba, "cupy": _accumulate_cupy}


def accumulate_attention(scores: Any, weights: Any, *, decay: float = 1.0, backend: str | None = None) -> Any:
    """Add the attention each cached entry received to its running score.

    ``new_scores[..., j] = decay * scores[..., j] + sum_q weights[..., q, j]``.
    With ``decay = 1`` this is H2O's accumulated attention; ``decay < 1``
    forgets old queries geometrically.

    Parameters
    ----------
    scores : array of shape (..., n)
        Running scores of the ``n`` cached entries (e.g. ``(batch, heads, n)``).
    weights : array of shape (..., queries, n)
        Attention weights of the newest queries over the same entries.
    decay : float, default 1.0
        Factor in ``[0, 1]`` applied to the old scores.
    backend : {None, "auto", "numpy", "numba", "cupy"}
        Kernel to run (see :mod:`companion.backend`).

    Returns
    -------
    array of shape (..., n)
        Same kind as ``scores``, in the promoted floating dtype.

    References
    ----------
    "H2O: Heavy-Hitter Oracle for Efficient Generative Inference of Large Language Models".

    Examples
    --------
    >>> import numpy as np
    >>> from companion.kernels import accumulate_attention
    >>> accumulate_attention(np.zeros((1, 3)), np.array([[[0.5, 0.25, 0.25]]])).tolist()
    [[0.5, 0.25, 0.25]]
    """
    kind = check_array(scores, "scores", min_ndim=1)
    check_array(weights, "weights", min_ndim=2)
    if tuple(weights.shape[:-2]) != tuple(scores.shape[:-1]) or weights.shape[-1] != scores.shape[-1]:
        raise ValueError(
            "weights must have shape (..., queries, n) matching scores (..., n); got "
            f"scores {tuple(scores.shape)} and weights {tuple(weights.shape)}"
        )
    decay = check_float(decay, "decay", minimum=0.0, maximum=1.0)
    name, kernel = dispatch(_ACCUMULATE, backend, scores, weights)
    out = kernel(for_backend(scores, name), for_backend(weights, name), decay)
    return to_kind(out, kind, like=scores)


# ================================================================ select_keep
def _select_numpy(scores, n_keep, n_sinks, n_recent):
    """Reference: protected sinks and window, then the best scores (stable: ties keep the older entry)."""
    n = scores.shape[-1]
    lead = scores.shape[:-1]
    n_top = n_keep - n_sinks - n_recent
    middle = scores[..., n_sinks:n - n_recent]  # (..., n - sinks - recent)
    best = np.argsort(-middle, axis=-1, kind="stable")[..., :n_top] + n_sinks  # (..., n_top)
    sinks = np.broadcast_to(np.arange(n_sinks), lead + (n_sinks,))
    recent = np.broadcast_to(np.arange(n - n_recent, n), lead + (n_recent,))
    return np.sort(np.concatenate([sinks, best, recent], axis=-1), axis=-1).astype(np.int64)


@numba.njit(cache=True)
def _select_row(scores, n_keep, n_sinks, n_recent, out):  # pragma: no cover - jitted
    """One row: a partial sort (``np.partition``, linear time) finds the ``n_top``-th best
    score; one pass then takes everything above it and the oldest entries equal to it,
    which yields the kept indices already in ascending order (no sort of the kept indices)."""
    n = scores.shape[0]
    n_top = n_keep - n_sinks - n_recent
    stop = n - n_recent
    n_middle = stop - n_sinks
    k = 0
    for j in range(n_sinks):
        out[k] = j
        k += 1
    if n_top > 0:
        neg = np.empty(n_middle, dtype=scores.dtype)
        for j in range(n_middle):
            neg[j] = -scores[n_sinks + j]
        cut = -np.partition(neg, n_top - 1)[n_top - 1]  # the n_top-th largest score
        above = 0
        for j in range(n_sinks, stop):
            if scores[j] > cut:
                above += 1
        ties_left = n_top - above
        for j in range(n_sinks, stop):
            v = scores[j]
            if v > cut:
                out[k] = j
                k += 1
            elif v == cut and ties_left > 0:
                out[k] = j
                k += 1
                ties_left -= 1
    for j in range(stop, n):
        out[k] = j
        k += 1


@numba.njit(cache=True, parallel=True)
def _select_rows_numba(scores, n_keep, n_sinks, n_recent, out):  # pragma: no cover - jitted
    """:func:`_select_row` for every row of ``scores`` (rows, n), in parallel over rows."""
    for r in numba.prange(scores.shape[0]):
        _select_row(scores[r], n_keep, n_sinks, n_recent, out[r])


@numba.njit(cache=True)
def _select_rows_serial(scores, n_keep, n_sinks, n_recent, out):  # pragma: no cover - jitted
    """:func:`_select_row` for every row, on the calling thread (small inputs)."""
    for r in range(scores.shape[0]):
        _select_row(scores[r], n_keep, n_sinks, n_recent, out[r])


#: Below this many numbers of work a kernel runs on the calling thread: waking the other
#: numba threads costs tens of microseconds on a quiet machine and milliseconds on a busy one.
_PARALLEL_MIN_WORK = 1 << 17


def _select_numba(scores, n_keep, n_sinks, n_recent):
    s = _rows(scores, 1)
    out = np.empty((s.shape[0], n_keep), dtype=np.int64)
    kernel = _select_rows_numba if s.shape[0] > 1 and s.size >= _PARALLEL_MIN_WORK else _select_rows_serial
    kernel(s, n_keep, n_sinks, n_recent, out)
    return out.reshape(scores.shape[:-1] + (n_keep,))


def _select_cupy(scores, n_keep, n_sinks, n_recent):
    import cupy

    n = scores.shape[-1]
    lead = scores.shape[:-1]
    n_top = n_keep - n_sinks - n_recent
    middle = scores[..., n_sinks:n - n_recent]
    # negate and sort; cupy.argsort is a stable radix sort, so ties keep the older entry as in NumPy
    best = cupy.argsort(-middle, axis=-1)[..., :n_top] + n_sinks
    sinks = cupy.broadcast_to(cupy.arange(n_sinks), lead + (n_sinks,))
    recent = cupy.broadcast_to(cupy.arange(n - n_recent, n), lead + (n_recent,))
    return cupy.sort(cupy.concatenate([sinks, best, recent], axis=-1), axis=-1).astype(cupy.int64)


_SELECT = {"numpy": _select_numpy, "numba": _select_numba, "cupy": _select_cupy}


def _check_select(scores, n_keep, n_sinks, n_recent) -> tuple[str, int, int, int]:
    kind = check_array(scores, "scores", min_ndim=1, finite=False)
    n = scores.shape[-1]
    n_keep = check_int(n_keep, "n_keep", minimum=1)
    n_sinks = check_int(n_sinks, "n_sinks", minimum=0)
    n_recent = check_int(n_recent, "n_recent", minimum=0)
    if n_keep > n:
        raise ValueError(f"n_keep must be <= the number of entries n = {n}; got {n_keep}")
    if n_sinks + n_recent > n_keep:
        raise ValueError(
            f"n_sinks + n_recent must be <= n_keep; got n_sinks={n_sinks}, n_recent={n_recent}, n_keep={n_keep}"
        )
    return kind, n_keep, n_sinks, n_recent


def select_keep(
    scores: Any, n_keep: int, *, n_sinks: int = 0, n_recent: int = 0, backend: str | None = None
) -> Any:
    """Indices of the entries a budgeted cache keeps, in ascending order.

    The first ``n_sinks`` and the last ``n_recent`` entries are always kept;
    the remaining ``n_keep - n_sinks - n_recent`` places go to the entries in
    between with the highest ``scores`` (ties: the older entry wins).
    ``scores = -position`` with ``n_sinks = 0`` gives a sliding window;
    accumulated attention gives H2O.

    Parameters
    ----------
    scores : array of shape (..., n)
        Importance of every cached entry (larger is kept first); NaN is not allowed,
        ``-inf`` marks entries that are only kept when nothing else is left.
    n_keep : int
        Entries to keep per row, ``1 <= n_keep <= n``.
    n_sinks, n_recent : int, default 0
        Protected first and last entries, ``n_sinks + n_recent <= n_keep``.
    backend : {None, "auto", "numpy", "numba", "cupy"}
        Kernel to run.

    Returns
    -------
    array of shape (..., n_keep), int64
        Sorted indices into the last axis of ``scores``; same kind as ``scores``.

    References
    ----------
    "Efficient Streaming Language Models with Attention Sinks" (sinks + window);
    "H2O: Heavy-Hitter Oracle for Efficient Generative Inference of Large Language Models".

    Examples
    --------
    >>> import numpy as np
    >>> from companion.kernels import select_keep
    >>> scores = np.array([[0.9, 0.1, 0.8, 0.3, 0.2, 0.0]])
    >>> select_keep(scores, 4, n_sinks=1, n_recent=1).tolist()
    [[0, 2, 3, 5]]
    """
    kind, n_keep, n_sinks, n_recent = _check_select(scores, n_keep, n_sinks, n_recent)
    name, kernel = dispatch(_SELECT, backend, scores)
    s = for_backend(scores, name)
    if bool((s != s).any()):
        raise ValueError("scores must not contain NaN")
    return to_kind(kernel(s, n_keep, n_sinks, n_recent), kind, like=scores)


# ================================================================ compress_kv
@numba.njit(cache=True, inline="always")
def _gather_task(keys, values, index, r, t, stop, out_k, out_v):  # pragma: no cover - jitted
    """Copy kept slots ``t .. stop`` of row ``r``; a run of consecutive positions is one contiguous slice."""
    while t < stop:
        src = index[r, t]
        end = t + 1
        while end < stop and index[r, end] == src + (end - t):
            end += 1
        run = end - t
        out_k[r, t:end, :] = keys[r, src:src + run, :]
        out_v[r, t:end, :] = values[r, src:src + run, :]
        t = end


@numba.njit(cache=True, parallel=True)
def _gather_kv_numba(keys, values, index, n_split, out_k, out_v):  # pragma: no cover - jitted
    """``out_k[r, t] = keys[r, index[r, t]]`` and the same for the values, in parallel.

    ``rows * n_split`` tasks (``prange``), each a contiguous range of one row's kept
    slots. A run of consecutive kept positions (a sliding window, the sinks) is
    copied as one contiguous slice of ``run * d`` numbers, i.e. as a ``memcpy``;
    scattered positions are copied one ``d``-long row at a time. Keys and values
    are gathered in the same pass over the index.
    """
    rows, n_keep = index.shape
    per = (n_keep + n_split - 1) // n_split
    for task in numba.prange(rows * n_split):
        r = task // n_split
        t = min(n_keep, (task % n_split) * per)
        _gather_task(keys, values, index, r, t, min(n_keep, t + per), out_k, out_v)


@numba.njit(cache=True)
def _gather_kv_serial(keys, values, index, n_split, out_k, out_v):  # pragma: no cover - jitted
    """:func:`_gather_kv_numba` on the calling thread (small inputs; ``n_split`` is unused)."""
    for r in range(index.shape[0]):
        _gather_task(keys, values, index, r, 0, index.shape[1], out_k, out_v)


def _gather_numba(k, v, index, lead, n_keep):
    """Fresh (..., n_keep, d) outputs filled by :func:`_gather_kv_numba` (or its serial twin when small)."""
    idx2 = index.reshape(-1, n_keep)
    k3, v3 = _rows(k, 2), _rows(v, 2)  # (rows, n, d)
    rows = idx2.shape[0]
    out_k = np.empty((rows, n_keep, k3.shape[2]), dtype=k3.dtype)
    out_v = np.empty((rows, n_keep, v3.shape[2]), dtype=v3.dtype)
    if out_k.size + out_v.size >= _PARALLEL_MIN_WORK:
        # enough tasks to keep every thread busy (and to balance a loaded machine), each at least 64 slots
        n_split = int(max(1, min(-(-4 * numba.get_num_threads() // max(rows, 1)), n_keep // 64)))
        _gather_kv_numba(k3, v3, idx2, n_split, out_k, out_v)
    else:
        _gather_kv_serial(k3, v3, idx2, 1, out_k, out_v)
    return out_k.reshape(lead[:-1] + (n_keep, k3.shape[2])), out_v.reshape(lead[:-1] + (n_keep, v3.shape[2]))


def compress_kv(
    keys: Any,
    values: Any,
    scores: Any,
    n_keep: int,
    *,
    n_sinks: int = 0,
    n_recent: int = 0,
    backend: str | None = None,
) -> tuple[Any, Any, Any]:
    """Select the entries to keep (:func:`select_keep`) and gather their keys and values.

    Parameters
    ----------
    keys : array of shape (..., n, d_k)
    values : array of shape (..., n, d_v)
    scores : array of shape (..., n)
        Importance of every entry.
    n_keep, n_sinks, n_recent : int
        As in :func:`select_keep`.
    backend : {None, "auto", "numpy", "numba", "cupy"}
        Kernel to run.

    Returns
    -------
    kept_keys : array of shape (..., n_keep, d_k)
    kept_values : array of shape (..., n_keep, d_v)
    index : array of shape (..., n_keep), int64
        Kept positions, ascending. All three have the kind of ``keys``.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.kernels import compress_kv
    >>> k = np.arange(12.0).reshape(1, 6, 2)
    >>> kk, vv, idx = compress_kv(k, k, np.array([[5.0, 0, 4, 0, 0, 0]]), 3, n_recent=1)
    >>> idx.tolist(), kk[0, :, 0].tolist()
    ([[0, 2, 5]], [0.0, 4.0, 10.0])
    """
    kind = check_array(keys, "keys", min_ndim=2)
    check_array(values, "values", min_ndim=2)
    _, n_keep, n_sinks, n_recent = _check_select(scores, n_keep, n_sinks, n_recent)
    lead = tuple(scores.shape)
    if tuple(keys.shape[:-1]) != lead or tuple(values.shape[:-1]) != lead:
        raise ValueError(
            "keys (..., n, d_k), values (..., n, d_v) and scores (..., n) must agree; got "
            f"{tuple(keys.shape)}, {tuple(values.shape)} and {lead}"
        )
    name, kernel = dispatch(_SELECT, backend, keys, scores)
    s = for_backend(scores, name)
    if bool((s != s).any()):
        raise ValueError("scores must not contain NaN")
    index = kernel(s, n_keep, n_sinks, n_recent)  # (..., n_keep)
    k, v = for_backend(keys, name), for_backend(values, name)
    if name == "numba":
        kept_k, kept_v = _gather_numba(k, v, index, lead, n_keep)
    else:
        xp = np if name == "numpy" else __import__("cupy")
        kept_k = xp.take_along_axis(k, index[..., None], axis=-2)
        kept_v = xp.take_along_axis(v, index[..., None], axis=-2)
    return to_kind(kept_k, kind, like=keys), to_kind(kept_v, kind, like=keys), to_kind(index, kind, like=keys)


# ============================================================== merge_evicted
def _merge_numpy(keys, values, counts, keep, targets, threshold):
    """Reference: each evicted entry joins its most similar (cosine of keys) target if similar enough."""
    n, d_k = keys.shape[-2:]
    rows = int(np.prod(keys.shape[:-2], dtype=np.int64))
    K = keys.reshape(rows, n, d_k)
    V = values.reshape(rows, n, values.shape[-1])
    C = counts.reshape(rows, n)
    keep2 = keep.reshape(rows, -1)
    tgt2 = np.broadcast_to(targets, keep.shape).reshape(rows, -1)
    out_k = np.empty((rows, keep2.shape[1], d_k), dtype=K.dtype)
    out_v = np.empty((rows, keep2.shape[1], V.shape[-1]), dtype=V.dtype)
    out_c = np.empty((rows, keep2.shape[1]), dtype=C.dtype)
    for r in range(rows):
        kept = keep2[r]
        evicted = np.setdiff1d(np.arange(n), kept)
        sum_k = K[r, kept] * C[r, kept, None]  # (m, d_k) count-weighted sums
        sum_v = V[r, kept] * C[r, kept, None]
        sum_c = C[r, kept].copy()
        cand = np.flatnonzero(tgt2[r])
        if len(evicted) and len(cand):
            unit = K[r] / np.maximum(np.linalg.norm(K[r], axis=-1, keepdims=True), 1e-12)
            sim = unit[evicted] @ unit[kept[cand]].T  # (evicted, candidates)
            best = cand[np.argmax(sim, axis=-1)]
            ok = sim.max(axis=-1) >= threshold
            e, b = evicted[ok], best[ok]
            np.add.at(sum_k, b, K[r, e] * C[r, e, None])
            np.add.at(sum_v, b, V[r, e] * C[r, e, None])
            np.add.at(sum_c, b, C[r, e])
        out_k[r] = sum_k / sum_c[:, None]
        out_v[r] = sum_v / sum_c[:, None]
        out_c[r] = sum_c
    m = keep2.shape[1]
    lead = keys.shape[:-2]
    return out_k.reshape(lead + (m, d_k)), out_v.reshape(lead + (m, V.shape[-1])), out_c.reshape(lead + (m,))


@numba.njit(cache=True)
def _merge_rows_numba(K, V, C, keep, targets, threshold, out_k, out_v, out_c):  # pragma: no cover - jitted
    rows, n, d_k = K.shape
    d_v = V.shape[2]
    m = keep.shape[1]
    is_kept = np.empty(n, dtype=np.bool_)
    for r in range(rows):
        is_kept[:] = False
        for t in range(m):
            j = keep[r, t]
            is_kept[j] = True
            c = C[r, j]
            out_c[r, t] = c
            for a in range(d_k):
                out_k[r, t, a] = K[r, j, a] * c
            for a in range(d_v):
                out_v[r, t, a] = V[r, j, a] * c
        n_evicted = n - m
        n_targets = 0
        for t in range(m):
            if targets[r, t]:
                n_targets += 1
        if n_evicted == 0 or n_targets == 0:
            for t in range(m):
                for a in range(d_k):
                    out_k[r, t, a] /= out_c[r, t]
                for a in range(d_v):
                    out_v[r, t, a] /= out_c[r, t]
            continue
        # unit keys of the evicted entries (E, d_k) and of the targets, transposed (d_k, M)
        evicted = np.empty(n_evicted, dtype=np.int64)
        e = 0
        for j in range(n):
            if not is_kept[j]:
                evicted[e] = j
                e += 1
        slots = np.empty(n_targets, dtype=np.int64)
        e = 0
        for t in range(m):
            if targets[r, t]:
                slots[e] = t
                e += 1
        unit_e = np.empty((n_evicted, d_k), dtype=K.dtype)
        for i in range(n_evicted):
            s = 0.0
            for a in range(d_k):
                s += K[r, evicted[i], a] * K[r, evicted[i], a]
            inv = 1.0 / max(np.sqrt(s), 1e-12)
            for a in range(d_k):
                unit_e[i, a] = K[r, evicted[i], a] * inv
        unit_t = np.empty((d_k, n_targets), dtype=K.dtype)
        for i in range(n_targets):
            j = keep[r, slots[i]]
            s = 0.0
            for a in range(d_k):
                s += K[r, j, a] * K[r, j, a]
            inv = 1.0 / max(np.sqrt(s), 1e-12)
            for a in range(d_k):
                unit_t[a, i] = K[r, j, a] * inv
        sim = np.dot(unit_e, unit_t)  # (E, M): one BLAS call per row
        for i in range(n_evicted):
            best = 0
            for t in range(1, n_targets):
                if sim[i, t] > sim[i, best]:
                    best = t
            if sim[i, best] < threshold:
                continue
            slot = slots[best]
            j = evicted[i]
            c = C[r, j]
            out_c[r, slot] += c
            for a in range(d_k):
                out_k[r, slot, a] += K[r, j, a] * c
            for a in range(d_v):
                out_v[r, slot, a] += V[r, j, a] * c
        for t in range(m):
            inv = 1.0 / out_c[r, t]
            for a in range(d_k):
                out_k[r, t, a] *= inv
            for a in range(d_v):
                out_v[r, t, a] *= inv


def _merge_numba(keys, values, counts, keep, targets, threshold):
    lead = keys.shape[:-2]
    m = keep.shape[-1]
    K, V = _rows(keys, 2), _rows(values, 2)
    C = _rows(counts, 1)
    keep2 = _rows(keep, 1)
    tgt2 = np.ascontiguousarray(np.broadcast_to(targets, keep.shape)).reshape(-1, m)
    out_k = np.empty((K.shape[0], m, K.shape[2]), dtype=K.dtype)
    out_v = np.empty((V.shape[0], m, V.shape[2]), dtype=V.dtype)
    out_c = np.empty((C.shape[0], m), dtype=C.dtype)
    _merge_rows_numba(K, V, C, keep2, tgt2, threshold, out_k, out_v, out_c)
    return (out_k.reshape(lead + (m, K.shape[2])), out_v.reshape(lead + (m, V.shape[2])),
            out_c.reshape(lead + (m,)))


def _merge_cupy(keys, values, counts, keep, targets, threshold):
    import cupy
    import cupyx

    n, d_k = keys.shape[-2:]
    m = keep.shape[-1]
    lead = keys.shape[:-2]
    rows = int(np.prod(lead, dtype=np.int64))
    K = keys.reshape(rows, n, d_k)
    V = values.reshape(rows, n, -1)
    C = counts.reshape(rows, n)
    keep2 = keep.reshape(rows, m)
    tgt2 = cupy.broadcast_to(targets, keep.shape).reshape(rows, m)
    unit = K / cupy.maximum(cupy.linalg.norm(K, axis=-1, keepdims=True), 1e-12)  # (rows, n, d_k)
    kept_unit = cupy.take_along_axis(unit, keep2[..., None], axis=1)  # (rows, m, d_k)
    sim = unit @ kept_unit.transpose(0, 2, 1)  # (rows, n, m): every entry against every kept entry
    sim = cupy.where(tgt2[:, None, :], sim, -cupy.inf)
    best = sim.argmax(axis=-1)  # (rows, n)
    best_sim = sim.max(axis=-1)
    evicted = cupy.ones((rows, n), dtype=bool)
    cupy.put_along_axis(evicted, keep2, False, axis=1)
    join = evicted & (best_sim >= threshold)
    # kept entries map to their own slot; joined evicted ones to their best target; the rest are dropped
    slot = cupy.full((rows, n), m, dtype=cupy.int64)
    cupy.put_along_axis(slot, keep2, cupy.broadcast_to(cupy.arange(m), (rows, m)), axis=1)
    slot = cupy.where(join, best, slot)
    flat = (cupy.arange(rows)[:, None] * (m + 1) + slot).ravel()
    w = C.reshape(-1, 1)
    sum_k = cupy.zeros((rows * (m + 1), d_k), dtype=K.dtype)
    sum_v = cupy.zeros((rows * (m + 1), V.shape[-1]), dtype=V.dtype)
    sum_c = cupy.zeros(rows * (m + 1), dtype=C.dtype)
    cupyx.scatter_add(sum_k, flat, K.reshape(-1, d_k) * w)
    cupyx.scatter_add(sum_v, flat, V.reshape(-1, V.shape[-1]) * w)
    cupyx.scatter_add(sum_c, flat, C.ravel())
    sum_k = sum_k.reshape(rows, m + 1, d_k)[:, :m]
    sum_v = sum_v.reshape(rows, m + 1, -1)[:, :m]
    sum_c = sum_c.reshape(rows, m + 1)[:, :m]
    return ((sum_k / sum_c[..., None]).reshape(lead + (m, d_k)),
            (sum_v / sum_c[..., None]).reshape(lead + (m, V.shape[-1])), sum_c.reshape(lead + (m,)))


_MERGE = {"numpy": _merge_numpy, "numba": _merge_numba, "cupy": _merge_cupy}


def merge_evicted(
    keys: Any,
    values: Any,
    counts: Any,
    keep: Any,
    *,
    targets: Any = None,
    threshold: float = -1.0,
    backend: str | None = None,
) -> tuple[Any, Any, Any]:
    """Keep the entries ``keep`` and merge every other entry into its most similar kept entry.

    Similarity is the cosine of the keys. Evicted entry ``e`` joins the kept
    entry ``t`` (among those allowed by ``targets``) with the highest similarity,
    if that similarity is at least ``threshold``; otherwise it is dropped. Each
    kept entry becomes the count-weighted mean of itself and the entries it
    absorbed, and its count becomes the sum of their counts:

    ``k_t <- (c_t k_t + sum_e c_e k_e) / (c_t + sum_e c_e)`` (same for ``v``).

    Attending to a merged entry with ``log(count)`` added to its logit
    approximates attending to all its members when their keys are close.

    Parameters
    ----------
    keys : array of shape (..., n, d_k)
    values : array of shape (..., n, d_v)
    counts : array of shape (..., n)
        How many original tokens each entry stands for (>= 1; 1 for a fresh entry).
    keep : integer array of shape (..., m)
        Distinct indices of the kept entries in each row (e.g. from :func:`select_keep`).
    targets : boolean array broadcastable to (..., m), optional
        Which kept entries may absorb evicted ones; default all.
    threshold : float, default -1.0
        Minimum cosine similarity for a merge, in ``[-1, 1]``; ``-1`` always merges.
    backend : {None, "auto", "numpy", "numba", "cupy"}
        Kernel to run.

    Returns
    -------
    merged_keys : array of shape (..., m, d_k)
    merged_values : array of shape (..., m, d_v)
    merged_counts : array of shape (..., m)
        Same kind as ``keys``.

    References
    ----------
    "D2O: Dynamic Discriminative Operations for Efficient Generative Inference of Large Language Models";
    "EMS: Adaptive Evict-then-Merge Strategy for Head-wise KV Cache Compression Based on Global-Local Importance".

    Examples
    --------
    >>> import numpy as np
    >>> from companion.kernels import merge_evicted
    >>> k = np.array([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.2]]])   # entry 2 resembles entry 0
    >>> v = np.array([[[2.0], [5.0], [4.0]]])
    >>> mk, mv, mc = merge_evicted(k, v, np.ones((1, 3)), np.array([[0, 1]]))
    >>> mv[0, :, 0].tolist(), mc.tolist()
    ([3.0, 5.0], [[2.0, 1.0]])
    """
    kind = check_array(keys, "keys", min_ndim=2)
    check_array(values, "values", min_ndim=2)
    check_array(counts, "counts", min_ndim=1)
    check_array(keep, "keep", min_ndim=1, dtype_kind="iu")
    n = keys.shape[-2]
    lead = tuple(keys.shape[:-2])
    if tuple(values.shape[:-1]) != lead + (n,) or tuple(counts.shape) != lead + (n,):
        raise ValueError(
            "keys (..., n, d_k), values (..., n, d_v) and counts (..., n) must agree; got "
            f"{tuple(keys.shape)}, {tuple(values.shape)} and {tuple(counts.shape)}"
        )
    if tuple(keep.shape[:-1]) != lead or keep.shape[-1] > n:
        raise ValueError(f"keep must have shape {lead + ('m',)} with m <= n = {n}; got {tuple(keep.shape)}")
    threshold = check_float(threshold, "threshold", minimum=-1.0, maximum=1.0)
    name, kernel = dispatch(_MERGE, backend, keys, values, counts, keep)
    kb = for_backend(keep, name).astype(np.int64)
    xp = np if name != "cupy" else __import__("cupy")
    if bool((kb < 0).any()) or bool((kb >= n).any()):
        raise ValueError(f"keep must hold indices in [0, {n}); got values outside")
    if keep.shape[-1] > 1 and bool((xp.diff(xp.sort(kb, axis=-1), axis=-1) == 0).any()):
        raise ValueError("keep must not repeat an index within a row")
    cb = for_backend(counts, name)
    if bool((cb < 1).any()):
        raise ValueError("counts must be >= 1 (each entry stands for at least one token)")
    if targets is None:
        tb = xp.ones(kb.shape, dtype=bool)
    else:
        check_array(targets, "targets", dtype_kind="b", allow_empty=True)
        tb = for_backend(targets, name)
        try:
            tb = xp.broadcast_to(tb, kb.shape)
        except ValueError:
            raise ValueError(f"targets must broadcast to keep's shape {tuple(keep.shape)}; got {tuple(targets.shape)}") from None
    kk, vv = for_backend(keys, name), for_backend(values, name)
    common = np.result_type(kk.dtype, vv.dtype, cb.dtype)
    kk, vv, cc = (a.astype(common, copy=False) for a in (kk, vv, cb))
    out = kernel(kk, vv, cc, kb, tb, threshold)
    return tuple(to_kind(o, kind, like=keys) for o in out)

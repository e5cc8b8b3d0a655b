"""External memory by retrieval: kNN-LM and top-k memory attention.

A language model's final hidden state at position ``t`` summarises the prefix
``x_1..x_t``; the token that followed that prefix in the training text is a
*value* worth remembering. A **datastore** keeps ``(key = hidden state, value =
next token)`` pairs for a whole text. At test time the hidden state of the
current prefix is the query; its ``k`` nearest keys vote for their next
tokens, which gives a second next-token distribution

.. math::

    p_{kNN}(y \\mid x) \\propto \\sum_{i \\in \\text{top-}k} [v_i = y]\\, \\exp(s_i / T),

where ``s_i`` is the similarity (negative squared distance in kNN-LM) and ``T``
a temperature. The two distributions are mixed,
``p = (1 - lam) p_LM + lam p_kNN`` (Khandelwal et al. 2020, "Generalization
through Memorization: Nearest Neighbor Language Models"; analysed in "On
Retrieval Augmentation and the Limitations of Language Model Training").

**Top-k memory attention** (Memorizing Transformer, Wu et al. 2022; used
without fine-tuning in "Extended Mind Transformers") is the same search inside
attention: a query attends only to the ``k`` stored keys with the largest
inner products, with a softmax over those ``k`` scores.

Both searches run on :func:`companion.kernels.topk_inner_product`. Public API:
:class:`Datastore`, :func:`knn_distribution`, :func:`knn_lm_interpolate`,
:func:`topk_memory_attention`, and :func:`windowed_logits` (a course model with
attention restricted to a window, optionally retrieving the top-k evicted keys
per head; from :mod:`companion.memory._m4_windowed`).
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from .._validation import check_array, check_choice, check_float, check_int
from ..backend import array_kind, dispatch, for_backend, to_kind, to_numpy
from ..kernels.topk import _topk_checked, topk_inner_product
from ._m4_windowed import windowed_logits

__all__ = ["Datastore", "knn_distribution", "knn_lm_interpolate", "topk_memory_attention", "windowed_logits", "METRICS"]

METRICS = ("l2", "ip")


# ------------------------------------------------------------------ datastore
class Datastore:
    """Keys (hidden states) and values (next tokens) searched exactly by similarity.

    Parameters
    ----------
    keys : array of shape (N, d)
        Floating, finite; stored as float32 NumPy.
    values : array of shape (N,)
        Integer token ids (>= 0), one per key.
    metric : {"l2", "ip"}
        ``"l2"``: similarity ``-||q - key||^2`` (kNN-LM); ``"ip"``: ``q . key``.

    Notes
    -----
    L2 search runs on the inner-product kernel through the identity
    ``-||q - x||^2 = 2 q.x - ||x||^2 - ||q||^2``: the last term does not depend on
    the key, so ranking ``[q, 1] . [2x, -||x||^2]`` ranks keys by distance.
    An empty datastore cannot be built (``ValueError``); grow one with :meth:`add`.
    Keys are checked (finite, and for "l2" small enough that their squared norms
    fit in float32) when they are stored, not at every search.

    Example
    -------
    >>> import numpy as np
    >>> from companion.memory import Datastore
    >>> store = Datastore(np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]]), np.array([7, 8, 9]))
    >>> sims, vals, idx = store.search(np.array([[0.9, 0.1]]), 2)
    >>> vals.tolist(), idx.tolist(), sims.astype(float).round(2).tolist()
    ([[8, 7]], [[1, 0]], [[-0.02, -0.82]])
    """

    def __init__(self, keys: Any, values: Any, *, metric: str = "l2"):
        self.metric = check_choice(metric, "metric", METRICS)
        keys, values = self._checked(keys, values, dim=None)
        self.keys = keys  # (N, d) float32
        self.values = values  # (N,) int64
        self._search_keys = self._augment(keys)

    def _checked(self, keys, values, dim):
        check_array(keys, "keys", ndim=2, dtype_kind="f")
        check_array(values, "values", ndim=1, dtype_kind="iu")
        keys = np.ascontiguousarray(to_numpy(keys), dtype=np.float32)
        values = np.asarray(to_numpy(values), dtype=np.int64)
        if keys.shape[0] != values.shape[0]:
            raise ValueError(
                f"keys and values must have the same count N; got {keys.shape[0]} keys and {values.shape[0]} values"
            )
        if values.min() < 0:
            raise ValueError(f"values must be token ids >= 0; got a minimum of {int(values.min())}")
        if dim is not None and keys.shape[1] != dim:
            raise ValueError(f"keys must have d={dim} columns like the stored keys; got shape {keys.shape}")
        return keys, values

    def _augment(self, keys: np.ndarray) -> np.ndarray:
        if self.metric == "ip":
            return keys
        norms = np.einsum("nd,nd->n", keys, keys, dtype=np.float64)
        largest = float(np.finfo(np.float32).max)
        if norms.max() > largest or float(np.abs(keys).max()) > largest / 2:
            raise ValueError("keys are too large for float32 L2 search (their squared norms overflow)")
        return np.hstack([2.0 * keys, -norms.astype(np.float32)[:, None]])  # (N, d + 1)

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    @property
    def dim(self) -> int:
        """Key dimension ``d``."""
        return int(self.keys.shape[1])

    @property
    def search_keys(self) -> np.ndarray:
        """The keys as the inner-product kernel sees them: ``(N, d + 1)`` ``[2 x, -||x||^2]`` for "l2", else ``keys``."""
        return self._search_keys

    @property
    def nbytes(self) -> int:
        """Bytes held by keys and values."""
        return int(self.keys.nbytes + self.values.nbytes)

    def add(self, keys: Any, values: Any) -> "Datastore":
        """Append ``(M, d)`` keys and ``(M,)`` values; returns ``self``."""
        keys, values = self._checked(keys, values, dim=self.dim)
        self.keys = np.concatenate([self.keys, keys])
        self.values = np.concatenate([self.values, values])
        self._search_keys = np.concatenate([self._search_keys, self._augment(keys)])
        return self

    def search(self, queries: Any, k: int, *, backend: str | None = None, block_size: int | None = None):
        """Exact ``k`` nearest keys of every query.

        Parameters
        ----------
        queries : array of shape (Q, d)
            Floating, finite.
        k : int
            ``1 <= k <= len(self)``.
        backend, block_size
            Passed to :func:`companion.kernels.topk_inner_product`.

        Returns
        -------
        similarities : numpy.ndarray of shape (Q, k), float32
            Descending; ``-||q - key||^2`` for ``"l2"``.
        values : numpy.ndarray of shape (Q, k), int64
            The neighbours' next tokens.
        indices : numpy.ndarray of shape (Q, k), int64
            Rows of the neighbours in the datastore.
        """
        check_array(queries, "queries", ndim=2, dtype_kind="f")
        q = np.ascontiguousarray(to_numpy(queries), dtype=np.float32)
        if q.shape[1] != self.dim:
            raise ValueError(f"queries must have d={self.dim} columns; got shape {q.shape}")
        k = check_int(k, "k", minimum=1)
        if k > len(self):
            raise ValueError(f"k must be <= the number of stored entries ({len(self)}); got k={k}")
        if self.metric == "l2":
            q_aug = np.hstack([q, np.ones((q.shape[0], 1), dtype=np.float32)])  # (Q, d + 1)
            sims, idx = _topk_checked(q_aug, self._search_keys, k, backend=backend, block_size=block_size,
                                      check_keys=False)  # keys were checked when stored
            sims = sims - np.einsum("qd,qd->q", q, q)[:, None]
        else:
            sims, idx = _topk_checked(q, self._search_keys, k, backend=backend, block_size=block_size, check_keys=False)
        return to_numpy(sims), self.values[to_numpy(idx)], to_numpy(idx)


# ----------------------------------------------------------- kNN distribution
def _knn_numpy(sims: np.ndarray, vals: np.ndarray, vocab_size: int) -> np.ndarray:
    """Reference: softmax over the k neighbours, probabilities added per token, then log."""
    shifted = sims - sims.max(axis=1, keepdims=True)  # (Q, k)
    weights = np.exp(shifted)
    weights /= weights.sum(axis=1, keepdims=True)
    probs = np.zeros((sims.shape[0], vocab_size))  # (Q, V)
    np.add.at(probs, (np.arange(sims.shape[0])[:, None], vals), weights)
    with np.errstate(divide="ignore"):
        return np.log(probs)


@numba.njit(cache=True, parallel=True)
def _knn_kernel(sims, vals, out):  # pragma: no cover - jitted
    n, k = sims.shape
    for q in numba.prange(n):
        top = sims[q, 0]
        for j in range(1, k):
            top = max(top, sims[q, j])
        total = 0.0
        for j in range(k):
            total += np.exp(sims[q, j] - top)
        for v in range(out.shape[1]):
            out[q, v] = 0.0
        for j in range(k):
            out[q, vals[q, j]] += np.exp(sims[q, j] - top) / total
        for v in range(out.shape[1]):
            out[q, v] = np.log(out[q, v]) if out[q, v] > 0.0 else -np.inf


def _knn_numba(sims: np.ndarray, vals: np.ndarray, vocab_size: int) -> np.ndarray:
    out = np.empty((sims.shape[0], vocab_size))
    _knn_kernel(np.ascontiguousarray(sims, dtype=np.float64), np.ascontiguousarray(vals, dtype=np.int64), out)
    return out


def _knn_cupy(sims, vals, vocab_size: int):
    import cupy

    shifted = sims - sims.max(axis=1, keepdims=True)
    weights = cupy.exp(shifted)
    weights /= weights.sum(axis=1, keepdims=True)
    probs = cupy.zeros((sims.shape[0], vocab_size))
    rows = cupy.broadcast_to(cupy.arange(sims.shape[0])[:, None], vals.shape)
    cupy.add.at(probs, (rows, vals), weights)  # scatter-add on the device
    return cupy.log(probs)


_KNN_KERNELS = {"numpy": _knn_numpy, "numba": _knn_numba, "cupy": _knn_cupy}


def knn_distribution(similarities: Any, neighbour_values: Any, vocab_size: int, *, temperature: float = 1.0,
                     backend: str | None = None):
    """Next-token log-probabilities voted by the retrieved neighbours.

    Parameters
    ----------
    similarities : array of shape (Q, k)
        Finite similarities of the ``k`` neighbours (larger is closer).
    neighbour_values : array of shape (Q, k)
        Their next-token ids, in ``[0, vocab_size)``.
    vocab_size : int
        Size of the output distribution.
    temperature : float, default 1.0
        ``> 0``; similarities are divided by it before the softmax.
    backend : {None, "auto", "numpy", "numba", "cupy"}

    Returns
    -------
    array of shape (Q, vocab_size), float64
        ``log p_kNN``; ``-inf`` for tokens no neighbour votes for.

    References
    ----------
    "On Retrieval Augmentation and the Limitations of Language Model Training" (kNN-LM).

    Example
    -------
    >>> import numpy as np
    >>> from companion.memory import knn_distribution
    >>> logp = knn_distribution(np.array([[0.0, 0.0, -50.0]]), np.array([[2, 2, 0]]), 3)
    >>> np.exp(logp).round(3).tolist()
    [[0.0, 0.0, 1.0]]
    """
    kind = check_array(similarities, "similarities", ndim=2, dtype_kind="f")
    check_array(neighbour_values, "neighbour_values", ndim=2, dtype_kind="iu")
    if tuple(similarities.shape) != tuple(neighbour_values.shape):
        raise ValueError(
            "similarities and neighbour_values must have the same (Q, k) shape; got "
            f"{tuple(similarities.shape)} and {tuple(neighbour_values.shape)}"
        )
    vocab_size = check_int(vocab_size, "vocab_size", minimum=1)
    temperature = check_float(temperature, "temperature", minimum=0.0, strict_min=True)
    vals = to_numpy(neighbour_values)
    low, high = int(vals.min()), int(vals.max())
    if low < 0 or high >= vocab_size:
        raise ValueError(f"neighbour_values must lie in [0, vocab_size={vocab_size}); got values in [{low}, {high}]")
    name, kernel = dispatch(_KNN_KERNELS, backend, similarities)
    sims = for_backend(similarities, name).astype("float64") / temperature
    out = kernel(sims, for_backend(neighbour_values, name).astype("int64"), vocab_size)
    return to_kind(out, kind, like=similarities)


# -------------------------------------------------------------- interpolation
def _check_log_probs(x: Any, name: str) -> str:
    """Log-probabilities: floating, no NaN, no +inf (``-inf`` for impossible tokens is fine)."""
    kind = check_array(x, name, min_ndim=1, dtype_kind="f", finite=False)
    arr = to_numpy(x) if kind != "torch" else x.detach().cpu().numpy()
    if np.isnan(arr).any() or np.isposinf(arr).any():
        raise ValueError(f"{name} must be log-probabilities (no NaN, no +inf); found NaN or +inf")
    if (arr > 1e-4).any():
        raise ValueError(f"{name} must be log-probabilities (<= 0); got a maximum of {float(arr.max()):.4g}")
    return kind


def knn_lm_interpolate(model_log_probs: Any, knn_log_probs: Any, lam: float):
    """``log((1 - lam) p_model + lam p_kNN)``, computed stably in log space.

    Parameters
    ----------
    model_log_probs, knn_log_probs : array of shape (..., V)
        Log-probabilities of the same shape; ``-inf`` marks impossible tokens,
        NaN and ``+inf`` are errors.
    lam : float
        Interpolation weight in ``[0, 1]``: 0 returns the model, 1 the kNN distribution.

    Returns
    -------
    array of shape (..., V)
        Same kind as ``model_log_probs``, float64 for NumPy.

    References
    ----------
    "On Retrieval Augmentation and the Limitations of Language Model Training".

    Example
    -------
    >>> import numpy as np
    >>> from companion.memory import knn_lm_interpolate
    >>> lm, knn = np.log([[0.5, 0.5]]), np.array([[0.0, -np.inf]])
    >>> np.exp(knn_lm_interpolate(lm, knn, 0.5)).tolist()
    [[0.75, 0.25]]
    """
    kind = _check_log_probs(model_log_probs, "model_log_probs")
    _check_log_probs(knn_log_probs, "knn_log_probs")
    if tuple(model_log_probs.shape) != tuple(knn_log_probs.shape):
        raise ValueError(
            "model_log_probs and knn_log_probs must have the same shape; got "
            f"{tuple(model_log_probs.shape)} and {tuple(knn_log_probs.shape)}"
        )
    lam = check_float(lam, "lam", minimum=0.0, maximum=1.0)
    if kind == "torch":
        import torch

        knn = knn_log_probs.to(model_log_probs.device, model_log_probs.dtype) if array_kind(knn_log_probs) == "torch" \
            else torch.as_tensor(to_numpy(knn_log_probs), dtype=model_log_probs.dtype, device=model_log_probs.device)
        if lam in (0.0, 1.0):
            return (model_log_probs if lam == 0.0 else knn).clone()
        return torch.logaddexp(model_log_probs + np.log1p(-lam), knn + np.log(lam))
    xp_model = to_numpy(model_log_probs) if kind == "numpy" else model_log_probs
    xp_knn = for_backend(knn_log_probs, "cupy" if kind == "cupy" else "numpy")
    if lam in (0.0, 1.0):
        return (xp_model if lam == 0.0 else xp_knn).astype("float64", copy=True)
    xp = np if kind == "numpy" else __import__("cupy")
    return xp.logaddexp(xp_model.astype("float64") + np.log1p(-lam), xp_knn.astype("float64") + np.log(lam))


# ----------------------------------------------------------- memory attention
def topk_memory_attention(queries: Any, keys: Any, values: Any, k: int, *, scale: float | None = None,
                          backend: str | None = None):
    """Attention over only the ``k`` memory keys with the largest scores (exact search).

    Parameters
    ----------
    queries : array of shape (Q, d)
    keys : array of shape (N, d)
        Memory keys, ``N >= k``; finite.
    values : array of shape (N, d_v)
        One value per key (the same count N).
    k : int
        Memories each query reads, ``1 <= k <= N``.
    scale : float, optional
        Score multiplier, default ``1 / sqrt(d)``.
    backend : {None, "auto", "numpy", "numba", "cupy"}
        Backend of the search.

    Returns
    -------
    output : array of shape (Q, d_v)
        ``sum_j softmax(scale * s_j) values[idx_j]`` over the top ``k``.
    weights : array of shape (Q, k)
        The softmax weights (rows sum to 1).
    indices : array of shape (Q, k), int64
        Which memories were read, by descending score.

    References
    ----------
    Wu et al. 2022, "Memorizing Transformers"; "Extended Mind Transformers".

    Example
    -------
    >>> import numpy as np
    >>> from companion.memory import topk_memory_attention
    >>> keys = np.array([[4.0, 0.0], [0.0, 4.0], [-4.0, 0.0]])
    >>> out, w, idx = topk_memory_attention(np.array([[1.0, 0.0]]), keys, np.eye(3), 2, scale=1.0)
    >>> idx.tolist(), out.round(3).tolist()
    ([[0, 1]], [[0.982, 0.018, 0.0]])
    """
    kind = check_array(queries, "queries", ndim=2, dtype_kind="f")
    check_array(keys, "keys", ndim=2, dtype_kind="f")
    check_array(values, "values", ndim=2, dtype_kind="f")
    if int(values.shape[0]) != int(keys.shape[0]):
        raise ValueError(
            f"keys and values must have the same count N; got {int(keys.shape[0])} keys and {int(values.shape[0])} values"
        )
    scale = 1.0 / np.sqrt(queries.shape[1]) if scale is None else check_float(scale, "scale", minimum=0.0, strict_min=True)
    scores, idx = topk_inner_product(queries, keys, k, backend=backend)
    s = to_numpy(scores).astype(np.float64) * scale  # (Q, k)
    w = np.exp(s - s[:, :1])  # the first score is the largest
    w /= w.sum(axis=1, keepdims=True)
    idx_np = to_numpy(idx)
    out = np.einsum("qk,qkd->qd", w, to_numpy(values).astype(np.float64)[idx_np])  # (Q, d_v)
    return to_kind(out, kind, like=queries), to_kind(w, kind, like=queries), idx

"""Key-value recall with the answer far back: a long-range memory task.

A sequence stores ``n_pairs`` key-value pairs, then a stretch of filler
tokens, then asks for the values of some of the keys::

    k1 v1 k2 v2 ... kn vn  f f f ... f  SEP q1 a1 SEP q2 a2 ...

The model reads ``inputs = s[:-1]`` and predicts ``targets = s[1:]`` (the
causal language-model layout of :mod:`companion.data.sequences`); only the
answers ``a_i`` are in the mask. With ``filler_len`` larger than an attention
window, a model that only sees the newest tokens cannot answer better than
chance (``1 / n_values``), which is what a KV-cache eviction policy or an
external memory has to fix.

Token ids: ``PAD_ID = 0``, ``SEP_ID = 1``, then keys, values and filler
tokens in that order (:func:`kv_recall_vocab_size` counts them).

Example
-------
>>> import numpy as np
>>> from companion.data.kv_recall import key_value_recall_task, kv_recall_vocab_size
>>> x, y, m = key_value_recall_task(np.random.default_rng(0), 2, n_pairs=3, n_keys=8, n_values=8,
...                                 filler_len=5, n_filler=4, n_queries=2)
>>> x.shape, int(m.sum(axis=1)[0]), kv_recall_vocab_size(8, 8, 4)
((2, 16), 2, 22)
"""

from __future__ import annotations

import numpy as np

from .._validation import check_int
from .sequences import IGNORE_INDEX, N_SPECIAL, SEP_ID

__all__ = ["key_value_recall_task", "kv_recall_vocab_size", "kv_recall_answer_positions"]


def kv_recall_vocab_size(n_keys: int, n_values: int, n_filler: int = 0) -> int:
    """Embedding rows a model needs: specials + keys + values + filler tokens."""
    return N_SPECIAL + check_int(n_keys, "n_keys", minimum=1) + check_int(n_values, "n_values", minimum=1) + check_int(
        n_filler, "n_filler", minimum=0
    )


def kv_recall_answer_positions(n_pairs: int, filler_len: int, n_queries: int = 1) -> np.ndarray:
    """Input positions ``t`` (in ``inputs``) where the model must output an answer: the query tokens."""
    start = 2 * n_pairs + filler_len  # index of the first SEP in the full sequence
    return np.array([start + 3 * i + 1 for i in range(n_queries)], dtype=np.int64)


def key_value_recall_task(
    rng: np.random.Generator,
    batch_size: int,
    *,
    n_pairs: int,
    n_keys: int,
    n_values: int,
    filler_len: int,
    n_filler: int = 16,
    n_queries: int = 1,
):
    """Draw a batch of key-value recall sequences.

    Parameters
    ----------
    rng : numpy.random.Generator
    batch_size : int
    n_pairs : int
        Pairs stored at the start; keys are distinct within a sequence, so
        ``n_pairs <= n_keys``.
    n_keys, n_values : int
        Sizes of the key and value vocabularies.
    filler_len : int
        Filler tokens between the pairs and the first query (>= 0).
    n_filler : int
        Size of the filler vocabulary (>= 1 when ``filler_len > 0``).
    n_queries : int
        Questions per sequence, about distinct stored keys (``<= n_pairs``).

    Returns
    -------
    inputs, targets : numpy.ndarray
        ``(batch_size, 2 * n_pairs + filler_len + 3 * n_queries - 1)`` int64.
    mask : numpy.ndarray
        Same shape, bool: true exactly at the query tokens, whose targets are
        the answers (:func:`kv_recall_answer_positions`).
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator; got {type(rng).__name__}")
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    n_keys = check_int(n_keys, "n_keys", minimum=1)
    n_values = check_int(n_values, "n_values", minimum=1)
    n_pairs = check_int(n_pairs, "n_pairs", minimum=1, maximum=n_keys)
    filler_len = check_int(filler_len, "filler_len", minimum=0)
    n_filler = check_int(n_filler, "n_filler", minimum=0)
    n_queries = check_int(n_queries, "n_queries", minimum=1, maximum=n_pairs)
    if filler_len and not n_filler:
        raise ValueError("filler_len > 0 needs n_filler >= 1 filler tokens to draw from")
    key0, value0, filler0 = N_SPECIAL, N_SPECIAL + n_keys, N_SPECIAL + n_keys + n_values

    keys = np.argsort(rng.random((batch_size, n_keys)), axis=1)[:, :n_pairs]  # distinct keys per row
    values = rng.integers(0, n_values, size=(batch_size, n_pairs))
    asked = np.argsort(rng.random((batch_size, n_pairs)), axis=1)[:, :n_queries]  # which pairs are queried
    filler = rng.integers(0, max(n_filler, 1), size=(batch_size, filler_len))

    length = 2 * n_pairs + filler_len + 3 * n_queries
    seq = np.empty((batch_size, length), dtype=np.int64)
    seq[:, 0 : 2 * n_pairs : 2] = key0 + keys
    seq[:, 1 : 2 * n_pairs : 2] = value0 + values
    seq[:, 2 * n_pairs : 2 * n_pairs + filler_len] = filler0 + filler
    rows = np.arange(batch_size)[:, None]
    q0 = 2 * n_pairs + filler_len
    seq[:, q0::3] = SEP_ID
    seq[:, q0 + 1 :: 3] = key0 + keys[rows, asked]
    seq[:, q0 + 2 :: 3] = value0 + values[rows, asked]

    inputs, full_targets = seq[:, :-1], seq[:, 1:]
    mask = np.zeros(inputs.shape, dtype=bool)
    mask[:, kv_recall_answer_positions(n_pairs, filler_len, n_queries)] = True
    targets = np.where(mask, full_targets, IGNORE_INDEX)
    return inputs.copy(), targets, mask

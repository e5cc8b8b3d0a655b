"""The triggered-bigram task: global bigram statistics plus in-context trigger/output pairs.

Paper: Bietti et al., "Birth of a Transformer: A Memory Viewpoint" (NeurIPS 2023).

A :class:`TriggeredBigramSource` fixes, once for all sequences,

* a bigram transition matrix over ``vocab_size`` content tokens (each row drawn
  from a Dirichlet distribution, so some successors are much likelier than
  others) and an initial distribution;
* ``n_triggers`` **trigger** tokens.

Each sequence draws its own **output** token for every trigger (uniformly among
the tokens that are not triggers: an output is never a trigger). The sequence
then follows the bigram, except that right after trigger ``k`` comes its output
``o_k``. The first occurrence of a trigger in a sequence is unpredictable (the
output is fresh), but every later occurrence can be answered by looking back:
find the earlier occurrence of the same token and copy what followed it. That
is the job of an *induction head*. All other positions reward the bigram
statistics, which a model can store in its weights.

Token ids follow :mod:`companion.data.sequences`: content tokens are
``N_SPECIAL .. N_SPECIAL + vocab_size - 1`` and a model needs
``task_vocab_size(vocab_size)`` embedding rows. :func:`triggered_bigram_task`
returns ``(inputs, targets, mask)`` of shape ``(batch, seq_len)`` with
``targets[:, t] = inputs[:, t + 1]`` (next-token prediction), so
``functools.partial(triggered_bigram_task, source=..., seq_len=...)`` is a
``batch_fn`` for :func:`companion.nn.train`.

Example
-------
>>> import numpy as np
>>> from companion.data.triggered_bigram import make_triggered_bigram, triggered_bigram_task
>>> source = make_triggered_bigram(np.random.default_rng(0), vocab_size=16, n_triggers=2)
>>> x, y, m = triggered_bigram_task(np.random.default_rng(1), 4, 32, source=source, mask="repeat_triggers")
>>> x.shape, y.shape, m.dtype
((4, 32), (4, 32), dtype('bool'))
>>> bool(np.isin(x[m], source.triggers).all())
True
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .._validation import check_array, check_float, check_int
from .sequences import IGNORE_INDEX, N_SPECIAL

__all__ = [
    "TriggeredBigramSource",
    "make_triggered_bigram",
    "triggered_bigram_task",
    "trigger_masks",
    "fit_bigram",
    "bigram_accuracy",
    "TRIGGER_MASKS",
]

TRIGGER_MASKS = ("all", "triggers", "first_triggers", "repeat_triggers", "non_triggers")


@dataclasses.dataclass(frozen=True)
class TriggeredBigramSource:
    """The fixed part of a triggered-bigram distribution (shared by all sequences).

    Attributes
    ----------
    vocab_size : int
        Number of content tokens.
    transitions : numpy.ndarray of shape (vocab_size, vocab_size)
        ``transitions[a, b]``: probability that content token ``b`` follows
        content token ``a`` (indices without the ``N_SPECIAL`` offset); rows sum to 1.
    initial : numpy.ndarray of shape (vocab_size,)
        Distribution of the first token.
    triggers : numpy.ndarray of shape (n_triggers,), int64
        Trigger token ids (with the ``N_SPECIAL`` offset, as they appear in batches).
    outputs_pool : numpy.ndarray of shape (vocab_size - n_triggers,), int64
        Token ids an output may take (every non-trigger content token).
    """

    vocab_size: int
    transitions: np.ndarray
    initial: np.ndarray
    triggers: np.ndarray
    outputs_pool: np.ndarray

    @property
    def n_triggers(self) -> int:
        """Number of trigger tokens."""
        return len(self.triggers)


def _check_rng(rng: Any) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (e.g. numpy.random.default_rng(seed)); got {type(rng).__name__}")
    return rng


def make_triggered_bigram(
    rng: np.random.Generator,
    vocab_size: int = 64,
    n_triggers: int = 5,
    *,
    concentration: float = 0.5,
    trigger_rate: float = 0.25,
) -> TriggeredBigramSource:
    """Draw the bigram matrix and the trigger tokens of a triggered-bigram task.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every random draw.
    vocab_size : int, default 64
        Content tokens, >= 2.
    n_triggers : int, default 5
        Trigger tokens, in ``[1, vocab_size - 1]`` (at least one token must be
        left to serve as an output).
    concentration : float, default 0.5
        Dirichlet parameter of each transition row over the non-trigger tokens,
        > 0; smaller values give peakier (more predictable) bigrams.
    trigger_rate : float, default 0.25
        Probability, after a non-trigger token, that the next token is a trigger
        (spread evenly over the triggers), in ``(0, 1)``. It sets how often a
        trigger comes back within a sequence, hence how much signal the
        induction head gets.

    Returns
    -------
    TriggeredBigramSource

    References
    ----------
    Bietti et al., "Birth of a Transformer: A Memory Viewpoint", NeurIPS 2023.

    Examples
    --------
    >>> import numpy as np
    >>> s = make_triggered_bigram(np.random.default_rng(0), vocab_size=8, n_triggers=3)
    >>> s.transitions.shape, s.n_triggers, len(s.outputs_pool)
    ((8, 8), 3, 5)
    """
    _check_rng(rng)
    vocab_size = check_int(vocab_size, "vocab_size", minimum=2)
    n_triggers = check_int(n_triggers, "n_triggers", minimum=1, maximum=vocab_size - 1)
    concentration = check_float(concentration, "concentration", minimum=0.0, strict_min=True)
    trigger_rate = check_float(trigger_rate, "trigger_rate", minimum=0.0, strict_min=True)
    if trigger_rate >= 1.0:
        raise ValueError(f"trigger_rate must be < 1; got {trigger_rate}")
    chosen = np.sort(rng.choice(vocab_size, size=n_triggers, replace=False))
    others = np.setdiff1d(np.arange(vocab_size), chosen)
    transitions = np.zeros((vocab_size, vocab_size))  # (V, V)
    transitions[:, others] = (1.0 - trigger_rate) * rng.dirichlet(
        np.full(len(others), concentration), size=vocab_size)
    transitions[:, chosen] = trigger_rate / n_triggers
    initial = np.full(vocab_size, 1.0 / vocab_size)
    triggers = (chosen + N_SPECIAL).astype(np.int64)
    pool = (others + N_SPECIAL).astype(np.int64)
    return TriggeredBigramSource(vocab_size, transitions, initial, triggers, pool)


def _sample_rows(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One categorical draw per row of ``probs`` (batch, V) by inverting the cumulative sum."""
    cumulative = np.cumsum(probs, axis=1)  # (batch, V)
    u = rng.random((probs.shape[0], 1)) * cumulative[:, -1:]
    return np.minimum((cumulative <= u).sum(axis=1), probs.shape[1] - 1)


def trigger_masks(inputs: Any, triggers: Any) -> dict:
    """Boolean masks of the positions of ``inputs`` that hold a trigger, split by occurrence.

    Parameters
    ----------
    inputs : numpy.ndarray of shape (batch, seq), integer
    triggers : numpy.ndarray of shape (n_triggers,), integer
        Trigger token ids.

    Returns
    -------
    dict of str -> numpy.ndarray of shape (batch, seq), bool
        ``"all"``, ``"triggers"`` (any trigger), ``"first_triggers"`` (first
        occurrence of that trigger in the row), ``"repeat_triggers"`` (second and
        later occurrences: the output already appeared in the context),
        ``"non_triggers"``.

    Examples
    --------
    >>> import numpy as np
    >>> m = trigger_masks(np.array([[5, 7, 5, 9, 5]]), np.array([5]))
    >>> m["repeat_triggers"].astype(int).tolist()
    [[0, 0, 1, 0, 1]]
    """
    check_array(inputs, "inputs", ndim=2, dtype_kind="iu")
    check_array(triggers, "triggers", ndim=1, dtype_kind="iu")
    inputs, triggers = np.asarray(inputs), np.asarray(triggers)
    is_trigger = np.isin(inputs, triggers)  # (batch, seq)
    seen_before = np.zeros_like(is_trigger)
    for k in triggers:
        hits = inputs == k
        seen_before |= hits & (np.cumsum(hits, axis=1) >= 2)
    return {
        "all": np.ones_like(is_trigger),
        "triggers": is_trigger,
        "first_triggers": is_trigger & ~seen_before,
        "repeat_triggers": seen_before,
        "non_triggers": ~is_trigger,
    }


def triggered_bigram_task(
    rng: np.random.Generator,
    batch_size: int,
    seq_len: int,
    *,
    source: TriggeredBigramSource,
    mask: str = "all",
):
    """Draw a batch of triggered-bigram sequences for next-token prediction.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every random draw (outputs and tokens).
    batch_size : int
        Sequences, >= 1.
    seq_len : int
        Input length, >= 2 (``seq_len + 1`` tokens are drawn).
    source : TriggeredBigramSource
        From :func:`make_triggered_bigram`.
    mask : {"all", "triggers", "first_triggers", "repeat_triggers", "non_triggers"}
        Which positions are scored (see :func:`trigger_masks`): ``"all"`` for
        language-model training, ``"repeat_triggers"`` to measure the induction
        head.

    Returns
    -------
    inputs, targets : numpy.ndarray of shape (batch_size, seq_len), int64
        ``targets[:, t]`` is the token after ``inputs[:, t]``; positions outside
        the mask hold ``IGNORE_INDEX``.
    mask : numpy.ndarray of shape (batch_size, seq_len), bool

    References
    ----------
    Bietti et al., "Birth of a Transformer: A Memory Viewpoint", NeurIPS 2023.

    Examples
    --------
    >>> import numpy as np
    >>> s = make_triggered_bigram(np.random.default_rng(0), vocab_size=12, n_triggers=2)
    >>> x, y, m = triggered_bigram_task(np.random.default_rng(0), 3, 40, source=s)
    >>> bool(m.all()), bool((x[:, 1:] == y[:, :-1]).all())
    (True, True)
    """
    _check_rng(rng)
    if not isinstance(source, TriggeredBigramSource):
        raise TypeError(f"source must be a TriggeredBigramSource (see make_triggered_bigram); got {type(source).__name__}")
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    seq_len = check_int(seq_len, "seq_len", minimum=2)
    if mask not in TRIGGER_MASKS:
        raise ValueError(f"mask must be one of {TRIGGER_MASKS}; got {mask!r}")
    v = source.vocab_size
    outputs = source.outputs_pool[rng.integers(0, len(source.outputs_pool), size=(batch_size, source.n_triggers))]
    # lookup from content index to the sequence's output (or -1 for non-triggers): (batch, V)
    forced = np.full((batch_size, v), -1, dtype=np.int64)
    forced[:, source.triggers - N_SPECIAL] = outputs - N_SPECIAL
    tokens = np.empty((batch_size, seq_len + 1), dtype=np.int64)  # content indices 0..V-1
    tokens[:, 0] = _sample_rows(rng, np.broadcast_to(source.initial, (batch_size, v)))
    rows = np.arange(batch_size)
    for t in range(seq_len):
        current = tokens[:, t]
        drawn = _sample_rows(rng, source.transitions[current])  # (batch,)
        out = forced[rows, current]
        tokens[:, t + 1] = np.where(out >= 0, out, drawn)
    tokens += N_SPECIAL
    inputs = np.ascontiguousarray(tokens[:, :-1])
    targets = np.ascontiguousarray(tokens[:, 1:])
    chosen = trigger_masks(inputs, source.triggers)[mask]
    targets = np.where(chosen, targets, IGNORE_INDEX)
    return inputs, targets, chosen


def fit_bigram(inputs: Any, targets: Any, mask: Any, *, n_tokens: int) -> np.ndarray:
    """Count bigrams ``(inputs[t], targets[t])`` over the masked positions: the bigram baseline's table.

    Parameters
    ----------
    inputs, targets : numpy.ndarray of shape (batch, seq), integer
    mask : numpy.ndarray of shape (batch, seq), bool
        Positions to count.
    n_tokens : int
        Number of token ids (e.g. ``task_vocab_size(vocab_size)``).

    Returns
    -------
    numpy.ndarray of shape (n_tokens, n_tokens), float64
        ``counts[a, b]``: how often ``b`` followed ``a``.

    Examples
    --------
    >>> import numpy as np
    >>> c = fit_bigram(np.array([[2, 3, 2]]), np.array([[3, 2, 3]]), np.ones((1, 3), bool), n_tokens=4)
    >>> int(c[2, 3]), int(c[3, 2])
    (2, 1)
    """
    x, y, m = _check_scored(inputs, targets, mask)
    n_tokens = check_int(n_tokens, "n_tokens", minimum=1)
    a, b = x[m], y[m]
    if a.size and (min(a.min(), b.min()) < 0 or max(a.max(), b.max()) >= n_tokens):
        raise ValueError(f"token ids at masked positions must lie in [0, {n_tokens})")
    counts = np.zeros((n_tokens, n_tokens))
    np.add.at(counts, (a, b), 1.0)
    return counts


def bigram_accuracy(counts: np.ndarray, inputs: Any, targets: Any, mask: Any) -> float:
    """Accuracy of predicting ``argmax counts[inputs[t]]`` at the masked positions (the bigram baseline).

    Parameters
    ----------
    counts : numpy.ndarray of shape (n_tokens, n_tokens)
        From :func:`fit_bigram`.
    inputs, targets : numpy.ndarray of shape (batch, seq), integer
    mask : numpy.ndarray of shape (batch, seq), bool

    Returns
    -------
    float
        Fraction of masked positions predicted right (NaN if the mask is empty).

    Examples
    --------
    >>> import numpy as np
    >>> c = np.array([[0.0, 5.0], [1.0, 0.0]])
    >>> bigram_accuracy(c, np.array([[0, 1]]), np.array([[1, 1]]), np.ones((1, 2), bool))
    0.5
    """
    check_array(counts, "counts", ndim=2, dtype_kind="fiu")
    x, y, m = _check_scored(inputs, targets, mask)
    counts = np.asarray(counts)
    if x[m].size == 0:
        return float("nan")
    if x[m].max() >= counts.shape[0]:
        raise ValueError(f"inputs hold ids >= counts.shape[0] = {counts.shape[0]}")
    predicted = counts.argmax(axis=1)[x[m]]
    return float((predicted == y[m]).mean())


def _check_scored(inputs, targets, mask):
    check_array(inputs, "inputs", ndim=2, dtype_kind="iu")
    check_array(targets, "targets", ndim=2, dtype_kind="iu")
    check_array(mask, "mask", ndim=2, dtype_kind="b")
    x, y, m = np.asarray(inputs), np.asarray(targets), np.asarray(mask)
    if not (x.shape == y.shape == m.shape):
        raise ValueError(f"inputs, targets and mask must have one shape; got {x.shape}, {y.shape}, {m.shape}")
    return x, y, m

"""Length generalization: randomized and bilevel position ids, and a train-short / test-long harness.

Chapter P2. A model trained on sequences of at most ``L`` tokens meets, at test
time, position ids it never saw (absolute encodings) or distances it never saw
(relative ones). Two remedies are implemented here as *position ids* that any
encoding of :mod:`companion.positional` can consume:

* :func:`randomized_positions` - during training, give a sequence of length
  ``n`` a sorted random subset of ``[0, max_len)`` instead of ``0 .. n-1``, so
  that every id and every gap up to ``max_len`` is seen in training (Ruoss et
  al. 2023, "Randomized Positional Encodings Boost Length Generalization of
  Transformers");
* :func:`bilevel_positions` - split the position of a token into the index of
  its segment and its place inside the segment (He et al. 2024, "Two Stones Hit
  One Bird: Bilevel Positional Encoding for Better Length Extrapolation").

:func:`run_length_generalization` trains the course's
:class:`~companion.nn.TinyTransformer` with one encoding on one task of
:data:`companion.data.ALGORITHMIC_TASKS` with lengths drawn per batch from the
training range, and measures token and whole-sequence accuracy at every test
length, overall and per answer position.

Example
-------
>>> import numpy as np
>>> from companion.positional import randomized_positions, bilevel_positions
>>> randomized_positions(4, 16, rng=np.random.default_rng(0)).tolist()
[4, 7, 8, 11]
>>> seg, within = bilevel_positions(np.array([0, 0, 0, 1, 1, 2]))
>>> seg.tolist(), within.tolist()
([0, 0, 0, 1, 1, 2], [0, 1, 2, 0, 1, 0])
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import numpy as np

from .._validation import check_array, check_choice, check_int
from ..backend import array_kind, to_kind, to_numpy

__all__ = [
    "randomized_positions",
    "bilevel_positions",
    "segments_from_separators",
    "LENGTH_ENCODINGS",
    "LengthGeneralizationResult",
    "evaluate_lengths",
    "run_length_generalization",
]


def _check_rng(rng: Any) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            "rng must be a numpy.random.Generator (e.g. numpy.random.default_rng(seed)); "
            f"got {type(rng).__name__}"
        )
    return rng


# --------------------------------------------------------------------------- position ids
def randomized_positions(
    seq_len: int, max_len: int, *, rng: np.random.Generator, batch_size: Optional[int] = None
) -> np.ndarray:
    """A sorted sample of distinct position ids from ``[0, max_len)``.

    Every subset of size ``seq_len`` is equally likely, so each id and each gap
    between ids up to ``max_len`` turns up during training, while the order of
    the tokens is kept. :class:`~companion.nn.TinyTransformer` with
    ``positional="randomized"`` draws from the same distribution with its own
    torch generator at every training step.

    Parameters
    ----------
    seq_len : int
        Number of ids per sequence, ``1 <= seq_len <= max_len``.
    max_len : int
        Size of the range the ids come from (>= 1). To generalize to sequences
        of length ``M`` it must be at least ``M``.
    rng : numpy.random.Generator
        Source of the draw.
    batch_size : int, optional
        Draw this many independent rows.

    Returns
    -------
    numpy.ndarray of int64, shape (seq_len,) or (batch_size, seq_len)
        Strictly increasing along the last axis.

    Raises
    ------
    TypeError
        ``rng`` is not a NumPy generator, or a size is not an integer.
    ValueError
        ``seq_len > max_len`` or a size is below 1.

    References
    ----------
    Ruoss et al., "Randomized Positional Encodings Boost Length Generalization of
    Transformers", ACL 2023.

    Example
    -------
    >>> import numpy as np
    >>> pos = randomized_positions(5, 100, rng=np.random.default_rng(1), batch_size=2)
    >>> pos.shape, bool((np.diff(pos, axis=1) > 0).all()), bool(pos.max() < 100)
    ((2, 5), True, True)
    """
    _check_rng(rng)
    seq_len = check_int(seq_len, "seq_len", minimum=1)
    max_len = check_int(max_len, "max_len", minimum=1)
    if seq_len > max_len:
        raise ValueError(
            f"seq_len must be <= max_len: {seq_len} distinct ids cannot come from [0, {max_len}); "
            "raise max_len to cover the longest sequence"
        )
    if batch_size is None:
        return np.sort(rng.choice(max_len, size=seq_len, replace=False)).astype(np.int64)  # (seq,)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    # argsort of uniform keys is a uniform random permutation per row; its first
    # seq_len entries are a uniform random subset.
    keys = rng.random((batch_size, max_len))  # (batch, max_len)
    chosen = np.argpartition(keys, seq_len - 1, axis=1)[:, :seq_len] if seq_len < max_len else np.argsort(keys, axis=1)
    return np.sort(chosen, axis=1).astype(np.int64)  # (batch, seq)


def bilevel_positions(segment_ids: Any):
    """Split each token's position into (segment index, position within the segment).

    Parameters
    ----------
    segment_ids : array of int, shape (seq,) or (batch, seq)
        Non-negative, non-decreasing along the last axis: tokens with the same id
        form one segment (e.g. one sentence). Ids need not start at 0 or be
        consecutive. NumPy, CuPy or torch.

    Returns
    -------
    segment_index : array of int64, same shape
        ``0`` for the first segment of each row, ``1`` for the next, ...: the
        *inter-segment* position, which BiPE encodes with a relative encoding
        (RoPE or ALiBi) so that it extrapolates to more segments.
    position_within : array of int64, same shape
        ``0, 1, 2, ...`` restarting at every segment: the *intra-segment*
        position, which BiPE encodes with an absolute encoding. It stays below
        the longest segment, however long the sequence.

    Both come back as the kind of array given (NumPy in, NumPy out; torch in,
    torch out on the same device).

    Raises
    ------
    TypeError
        ``segment_ids`` is not an integer array.
    ValueError
        It is empty, not 1-D/2-D, negative somewhere, or decreases along a row.

    References
    ----------
    He et al., "Two Stones Hit One Bird: Bilevel Positional Encoding for Better
    Length Extrapolation", ICML 2024.

    Example
    -------
    >>> import numpy as np
    >>> seg, within = bilevel_positions(np.array([[4, 4, 7, 7, 7], [0, 1, 1, 2, 2]]))
    >>> seg.tolist()
    [[0, 0, 1, 1, 1], [0, 1, 1, 2, 2]]
    >>> within.tolist()
    [[0, 1, 0, 1, 2], [0, 0, 1, 0, 1]]
    """
    kind = check_array(segment_ids, "segment_ids", ndim=(1, 2), dtype_kind="iu")
    ids = np.asarray(to_numpy(segment_ids), dtype=np.int64)
    rows = ids.reshape(-1, ids.shape[-1])  # (batch, seq)
    if (rows < 0).any():
        raise ValueError(f"segment_ids must be non-negative; got a minimum of {int(rows.min())}")
    if (np.diff(rows, axis=1) < 0).any():
        row, col = np.argwhere(np.diff(rows, axis=1) < 0)[0]
        raise ValueError(
            "segment_ids must be non-decreasing along the sequence; "
            f"row {int(row)} goes from {int(rows[row, col])} to {int(rows[row, col + 1])} at position {int(col) + 1}"
        )
    segment_index, position_within = _bilevel_numpy(rows)
    out = segment_index.reshape(ids.shape), position_within.reshape(ids.shape)
    if kind == "numpy":
        return out
    return tuple(to_kind(a, kind, like=segment_ids) for a in out)


def _bilevel_numpy(rows: np.ndarray):
    """Reference: (batch, seq) non-decreasing ids -> (segment index, position within), both (batch, seq)."""
    n = rows.shape[1]
    starts = np.ones(rows.shape, dtype=bool)  # (batch, seq): a segment starts here
    starts[:, 1:] = rows[:, 1:] != rows[:, :-1]
    segment_index = np.cumsum(starts, axis=1) - 1
    t = np.arange(n, dtype=np.int64)
    start_of_mine = np.maximum.accumulate(np.where(starts, t, 0), axis=1)  # (batch, seq)
    return segment_index.astype(np.int64), (t - start_of_mine).astype(np.int64)


def segments_from_separators(tokens: Any, separator: int):
    """Segment ids that start a new segment after every ``separator`` token.

    The separator belongs to the segment it closes (like the full stop of a
    sentence). Feed the result to :func:`bilevel_positions`.

    Parameters
    ----------
    tokens : array of int, shape (seq,) or (batch, seq)
        NumPy, CuPy or torch.
    separator : int
        The token id that ends a segment.

    Returns
    -------
    array of int64, same shape and kind as ``tokens``
        ``0`` up to and including the first separator, then ``1``, ...

    Example
    -------
    >>> import numpy as np
    >>> segments_from_separators(np.array([5, 6, 1, 7, 1, 8]), separator=1).tolist()
    [0, 0, 0, 1, 1, 2]
    """
    kind = check_array(tokens, "tokens", ndim=(1, 2), dtype_kind="iu")
    separator = check_int(separator, "separator")
    is_sep = np.asarray(to_numpy(tokens)) == separator
    ids = (np.cumsum(is_sep, axis=-1) - is_sep).astype(np.int64)
    return ids if kind == "numpy" else to_kind(ids, kind, like=tokens)


# --------------------------------------------------------------------------- harness
#: Encodings the harness compares, as :class:`~companion.nn.TransformerConfig` settings.
LENGTH_ENCODINGS = {
    "none": dict(positional="none"),
    "sinusoidal": dict(positional="sinusoidal"),
    "learned": dict(positional="learned"),
    "relative": dict(positional="relative"),
    "rope": dict(positional="rope"),
    "alibi": dict(positional="alibi"),
    "randomized_sinusoidal": dict(positional="randomized", randomized_base="sinusoidal"),
    "randomized_rope": dict(positional="randomized", randomized_base="rope"),
}

_RESERVED = ("vocab_size", "positional", "randomized_base", "max_len")


@dataclasses.dataclass
class LengthGeneralizationResult:
    """What :func:`run_length_generalization` measured.

    Attributes
    ----------
    task, encoding : str
    accuracy : pandas.DataFrame
        One row per (test length, position scheme) with columns ``task``,
        ``encoding``, ``length`` (input tokens), ``seq_len`` (model input
        length), ``in_distribution`` (length within the training lengths),
        ``positions`` (``"evenly"``: ids ``0 .. n-1``; ``"random"``: a sorted
        random subset of ``[0, position_range)``, only for randomized
        encodings), ``token_accuracy``, ``sequence_accuracy``, ``n_sequences``.
    per_position : pandas.DataFrame
        Token accuracy per answer position: columns ``task``, ``encoding``,
        ``length``, ``positions``, ``answer_index`` (0 for the first answer
        token), ``accuracy``.
    model : companion.nn.TinyTransformer
        The trained model (in eval mode).
    history : companion.nn.TrainHistory
    position_range : int
        ``max_len`` of the model: the range randomized ids are drawn from.
    train_lengths, test_lengths : tuple of int
    wall_time_s : float
        Training plus evaluation time.
    """

    task: str
    encoding: str
    accuracy: Any
    per_position: Any
    model: Any
    history: Any
    position_range: int
    train_lengths: tuple
    test_lengths: tuple
    wall_time_s: float

    def mean_accuracy(
        self,
        lengths: Optional[Iterable[int]] = None,
        *,
        metric: str = "token_accuracy",
        positions: str = "evenly",
    ) -> float:
        """Mean of ``metric`` over ``lengths`` (default: the out-of-distribution test lengths).

        Example
        -------
        ``result.mean_accuracy(range(32, 65))`` averages token accuracy over the
        test lengths from 32 to 64.
        """
        check_choice(metric, "metric", ("token_accuracy", "sequence_accuracy"))
        check_choice(positions, "positions", ("evenly", "random"))
        table = self.accuracy[self.accuracy["positions"] == positions]
        if lengths is None:
            table = table[~table["in_distribution"]]
        else:
            table = table[table["length"].isin([int(n) for n in lengths])]
        if table.empty:
            raise ValueError(f"no {positions!r} rows for the requested lengths in this result")
        return float(table[metric].mean())


def _check_lengths(lengths: Any, name: str) -> tuple:
    if isinstance(lengths, (str, bytes)) or not isinstance(lengths, Iterable):
        raise TypeError(f"{name} must be a sequence of integers (e.g. range(1, 17)); got {type(lengths).__name__}")
    out = tuple(check_int(n, f"{name}[{i}]", minimum=1) for i, n in enumerate(lengths))
    if not out:
        raise ValueError(f"{name} must contain at least one length")
    return out


def _resolve_task(task: Any) -> tuple[str, Callable]:
    from ..data import ALGORITHMIC_TASKS

    if isinstance(task, str):
        check_choice(task, "task", tuple(ALGORITHMIC_TASKS))
        return task, ALGORITHMIC_TASKS[task]
    if callable(task):
        return getattr(task, "__name__", "task").removesuffix("_task"), task
    raise TypeError(
        f"task must be a name from {tuple(ALGORITHMIC_TASKS)} or a callable "
        f"task(rng, batch_size, length, *, vocab_size); got {type(task).__name__}"
    )


def _build_config(model_config: Any, encoding: str, vocab_size: int, position_range: int):
    from ..nn import TransformerConfig

    overrides = dict(LENGTH_ENCODINGS[encoding], vocab_size=vocab_size, max_len=position_range)
    if model_config is None:
        return TransformerConfig(**overrides)
    if isinstance(model_config, TransformerConfig):
        base = {f.name: getattr(model_config, f.name) for f in dataclasses.fields(model_config)}
        base.update(overrides)
        return TransformerConfig(**base)
    if isinstance(model_config, dict):
        clash = sorted(set(model_config) & set(_RESERVED))
        if clash:
            raise ValueError(
                f"model_config must not set {clash}: the harness sets them from task, encoding "
                "and position_range"
            )
        return TransformerConfig(**model_config, **overrides)
    raise TypeError(f"model_config must be a dict, a TransformerConfig or None; got {type(model_config).__name__}")


def _correct_matrix(model, inputs, targets, mask, positions, device, batch_size: int = 256) -> np.ndarray:
    """(n, seq) bool: greedy prediction equals the target at a masked position."""
    import torch

    n = inputs.shape[0]
    preds = np.empty(inputs.shape, dtype=np.int64)  # (n, seq)
    model.eval()
    with torch.no_grad():
        for lo in range(0, n, batch_size):
            x = torch.as_tensor(inputs[lo:lo + batch_size], device=device)
            if positions is None:
                logits = model(x)
            else:
                logits = model(x, torch.as_tensor(positions[lo:lo + batch_size], device=device))
            preds[lo:lo + batch_size] = logits.argmax(dim=-1).cpu().numpy()
    return (preds == targets) & mask


def evaluate_lengths(
    model: Any,
    task: Union[str, Callable],
    lengths: Sequence[int],
    *,
    rng: np.random.Generator,
    vocab_size: int,
    n_sequences: int = 256,
    random_positions: bool = False,
    in_distribution: Optional[Iterable[int]] = None,
    device: Any = None,
):
    """Token, sequence and per-answer-position accuracy of ``model`` at each length.

    Parameters
    ----------
    model : companion.nn.TinyTransformer
        Evaluated in eval mode (positions ``0 .. n-1`` unless ``random_positions``).
    task : str or callable
        A name from :data:`companion.data.ALGORITHMIC_TASKS` or a task with the
        same signature.
    lengths : sequence of int
        Input lengths to test.
    rng : numpy.random.Generator
        Draws the test sequences (and random positions).
    vocab_size : int
        Content tokens of the task.
    n_sequences : int
        Test sequences per length.
    random_positions : bool
        Also evaluate with sorted random ids from ``[0, model.config.max_len)``
        (rows with ``positions="random"``); needs a model that reads position ids.
    in_distribution : iterable of int, optional
        The training lengths, to fill the ``in_distribution`` column.
    device : optional
        Where to run; default the model's device.

    Returns
    -------
    accuracy, per_position : pandas.DataFrame
        As in :class:`LengthGeneralizationResult` (without the ``encoding`` column).
    """
    import pandas as pd

    _check_rng(rng)
    name, task_fn = _resolve_task(task)
    lengths = _check_lengths(lengths, "lengths")
    vocab_size = check_int(vocab_size, "vocab_size", minimum=1)
    n_sequences = check_int(n_sequences, "n_sequences", minimum=1)
    trained = set(in_distribution or ())
    device = device if device is not None else model.token_embedding.weight.device
    schemes = ["evenly", "random"] if random_positions else ["evenly"]
    rows, position_rows = [], []
    for length in lengths:
        inputs, targets, mask = task_fn(rng, n_sequences, length, vocab_size=vocab_size)
        seq = inputs.shape[1]
        for scheme in schemes:
            positions = None
            if scheme == "random":
                positions = randomized_positions(seq, model.config.max_len, rng=rng, batch_size=n_sequences)
            correct = _correct_matrix(model, inputs, targets, mask, positions, device)  # (n, seq)
            scored = mask.any(axis=1)
            rows.append({
                "task": name, "length": length, "seq_len": seq, "in_distribution": length in trained,
                "positions": scheme,
                "token_accuracy": float(correct.sum() / mask.sum()),
                "sequence_accuracy": float(((correct | ~mask).all(axis=1) & scored).sum() / scored.sum()),
                "n_sequences": n_sequences,
            })
            answer_index = np.cumsum(mask, axis=1) - 1  # (n, seq): rank of each answer position
            hits = np.bincount(answer_index[mask], weights=correct[mask].astype(float))
            counts = np.bincount(answer_index[mask])
            position_rows += [
                {"task": name, "length": length, "positions": scheme, "answer_index": k,
                 "accuracy": float(hits[k] / counts[k])}
                for k in range(len(counts))
            ]
    return pd.DataFrame(rows), pd.DataFrame(position_rows)


def run_length_generalization(
    task: Union[str, Callable],
    encoding: str,
    *,
    train_lengths: Sequence[int],
    test_lengths: Sequence[int],
    rng: np.random.Generator,
    vocab_size: int = 8,
    model_config: Any = None,
    train_config: Any = None,
    position_range: Optional[int] = None,
    n_eval: int = 256,
    random_positions: bool = True,
    device: Any = None,
    progress: bool = False,
) -> LengthGeneralizationResult:
    """Train on short sequences, test on long ones: one task, one positional encoding.

    Every training batch has one length drawn uniformly from ``train_lengths``.
    After training, accuracy is measured at each of ``test_lengths`` on fresh
    sequences with evenly spaced ids ``0 .. n-1`` and, for the randomized
    encodings, also with random sorted ids.

    Parameters
    ----------
    task : str or callable
        A name from :data:`companion.data.ALGORITHMIC_TASKS` (``"copy"``,
        ``"reverse"``, ``"duplicate"``, ``"sort"``, ``"odds_first"``,
        ``"modular_sum"``) or ``task(rng, batch_size, length, *, vocab_size)``.
    encoding : str
        A key of :data:`LENGTH_ENCODINGS`.
    train_lengths, test_lengths : sequence of int
        Input lengths (tokens before the separator) for training and testing,
        e.g. ``range(1, 17)`` and ``[8, 16, 32, 48, 64]``.
    rng : numpy.random.Generator
        The one source of randomness: seeds the weights, the training batches,
        the randomized positions and the test sets.
    vocab_size : int
        Content tokens of the task.
    model_config : dict or TransformerConfig, optional
        Shape of the model (``d_model``, ``n_heads``, ``n_layers``, ...). The
        harness sets ``vocab_size``, ``positional``, ``randomized_base`` and
        ``max_len`` itself.
    train_config : companion.nn.TrainConfig, optional
        Steps, learning rate, batch size (default 1000 steps, lr 1e-3, batch
        64). Its ``seed`` is replaced by a draw from ``rng``.
    position_range : int, optional
        ``max_len`` of the model: randomized ids come from ``[0, position_range)``
        and table encodings get that many rows. Must cover the longest test
        sequence (prompt plus answer); default twice that.
    n_eval : int
        Test sequences per length.
    random_positions : bool
        For randomized encodings, also evaluate with random ids.
    device : str or torch.device, optional
        Where to train and evaluate (default CPU).
    progress : bool
        Show the training progress bar.

    Returns
    -------
    LengthGeneralizationResult

    Raises
    ------
    TypeError, ValueError
        Unknown task or encoding, bad lengths, or ``position_range`` shorter
        than the longest test sequence.

    References
    ----------
    Ruoss et al., "Randomized Positional Encodings Boost Length Generalization of
    Transformers", ACL 2023 (the protocol: train on lengths up to N, test on
    longer ones, report per-length accuracy).

    Example
    -------
    >>> import numpy as np
    >>> from companion.nn import TrainConfig
    >>> r = run_length_generalization(
    ...     "copy", "randomized_rope", train_lengths=range(1, 5), test_lengths=[4, 8],
    ...     rng=np.random.default_rng(0), model_config=dict(d_model=16, n_layers=1),
    ...     train_config=TrainConfig(steps=2, batch_size=4), n_eval=8)
    >>> sorted(r.accuracy["positions"].unique()), r.accuracy["length"].tolist()
    (['evenly', 'random'], [4, 4, 8, 8])
    """
    import torch

    from ..nn import TinyTransformer, TrainConfig, train
    from ..data import task_vocab_size

    _check_rng(rng)
    name, task_fn = _resolve_task(task)
    check_choice(encoding, "encoding", tuple(LENGTH_ENCODINGS))
    train_lengths = _check_lengths(train_lengths, "train_lengths")
    test_lengths = _check_lengths(test_lengths, "test_lengths")
    vocab_size = check_int(vocab_size, "vocab_size", minimum=1)
    n_eval = check_int(n_eval, "n_eval", minimum=1)
    if train_config is None:
        train_config = TrainConfig(steps=1000, lr=1e-3, batch_size=64)
    if not isinstance(train_config, TrainConfig):
        raise TypeError(f"train_config must be a companion.nn.TrainConfig; got {type(train_config).__name__}")

    # The longest model input over the test lengths (prompt, separator and answer).
    shape_rng = np.random.default_rng(0)
    longest = max(task_fn(shape_rng, 1, n, vocab_size=vocab_size)[0].shape[1] for n in test_lengths)
    if position_range is None:
        position_range = 2 * longest
    position_range = check_int(position_range, "position_range", minimum=1)
    if position_range < longest:
        raise ValueError(
            f"position_range={position_range} does not cover the longest test sequence ({longest} tokens "
            "including the answer); randomized ids must be drawn from a range at least that long"
        )
    config = _build_config(model_config, encoding, task_vocab_size(vocab_size), position_range)
    model_seed, init_seed, train_seed, eval_seed = (int(s) for s in rng.integers(2**31, size=4))
    device = torch.device(device) if device is not None else torch.device("cpu")

    start = time.perf_counter()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(init_seed)
        model = TinyTransformer(config, seed=model_seed).to(device)

    def batch_fn(r: np.random.Generator, batch_size: int):
        length = train_lengths[int(r.integers(len(train_lengths)))]
        return task_fn(r, batch_size, length, vocab_size=vocab_size)

    history = train(model, batch_fn, dataclasses.replace(train_config, seed=train_seed),
                    device=device, progress=progress)
    model.eval()
    accuracy, per_position = evaluate_lengths(
        model, task_fn, test_lengths, rng=np.random.default_rng(eval_seed), vocab_size=vocab_size,
        n_sequences=n_eval, random_positions=random_positions and config.positional == "randomized",
        in_distribution=train_lengths, device=device,
    )
    for table in (accuracy, per_position):
        table["task"] = name
        table.insert(1, "encoding", encoding)
    return LengthGeneralizationResult(
        task=name, encoding=encoding, accuracy=accuracy, per_position=per_position, model=model,
        history=history, position_range=position_range, train_lengths=train_lengths,
        test_lengths=test_lengths, wall_time_s=time.perf_counter() - start,
    )

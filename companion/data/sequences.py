"""Synthetic sequence tasks for the course's tiny transformer.

Every task is a function ``task(rng, batch_size, ...) -> (inputs, targets, mask)``
that draws one batch from a ``numpy.random.Generator``. All three arrays have
shape ``(batch_size, seq)``: ``inputs`` and ``targets`` are ``int64``, ``mask``
is ``bool``. A batch has one length; lengths may change from call to call.

Token ids
---------
The first :data:`N_SPECIAL` ids are reserved:

* ``PAD_ID = 0`` (padding; no task pads today, the id is kept free for callers
  that concatenate batches of different lengths),
* ``SEP_ID = 1`` (separator between a question and its answer).

Content tokens are ``N_SPECIAL, ..., N_SPECIAL + vocab_size - 1``. The argument
``vocab_size`` of every task is the number of *content* tokens; the model needs
``task_vocab_size(vocab_size) = vocab_size + N_SPECIAL`` embedding rows.

Targets and mask
----------------
``targets[b, t]`` is what the model should output at position ``t`` after
reading ``inputs[b, :t + 1]`` (a causal model sees no later input). Only the
positions where ``mask`` is true count in the loss; every other target is
:data:`IGNORE_INDEX` (``-100``, which ``torch.nn.functional.cross_entropy``
skips by default).

Layouts
-------
``copy_task`` / ``reverse_task`` (causal language-model layout). The full
sequence is ``s = x_1 ... x_L SEP y_1 ... y_L`` (length ``2L + 1``), where
``y = x`` for copy and ``y = reversed(x)`` for reverse. The model reads
``inputs = s[:-1]`` and predicts ``targets = s[1:]``, so both have length
``2L``; the answer positions are ``t = L, ..., 2L - 1`` (the input there is
``SEP`` followed by ``y_1 ... y_{L-1}``, the target ``y_1 ... y_L``) and the
mask is true exactly there::

    position  0   1  ... L-1  L    L+1 ... 2L-1
    inputs    x1  x2 ... xL   SEP  y1  ... y(L-1)
    targets   -   -  ... -    y1   y2  ... yL
    mask      F   F  ... F    T    T   ... T

``lookback_task`` (relative position). ``inputs`` are ``seq_len`` random
content tokens and ``targets[t] = inputs[t - offset]`` for ``t >= offset``
(mask true there): the answer always sits a fixed distance back, wherever ``t``
is.

``absolute_position_task`` (absolute position). ``inputs`` are ``seq_len``
random content tokens and ``targets[t] = inputs[position]`` for
``t >= position`` (mask true there): the answer always sits at one fixed
position, whatever the distance to it.

Example
-------
>>> import numpy as np
>>> from companion.data import copy_task, task_vocab_size
>>> inputs, targets, mask = copy_task(np.random.default_rng(0), 2, 3, vocab_size=5)
>>> inputs.shape, targets.shape, mask.shape, task_vocab_size(5)
((2, 6), (2, 6), (2, 6), 7)
>>> bool((targets[mask] >= 2).all())
True
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import check_int

PAD_ID = 0
SEP_ID = 1
N_SPECIAL = 2
IGNORE_INDEX = -100

__all__ = [
    "PAD_ID",
    "SEP_ID",
    "N_SPECIAL",
    "IGNORE_INDEX",
    "task_vocab_size",
    "copy_task",
    "reverse_task",
    "lookback_task",
    "absolute_position_task",
    "TASKS",
]


def task_vocab_size(vocab_size: int) -> int:
    """Total number of token ids a model needs for tasks with ``vocab_size`` content tokens.

    Parameters
    ----------
    vocab_size : int
        Number of content tokens (at least 1).

    Returns
    -------
    int
        ``vocab_size + N_SPECIAL``.

    Example
    -------
    >>> task_vocab_size(10)
    12
    """
    return check_int(vocab_size, "vocab_size", minimum=1) + N_SPECIAL


def _check_rng(rng: Any) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            "rng must be a numpy.random.Generator (e.g. numpy.random.default_rng(seed)); "
            f"got {type(rng).__name__}"
        )
    return rng


def _content_tokens(rng: np.random.Generator, batch_size: int, length: int, vocab_size: int) -> np.ndarray:
    # (batch, length) ids in [N_SPECIAL, N_SPECIAL + vocab_size)
    return rng.integers(N_SPECIAL, N_SPECIAL + vocab_size, size=(batch_size, length), dtype=np.int64)


def _sequence_to_sequence(rng, batch_size, length, vocab_size, reverse: bool):
    _check_rng(rng)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    length = check_int(length, "length", minimum=1)
    vocab_size = check_int(vocab_size, "vocab_size", minimum=1)
    x = _content_tokens(rng, batch_size, length, vocab_size)  # (batch, L)
    y = x[:, ::-1] if reverse else x
    sep = np.full((batch_size, 1), SEP_ID, dtype=np.int64)
    full = np.concatenate([x, sep, y], axis=1)  # (batch, 2L + 1)
    inputs = np.ascontiguousarray(full[:, :-1])  # (batch, 2L)
    targets = np.full_like(inputs, IGNORE_INDEX)
    targets[:, length:] = full[:, length + 1:]
    mask = np.zeros(inputs.shape, dtype=bool)
    mask[:, length:] = True
    return inputs, targets, mask


def copy_task(rng: np.random.Generator, batch_size: int, length: int, *, vocab_size: int):
    """Copy ``length`` random tokens after a separator (causal language-model layout).

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every random draw.
    batch_size : int
        Number of sequences (>= 1).
    length : int
        Number of tokens to copy (>= 1); the sequences have ``2 * length`` positions.
    vocab_size : int
        Number of content tokens (>= 1); ids ``N_SPECIAL .. N_SPECIAL + vocab_size - 1``.

    Returns
    -------
    inputs, targets : numpy.ndarray of int64, shape (batch_size, 2 * length)
    mask : numpy.ndarray of bool, shape (batch_size, 2 * length)
        True on the ``length`` answer positions ``length .. 2 * length - 1``.

    Example
    -------
    >>> import numpy as np
    >>> inputs, targets, mask = copy_task(np.random.default_rng(0), 1, 4, vocab_size=8)
    >>> bool((targets[0, 4:] == inputs[0, :4]).all())
    True
    """
    return _sequence_to_sequence(rng, batch_size, length, vocab_size, reverse=False)


def reverse_task(rng: np.random.Generator, batch_size: int, length: int, *, vocab_size: int):
    """Output ``length`` random tokens in reverse order after a separator.

    Same layout and parameters as :func:`copy_task`; the answer is the input
    tokens reversed.

    Example
    -------
    >>> import numpy as np
    >>> inputs, targets, mask = reverse_task(np.random.default_rng(0), 1, 4, vocab_size=8)
    >>> bool((targets[0, 4:] == inputs[0, 3::-1]).all())
    True
    """
    return _sequence_to_sequence(rng, batch_size, length, vocab_size, reverse=True)


def lookback_task(rng: np.random.Generator, batch_size: int, seq_len: int, *, vocab_size: int, offset: int):
    """Output, at every position ``t >= offset``, the token seen ``offset`` steps earlier.

    The answer depends only on the relative distance ``offset``, so an
    encoding that represents relative position (RoPE, ALiBi, relative bias)
    learns it easily and keeps working on longer sequences.

    Parameters
    ----------
    rng : numpy.random.Generator
    batch_size : int
        Number of sequences (>= 1).
    seq_len : int
        Sequence length (> offset).
    vocab_size : int
        Number of content tokens (>= 1).
    offset : int
        How far back to look (1 <= offset < seq_len).

    Returns
    -------
    inputs, targets : numpy.ndarray of int64, shape (batch_size, seq_len)
        ``targets[:, t] = inputs[:, t - offset]`` for ``t >= offset``, ``IGNORE_INDEX`` before.
    mask : numpy.ndarray of bool, shape (batch_size, seq_len)
        True for ``t >= offset``.

    Example
    -------
    >>> import numpy as np
    >>> x, y, m = lookback_task(np.random.default_rng(0), 2, 6, vocab_size=4, offset=2)
    >>> bool((y[:, 2:] == x[:, :4]).all()), m[0].tolist()
    (True, [False, False, True, True, True, True])
    """
    _check_rng(rng)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    seq_len = check_int(seq_len, "seq_len", minimum=2)
    vocab_size = check_int(vocab_size, "vocab_size", minimum=1)
    offset = check_int(offset, "offset", minimum=1)
    if offset >= seq_len:
        raise ValueError(f"offset must be < seq_len ({seq_len}) so that some target exists; got {offset}")
    inputs = _content_tokens(rng, batch_size, seq_len, vocab_size)  # (batch, seq)
    targets = np.full_like(inputs, IGNORE_INDEX)
    targets[:, offset:] = inputs[:, :-offset]
    mask = np.zeros(inputs.shape, dtype=bool)
    mask[:, offset:] = True
    return inputs, targets, mask


def absolute_position_task(
    rng: np.random.Generator, batch_size: int, seq_len: int, *, vocab_size: int, position: int
):
    """Output, at every position ``t >= position``, the token at absolute position ``position``.

    The answer sits at one fixed index whatever the distance to it, so an
    encoding must tell *where* a token is (sinusoidal, learned), not only how
    far back it is.

    Parameters
    ----------
    rng : numpy.random.Generator
    batch_size : int
        Number of sequences (>= 1).
    seq_len : int
        Sequence length (> position).
    vocab_size : int
        Number of content tokens (>= 1).
    position : int
        The index to report (0 <= position < seq_len).

    Returns
    -------
    inputs, targets : numpy.ndarray of int64, shape (batch_size, seq_len)
        ``targets[:, t] = inputs[:, position]`` for ``t >= position``, ``IGNORE_INDEX`` before.
    mask : numpy.ndarray of bool, shape (batch_size, seq_len)
        True for ``t >= position``.

    Example
    -------
    >>> import numpy as np
    >>> x, y, m = absolute_position_task(np.random.default_rng(0), 2, 5, vocab_size=4, position=1)
    >>> bool((y[:, 1:] == x[:, 1:2]).all()), m[0].tolist()
    (True, [False, True, True, True, True])
    """
    _check_rng(rng)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    seq_len = check_int(seq_len, "seq_len", minimum=1)
    vocab_size = check_int(vocab_size, "vocab_size", minimum=1)
    position = check_int(position, "position", minimum=0)
    if position >= seq_len:
        raise ValueError(f"position must be < seq_len ({seq_len}); got {position}")
    inputs = _content_tokens(rng, batch_size, seq_len, vocab_size)  # (batch, seq)
    targets = np.full_like(inputs, IGNORE_INDEX)
    targets[:, position:] = inputs[:, position:position + 1]
    mask = np.zeros(inputs.shape, dtype=bool)
    mask[:, position:] = True
    return inputs, targets, mask


#: Every task by name, for loops over tasks in chapters and tests.
TASKS = {
    "copy": copy_task,
    "reverse": reverse_task,
    "lookback": lookback_task,
    "absolute_position": absolute_position_task,
}

"""Synthetic tasks and datasets for the course's experiments.

Each task is ``task(rng, batch_size, ...) -> (inputs, targets, mask)`` with
NumPy arrays of shape ``(batch_size, seq)``; see :mod:`companion.data.sequences`
for the token layout. ``functools.partial(task, seq_len=..., vocab_size=...)``
is a ``batch_fn`` for :func:`companion.nn.train`.
"""

from .sequences import (
    IGNORE_INDEX,
    N_SPECIAL,
    PAD_ID,
    SEP_ID,
    TASKS,
    absolute_position_task,
    copy_task,
    lookback_task,
    reverse_task,
    task_vocab_size,
)

__all__ = [
    "IGNORE_INDEX",
    "N_SPECIAL",
    "PAD_ID",
    "SEP_ID",
    "TASKS",
    "absolute_position_task",
    "copy_task",
    "lookback_task",
    "reverse_task",
    "task_vocab_size",
]

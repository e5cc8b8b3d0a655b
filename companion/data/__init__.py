"""Synthetic tasks and datasets for the course's experiments.

Each task is ``task(rng, batch_size, ...) -> (inputs, targets, mask)`` with
NumPy arrays of shape ``(batch_size, seq)``; see :mod:`companion.data.sequences`
for the token layout and :mod:`companion.data.algorithmic` for the
length-generalization tasks (duplicate, sort, odds-first, modular sum).
``functools.partial(task, seq_len=..., vocab_size=...)`` is a ``batch_fn``
for :func:`companion.nn.train`.
"""

from .algorithmic import (
    ALGORITHMIC_TASKS,
    duplicate_task,
    modular_sum_task,
    odds_first_task,
    prompt_answer_batch,
    sort_task,
)
from .images import detail_image, digits_image, image_coordinates, psnr
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
    "ALGORITHMIC_TASKS",
    "duplicate_task",
    "modular_sum_task",
    "odds_first_task",
    "prompt_answer_batch",
    "sort_task",
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
    # images for coordinate networks (chapter P3)
    "detail_image",
    "digits_image",
    "image_coordinates",
    "psnr",
]

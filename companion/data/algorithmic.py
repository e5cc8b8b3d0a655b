"""Algorithmic sequence tasks for length generalization (chapter P2).

The tasks follow the families used by Delétang et al. 2023 ("Neural Networks and
the Chomsky Hierarchy") and Ruoss et al. 2023 ("Randomized Positional Encodings
Boost Length Generalization of Transformers"): a random string ``x`` of
``length`` content tokens is shown, then a separator, then the model writes the
answer ``y`` token by token. All of them share the causal language-model layout
of :func:`companion.data.copy_task`::

    full sequence  x_1 ... x_L  SEP  y_1 ... y_K
    inputs         full[:-1]          (length L + K)
    targets        full[1:] on the K answer positions, IGNORE_INDEX elsewhere
    mask           True exactly on the K answer positions L .. L + K - 1

=============== ================================ ===================
task            answer ``y``                     answer length ``K``
=============== ================================ ===================
``copy``        ``x``                            ``L``
``reverse``     ``x`` reversed                   ``L``
``duplicate``   ``x`` twice (``x x``)            ``2L``
``sort``        ``x`` sorted (bucket sort)       ``L``
``odds_first``  ``x_1 x_3 x_5 ... x_2 x_4 ...``  ``L``
``modular_sum`` ``(sum of the values) mod V``    ``1``
=============== ================================ ===================

Content token ``N_SPECIAL + v`` stands for the value ``v`` in ``0 .. V - 1``
(``V = vocab_size``); ``modular_sum`` with ``vocab_size=2`` is the parity task.

Every task is ``task(rng, batch_size, length, *, vocab_size) -> (inputs,
targets, mask)`` (NumPy arrays of shape ``(batch_size, L + K)``; ``int64``,
``int64``, ``bool``), so one harness can loop over all of them
(:data:`ALGORITHMIC_TASKS`).

Example
-------
>>> import numpy as np
>>> from companion.data import duplicate_task
>>> x, y, m = duplicate_task(np.random.default_rng(0), 2, 3, vocab_size=5)
>>> x.shape, int(m[0].sum())
((2, 9), 6)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import check_array, check_int
from .sequences import IGNORE_INDEX, N_SPECIAL, SEP_ID, _check_rng, _content_tokens, copy_task, reverse_task

__all__ = [
    "prompt_answer_batch",
    "duplicate_task",
    "sort_task",
    "odds_first_task",
    "modular_sum_task",
    "ALGORITHMIC_TASKS",
]


def prompt_answer_batch(prompt: np.ndarray, answer: np.ndarray):
    """Lay out ``prompt SEP answer`` as a causal language-model batch.

    Parameters
    ----------
    prompt : numpy.ndarray of int, shape (batch, L)
        The question tokens (L >= 1).
    answer : numpy.ndarray of int, shape (batch, K)
        The answer tokens (K >= 1); none may be :data:`~companion.data.IGNORE_INDEX`.

    Returns
    -------
    inputs, targets : numpy.ndarray of int64, shape (batch, L + K)
        ``inputs = (prompt, SEP, answer)[:-1]``; ``targets`` holds the answer on
        positions ``L .. L + K - 1`` and ``IGNORE_INDEX`` before.
    mask : numpy.ndarray of bool, shape (batch, L + K)
        True on the answer positions.

    Example
    -------
    >>> import numpy as np
    >>> x, y, m = prompt_answer_batch(np.array([[2, 3]]), np.array([[4, 5, 6]]))
    >>> x.tolist(), y.tolist(), m.tolist()
    ([[2, 3, 1, 4, 5]], [[-100, -100, 4, 5, 6]], [[False, False, True, True, True]])
    """
    check_array(prompt, "prompt", ndim=2, dtype_kind="iu")
    check_array(answer, "answer", ndim=2, dtype_kind="iu")
    prompt = np.asarray(prompt, dtype=np.int64)
    answer = np.asarray(answer, dtype=np.int64)
    if prompt.shape[0] != answer.shape[0]:
        raise ValueError(
            f"prompt and answer must have the same batch size; got {prompt.shape[0]} and {answer.shape[0]}"
        )
    if (answer == IGNORE_INDEX).any():
        raise ValueError(f"answer must not contain IGNORE_INDEX ({IGNORE_INDEX})")
    batch, length = prompt.shape
    sep = np.full((batch, 1), SEP_ID, dtype=np.int64)
    full = np.concatenate([prompt, sep, answer], axis=1)  # (batch, L + 1 + K)
    inputs = np.ascontiguousarray(full[:, :-1])  # (batch, L + K)
    targets = np.full_like(inputs, IGNORE_INDEX)
    targets[:, length:] = full[:, length + 1:]
    mask = np.zeros(inputs.shape, dtype=bool)
    mask[:, length:] = True
    return inputs, targets, mask


def _draw(rng: Any, batch_size: Any, length: Any, vocab_size: Any):
    _check_rng(rng)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    length = check_int(length, "length", minimum=1)
    vocab_size = check_int(vocab_size, "vocab_size", minimum=1)
    return _content_tokens(rng, batch_size, length, vocab_size), vocab_size  # (batch, L)


def duplicate_task(rng: np.random.Generator, batch_size: int, length: int, *, vocab_size: int):
    """Write the ``length`` input tokens twice after the separator (``x SEP x x``).

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every random draw.
    batch_size : int
        Number of sequences (>= 1).
    length : int
        Number of input tokens ``L`` (>= 1).
    vocab_size : int
        Number of content tokens (>= 1).

    Returns
    -------
    inputs, targets : numpy.ndarray of int64, shape (batch_size, 3 * length)
    mask : numpy.ndarray of bool, shape (batch_size, 3 * length)
        True on the ``2 * length`` answer positions.

    Example
    -------
    >>> import numpy as np
    >>> x, y, m = duplicate_task(np.random.default_rng(0), 1, 3, vocab_size=8)
    >>> bool((y[0, 3:6] == x[0, :3]).all() and (y[0, 6:] == x[0, :3]).all())
    True
    """
    x, _ = _draw(rng, batch_size, length, vocab_size)
    return prompt_answer_batch(x, np.concatenate([x, x], axis=1))


def sort_task(rng: np.random.Generator, batch_size: int, length: int, *, vocab_size: int):
    """Write the input tokens in increasing order (the "bucket sort" task).

    Same parameters as :func:`duplicate_task`; inputs, targets and mask have
    shape ``(batch_size, 2 * length)`` and the answer is ``sorted(x)``.

    Example
    -------
    >>> import numpy as np
    >>> x, y, m = sort_task(np.random.default_rng(0), 1, 5, vocab_size=4)
    >>> bool((y[0, 5:] == np.sort(x[0, :5])).all())
    True
    """
    x, _ = _draw(rng, batch_size, length, vocab_size)
    return prompt_answer_batch(x, np.sort(x, axis=1))


def odds_first_task(rng: np.random.Generator, batch_size: int, length: int, *, vocab_size: int):
    """Write the tokens at odd places first, then those at even places.

    Counting from 1, the answer is ``x_1 x_3 x_5 ... x_2 x_4 ...``: a fixed
    permutation whose source position jumps as the output advances. Same
    parameters as :func:`duplicate_task`; shapes ``(batch_size, 2 * length)``.

    Example
    -------
    >>> import numpy as np
    >>> x, y, m = odds_first_task(np.random.default_rng(0), 1, 5, vocab_size=9)
    >>> (y[0, 5:] - 2).tolist() == (x[0, [0, 2, 4, 1, 3]] - 2).tolist()
    True
    """
    x, _ = _draw(rng, batch_size, length, vocab_size)
    return prompt_answer_batch(x, np.concatenate([x[:, 0::2], x[:, 1::2]], axis=1))


def modular_sum_task(rng: np.random.Generator, batch_size: int, length: int, *, vocab_size: int):
    """Answer with one token: the sum of the input values modulo ``vocab_size``.

    Token ``N_SPECIAL + v`` carries the value ``v``; the answer is the token of
    ``(v_1 + ... + v_L) mod vocab_size``. With ``vocab_size=2`` this is the
    parity of the number of ones. Unlike the other tasks the answer needs no
    position at all, only counting: a control for what positions are for.

    Parameters
    ----------
    rng, batch_size, length
        As :func:`duplicate_task`.
    vocab_size : int
        Modulus and number of content tokens (>= 2).

    Returns
    -------
    inputs, targets : numpy.ndarray of int64, shape (batch_size, length + 1)
    mask : numpy.ndarray of bool, shape (batch_size, length + 1)
        True only on the last position.

    Example
    -------
    >>> import numpy as np
    >>> x, y, m = modular_sum_task(np.random.default_rng(0), 3, 6, vocab_size=2)
    >>> bool((y[:, -1] - 2 == (x[:, :6] - 2).sum(axis=1) % 2).all()), m[0].tolist()[-2:]
    (True, [False, True])
    """
    check_int(vocab_size, "vocab_size", minimum=2)
    x, v = _draw(rng, batch_size, length, vocab_size)
    total = (x - N_SPECIAL).sum(axis=1, keepdims=True) % v  # (batch, 1)
    return prompt_answer_batch(x, total + N_SPECIAL)


#: Every task of the shared signature ``task(rng, batch_size, length, *, vocab_size)``.
ALGORITHMIC_TASKS = {
    "copy": copy_task,
    "reverse": reverse_task,
    "duplicate": duplicate_task,
    "sort": sort_task,
    "odds_first": odds_first_task,
    "modular_sum": modular_sum_task,
}

"""Tests of companion.data.algorithmic: layouts, answers and bad input of the length-generalization tasks."""

from __future__ import annotations

import numpy as np
import pytest

from companion.data import (
    ALGORITHMIC_TASKS,
    IGNORE_INDEX,
    N_SPECIAL,
    SEP_ID,
    copy_task,
    duplicate_task,
    modular_sum_task,
    odds_first_task,
    prompt_answer_batch,
    sort_task,
)

ANSWER_LENGTH = {"copy": 1, "reverse": 1, "duplicate": 2, "sort": 1, "odds_first": 1}


def _prompt_and_answer(inputs, targets, mask):
    """Recover (prompt, answer) from a batch in the causal layout."""
    length = int(np.argmax(mask[0]))
    return inputs[:, :length], targets[:, length:]


@pytest.mark.parametrize("name", sorted(ALGORITHMIC_TASKS))
@pytest.mark.parametrize("length", [1, 2, 7])
def test_every_task_has_the_shared_layout(name, length):
    inputs, targets, mask = ALGORITHMIC_TASKS[name](np.random.default_rng(0), 5, length, vocab_size=3)
    k = 1 if name == "modular_sum" else ANSWER_LENGTH[name] * length
    assert inputs.shape == targets.shape == mask.shape == (5, length + k)
    assert inputs.dtype == targets.dtype == np.int64 and mask.dtype == bool
    assert not mask[:, :length].any() and mask[:, length:].all()
    assert (targets[~mask] == IGNORE_INDEX).all()
    assert (inputs[:, length] == SEP_ID).all()
    assert ((targets[mask] >= N_SPECIAL) & (targets[mask] < N_SPECIAL + 3)).all()
    assert ((inputs[:, :length] >= N_SPECIAL) & (inputs[:, :length] < N_SPECIAL + 3)).all()
    # teacher forcing: after the separator the input is the answer shifted by one
    assert (inputs[:, length + 1:] == targets[:, length:-1]).all()


def test_answers():
    rng = np.random.default_rng(1)
    x, answer = _prompt_and_answer(*duplicate_task(rng, 4, 6, vocab_size=5))
    assert (answer == np.concatenate([x, x], axis=1)).all()
    x, answer = _prompt_and_answer(*sort_task(rng, 4, 6, vocab_size=5))
    assert (answer == np.sort(x, axis=1)).all()
    x, answer = _prompt_and_answer(*odds_first_task(rng, 4, 7, vocab_size=5))
    assert (answer == x[:, [0, 2, 4, 6, 1, 3, 5]]).all()
    x, answer = _prompt_and_answer(*modular_sum_task(rng, 50, 9, vocab_size=4))
    assert (answer[:, 0] - N_SPECIAL == (x - N_SPECIAL).sum(axis=1) % 4).all()


def test_parity_is_modular_sum_with_two_symbols():
    x, answer = _prompt_and_answer(*modular_sum_task(np.random.default_rng(2), 200, 5, vocab_size=2))
    ones = (x == N_SPECIAL + 1).sum(axis=1)
    assert (answer[:, 0] == N_SPECIAL + ones % 2).all()
    assert 0.3 < (ones % 2).mean() < 0.7  # both answers occur


def test_prompt_answer_batch_matches_copy_task():
    inputs, targets, mask = copy_task(np.random.default_rng(3), 3, 5, vocab_size=6)
    x = inputs[:, :5]
    again = prompt_answer_batch(x, x)
    for a, b in zip(again, (inputs, targets, mask)):
        assert a.dtype == b.dtype and (a == b).all()


def test_same_seed_same_batch():
    a = sort_task(np.random.default_rng(7), 2, 4, vocab_size=9)
    b = sort_task(np.random.default_rng(7), 2, 4, vocab_size=9)
    assert all((u == v).all() for u, v in zip(a, b))


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda: duplicate_task(np.random.default_rng(0), 2, 0, vocab_size=3), ValueError, "length must be >= 1"),
        (lambda: sort_task(np.random.default_rng(0), 0, 3, vocab_size=3), ValueError, "batch_size must be >= 1"),
        (lambda: odds_first_task(0, 2, 3, vocab_size=3), TypeError, "numpy.random.Generator"),
        (lambda: modular_sum_task(np.random.default_rng(0), 2, 3, vocab_size=1), ValueError, "vocab_size must be >= 2"),
        (lambda: duplicate_task(np.random.default_rng(0), 2, 2.5, vocab_size=3), TypeError, "length must be an integer"),
        (lambda: prompt_answer_batch(np.ones((2, 3), dtype=np.int64), np.ones((3, 1), dtype=np.int64)),
         ValueError, "same batch size"),
        (lambda: prompt_answer_batch(np.ones((2, 3)), np.ones((2, 1), dtype=np.int64)), TypeError, "integer dtype"),
        (lambda: prompt_answer_batch(np.ones(3, dtype=np.int64), np.ones((1, 1), dtype=np.int64)),
         ValueError, "2 dimensions"),
        (lambda: prompt_answer_batch(np.ones((1, 2), dtype=np.int64), np.full((1, 1), IGNORE_INDEX)),
         ValueError, "IGNORE_INDEX"),
    ],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()

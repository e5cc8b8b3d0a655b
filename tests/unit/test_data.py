"""Tests of companion.data.sequences: token layout of every synthetic task and argument checks."""

from __future__ import annotations

import numpy as np
import pytest

from companion.data import (
    IGNORE_INDEX,
    N_SPECIAL,
    SEP_ID,
    TASKS,
    absolute_position_task,
    copy_task,
    lookback_task,
    reverse_task,
    task_vocab_size,
)


def rng(seed=0):
    return np.random.default_rng(seed)


def check_common(inputs, targets, mask, batch, seq, vocab_size):
    assert inputs.shape == targets.shape == mask.shape == (batch, seq)
    assert inputs.dtype == targets.dtype == np.int64 and mask.dtype == np.bool_
    assert (targets[~mask] == IGNORE_INDEX).all()
    assert ((targets[mask] >= N_SPECIAL) & (targets[mask] < task_vocab_size(vocab_size))).all()
    assert ((inputs >= 0) & (inputs < task_vocab_size(vocab_size))).all()


def test_task_vocab_size_adds_the_special_tokens():
    assert task_vocab_size(10) == 10 + N_SPECIAL == 12
    with pytest.raises(ValueError, match="vocab_size must be >= 1"):
        task_vocab_size(0)


@pytest.mark.parametrize("task, reverse", [(copy_task, False), (reverse_task, True)])
def test_copy_and_reverse_layout(task, reverse):
    batch, length, vocab = 5, 6, 7
    inputs, targets, mask = task(rng(), batch, length, vocab_size=vocab)
    check_common(inputs, targets, mask, batch, 2 * length, vocab)
    question = inputs[:, :length]
    assert ((question >= N_SPECIAL) & (question < N_SPECIAL + vocab)).all()
    answer = question[:, ::-1] if reverse else question
    for b in range(batch):
        # full sequence: question, SEP, answer; inputs drop its last token, targets its first
        full = np.concatenate([question[b], [SEP_ID], answer[b]])
        assert np.array_equal(inputs[b], full[:-1])
        for t in range(2 * length):
            if t >= length:
                assert mask[b, t] and targets[b, t] == full[t + 1]
            else:
                assert not mask[b, t]
    assert (inputs[:, length] == SEP_ID).all()
    assert np.array_equal(targets[:, length:], answer)
    assert mask.sum() == batch * length


def test_lookback_layout():
    batch, seq, vocab, offset = 4, 9, 5, 3
    inputs, targets, mask = lookback_task(rng(), batch, seq, vocab_size=vocab, offset=offset)
    check_common(inputs, targets, mask, batch, seq, vocab)
    for b in range(batch):
        for t in range(seq):
            assert mask[b, t] == (t >= offset)
            if t >= offset:
                assert targets[b, t] == inputs[b, t - offset]


def test_absolute_position_layout():
    batch, seq, vocab, position = 4, 8, 5, 2
    inputs, targets, mask = absolute_position_task(rng(), batch, seq, vocab_size=vocab, position=position)
    check_common(inputs, targets, mask, batch, seq, vocab)
    for b in range(batch):
        for t in range(seq):
            assert mask[b, t] == (t >= position)
            if t >= position:
                assert targets[b, t] == inputs[b, position]
    # position 0 and the last position are valid edges
    _, _, m = absolute_position_task(rng(), 1, 4, vocab_size=3, position=0)
    assert m.all()
    _, _, m = absolute_position_task(rng(), 1, 4, vocab_size=3, position=3)
    assert m[0].tolist() == [False, False, False, True]


@pytest.mark.parametrize("name", sorted(TASKS))
def test_tasks_are_reproducible_and_use_every_content_token(name):
    kwargs = {
        "copy": dict(length=50, vocab_size=4),
        "reverse": dict(length=50, vocab_size=4),
        "lookback": dict(seq_len=50, vocab_size=4, offset=1),
        "absolute_position": dict(seq_len=50, vocab_size=4, position=0),
    }[name]
    task = TASKS[name]
    first = task(rng(7), 8, **kwargs)
    second = task(rng(7), 8, **kwargs)
    for a, b in zip(first, second):
        assert np.array_equal(a, b)
    assert not np.array_equal(first[0], task(rng(8), 8, **kwargs)[0])
    content = first[0][first[0] >= N_SPECIAL]
    assert set(np.unique(content).tolist()) == set(range(N_SPECIAL, N_SPECIAL + 4))


def test_lengths_may_change_between_calls():
    generator = rng()
    for length in (1, 3, 10):
        inputs, _, _ = copy_task(generator, 2, length, vocab_size=3)
        assert inputs.shape == (2, 2 * length)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: copy_task(0, 2, 3, vocab_size=4), TypeError, "rng must be a numpy.random.Generator"),
        (lambda: copy_task(np.random.RandomState(0), 2, 3, vocab_size=4), TypeError, "rng must be"),
        (lambda: copy_task(rng(), 0, 3, vocab_size=4), ValueError, "batch_size must be >= 1"),
        (lambda: copy_task(rng(), 2, 0, vocab_size=4), ValueError, "length must be >= 1"),
        (lambda: reverse_task(rng(), 2, 3, vocab_size=0), ValueError, "vocab_size must be >= 1"),
        (lambda: reverse_task(rng(), 2.0, 3, vocab_size=4), TypeError, "batch_size must be an integer"),
        (lambda: lookback_task(rng(), 2, 5, vocab_size=4, offset=0), ValueError, "offset must be >= 1"),
        (lambda: lookback_task(rng(), 2, 5, vocab_size=4, offset=5), ValueError, r"offset must be < seq_len \(5\)"),
        (lambda: lookback_task(rng(), 2, 1, vocab_size=4, offset=1), ValueError, "seq_len must be >= 2"),
        (lambda: lookback_task(rng(), 2, 5, vocab_size=True, offset=1), TypeError, "vocab_size must be an integer"),
        (lambda: absolute_position_task(rng(), 2, 5, vocab_size=4, position=-1), ValueError, "position must be >= 0"),
        (lambda: absolute_position_task(rng(), 2, 5, vocab_size=4, position=5), ValueError,
         r"position must be < seq_len \(5\)"),
        (lambda: absolute_position_task(rng(), 2, 0, vocab_size=4, position=0), ValueError, "seq_len must be >= 1"),
    ],
)
def test_tasks_reject_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()

"""Tests of companion.data.triggered_bigram: the task's structure, masks, bigram baseline, bad input."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from companion.data import IGNORE_INDEX, N_SPECIAL, task_vocab_size
from companion.data.triggered_bigram import (
    bigram_accuracy,
    fit_bigram,
    make_triggered_bigram,
    trigger_masks,
    triggered_bigram_task,
)


@pytest.fixture(scope="module")
def source():
    return make_triggered_bigram(np.random.default_rng(0), vocab_size=20, n_triggers=3)


def test_source_is_a_valid_distribution(source):
    np.testing.assert_allclose(source.transitions.sum(axis=1), 1.0, atol=1e-12)
    assert (source.transitions >= 0).all()
    assert len(np.unique(source.triggers)) == 3
    assert not np.isin(source.outputs_pool, source.triggers).any()
    assert len(source.outputs_pool) + source.n_triggers == source.vocab_size
    # the probability of a trigger after any token is the trigger rate
    np.testing.assert_allclose(source.transitions[:, source.triggers - N_SPECIAL].sum(axis=1), 0.25, atol=1e-12)


def test_batch_layout_and_determinism(source):
    x, y, m = triggered_bigram_task(np.random.default_rng(1), 8, 50, source=source)
    assert x.shape == y.shape == m.shape == (8, 50)
    assert x.dtype == y.dtype == np.int64 and m.dtype == bool
    assert ((x >= N_SPECIAL) & (x < N_SPECIAL + 20)).all()
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])  # next-token targets
    x2, y2, _ = triggered_bigram_task(np.random.default_rng(1), 8, 50, source=source)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)


def test_each_trigger_has_one_output_per_sequence_and_it_is_never_a_trigger(source):
    x, y, _ = triggered_bigram_task(np.random.default_rng(2), 64, 80, source=source)
    outputs_differ = 0
    for row_x, row_y in zip(x, y):
        for k in source.triggers:
            followers = np.unique(row_y[row_x == k])
            assert len(followers) <= 1
            assert not np.isin(followers, source.triggers).any()
    # and outputs change between sequences (they are drawn per sequence)
    first = [np.unique(yy[xx == source.triggers[0]]) for xx, yy in zip(x, y)]
    outputs_differ = len({int(f[0]) for f in first if len(f)})
    assert outputs_differ > 3


def test_masks_partition_the_trigger_positions(source):
    x, y, _ = triggered_bigram_task(np.random.default_rng(3), 16, 64, source=source)
    masks = trigger_masks(x, source.triggers)
    assert not (masks["first_triggers"] & masks["repeat_triggers"]).any()
    np.testing.assert_array_equal(masks["first_triggers"] | masks["repeat_triggers"], masks["triggers"])
    np.testing.assert_array_equal(~masks["triggers"], masks["non_triggers"])
    assert masks["repeat_triggers"].sum() > 0
    # a repeat position's token occurred earlier in the row
    for b, t in zip(*np.nonzero(masks["repeat_triggers"])):
        assert (x[b, :t] == x[b, t]).any()
    _, yr, mr = triggered_bigram_task(np.random.default_rng(3), 16, 64, source=source, mask="repeat_triggers")
    np.testing.assert_array_equal(mr, masks["repeat_triggers"])
    assert (yr[~mr] == IGNORE_INDEX).all() and (yr[mr] == y[mr]).all()


def test_bigram_baseline_is_at_chance_on_repeated_triggers_but_not_elsewhere(source):
    x, y, m = triggered_bigram_task(np.random.default_rng(4), 1000, 64, source=source)
    counts = fit_bigram(x, y, m, n_tokens=task_vocab_size(20))
    assert counts.sum() == m.sum()
    xt, yt, _ = triggered_bigram_task(np.random.default_rng(5), 500, 64, source=source)
    masks = trigger_masks(xt, source.triggers)
    repeat = bigram_accuracy(counts, xt, yt, masks["repeat_triggers"])
    ordinary = bigram_accuracy(counts, xt, yt, masks["non_triggers"])
    assert repeat < 0.2  # a guess among 17 outputs
    assert ordinary > repeat


def test_fit_and_score_small_cases():
    counts = fit_bigram(np.array([[2, 3, 2]]), np.array([[3, 2, 3]]), np.array([[True, True, False]]), n_tokens=4)
    assert counts[2, 3] == 1 and counts[3, 2] == 1 and counts.sum() == 2
    assert np.isnan(bigram_accuracy(counts, np.array([[2]]), np.array([[3]]), np.array([[False]])))
    assert bigram_accuracy(counts, np.array([[2, 3]]), np.array([[3, 3]]), np.ones((1, 2), bool)) == 0.5


def test_works_as_batch_fn_for_companion_train(source):
    import torch

    from companion.nn import TinyTransformer, TrainConfig, TransformerConfig, train

    model = TinyTransformer(TransformerConfig(vocab_size=task_vocab_size(20), d_model=16, n_layers=1, max_len=32))
    batch_fn = functools.partial(triggered_bigram_task, seq_len=24, source=source)
    history = train(model, batch_fn, TrainConfig(steps=2, batch_size=4), progress=False)
    assert len(history.losses) == 2 and all(np.isfinite(history.losses))
    assert isinstance(model(torch.zeros(1, 24, dtype=torch.long)), torch.Tensor)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(vocab_size=1), ValueError, "vocab_size must be >= 2"),
    (dict(vocab_size=5, n_triggers=5), ValueError, "n_triggers must be <= 4"),
    (dict(n_triggers=0), ValueError, "n_triggers must be >= 1"),
    (dict(concentration=0.0), ValueError, "concentration must be > 0"),
    (dict(trigger_rate=0.0), ValueError, "trigger_rate must be > 0"),
    (dict(trigger_rate=1.0), ValueError, "trigger_rate must be < 1"),
    (dict(trigger_rate=float("nan")), ValueError, "trigger_rate must be finite"),
])
def test_bad_source_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        make_triggered_bigram(np.random.default_rng(0), **kwargs)


def test_bad_task_arguments(source):
    rng = np.random.default_rng(0)
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        triggered_bigram_task(0, 2, 8, source=source)
    with pytest.raises(TypeError, match="TriggeredBigramSource"):
        triggered_bigram_task(rng, 2, 8, source="nope")
    with pytest.raises(ValueError, match="seq_len must be >= 2"):
        triggered_bigram_task(rng, 2, 1, source=source)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        triggered_bigram_task(rng, 0, 8, source=source)
    with pytest.raises(ValueError, match="mask must be one of"):
        triggered_bigram_task(rng, 2, 8, source=source, mask="second")
    with pytest.raises(ValueError, match="same shape|one shape"):
        fit_bigram(np.ones((2, 3), np.int64), np.ones((2, 4), np.int64), np.ones((2, 3), bool), n_tokens=3)
    with pytest.raises(ValueError, match=r"lie in \[0, 2\)"):
        fit_bigram(np.full((1, 2), 5), np.ones((1, 2), np.int64), np.ones((1, 2), bool), n_tokens=2)
    with pytest.raises(TypeError, match="boolean dtype"):
        fit_bigram(np.ones((1, 2), np.int64), np.ones((1, 2), np.int64), np.ones((1, 2)), n_tokens=3)

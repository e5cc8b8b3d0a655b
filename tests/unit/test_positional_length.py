"""Tests of companion.positional.length: randomized and bilevel position ids, the length harness."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from companion.data import reverse_task
from companion.nn import TinyTransformer, TrainConfig, TransformerConfig
from companion.positional import (
    LENGTH_ENCODINGS,
    bilevel_positions,
    evaluate_lengths,
    randomized_positions,
    run_length_generalization,
    segments_from_separators,
)


# ------------------------------------------------------------ randomized positions
@pytest.mark.parametrize("batch_size", [None, 7])
@pytest.mark.parametrize("seq_len,max_len", [(1, 1), (5, 5), (3, 10), (40, 256)])
def test_randomized_positions_are_sorted_unique_in_range(seq_len, max_len, batch_size):
    pos = randomized_positions(seq_len, max_len, rng=np.random.default_rng(0), batch_size=batch_size)
    want = (seq_len,) if batch_size is None else (batch_size, seq_len)
    assert pos.shape == want and pos.dtype == np.int64
    assert (np.diff(pos, axis=-1) > 0).all()  # strictly increasing: sorted and unique
    assert pos.min() >= 0 and pos.max() < max_len
    if seq_len == max_len:
        assert (pos == np.arange(max_len)).all()


@pytest.mark.parametrize("batch_size", [None, 3])
def test_randomized_positions_reproducible(batch_size):
    a = randomized_positions(6, 50, rng=np.random.default_rng(11), batch_size=batch_size)
    b = randomized_positions(6, 50, rng=np.random.default_rng(11), batch_size=batch_size)
    c = randomized_positions(6, 50, rng=np.random.default_rng(12), batch_size=batch_size)
    assert (a == b).all() and not (a == c).all()


def test_randomized_positions_cover_the_range_uniformly():
    # Each id of [0, max_len) is chosen with probability seq_len / max_len.
    draws = randomized_positions(8, 32, rng=np.random.default_rng(0), batch_size=4000)
    freq = np.bincount(draws.ravel(), minlength=32) / 4000
    np.testing.assert_allclose(freq, 8 / 32, atol=0.04)
    rows = {tuple(r) for r in draws[:200]}
    assert len(rows) == 200  # fresh draws per row


def test_tiny_transformer_draws_from_the_same_distribution():
    # The model's own torch sampler and randomized_positions: same support and
    # the same mean of the smallest and largest id (E[min] = (M - n) / (n + 1)).
    n, m, trials = 6, 48, 1500
    model = TinyTransformer(TransformerConfig(vocab_size=4, d_model=8, n_heads=2, n_layers=1, max_len=m,
                                              positional="randomized"), seed=3).train()
    ours = randomized_positions(n, m, rng=np.random.default_rng(0), batch_size=trials)
    theirs = np.stack([model.position_ids(n).numpy() for _ in range(trials)])
    assert (np.diff(theirs, axis=1) > 0).all() and theirs.max() < m
    expected_min = (m - n) / (n + 1)
    for sample in (ours, theirs):
        assert abs(sample[:, 0].mean() - expected_min) < 0.6
        assert abs(sample[:, -1].mean() - (m - 1 - expected_min)) < 0.6


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(seq_len=5, max_len=4, rng=np.random.default_rng(0)), ValueError, "seq_len must be <= max_len"),
        (dict(seq_len=0, max_len=4, rng=np.random.default_rng(0)), ValueError, "seq_len must be >= 1"),
        (dict(seq_len=2, max_len=4, rng=0), TypeError, "numpy.random.Generator"),
        (dict(seq_len=2.0, max_len=4, rng=np.random.default_rng(0)), TypeError, "seq_len must be an integer"),
        (dict(seq_len=2, max_len=4, rng=np.random.default_rng(0), batch_size=0), ValueError, "batch_size must be >= 1"),
    ],
)
def test_randomized_positions_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        randomized_positions(**kwargs)


# --------------------------------------------------------------- bilevel positions
def test_bilevel_hand_computed():
    seg, within = bilevel_positions(np.array([3, 3, 3, 8, 9, 9]))
    assert seg.tolist() == [0, 0, 0, 1, 2, 2] and within.tolist() == [0, 1, 2, 0, 0, 1]
    assert seg.dtype == within.dtype == np.int64


def test_bilevel_levels_reconstruct_the_segments():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 6, size=(4, 30))
    rows = [np.repeat(np.arange(30) * 2, lengths[b])[:40] for b in range(4)]  # (batch, 40), gaps in the ids
    ids = np.stack(rows)
    seg, within = bilevel_positions(ids)
    assert seg.shape == within.shape == ids.shape
    for b in range(4):
        # a new segment starts exactly where the id changes, and only there
        starts = np.r_[True, ids[b, 1:] != ids[b, :-1]]
        assert ((within[b] == 0) == starts).all()
        # the two levels name each token uniquely and in order
        assert (np.diff(seg[b]) >= 0).all() and seg[b, 0] == 0
        assert len(set(zip(seg[b], within[b]))) == ids.shape[1]
        # segment lengths come back from the levels
        sizes = np.bincount(seg[b])
        assert (sizes == np.unique(ids[b], return_counts=True)[1]).all()
        # the flat position is the start of the segment plus the place within it
        assert (np.cumsum(np.r_[0, sizes[:-1]])[seg[b]] + within[b] == np.arange(ids.shape[1])).all()


def test_bilevel_torch_in_torch_out():
    ids = torch.tensor([[0, 0, 1, 1, 1, 2]])
    seg, within = bilevel_positions(ids)
    assert isinstance(seg, torch.Tensor) and seg.dtype == torch.int64
    assert within.tolist() == [[0, 1, 0, 1, 2, 0]]


def test_segments_from_separators_round_trip():
    tokens = np.array([[5, 6, 1, 7, 1, 8, 9], [1, 4, 4, 4, 1, 1, 2]])
    ids = segments_from_separators(tokens, separator=1)
    assert ids.tolist() == [[0, 0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 1, 2, 3]]
    seg, within = bilevel_positions(ids)
    assert within[0].max() == 2  # the longest segment has 3 tokens
    assert segments_from_separators(torch.as_tensor(tokens), separator=1).tolist() == ids.tolist()


@pytest.mark.parametrize(
    "ids,error,match",
    [
        (np.array([0, 1, 0]), ValueError, "non-decreasing"),
        (np.array([-1, 0, 0]), ValueError, "non-negative"),
        (np.array([0.0, 1.0]), TypeError, "integer dtype"),
        (np.zeros((2, 2, 2), dtype=np.int64), ValueError, "1 or 2 dimensions"),
        (np.array([], dtype=np.int64), ValueError, "must not be empty"),
        ([0, 0, 1], TypeError, "NumPy array"),
    ],
)
def test_bilevel_bad_input(ids, error, match):
    with pytest.raises(error, match=match):
        bilevel_positions(ids)


# -------------------------------------------------------------------------- harness
TINY_MODEL = dict(d_model=16, n_heads=2, n_layers=1)


def _tiny_run(encoding, **kwargs):
    args = dict(train_lengths=range(1, 4), test_lengths=[2, 3, 6], rng=np.random.default_rng(0), vocab_size=3,
                model_config=TINY_MODEL, train_config=TrainConfig(steps=3, batch_size=4), n_eval=8)
    args.update(kwargs)
    return run_length_generalization("reverse", encoding, **args)


def test_harness_returns_tidy_tables():
    r = _tiny_run("randomized_sinusoidal")
    acc = r.accuracy
    assert list(acc.columns) == ["task", "encoding", "length", "seq_len", "in_distribution", "positions",
                                 "token_accuracy", "sequence_accuracy", "n_sequences"]
    assert acc["length"].tolist() == [2, 2, 3, 3, 6, 6]
    assert acc["positions"].tolist() == ["evenly", "random"] * 3
    assert acc["in_distribution"].tolist() == [True, True, True, True, False, False]
    assert acc["seq_len"].tolist() == [4, 4, 6, 6, 12, 12]
    assert ((acc["token_accuracy"] >= 0) & (acc["token_accuracy"] <= 1)).all()
    assert (acc["sequence_accuracy"] <= acc["token_accuracy"] + 1e-12).all()
    assert (acc["task"] == "reverse").all() and (acc["encoding"] == "randomized_sinusoidal").all()
    per = r.per_position
    assert set(per.columns) == {"task", "encoding", "length", "positions", "answer_index", "accuracy"}
    evenly = per[per["positions"] == "evenly"]
    assert evenly.groupby("length")["answer_index"].max().tolist() == [1, 2, 5]  # L answer tokens
    # the mean over answer positions is the token accuracy (equal counts per position)
    for length, part in evenly.groupby("length"):
        row = acc[(acc["length"] == length) & (acc["positions"] == "evenly")]
        assert part["accuracy"].mean() == pytest.approx(float(row["token_accuracy"].iloc[0]))
    assert r.position_range == 24  # twice the longest test sequence
    assert r.model.config.max_len == 24 and not r.model.training
    assert len(r.history.losses) == 3
    assert 0 <= r.mean_accuracy() <= 1 and r.mean_accuracy([2, 3], positions="random") >= 0


@pytest.mark.parametrize("encoding", sorted(LENGTH_ENCODINGS))
def test_harness_runs_every_encoding(encoding):
    r = _tiny_run(encoding, test_lengths=[3, 5], random_positions=True)
    randomized = encoding.startswith("randomized")
    assert set(r.accuracy["positions"]) == ({"evenly", "random"} if randomized else {"evenly"})
    cfg = r.model.config
    assert cfg.positional == LENGTH_ENCODINGS[encoding]["positional"]
    if randomized:
        assert cfg.randomized_base == LENGTH_ENCODINGS[encoding]["randomized_base"]


def test_harness_is_reproducible_and_uses_the_rng():
    a = _tiny_run("rope", train_config=TrainConfig(steps=5, batch_size=8, lr=1e-2))
    b = _tiny_run("rope", train_config=TrainConfig(steps=5, batch_size=8, lr=1e-2))
    c = _tiny_run("rope", train_config=TrainConfig(steps=5, batch_size=8, lr=1e-2), rng=np.random.default_rng(1))
    assert a.history.losses == b.history.losses
    pd.testing.assert_frame_equal(a.accuracy, b.accuracy)
    assert a.history.losses != c.history.losses


def test_harness_learns_something_in_distribution():
    # A few dozen steps on copy of length <= 3 beat chance (1/3) clearly.
    r = run_length_generalization(
        "copy", "rope", train_lengths=[1, 2, 3], test_lengths=[3], rng=np.random.default_rng(0), vocab_size=3,
        model_config=dict(d_model=32, n_heads=2, n_layers=2), n_eval=64,
        train_config=TrainConfig(steps=150, batch_size=32, lr=1e-2),
    )
    assert r.mean_accuracy([3]) > 0.6


def test_evaluate_lengths_with_a_callable_task():
    model = TinyTransformer(TransformerConfig(vocab_size=5, d_model=16, n_heads=2, n_layers=1, max_len=20,
                                              positional="randomized"))
    acc, per = evaluate_lengths(model, reverse_task, [2, 4], rng=np.random.default_rng(0), vocab_size=3,
                                n_sequences=4, random_positions=True, in_distribution=[2])
    assert acc["task"].tolist() == ["reverse"] * 4 and acc["in_distribution"].tolist() == [True, True, False, False]
    assert len(per) == 2 * (2 + 4)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(encoding="nope"), ValueError, "encoding must be one of"),
        (dict(task="nope"), ValueError, "task must be one of"),
        (dict(task=3), TypeError, "task must be a name"),
        (dict(position_range=10), ValueError, "does not cover the longest test sequence"),
        (dict(train_lengths=[]), ValueError, "at least one length"),
        (dict(test_lengths=[0]), ValueError, r"test_lengths\[0\] must be >= 1"),
        (dict(train_lengths=16), TypeError, "sequence of integers"),
        (dict(model_config=dict(positional="rope")), ValueError, "must not set"),
        (dict(model_config=[1]), TypeError, "model_config must be"),
        (dict(train_config=dict(steps=3)), TypeError, "TrainConfig"),
        (dict(rng=0), TypeError, "numpy.random.Generator"),
    ],
)
def test_harness_bad_input(kwargs, error, match):
    args = dict(task="reverse", encoding="rope", train_lengths=range(1, 4), test_lengths=[3, 6],
                rng=np.random.default_rng(0), vocab_size=3, model_config=TINY_MODEL,
                train_config=TrainConfig(steps=1, batch_size=2), n_eval=2)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        run_length_generalization(args.pop("task"), args.pop("encoding"), **args)

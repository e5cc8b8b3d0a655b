"""Tests of companion.memory.induction: the attention-only model, attention diagnostics, training helper."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from companion.data import task_vocab_size
from companion.data.triggered_bigram import make_triggered_bigram
from companion.memory import (
    AttentionOnlyConfig,
    AttentionOnlyTransformer,
    attention_maps,
    induction_score,
    previous_token_score,
    train_induction_model,
)


def _model(**kw):
    return AttentionOnlyTransformer(AttentionOnlyConfig(**{"vocab_size": 12, "d_model": 16, "max_len": 20, **kw}))


def test_shapes_rows_sum_to_one_and_causality():
    model = _model(n_heads=2)
    tokens = torch.randint(0, 12, (3, 9), generator=torch.Generator().manual_seed(0))
    logits, maps = model(tokens, return_attention=True)
    assert logits.shape == (3, 9, 12) and len(maps) == 2 and maps[0].shape == (3, 2, 9, 9)
    for m in maps:
        torch.testing.assert_close(m.sum(-1), torch.ones(3, 2, 9))
        assert torch.all(m.triu(diagonal=1) == 0)
    changed = tokens.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % 12
    torch.testing.assert_close(model(changed)[:, :6], logits[:, :6])  # later tokens cannot change earlier logits


def test_seed_fixes_initial_weights():
    a = AttentionOnlyTransformer(AttentionOnlyConfig(vocab_size=10, d_model=8), seed=3)
    b = AttentionOnlyTransformer(AttentionOnlyConfig(vocab_size=10, d_model=8), seed=3)
    c = AttentionOnlyTransformer(AttentionOnlyConfig(vocab_size=10, d_model=8), seed=4)
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb)
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


def _previous_token_map(t):
    w = np.zeros((1, 1, t, t))
    w[0, 0, 0, 0] = 1.0
    w[0, 0, np.arange(1, t), np.arange(t - 1)] = 1.0
    return w


def test_previous_token_score_perfect_and_uniform():
    assert previous_token_score(_previous_token_map(6)).tolist() == [1.0]
    t = 5
    uniform = np.tril(np.ones((t, t))) / np.arange(1, t + 1)[:, None]
    np.testing.assert_allclose(previous_token_score(uniform[None, None]), [np.mean(1 / np.arange(2, t + 1))])
    mask = np.zeros((1, t), bool)
    mask[0, 3] = True
    np.testing.assert_allclose(previous_token_score(uniform[None, None], mask), [1 / 4])


def test_induction_score_separates_an_induction_head_from_a_previous_token_head():
    x = np.array([[4, 7, 9, 4, 7, 9]])  # repeated sequence: an induction head at t attends to t - 2
    t = x.shape[1]
    ideal = np.zeros((1, 1, t, t))
    for q in range(t):
        ideal[0, 0, q, q - 2 if q >= 3 else 0] = 1.0
    assert induction_score(ideal, x).tolist() == [1.0]
    assert induction_score(_previous_token_map(t), x).tolist() == [0.0]
    assert np.isnan(induction_score(ideal, np.array([[1, 2, 3, 4, 5, 6]]))).all()  # no repeated token
    only_last = np.zeros((1, t), bool)
    only_last[0, -1] = True
    assert induction_score(ideal, x, only_last).tolist() == [1.0]


def test_attention_maps_returns_numpy_per_layer_and_keeps_mode():
    model = _model()
    model.train()
    maps = attention_maps(model, np.zeros((2, 7), dtype=np.int64))
    assert [m.shape for m in maps] == [(2, 1, 7, 7)] * 2 and model.training


def test_training_helper_lowers_loss_and_records_curve():
    source = make_triggered_bigram(np.random.default_rng(0), vocab_size=16, n_triggers=2)
    model = AttentionOnlyTransformer(AttentionOnlyConfig(task_vocab_size(16), d_model=32, max_len=32), seed=1)
    run = train_induction_model(model, source, steps=60, seq_len=32, batch_size=16, eval_every=30,
                                eval_size=32, progress=False)
    losses = np.array(run.history.losses)
    assert losses[-10:].mean() < losses[:10].mean() - 0.1
    assert [r["step"] for r in run.curve] == [30, 60]
    assert {"acc_repeat_triggers", "previous_token_score", "induction_score", "loss"} <= set(run.final())
    assert 0.0 <= run.final()["induction_score"] <= 1.0


def test_bad_input():
    with pytest.raises(ValueError, match="multiple of n_heads"):
        AttentionOnlyConfig(vocab_size=10, d_model=10, n_heads=3)
    with pytest.raises(ValueError, match="init_scale must be > 0"):
        AttentionOnlyConfig(vocab_size=10, init_scale=0.0)
    with pytest.raises(TypeError, match="AttentionOnlyConfig"):
        AttentionOnlyTransformer({"vocab_size": 10})
    model = _model()
    with pytest.raises(ValueError, match="exceeds max_len"):
        model(torch.zeros(1, 21, dtype=torch.long))
    with pytest.raises(ValueError, match="4 dimensions"):
        previous_token_score(np.ones((3, 3)))
    with pytest.raises(ValueError, match="inputs must have shape"):
        induction_score(np.ones((1, 1, 4, 4)) / 4, np.ones((1, 5), dtype=np.int64))
    with pytest.raises(ValueError, match="query_mask must have shape"):
        induction_score(np.ones((1, 1, 4, 4)) / 4, np.ones((1, 4), dtype=np.int64), np.ones((1, 3), bool))
    with pytest.raises(TypeError, match="TriggeredBigramSource"):
        train_induction_model(model, "source", steps=1)
    source = make_triggered_bigram(np.random.default_rng(0), vocab_size=10, n_triggers=2)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        train_induction_model(model, source, steps=0)

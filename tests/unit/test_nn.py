"""Tests of companion.nn: the tiny transformer, its positional options and the training loop."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

from companion.data import lookback_task, task_vocab_size
from companion.nn import (
    POSITIONAL_OPTIONS,
    TinyTransformer,
    TrainConfig,
    TransformerConfig,
    evaluate_accuracy,
    train,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Keep torch at one thread (the test machines have two cores shared by several workers)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# Every option, plus randomized feeding RoPE.
VARIANTS = [dict(positional=p) for p in POSITIONAL_OPTIONS] + [
    dict(positional="randomized", randomized_base="rope"),
    dict(positional="rope", rope_layout="interleaved"),
]
VARIANT_IDS = [v["positional"] + ("-" + v.get("randomized_base", v.get("rope_layout", "")) if len(v) > 1 else "")
               for v in VARIANTS]
VOCAB = 11


def make_model(seed=0, sharpen=True, **overrides):
    """A small model; ``sharpen`` scales the query/key/value weights up so that attention
    is far from uniform (at init it is nearly uniform, which would make position tests vacuous)."""
    torch.manual_seed(seed)
    kwargs = dict(vocab_size=VOCAB, d_model=32, n_heads=4, n_layers=2, max_len=64)
    kwargs.update(overrides)
    model = TinyTransformer(TransformerConfig(**kwargs))
    if sharpen:
        with torch.no_grad():
            for block in model.blocks:
                block.attn.qkv.weight.mul_(15.0)
    return model


def above_diagonal(weights):
    """Entries (..., i, j) with j > i: attention from a query to later keys."""
    seq = weights.shape[-1]
    return weights.detach()[..., torch.ones(seq, seq, dtype=torch.bool).triu(diagonal=1)]


def max_abs_diff(a, b):
    return float((a - b).detach().abs().max())


def random_tokens(batch, seq, seed=0):
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- config
def test_config_defaults_and_derived_sizes():
    cfg = TransformerConfig(vocab_size=10)
    assert (cfg.d_model, cfg.n_heads, cfg.n_layers, cfg.max_len) == (64, 4, 2, 256)
    assert cfg.ff_dim == 256 and cfg.head_dim == 16
    assert TransformerConfig(vocab_size=10, d_ff=100).ff_dim == 100
    assert TransformerConfig(vocab_size=10, positional="randomized", randomized_base="rope").encoding == "rope"


@pytest.mark.parametrize(
    "overrides, error, match",
    [
        (dict(vocab_size=0), ValueError, "vocab_size must be >= 1"),
        (dict(vocab_size=2.5), TypeError, "vocab_size must be an integer"),
        (dict(d_model=30, n_heads=4), ValueError, "d_model must be a multiple of n_heads"),
        (dict(n_layers=0), ValueError, "n_layers must be >= 1"),
        (dict(d_ff=0), ValueError, "d_ff must be >= 1"),
        (dict(max_len=0), ValueError, "max_len must be >= 1"),
        (dict(positional="absolute"), ValueError, "positional must be one of"),
        (dict(rope_layout="pairs"), ValueError, "rope_layout must be one of"),
        (dict(rope_base=0.0), ValueError, "rope_base must be > 0"),
        (dict(randomized_base="learned"), ValueError, "randomized_base must be one of"),
        (dict(causal="yes"), TypeError, "causal must be a bool"),
        (dict(tie_embeddings=1), TypeError, "tie_embeddings must be a bool"),
        (dict(dropout=1.0), ValueError, "dropout must be < 1"),
        (dict(dropout=-0.1), ValueError, "dropout must be >= 0"),
        (dict(d_model=12, n_heads=4, positional="rope"), ValueError, "needs an even head size"),
        (dict(d_model=6, n_heads=2, positional="randomized", randomized_base="rope"), ValueError, "even head size"),
        (dict(d_model=9, n_heads=3, positional="sinusoidal"), ValueError, "needs an even d_model"),
    ],
)
def test_config_rejects_bad_values(overrides, error, match):
    kwargs = dict(vocab_size=10)
    kwargs.update(overrides)
    with pytest.raises(error, match=match):
        TransformerConfig(**kwargs)


def test_model_rejects_non_config_and_bad_seed():
    with pytest.raises(TypeError, match="config must be a TransformerConfig"):
        TinyTransformer({"vocab_size": 10})
    with pytest.raises(ValueError, match="seed must be >= 0"):
        TinyTransformer(TransformerConfig(vocab_size=10), seed=-1)


# --------------------------------------------------------- forward shapes
@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_shapes_and_attention_rows_sum_to_one(variant):
    model = make_model(**variant).eval()
    tokens = random_tokens(3, 7)
    logits = model(tokens)
    assert logits.shape == (3, 7, VOCAB) and logits.dtype == torch.float32
    logits2, attention = model(tokens, return_attention=True)
    assert len(attention) == 2
    for weights in attention:
        assert weights.shape == (3, 4, 7, 7)
        torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4, 7))
        # causal: nothing above the diagonal
        assert float(above_diagonal(weights).abs().max()) == 0.0
    # the SDPA path and the explicit path compute the same function
    torch.testing.assert_close(logits, logits2, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_future_tokens_do_not_change_earlier_logits(variant):
    model = make_model(**variant).eval()
    tokens = random_tokens(2, 9)
    changed = tokens.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % VOCAB
    for return_attention in (False, True):
        a = model(tokens, return_attention=return_attention)
        b = model(changed, return_attention=return_attention)
        a, b = (a[0], b[0]) if return_attention else (a, b)
        torch.testing.assert_close(a[:, :6], b[:, :6], atol=1e-6, rtol=1e-5)
        assert max_abs_diff(a[:, 6:], b[:, 6:]) > 1e-4  # the change itself is visible


@pytest.mark.parametrize("positional", ["none", "alibi", "relative", "rope"])
def test_non_causal_model_sees_the_future(positional):
    model = make_model(positional=positional, causal=False).eval()
    tokens = random_tokens(2, 8)
    changed = tokens.clone()
    changed[:, -1] = (changed[:, -1] + 1) % VOCAB
    logits, attention = model(tokens, return_attention=True)
    assert max_abs_diff(logits[:, 0], model(changed)[:, 0]) > 1e-6
    assert float(above_diagonal(attention[0]).min()) > 0.0
    torch.testing.assert_close(logits, model(tokens), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("positional", ["none", "alibi", "relative"])
def test_score_bias_is_wired_in(positional):
    # With zero query/key weights every score is 0, so the attention weights are the
    # softmax of the positional bias alone over the visible keys j <= i.
    model = make_model(positional=positional, sharpen=False).eval()
    with torch.no_grad():
        for block in model.blocks:
            block.attn.qkv.weight.zero_()
            block.attn.qkv.bias.zero_()
        if model.relative_bias is not None:  # zero at init: give it something to show
            for p in model.relative_bias.parameters():
                p.normal_()
    _, attention = model(random_tokens(1, 6), return_attention=True)
    i, j = np.arange(6)[:, None], np.arange(6)[None, :]
    if positional == "none":
        bias = np.zeros((4, 6, 6))
    elif positional == "alibi":
        from companion.positional import alibi_slopes

        bias = -alibi_slopes(4)[:, None, None] * (i - j)
    else:
        bias = model.relative_bias(6, 6).detach().double().numpy()
    scores = np.where(j <= i, bias, -np.inf)
    expected = np.exp(scores - scores.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    for weights in attention:
        np.testing.assert_allclose(weights[0].detach().numpy(), expected, atol=1e-6)


def test_sinusoidal_table_is_the_positional_one():
    from companion.positional import sinusoidal_table

    model = make_model(positional="sinusoidal")
    np.testing.assert_array_equal(model.sinusoidal.numpy(), sinusoidal_table(64, 32))


def test_tied_embeddings_share_the_matrix_and_count_fewer_parameters():
    untied = make_model(tie_embeddings=False)
    tied = make_model(tie_embeddings=True)
    assert untied.n_parameters() - tied.n_parameters() == VOCAB * 32
    assert tied.n_parameters() == sum(p.numel() for p in tied.parameters())
    assert tied(random_tokens(1, 4)).shape == (1, 4, VOCAB)


def test_learned_table_counts_in_parameters():
    base = make_model(positional="none").n_parameters()
    assert make_model(positional="learned").n_parameters() - base == 64 * 32
    assert make_model(positional="sinusoidal").n_parameters() == base  # a fixed table, not a parameter


def test_init_is_deterministic_given_the_torch_seed():
    a, b, c = (make_model(seed=s, sharpen=False) for s in (3, 3, 4))
    for (name, pa), (_, pb), (_, pc) in zip(a.state_dict().items(), b.state_dict().items(), c.state_dict().items()):
        assert torch.equal(pa, pb), name
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


def test_numpy_tokens_are_accepted():
    model = make_model().eval()
    tokens = random_tokens(2, 5)
    torch.testing.assert_close(model(tokens.numpy()), model(tokens))


# ------------------------------------------------------------- positions
@pytest.mark.parametrize("positional", ["sinusoidal", "learned", "rope"])
def test_explicit_default_positions_match_implicit(positional):
    model = make_model(positional=positional).eval()
    tokens = random_tokens(2, 6)
    expected = model(tokens)
    torch.testing.assert_close(model(tokens, torch.arange(6)), expected)
    torch.testing.assert_close(model(tokens, np.tile(np.arange(6), (2, 1))), expected)
    # other spacings change the output (a uniform shift would not, for RoPE)
    assert max_abs_diff(model(tokens, 3 * torch.arange(6)), expected) > 1e-2


def test_rope_logits_depend_only_on_relative_positions():
    model = make_model(positional="rope").eval()
    tokens = random_tokens(2, 6)
    torch.testing.assert_close(model(tokens, torch.arange(6) + 37), model(tokens), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("positional", ["learned", "rope"])
def test_per_sequence_positions_match_separate_calls(positional):
    model = make_model(positional=positional).eval()
    tokens = random_tokens(2, 5)
    positions = torch.tensor([[0, 1, 2, 3, 4], [3, 7, 8, 20, 21]])
    together = model(tokens, positions)
    for row in range(2):
        torch.testing.assert_close(together[row:row + 1], model(tokens[row:row + 1], positions[row]),
                                   atol=1e-5, rtol=1e-4)


def test_randomized_positions_train_and_eval():
    model = make_model(positional="randomized")
    model.train()
    draws = [model.position_ids(10) for _ in range(5)]
    for pos in draws:
        assert pos.shape == (10,) and pos.dtype == torch.int64
        assert bool((pos[1:] > pos[:-1]).all())  # sorted and unique
        assert int(pos.min()) >= 0 and int(pos.max()) < 64
    assert len({tuple(p.tolist()) for p in draws}) == 5  # a fresh draw per batch
    # same seed, same draws; another seed, other draws
    twin = TinyTransformer(model.config, seed=0).train()
    assert torch.equal(twin.position_ids(10), draws[0])
    other = TinyTransformer(model.config, seed=1).train()
    assert not torch.equal(other.position_ids(10), draws[0])
    # a full draw covers the range
    assert torch.equal(model.position_ids(64), torch.arange(64))
    model.eval()
    assert torch.equal(model.position_ids(10), torch.arange(10))
    tokens = random_tokens(2, 10)
    torch.testing.assert_close(model(tokens), model(tokens, torch.arange(10)))


def test_randomized_training_forward_uses_a_fresh_draw():
    model = make_model(positional="randomized").train()
    tokens = random_tokens(2, 8)
    assert max_abs_diff(model(tokens), model(tokens)) > 1e-5


@pytest.mark.parametrize("positional", ["none", "alibi", "relative"])
def test_distance_encodings_take_no_positions_and_any_length(positional):
    model = make_model(positional=positional, max_len=4).eval()
    assert model.position_ids(10) is None
    assert model(random_tokens(1, 10)).shape == (1, 10, VOCAB)  # no table to overflow
    with pytest.raises(ValueError, match="takes no position ids"):
        model(random_tokens(1, 3), torch.arange(3))


@pytest.mark.parametrize("positional", ["sinusoidal", "learned", "randomized"])
def test_table_encodings_reject_positions_beyond_max_len(positional):
    model = make_model(positional=positional, max_len=8).eval()
    assert model(random_tokens(1, 8)).shape == (1, 8, VOCAB)
    with pytest.raises(ValueError, match="exceeds max_len=8"):
        model(random_tokens(1, 9))
    with pytest.raises(ValueError, match="positions must be < max_len=8"):
        model(random_tokens(1, 3), torch.tensor([0, 4, 8]))


def test_rope_accepts_positions_beyond_max_len():
    model = make_model(positional="rope", max_len=8).eval()
    assert model(random_tokens(1, 12)).shape == (1, 12, VOCAB)
    assert model(random_tokens(1, 3), torch.tensor([100, 200, 300])).shape == (1, 3, VOCAB)


@pytest.mark.parametrize(
    "tokens, positions, error, match",
    [
        (torch.zeros(2, 4), None, TypeError, "tokens must have a signed integer or unsigned integer dtype"),
        (torch.zeros(4, dtype=torch.long), None, ValueError, "tokens must have 2 dimensions"),
        (torch.full((1, 4), VOCAB), None, ValueError, r"tokens must lie in \[0, vocab_size=11\)"),
        (torch.full((1, 4), -1), None, ValueError, "tokens must lie in"),
        ([[1, 2]], None, TypeError, "tokens must be a NumPy array"),
        (torch.zeros(2, 4, dtype=torch.long), torch.arange(5), ValueError, r"positions must have shape \(4,\)"),
        (torch.zeros(2, 4, dtype=torch.long), torch.zeros(3, 4, dtype=torch.long), ValueError, "positions must have shape"),
        (torch.zeros(2, 4, dtype=torch.long), torch.tensor([0, 1, -2, 3]), ValueError, "positions must be >= 0"),
        (torch.zeros(2, 4, dtype=torch.long), torch.arange(4.0), TypeError, "positions must have a signed integer"),
    ],
)
def test_forward_rejects_bad_input(tokens, positions, error, match):
    model = make_model(positional="learned").eval()
    with pytest.raises(error, match=match):
        model(tokens, positions)


# --------------------------------------------------------------- training
LOOKBACK = functools.partial(lookback_task, seq_len=16, vocab_size=8, offset=2)


def small_lookback_model(positional="rope", seed=0, **overrides):
    torch.manual_seed(seed)
    cfg = dict(vocab_size=task_vocab_size(8), d_model=32, n_heads=2, n_layers=1, positional=positional)
    cfg.update(overrides)
    return TinyTransformer(TransformerConfig(**cfg))


def test_same_seed_gives_the_same_losses():
    runs = []
    for _ in range(2):
        model = small_lookback_model(dropout=0.1)
        history = train(model, LOOKBACK, TrainConfig(steps=20, batch_size=16, seed=5), progress=False)
        runs.append(history.losses)
    assert len(runs[0]) == 20 and runs[0] == runs[1]
    other = train(small_lookback_model(dropout=0.1), LOOKBACK, TrainConfig(steps=20, batch_size=16, seed=6),
                  progress=False)
    assert other.losses != runs[0]


def test_training_leaves_global_torch_rng_and_threads_alone():
    model = small_lookback_model()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(model, LOOKBACK, TrainConfig(steps=2, batch_size=4, threads=2), progress=False)
    assert torch.equal(torch.rand(3), expected)
    assert torch.get_num_threads() == 1


def test_training_on_lookback_with_rope_reduces_loss():
    # Calibrated over model/batch seeds 0-9: the first 5 losses average 2.21-2.26 (about
    # ln 10, uniform over the ids), the last 5 average 0.0015-0.005. The bounds (a 4x drop,
    # 90% accuracy) leave a wide margin for other BLAS/torch builds.
    model = small_lookback_model("rope")
    config = TrainConfig(steps=60, batch_size=32, lr=1e-2, seed=0)
    history = train(model, LOOKBACK, config, progress=False)
    first, last = np.mean(history.losses[:5]), np.mean(history.losses[-5:])
    assert first > 2.0
    assert last < 0.25 * first, (first, last)
    x, y, m = LOOKBACK(np.random.default_rng(99), 64)
    assert evaluate_accuracy(model, x, y, m)["token_accuracy"] > 0.9


def test_eval_records_and_history_fields():
    model = small_lookback_model()
    x, y, m = LOOKBACK(np.random.default_rng(1), 16)
    seen_modes = []

    def eval_fn(mdl):
        seen_modes.append(mdl.training)
        return evaluate_accuracy(mdl, x, y, m)

    history = train(model, LOOKBACK, TrainConfig(steps=5, batch_size=4, eval_every=2, warmup_steps=3),
                    eval_fn=eval_fn, progress=False)
    assert history.steps == [1, 2, 3, 4, 5]
    assert [step for step, _ in history.evals] == [2, 4, 5]
    assert set(history.evals[0][1]) == {"token_accuracy", "sequence_accuracy", "n_tokens", "n_sequences"}
    assert seen_modes == [False, False, False]
    assert history.wall_time_s > 0 and history.final_loss == history.losses[-1]
    # eval_every=0 with an eval_fn: only after the last step
    history = train(model, LOOKBACK, TrainConfig(steps=3, batch_size=4), eval_fn=eval_fn, progress=False)
    assert [step for step, _ in history.evals] == [3]


def test_train_accepts_torch_batches_and_float_masks():
    def batch_fn(rng, batch_size):
        x, y, m = LOOKBACK(rng, batch_size)
        return torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(m.astype(np.float32))

    model = small_lookback_model()
    a = train(model, batch_fn, TrainConfig(steps=3, batch_size=4), progress=False).losses
    b = train(small_lookback_model(), LOOKBACK, TrainConfig(steps=3, batch_size=4), progress=False).losses
    np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.parametrize(
    "overrides, error, match",
    [
        (dict(steps=0), ValueError, "steps must be >= 1"),
        (dict(lr=0.0), ValueError, "lr must be > 0"),
        (dict(weight_decay=-1.0), ValueError, "weight_decay must be >= 0"),
        (dict(batch_size=0), ValueError, "batch_size must be >= 1"),
        (dict(grad_clip=-1.0), ValueError, "grad_clip must be >= 0"),
        (dict(warmup_steps=-1), ValueError, "warmup_steps must be >= 0"),
        (dict(eval_every=1.5), TypeError, "eval_every must be an integer"),
        (dict(threads=0), ValueError, "threads must be >= 1"),
    ],
)
def test_train_config_rejects_bad_values(overrides, error, match):
    kwargs = dict(steps=10)
    kwargs.update(overrides)
    with pytest.raises(error, match=match):
        TrainConfig(**kwargs)


def test_train_rejects_bad_batches_and_arguments():
    model = small_lookback_model()
    config = TrainConfig(steps=1, batch_size=2)
    with pytest.raises(TypeError, match="batch_fn must return a tuple"):
        train(model, lambda rng, n: LOOKBACK(rng, n)[:2], config, progress=False)
    with pytest.raises(ValueError, match="same \\(batch, seq\\) shape"):
        train(model, lambda rng, n: (*LOOKBACK(rng, n)[:2], np.ones((n, 3), bool)), config, progress=False)
    with pytest.raises(ValueError, match="mask selects no target position"):
        train(model, lambda rng, n: (*LOOKBACK(rng, n)[:2], np.zeros((n, 16), bool)), config, progress=False)
    with pytest.raises(ValueError, match="targets at masked positions must lie in"):
        train(model, lambda rng, n: (LOOKBACK(rng, n)[0], np.full((n, 16), -100), np.ones((n, 16), bool)),
              config, progress=False)
    with pytest.raises(ValueError, match="eval_every=2 needs an eval_fn"):
        train(model, LOOKBACK, TrainConfig(steps=2, eval_every=2), progress=False)
    with pytest.raises(TypeError, match="config must be a TrainConfig"):
        train(model, LOOKBACK, {"steps": 1}, progress=False)
    with pytest.raises(TypeError, match="eval_fn must return a dict"):
        train(model, LOOKBACK, config, eval_fn=lambda mdl: 0.5, progress=False)


def test_train_reads_threads_from_the_environment(monkeypatch):
    seen = []
    model = small_lookback_model()

    def batch_fn(rng, n):
        seen.append(torch.get_num_threads())
        return LOOKBACK(rng, n)

    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    train(model, batch_fn, TrainConfig(steps=1, batch_size=2), progress=False)
    train(model, batch_fn, TrainConfig(steps=1, batch_size=2, threads=1), progress=False)
    assert seen == [2, 1] and torch.get_num_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "many")
    with pytest.raises(ValueError, match="OMP_NUM_THREADS must be a positive integer"):
        train(model, LOOKBACK, TrainConfig(steps=1, batch_size=2), progress=False)


# -------------------------------------------------------------- accuracy
class _EchoModel(torch.nn.Module):
    """Predicts the current input token (a model with a known accuracy)."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.calls = []

    def forward(self, tokens, positions=None):
        self.calls.append((tokens.shape[0], None if positions is None else tuple(positions.shape)))
        return torch.nn.functional.one_hot(tokens, self.vocab).float() + self.dummy


def test_evaluate_accuracy_matches_a_direct_count():
    x, y, m = lookback_task(np.random.default_rng(0), 50, 6, vocab_size=2, offset=1)
    model = _EchoModel(task_vocab_size(2))
    result = evaluate_accuracy(model, x, y, m, batch_size=16)
    right = (x == y) & m
    assert result["n_tokens"] == int(m.sum()) == 250 and result["n_sequences"] == 50
    assert math.isclose(result["token_accuracy"], right.sum() / m.sum())
    assert math.isclose(result["sequence_accuracy"], np.mean((right | ~m).all(axis=1)))
    assert [n for n, _ in model.calls] == [16, 16, 16, 2]
    # positions are passed on, sliced per batch when they are per-sequence
    model.calls.clear()
    evaluate_accuracy(model, x, y, m, positions=np.tile(np.arange(6), (50, 1)), batch_size=32)
    assert model.calls == [(32, (32, 6)), (18, (18, 6))]
    assert model.training  # mode restored


def test_evaluate_accuracy_on_the_real_model_and_bad_input():
    model = make_model().train()
    x, y, m = lookback_task(np.random.default_rng(0), 4, 6, vocab_size=9, offset=1)
    result = evaluate_accuracy(model, x, y, m)
    assert 0.0 <= result["token_accuracy"] <= 1.0 and model.training
    with pytest.raises(ValueError, match="positions of shape \\(n, seq\\) must have n=4 rows"):
        evaluate_accuracy(model, x, y, m, positions=np.zeros((3, 6), np.int64))
    with pytest.raises(TypeError, match="inputs must have a signed integer"):
        evaluate_accuracy(model, x.astype(float), y, m)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        evaluate_accuracy(model, x, y, m, batch_size=0)


# ---------------------------------------------------------------- bilevel positions
def _bilevel_model(**kw):
    from companion.nn import TinyTransformer, TransformerConfig

    cfg = TransformerConfig(vocab_size=12, d_model=16, n_heads=2, n_layers=1, max_len=8, positional="bilevel", **kw)
    return TinyTransformer(cfg, seed=0).eval()


def test_bilevel_model_accepts_bilevel_positions():
    import numpy as np
    import torch

    from companion.positional import bilevel_positions

    model = _bilevel_model()
    segments = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3])  # 12 tokens, no segment longer than 8
    seg_index, in_segment = bilevel_positions(segments)
    tokens = torch.randint(0, 12, (3, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(tokens, positions=(seg_index, in_segment))
    assert logits.shape == (3, 12, 12) and torch.isfinite(logits).all()


def test_bilevel_segment_index_is_relative_and_place_is_absolute():
    import torch

    model = _bilevel_model()
    tokens = torch.randint(0, 12, (2, 6), generator=torch.Generator().manual_seed(1))
    inner = torch.tensor([0, 1, 2, 0, 1, 2])
    seg = torch.tensor([0, 0, 0, 1, 1, 1])
    with torch.no_grad():
        base = model(tokens, positions=(seg, inner))
        shifted_segments = model(tokens, positions=(seg + 5, inner))  # RoPE: a common shift changes nothing
        shifted_places = model(tokens, positions=(seg, inner + 1))  # absolute table: changes the output
    assert torch.allclose(base, shifted_segments, atol=1e-4)
    assert not torch.allclose(base, shifted_places, atol=1e-4)


def test_bilevel_bad_positions():
    import pytest
    import torch

    model = _bilevel_model()
    tokens = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(TypeError, match="positions=\\(segment_index, position_in_segment\\)"):
        model(tokens, positions=torch.arange(4))
    with pytest.raises(ValueError, match="position_in_segment must be < max_len=8"):
        model(tokens, positions=(torch.zeros(4, dtype=torch.long), torch.tensor([0, 1, 2, 9])))
    with pytest.raises(ValueError, match="segment_index must have shape"):
        model(tokens, positions=(torch.zeros(3, dtype=torch.long), torch.arange(4)))
    with pytest.raises(ValueError, match="exceeds max_len=8"):
        model(torch.zeros(1, 9, dtype=torch.long))

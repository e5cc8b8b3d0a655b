"""Tests of companion.compression.kv_cache: one conformance suite over every registered policy,
per-policy behaviour, accounting, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from companion.compression import ADAPTIVE_PROFILES, KV_POLICIES, CachePolicy, KVCache, kv_bytes_per_token, register_policy
from companion.nn import FullKVStore, TinyTransformer, TransformerConfig, cached_nll, decode_step, prefill

VOCAB, SEQ, PREFILL = 13, 40, 12


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return TinyTransformer(TransformerConfig(vocab_size=VOCAB, d_model=32, n_heads=4, n_layers=2, positional="rope")).eval()


@pytest.fixture(scope="module")
def tokens():
    return torch.as_tensor(np.random.default_rng(1).integers(0, VOCAB, size=(3, SEQ)))


def _decode_with_checks(model, tokens, cache, prefill_len, check):
    """cached_nll written out, calling ``check(cache, t)`` after the prefill and after every step."""
    cache.reset(model.config.n_layers)
    first = prefill(model, tokens[:, :prefill_len], return_attention=True)
    for layer in range(model.config.n_layers):
        cache.load(layer, first.keys[layer], first.values[layer], first.attention[layer])
    check(cache, prefill_len - 1)
    for t in range(prefill_len, tokens.shape[1]):
        decode_step(model, tokens[:, t], t, cache)
        check(cache, t)


# ---------------------------------------------------------------- conformance
@pytest.mark.parametrize("name", sorted(KV_POLICIES))
@pytest.mark.parametrize("budget", [6, 10])
def test_policy_never_exceeds_its_budget_and_keeps_the_newest_token(model, tokens, name, budget):
    cache = KVCache(budget, name)

    def check(cache, t):
        for layer in range(model.config.n_layers):
            held = cache.held_per_head(layer)
            assert bool((held <= t + 1).all()), "holds more entries than tokens seen"
            bounded = cache.bounded_heads(layer)
            assert bool((held[bounded] <= budget).all()), f"{name} exceeds budget {budget} at step {t}"
            state = cache.states[layer]
            newest = (state.position == t) & state.valid & (state.count == 1)
            assert bool(newest.any(-1).all()), f"{name} lost the newest token at step {t}"
            k_new = state.keys[newest.nonzero(as_tuple=True)]
            assert torch.isfinite(k_new).all()

    _decode_with_checks(model, tokens, cache, PREFILL, check)
    if cache.policy.bounded:
        assert cache.n_entries() <= budget * model.config.n_layers * model.config.n_heads


@pytest.mark.parametrize("name", sorted(KV_POLICIES))
def test_policy_equals_full_attention_when_the_budget_covers_the_context(model, tokens, name):
    full = cached_nll(model, tokens, FullKVStore(), prefill_len=PREFILL)
    logp = torch.log_softmax(model(tokens), -1)[:, PREFILL - 1:-1].gather(-1, tokens[:, PREFILL:, None])[..., 0]
    got = cached_nll(model, tokens, KVCache(SEQ, name), prefill_len=PREFILL)
    np.testing.assert_array_equal(got, full)  # same operations: bit-identical to the full cache
    np.testing.assert_allclose(got, -logp.detach().numpy(), atol=1e-5)  # and to a normal forward pass


@pytest.mark.parametrize("name", sorted(KV_POLICIES))
def test_policy_changes_the_loss_only_when_it_evicts(model, tokens, name):
    full = cached_nll(model, tokens, FullKVStore(), prefill_len=PREFILL)
    options = {"recovery": 0.0} if name == "adaptive" else {}  # force every head to compress
    small = cached_nll(model, tokens, KVCache(6, name, **options), prefill_len=PREFILL)
    assert small.shape == full.shape and np.isfinite(small).all()
    if name != "full":
        assert not np.array_equal(small, full)


def test_full_policy_takes_no_budget(model, tokens):
    full = cached_nll(model, tokens, FullKVStore(), prefill_len=PREFILL)
    np.testing.assert_array_equal(cached_nll(model, tokens, KVCache(None, "full"), prefill_len=PREFILL), full)


# --------------------------------------------------------------- per policy
def _drive(cache, n_prompt=8, n_steps=12, batch=2, heads=3, dim=4, seed=0, attention=True):
    """Feed random keys/values straight into a one-layer cache; return the keys of every position."""
    rng = torch.Generator().manual_seed(seed)
    keys = torch.randn(batch, heads, n_prompt + n_steps, dim, generator=rng)
    values = torch.randn(batch, heads, n_prompt + n_steps, dim, generator=rng)
    cache.reset(1)
    att = None
    if attention:
        att = torch.softmax(torch.randn(batch, heads, n_prompt, n_prompt, generator=rng), -1).tril()
        att = att / att.sum(-1, keepdim=True)
    cache.load(0, keys[:, :, :n_prompt], values[:, :, :n_prompt], att)
    for t in range(n_prompt, n_prompt + n_steps):
        cache.append(0, keys[:, :, t : t + 1], values[:, :, t : t + 1])
        k, _, bias = cache.entries(0)
        w = torch.softmax(torch.randn(batch, heads, 1, k.shape[2], generator=rng) + (0 if bias is None else bias[:, :, None]), -1)
        cache.observe(0, w)
        cache.end_step()
    return keys


def test_window_keeps_exactly_the_newest_tokens():
    cache = KVCache(5, "window")
    _drive(cache)
    assert cache.states[0].position[0, 0].tolist() == [15, 16, 17, 18, 19]


def test_sinks_window_keeps_the_first_tokens_and_a_window():
    cache = KVCache(7, "sinks_window", n_sinks=3)
    _drive(cache)
    assert cache.states[0].position[1, 2].tolist() == [0, 1, 2, 16, 17, 18, 19]


def test_heavy_hitter_keeps_the_most_attended_old_tokens():
    cache = KVCache(6, "heavy_hitter", n_recent=2)
    cache.reset(1)
    keys = torch.randn(1, 1, 10, 4)
    att = torch.zeros(1, 1, 10, 10)
    att[..., :, 0] = 1.0  # prompt: every query attends to token 0 ...
    att[..., 5:, 3] = 1.0  # ... and later ones to token 3 too (mass is not normalised: only the ranking matters)
    att[..., 6:, 7] = 0.5
    att[..., 9:, 4] = 0.2
    cache.load(0, keys, keys, att)
    assert cache.states[0].position[0, 0].tolist() == [0, 3, 4, 7, 8, 9]


def test_evict_merge_conserves_tokens_and_biases_merged_entries():
    cache = KVCache(6, "evict_merge", n_recent=3, threshold=-1.0)
    _drive(cache, n_prompt=8, n_steps=10)
    state = cache.states[0]
    np.testing.assert_allclose(state.count.sum(-1).numpy(), 18.0)  # every token is in some entry
    _, _, bias = cache.entries(0)
    assert bias is not None and torch.allclose(bias, torch.log(state.count))
    assert bool((state.count[..., -3:] == 1).all())  # the window is never a merge target


def test_evict_merge_threshold_one_only_evicts():
    cache = KVCache(6, "evict_merge", threshold=1.0)
    _drive(cache)
    assert bool((cache.states[0].count == 1).all())


def test_subgen_counts_every_token_once_and_is_seeded():
    runs = []
    for _ in range(2):
        cache = KVCache(8, "subgen", n_recent=4, radius=0.8, seed=3)
        _drive(cache, n_prompt=10, n_steps=14)
        state = cache.states[0]
        held = state.count * state.valid
        np.testing.assert_allclose(held.sum(-1).numpy(), 24.0)
        assert int(state.held().max()) <= 8
        runs.append(state.keys.clone())
    torch.testing.assert_close(runs[0], runs[1])  # same seed, same samples


def test_subgen_bias_masks_unused_cluster_slots():
    cache = KVCache(8, "subgen", n_recent=4, radius=100.0)  # everything joins the first cluster
    _drive(cache, n_prompt=10, n_steps=4)
    state = cache.states[0]
    _, _, bias = cache.entries(0)
    assert bool((state.valid[..., :4].sum(-1) == 1).all())  # one active cluster slot of four
    assert bool(torch.isinf(bias[~state.valid]).all()) and int(state.held().max()) == 8
    assert bias.shape == state.valid.shape


def test_adaptive_picks_local_for_local_heads_and_full_for_diffuse_ones():
    batch, heads, T = 1, 2, 40
    att = torch.zeros(batch, heads, T, T)
    idx = torch.arange(T)
    att[0, 0] = ((idx[:, None] - idx[None, :] >= 0) & (idx[:, None] - idx[None, :] < 3)).float()
    att[0, 1] = (idx[:, None] >= idx[None, :]).float()  # uniform over the whole past
    att = att / att.sum(-1, keepdim=True)
    keys = torch.randn(batch, heads, T, 4)
    cache = KVCache(8, "adaptive", recovery=0.9)
    cache.reset(1)
    cache.load(0, keys, keys, att)
    modes = [ADAPTIVE_PROFILES[i] for i in cache.policy.modes[0][0].tolist()]
    assert modes[0] == "local" and modes[1] == "full"
    assert cache.held_per_head(0)[0].tolist() == [8, 40]
    assert cache.bounded_heads(0)[0].tolist() == [True, False]
    _, _, bias = cache.entries(0)
    assert bool(torch.isinf(bias[0, 0]).sum() == 32)  # the local head is padded to the full head's length


def test_adaptive_needs_the_prompt_attention():
    cache = KVCache(6, "adaptive")
    cache.reset(1)
    with pytest.raises(ValueError, match="attention"):
        cache.load(0, torch.randn(1, 2, 10, 4), torch.randn(1, 2, 10, 4), None)


# ---------------------------------------------------------------- accounting
def test_bytes_held_counts_valid_entries_and_bookkeeping():
    window = KVCache(5, "window")
    _drive(window, batch=2, heads=3, dim=4)
    assert window.payload_bytes() == window.bytes_held() == 2 * 3 * 5 * (4 + 4) * 4
    assert window.n_entries() == 3 * 5
    hh = KVCache(5, "heavy_hitter")
    _drive(hh, batch=2, heads=3, dim=4)
    assert hh.bytes_held() == hh.payload_bytes() + 2 * 3 * 5 * 4


def test_kv_bytes_per_token():
    assert kv_bytes_per_token(4, 4, 32, bytes_per_value=4) == 2 * 4 * 4 * 32 * 4
    assert kv_bytes_per_token(24, 8, 64, cached_layers=1) == 2 * 8 * 64 * 2
    with pytest.raises(ValueError, match="cached_layers must be <= 24"):
        kv_bytes_per_token(24, 8, 64, cached_layers=30)


# ---------------------------------------------------------------- registry
def test_register_policy_adds_a_policy_to_the_suite():
    @register_policy("_test_oldest")
    class KeepOldest(CachePolicy):
        def enforce(self, layer, state):
            return state if state.n <= self.budget else state.slice(0, self.budget - 1).cat(state.slice(state.n - 1))

    try:
        cache = KVCache(4, "_test_oldest")
        _drive(cache)
        assert cache.states[0].position[0, 0].tolist() == [0, 1, 2, 19]
    finally:
        del KV_POLICIES["_test_oldest"]
    with pytest.raises(TypeError, match="CachePolicy subclass"):
        register_policy("x")(int)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("name", sorted(set(KV_POLICIES) - {"full"}))
@pytest.mark.parametrize("budget", [0, -3])
def test_non_positive_budgets_are_refused(name, budget):
    with pytest.raises(ValueError, match="budget must be a positive number"):
        KVCache(budget, name)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="budget > n_sinks"):
        KVCache(4, "sinks_window", n_sinks=4)
    with pytest.raises(ValueError, match="budget >= n_sinks \\+ 2"):
        KVCache(5, "adaptive", n_sinks=4)
    with pytest.raises(ValueError, match="unknown KV cache policy 'lru'"):
        KVCache(8, "lru")
    with pytest.raises(TypeError, match="unknown option"):
        KVCache(8, "window", n_sinks=2)
    with pytest.raises(ValueError, match="needs a budget"):
        KVCache(None, "window")
    with pytest.raises(TypeError, match="budget must be an integer"):
        KVCache(8.5, "window")
    with pytest.raises(ValueError, match="n_recent \\(9\\)"):
        KVCache(8, "heavy_hitter", n_recent=9)
    with pytest.raises(ValueError, match="threshold must be <= 1"):
        KVCache(8, "evict_merge", threshold=2.0)
    with pytest.raises(TypeError, match="policy must be a name"):
        KVCache(8, 3)
    with pytest.raises(ValueError, match="call reset"):
        KVCache(8).entries(0)

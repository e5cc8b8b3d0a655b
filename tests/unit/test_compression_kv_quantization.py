"""Tests of companion.compression.kv_quantization: KIVI-style caches, coupled quantization, entropy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from companion.compression import (
    CoupledCodebook,
    CoupledKeyTransform,
    KVQuantConfig,
    KVQuantTransform,
    QuantizedKVStore,
    channel_group_entropy,
    coupled_decode,
    coupled_encode,
    fake_quantize,
    fit_coupled_codebook,
    quantize_kv,
)
from companion.nn import TinyTransformer, TransformerConfig
from companion.nn.decoding import FullKVStore, cached_nll, prefill


def _kv(shape=(2, 3, 70, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


# ------------------------------------------------------------------ config
def test_n_quantized_keeps_whole_groups_and_the_residual():
    cfg = KVQuantConfig(token_group=32, residual=4)
    assert [cfg.n_quantized(n) for n in (0, 35, 36, 67, 68, 100)] == [0, 0, 32, 32, 64, 96]
    per_token = KVQuantConfig(key_mode="token", value_mode="token", residual=4)
    assert per_token.flush_granularity == 1 and per_token.n_quantized(10) == 6
    keys_exact = KVQuantConfig(key_bits=None, value_mode="token", token_group=32)
    assert keys_exact.flush_granularity == 1  # exact keys need no token groups


@pytest.mark.parametrize("kwargs,match", [
    ({"key_bits": 0}, "key_bits must be >= 1"),
    ({"value_bits": 9}, "value_bits must be <= 8"),
    ({"key_mode": "head"}, "key_mode must be one of"),
    ({"token_group": 0}, "token_group must be >= 1"),
    ({"residual": -1}, "residual must be >= 0"),
    ({"scale_dtype": "bfloat16"}, "scale_dtype must be one of"),
])
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        KVQuantConfig(**kwargs)


# -------------------------------------------------------------- quantize_kv
def test_quantize_kv_matches_fake_quantize_per_side():
    k, v = _kv()
    cfg = KVQuantConfig(key_bits=3, value_bits=2, token_group=16, channel_group=4, residual=5)
    q = quantize_kv(k, v, cfg)
    n_q = cfg.n_quantized(70)
    assert n_q == 64 and q.keys_tail.shape[2] == 6
    k_hat, v_hat = q.dequantize()
    np.testing.assert_array_equal(k_hat[:, :, :n_q].numpy(),
                                  fake_quantize(k[:, :, :n_q].numpy(), 3, axis=-2, group_size=16))
    np.testing.assert_array_equal(v_hat[:, :, :n_q].numpy(),
                                  fake_quantize(v[:, :, :n_q].numpy(), 2, axis=-1, group_size=4))
    assert torch.equal(k_hat[:, :, n_q:], k[:, :, n_q:]) and torch.equal(v_hat[:, :, n_q:], v[:, :, n_q:])


def test_bytes_count_codes_scales_zeros_and_tail():
    k, v = _kv((1, 2, 70, 8))
    cfg = KVQuantConfig(key_bits=2, value_bits=4, token_group=32, residual=0)
    q = quantize_kv(k, v, cfg)
    # keys: 64 tokens x 16 channels x 2 bits + (16 channels x 2 groups) x (scale + zero) x 2 bytes
    key_bytes = 64 * 16 * 2 // 8 + 16 * 2 * 2 * 2
    # values: 64 tokens x 16 channels x 4 bits + (64 tokens x 2 heads... one group per token and head) x 4 bytes
    value_bytes = 64 * 16 * 4 // 8 + 64 * 2 * 2 * 2
    tail = 2 * 6 * 16 * 4  # 6 exact float32 tokens, keys and values
    assert q.nbytes == key_bytes + value_bytes + tail


def test_exact_sides_and_short_caches_are_untouched():
    k, v = _kv((1, 1, 10, 4))
    q = quantize_kv(k, v, KVQuantConfig(token_group=32))
    assert q.keys_q is None and q.nbytes == 2 * k.numel() * 4
    q2 = quantize_kv(k, v, KVQuantConfig(key_bits=None, value_bits=None, token_group=2))
    k_hat, v_hat = q2.dequantize()
    assert torch.equal(k_hat, k) and torch.equal(v_hat, v)


def test_quantize_kv_bad_input():
    k, v = _kv((1, 1, 8, 4))
    with pytest.raises(TypeError, match="torch tensor"):
        quantize_kv(k.numpy(), v, KVQuantConfig())
    with pytest.raises(ValueError, match="same shape"):
        quantize_kv(k, v[:, :, :4], KVQuantConfig())
    with pytest.raises(ValueError, match="4 dimensions"):
        quantize_kv(k[0], v[0], KVQuantConfig())
    with pytest.raises(TypeError, match="KVQuantConfig"):
        quantize_kv(k, v, {"key_bits": 2})
    with pytest.raises(ValueError, match="channel_group=3 must divide head_dim=4"):
        quantize_kv(k, v, KVQuantConfig(key_mode="token", channel_group=3, token_group=1))
    bad = k.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        quantize_kv(bad, v, KVQuantConfig(token_group=8))


def test_more_key_bits_help_per_channel_keys_with_an_outlier_channel():
    k, v = _kv((1, 2, 64, 16))
    k[..., 5] += 15.0  # a channel with a large offset, as real keys have
    err = {}
    for mode in ("channel", "token"):
        cfg = KVQuantConfig(key_bits=2, value_bits=None, key_mode=mode, token_group=32)
        k_hat, _ = quantize_kv(k, v, cfg).dequantize()
        err[mode] = float((k_hat - k).abs().mean())
    assert err["channel"] < 0.5 * err["token"]


# ---------------------------------------------------------------- the store
def _tiny_model():
    torch.manual_seed(0)
    return TinyTransformer(TransformerConfig(vocab_size=13, d_model=16, n_heads=2, n_layers=2, positional="rope")).eval()


def test_store_buffers_key_groups_and_keeps_the_residual():
    cfg = KVQuantConfig(key_bits=2, value_bits=2, token_group=4, residual=3)
    store = QuantizedKVStore(cfg)
    store.reset(1)
    k, v = _kv((1, 2, 5, 4))
    store.load(0, k, v, None)
    assert (store.n_quantized(0), store.tail_length(0)) == (0, 5)
    seen = []
    for _ in range(9):
        kk, vv = _kv((1, 2, 1, 4), seed=len(seen) + 1)
        store.append(0, kk, vv)
        store.end_step()
        seen.append((store.n_quantized(0), store.tail_length(0)))
        assert cfg.residual <= store.tail_length(0) < cfg.residual + cfg.token_group
    assert seen[-1] == (8, 6)
    K, V, bias = store.entries(0)
    assert K.shape == (1, 2, 14, 4) and bias is None
    assert store.n_entries() == 14 * 2


def test_store_with_exact_sides_equals_the_full_cache():
    model = _tiny_model()
    tokens = torch.randint(0, 13, (2, 24), generator=torch.Generator().manual_seed(1))
    full = cached_nll(model, tokens, FullKVStore(), prefill_len=8)
    exact = cached_nll(model, tokens, QuantizedKVStore(KVQuantConfig(key_bits=None, value_bits=None)), prefill_len=8)
    np.testing.assert_allclose(exact, full, atol=1e-6)


def test_store_bytes_shrink_and_loss_stays_close_at_8_bits():
    model = _tiny_model()
    tokens = torch.randint(0, 13, (2, 40), generator=torch.Generator().manual_seed(2))
    full_store = FullKVStore()
    full = cached_nll(model, tokens, full_store, prefill_len=8)
    store = QuantizedKVStore(KVQuantConfig(key_bits=8, value_bits=8, token_group=8, residual=4))
    q8 = cached_nll(model, tokens, store, prefill_len=8)
    assert np.abs(q8 - full).max() < 0.05
    assert store.bytes_held() < 0.5 * full_store.bytes_held()
    # 2 layers x (K, V) x 2 sequences x 2 heads x 39 tokens x 8 channels x 4 bytes, minus what quantization saved
    assert full_store.bytes_held() == 2 * 2 * 2 * 2 * 39 * 8 * 4


def test_transform_in_prefill_changes_logits_by_little_at_8_bits():
    model = _tiny_model()
    tokens = torch.randint(0, 13, (2, 32), generator=torch.Generator().manual_seed(3))
    ref = prefill(model, tokens).logits
    t = KVQuantTransform(KVQuantConfig(key_bits=8, value_bits=8, token_group=16))
    got = prefill(model, tokens, kv_transform=t).logits
    assert (got - ref).abs().max() < 0.05 and sorted(t.nbytes) == [0, 1]
    t2 = KVQuantTransform(KVQuantConfig(key_bits=1, value_bits=1, token_group=16))
    rough = prefill(model, tokens, kv_transform=t2).logits
    assert (rough - ref).abs().max() > (got - ref).abs().max()
    assert t2.compression_ratio() > t.compression_ratio() > 1


# -------------------------------------------------------- coupled quantization
def _correlated(n=3000, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, dim // 2))
    return np.repeat(base, 2, axis=1) + 0.1 * rng.standard_normal((n, dim))  # adjacent channel pairs correlated


def test_coupled_beats_independent_one_bit_on_correlated_channels():
    x = _correlated().astype(np.float32)
    book = fit_coupled_codebook(x, 4, 1, rng=0)
    coupled = np.mean((coupled_decode(coupled_encode(x, book), book) - x) ** 2)
    single = fit_coupled_codebook(x, 1, 1, rng=0)  # 2 centroids per channel: independent 1-bit k-means
    independent = np.mean((coupled_decode(coupled_encode(x, single), single) - x) ** 2)
    uniform = np.mean((fake_quantize(x, 1, axis=0) - x) ** 2)
    assert coupled < 0.8 * independent and independent <= uniform
    assert book.code_nbytes(len(x)) == single.code_nbytes(len(x)) == len(x) * 8 // 8  # 1 bit per channel either way


def test_codes_are_nearest_centroids():
    x = np.random.default_rng(1).standard_normal((400, 6)).astype(np.float32)
    book = fit_coupled_codebook(x, 2, 2, rng=1)
    codes = coupled_encode(x, book)
    cents = book.centroids.astype(np.float32)
    for g in range(3):
        d = ((x[:, None, 2 * g:2 * g + 2] - cents[g][None]) ** 2).sum(-1)  # (n, k)
        np.testing.assert_array_equal(codes[:, g], d.argmin(1))


def test_coupled_transform_records_bytes_and_keeps_shapes():
    k, v = _kv((2, 2, 160, 8))
    t = CoupledKeyTransform.fit([k], channels=8, bits_per_channel=1, rng=0, iters=5,
                                value_config=KVQuantConfig(value_bits=2, token_group=32))
    k_hat, v_hat = t(0, k, v)
    assert k_hat.shape == k.shape and not torch.equal(v_hat, v)
    codes = 2 * 320 * 1  # 2 heads x (2 x 160) tokens x one byte (8 channels x 1 bit)
    tables = 2 * 256 * 8 * 2  # 2 heads x 256 centroids x 8 channels x float16
    values = v.numel() * 2 // 8 + (2 * 2 * 160) * 2 * 2  # 2-bit codes + float16 (scale, zero) per token and head
    assert t.nbytes[0] == codes + tables + values


def test_coupled_bad_input():
    x = np.zeros((300, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="channels must divide"):
        fit_coupled_codebook(x, 3)
    with pytest.raises(ValueError, match="must be <= 8"):
        fit_coupled_codebook(x, 4, 3)
    with pytest.raises(ValueError, match="at least 256 vectors"):
        fit_coupled_codebook(x[:100], 8, 1)
    book = CoupledCodebook(np.zeros((2, 2, 4), dtype=np.float16), 4, 1)
    with pytest.raises(ValueError, match="8 columns"):
        coupled_encode(np.zeros((3, 6), dtype=np.float32), book)
    with pytest.raises(ValueError, match="codes must lie in 0 .. 1"):
        coupled_decode(np.array([[0, 2]]), book)
    with pytest.raises(TypeError, match="CoupledCodebook"):
        coupled_decode(np.array([[0, 1]]), "book")


# ------------------------------------------------------------------ entropy
def test_entropy_of_independent_and_copied_channels():
    rng = np.random.default_rng(0)
    indep = rng.standard_normal((20000, 4))
    joint, marg = channel_group_entropy(indep, 4, levels=2)
    np.testing.assert_allclose(marg, 4.0, atol=1e-3)
    assert abs(joint[0] - marg[0]) < 0.01  # independent: joint = sum of marginals (up to estimation bias)
    copies = np.repeat(rng.standard_normal((20000, 1)), 4, axis=1)
    joint_c, marg_c = channel_group_entropy(copies, 4, levels=4)
    np.testing.assert_allclose(joint_c, 2.0, atol=1e-3)  # four copies carry one channel's 2 bits
    np.testing.assert_allclose(marg_c, 8.0, atol=1e-3)
    pairs, _ = channel_group_entropy(_correlated(dim=8), 2)
    assert (pairs < 1.5).all()


def test_entropy_never_exceeds_sum_of_marginals():
    x = np.random.default_rng(2).standard_normal((500, 12)) @ np.random.default_rng(3).standard_normal((12, 12))
    for c in (1, 2, 3, 4):
        joint, marg = channel_group_entropy(x, c, levels=3)
        assert joint.shape == (12 // c,) and (joint <= marg + 1e-9).all()


def test_entropy_bad_input():
    with pytest.raises(ValueError, match="channels must divide"):
        channel_group_entropy(np.zeros((10, 6)), 4)
    with pytest.raises(ValueError, match="levels must be >= 2"):
        channel_group_entropy(np.zeros((10, 6)), 2, levels=1)
    with pytest.raises(ValueError, match="at least 2 vectors"):
        channel_group_entropy(np.zeros((1, 6)), 2)
    with pytest.raises(ValueError, match="2\\*\\*24"):
        channel_group_entropy(np.zeros((10, 32)), 32, levels=2)
    with pytest.raises(ValueError, match="finite"):
        channel_group_entropy(np.full((10, 2), np.nan), 2)

import numpy as np
import pytest
import torch

from companion.nn import TinyTransformer, TransformerConfig
from companion.nn.decoding import FullKVStore, KVStore, cached_nll, decode_step, prefill


def _model(positional="rope", **kw):
    torch.manual_seed(0)
    cfg = TransformerConfig(vocab_size=13, d_model=24, n_heads=3, n_layers=2, positional=positional, max_len=32, **kw)
    return TinyTransformer(cfg).eval()


def _reference_nll(model, tokens, prefill_len):
    with torch.no_grad():
        logp = torch.log_softmax(model(tokens).double(), -1)
    return -logp[:, prefill_len - 1 : -1].gather(-1, tokens[:, prefill_len:, None])[..., 0].numpy()


@pytest.mark.parametrize("positional", ["none", "sinusoidal", "learned", "rope"])
def test_prefill_matches_forward(positional):
    model = _model(positional)
    tokens = torch.randint(0, 13, (3, 11))
    out = prefill(model, tokens, return_attention=True)
    with torch.no_grad():
        logits, attn = model(tokens, return_attention=True)
    assert torch.allclose(out.logits, logits, atol=1e-5)
    assert len(out.keys) == 2 and tuple(out.keys[0].shape) == (3, 3, 11, 8)
    assert torch.allclose(out.attention[1], attn[1], atol=1e-6)
    assert tuple(out.hidden.shape) == (3, 11, 24)


@pytest.mark.parametrize("positional", ["none", "sinusoidal", "learned", "rope"])
@pytest.mark.parametrize("prefill_len", [1, 5, 10])
def test_full_store_decoding_equals_a_forward_pass(positional, prefill_len):
    model = _model(positional)
    tokens = torch.randint(0, 13, (2, 11))
    nll = cached_nll(model, tokens, FullKVStore(), prefill_len=prefill_len)
    assert nll.shape == (2, 11 - prefill_len)
    np.testing.assert_allclose(nll, _reference_nll(model, tokens, prefill_len), atol=2e-5)


def test_store_sees_every_step_and_budget_hooks():
    class Recording(KVStore):
        def reset(self, n_layers):
            super().reset(n_layers)
            self.observed, self.steps = [], 0

        def observe(self, layer, weights):
            self.observed.append(tuple(weights.shape))

        def end_step(self):
            self.steps += 1

    model = _model()
    store = Recording()
    cached_nll(model, torch.randint(0, 13, (2, 9)), store, prefill_len=4)
    assert store.steps == 4  # tokens 4..7 are decoded; token 8 is only scored
    assert store.observed[0] == (2, 3, 1, 5) and store.observed[-1] == (2, 3, 1, 8)
    assert store.n_entries() == 2 * 3 * 8
    assert store.bytes_held() == 2 * 2 * (2 * 3 * 8 * 8) * 4


def test_score_bias_masks_entries():
    class DropFirst(KVStore):
        def entries(self, layer):
            k, v, _ = super().entries(layer)
            bias = torch.zeros(k.shape[:3])
            bias[:, :, 0] = float("-inf")
            return k, v, bias

    model = _model()
    tokens = torch.randint(0, 13, (1, 8))
    full = cached_nll(model, tokens, FullKVStore(), prefill_len=3)
    dropped = cached_nll(model, tokens, DropFirst(), prefill_len=3)
    assert not np.allclose(full, dropped)


def test_kv_transform_changes_logits_and_identity_does_not():
    model = _model()
    tokens = torch.randint(0, 13, (2, 7))
    same = prefill(model, tokens, kv_transform=lambda layer, k, v: (k, v))
    assert torch.allclose(same.logits, prefill(model, tokens).logits)
    zeroed = prefill(model, tokens, kv_transform=lambda layer, k, v: (k, torch.zeros_like(v)))
    assert not torch.allclose(zeroed.logits, same.logits)
    with pytest.raises(ValueError, match="unchanged shape"):
        prefill(model, tokens, kv_transform=lambda layer, k, v: (k[..., :1], v))


def test_bad_input():
    model = _model()
    with pytest.raises(ValueError, match="prefill_len"):
        cached_nll(model, torch.zeros(1, 4, dtype=torch.long), FullKVStore(), prefill_len=4)
    with pytest.raises(TypeError, match="KVStore"):
        cached_nll(model, torch.zeros(1, 4, dtype=torch.long), object(), prefill_len=2)
    with pytest.raises(ValueError, match="positional"):
        prefill(_model("alibi"), torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="TinyTransformer"):
        prefill(torch.nn.Linear(2, 2), torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="vocab_size"):
        prefill(model, torch.full((1, 4), 13))
    with pytest.raises(ValueError, match="max_len"):
        store = FullKVStore()
        store.reset(2)
        decode_step(_model("learned"), torch.zeros(1, dtype=torch.long), 40, store)

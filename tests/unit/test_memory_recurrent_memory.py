"""Tests of companion.memory.recurrent_memory: shapes, memory flow, baseline equivalence, bad input."""

from __future__ import annotations

import pytest
import torch

from companion.memory import RecurrentMemoryTransformer
from companion.nn import TinyTransformer, TransformerConfig


def _model(**kw):
    torch.manual_seed(0)
    return TinyTransformer(TransformerConfig(vocab_size=9, d_model=16, n_heads=2, **kw))


def test_no_memory_equals_the_model_on_each_segment():
    model = _model().eval()
    rmt = RecurrentMemoryTransformer(model, 0, 5).eval()
    x = torch.randint(0, 9, (2, 13))
    want = torch.cat([model(x[:, s : s + 5]) for s in range(0, 13, 5)], dim=1)
    torch.testing.assert_close(rmt(x), want, atol=1e-5, rtol=1e-5)


def test_information_crosses_segments_only_through_memory():
    x = torch.randint(0, 9, (2, 12))
    y = x.clone()
    y[:, 0] = (y[:, 0] + 1) % 9  # change a token of the first segment
    for n_memory, crosses in [(0, False), (3, True)]:
        rmt = RecurrentMemoryTransformer(_model(), n_memory, 4).eval()
        a, b = rmt(x), rmt(y)
        later = (a[:, 4:] - b[:, 4:]).abs().max().item()
        assert (later > 1e-7) == crosses, later
        assert (a[:, :4] - b[:, :4]).abs().max().item() > 1e-4


def test_without_carrying_memory_segments_are_independent():
    rmt = RecurrentMemoryTransformer(_model(), 3, 4).eval()
    x = torch.randint(0, 9, (2, 12))
    y = x.clone()
    y[:, :4] = (y[:, :4] + 1) % 9
    torch.testing.assert_close(rmt(x, carry_memory=False)[:, 4:], rmt(y, carry_memory=False)[:, 4:])
    torch.testing.assert_close(rmt(x, carry_memory=False)[:, :4], rmt(x)[:, :4])


def test_gradients_reach_the_initial_memory_from_the_last_segment():
    rmt = RecurrentMemoryTransformer(_model(positional="learned", max_len=16), 2, 4)
    logits, memories = rmt(torch.randint(0, 9, (3, 10)), return_memory=True)
    assert logits.shape == (3, 10, 9) and len(memories) == 3 and memories[0].shape == (3, 2, 16)
    logits[:, -1].sum().backward()
    assert rmt.initial_memory.grad is not None and rmt.initial_memory.grad.abs().sum() > 0


def test_bad_input():
    with pytest.raises(TypeError, match="TinyTransformer"):
        RecurrentMemoryTransformer(torch.nn.Linear(2, 2), 1, 4)
    with pytest.raises(ValueError, match="n_memory must be >= 0"):
        RecurrentMemoryTransformer(_model(), -1, 4)
    with pytest.raises(ValueError, match="segment_len must be >= 1"):
        RecurrentMemoryTransformer(_model(), 1, 0)
    with pytest.raises(ValueError, match="exceeds max_len"):
        RecurrentMemoryTransformer(_model(positional="learned", max_len=8), 2, 6)
    with pytest.raises(ValueError, match="causal model"):
        RecurrentMemoryTransformer(_model(causal=False), 1, 4)
    rmt = RecurrentMemoryTransformer(_model(), 1, 4)
    with pytest.raises(ValueError, match="tokens must lie in"):
        rmt(torch.full((1, 5), 9))

"""A two-layer attention-only transformer, and how to see an induction head form inside it.

Papers: Bietti et al., "Birth of a Transformer: A Memory Viewpoint" (NeurIPS
2023), whose triggered-bigram task (:mod:`companion.data.triggered_bigram`) and
two-layer model this module follows; Olsson et al., "In-context Learning and
Induction Heads" (2022), for the head's name and its scores.

The model has no MLPs and no LayerNorm: token and learned position embeddings
enter a residual stream, each layer adds the output of causal self-attention,
and a linear map reads out next-token logits. Every weight matrix is then an
associative memory in the sense of the paper: a sum of outer products that maps
one embedding to another. An induction head needs two of them working together:

1. a **previous-token head** in layer 1 attends from position ``t`` to ``t - 1``
   and writes "the token before me was ``a``" into position ``t``;
2. an **induction head** in layer 2, at a later occurrence of ``a``, matches its
   query against those "previous token" keys, attends to the position right
   after the earlier ``a`` and copies the token found there.

:func:`previous_token_score` and :func:`induction_score` measure the two
patterns from attention weights; :func:`train_induction_model` trains the model
with :func:`companion.nn.train` and records accuracy and both scores as it goes.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from .._validation import check_float, check_int
from ._m2_diagnostics import (
    InductionRun,
    attention_maps,
    induction_score,
    previous_token_score,
    train_induction_model,
)

__all__ = [
    "AttentionOnlyConfig",
    "AttentionOnlyTransformer",
    "attention_maps",
    "previous_token_score",
    "induction_score",
    "InductionRun",
    "train_induction_model",
]


@dataclasses.dataclass
class AttentionOnlyConfig:
    """Shape of an :class:`AttentionOnlyTransformer`.

    Parameters
    ----------
    vocab_size : int
        Token ids (embedding rows and logits), e.g. ``task_vocab_size(64)``.
    d_model : int, default 64
        Width of the residual stream; a multiple of ``n_heads``.
    n_layers : int, default 2
        Attention layers.
    n_heads : int, default 1
        Heads per layer.
    max_len : int, default 256
        Positions with a learned embedding (inputs must not be longer).
    init_scale : float, default 1.0
        Standard deviation of the embeddings is ``init_scale / sqrt(d_model)``
        per coordinate (unit-norm vectors on average), > 0.
    """

    vocab_size: int
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 1
    max_len: int = 256
    init_scale: float = 1.0

    def __post_init__(self) -> None:
        self.vocab_size = check_int(self.vocab_size, "vocab_size", minimum=1)
        self.d_model = check_int(self.d_model, "d_model", minimum=1)
        self.n_layers = check_int(self.n_layers, "n_layers", minimum=1)
        self.n_heads = check_int(self.n_heads, "n_heads", minimum=1)
        self.max_len = check_int(self.max_len, "max_len", minimum=1)
        self.init_scale = check_float(self.init_scale, "init_scale", minimum=0.0, strict_min=True)
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model must be a multiple of n_heads; got d_model={self.d_model}, n_heads={self.n_heads}")


class _CausalAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.query = nn.Linear(d_model, d_model, bias=False)
        self.key = nn.Linear(d_model, d_model, bias=False)
        self.value = nn.Linear(d_model, d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor):
        b, t, _ = x.shape

        def heads(z):
            return z.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # (batch, heads, seq, head_dim)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)  # (batch, heads, seq, seq)
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        weights = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
        mixed = (weights @ v).transpose(1, 2).reshape(b, t, -1)  # (batch, seq, d_model)
        return self.out(mixed), weights


class AttentionOnlyTransformer(nn.Module):
    """Token + learned position embeddings, ``n_layers`` residual causal attention layers, linear read-out.

    ``forward(tokens, return_attention=False)`` maps ``(batch, seq)`` int64
    tokens to ``(batch, seq, vocab_size)`` logits and, when asked, the list of
    per-layer attention weights, each ``(batch, heads, seq, seq)``.

    Parameters
    ----------
    config : AttentionOnlyConfig
    seed : int, default 0
        Seeds the initial weights (the global torch generator is left alone).

    References
    ----------
    Bietti et al., "Birth of a Transformer: A Memory Viewpoint", NeurIPS 2023.

    Examples
    --------
    >>> import torch
    >>> from companion.memory import AttentionOnlyConfig, AttentionOnlyTransformer
    >>> model = AttentionOnlyTransformer(AttentionOnlyConfig(vocab_size=10, d_model=16))
    >>> logits, attn = model(torch.zeros(3, 7, dtype=torch.long), return_attention=True)
    >>> tuple(logits.shape), len(attn), tuple(attn[1].shape)
    ((3, 7, 10), 2, (3, 1, 7, 7))
    """

    def __init__(self, config: AttentionOnlyConfig, *, seed: int = 0):
        super().__init__()
        if not isinstance(config, AttentionOnlyConfig):
            raise TypeError(f"config must be an AttentionOnlyConfig; got {type(config).__name__}")
        seed = check_int(seed, "seed", minimum=0)
        self.config = config
        d = config.d_model
        self.token_embedding = nn.Embedding(config.vocab_size, d)
        self.position_embedding = nn.Embedding(config.max_len, d)
        self.layers = nn.ModuleList(_CausalAttention(d, config.n_heads) for _ in range(config.n_layers))
        self.unembed = nn.Linear(d, config.vocab_size, bias=False)
        generator = torch.Generator().manual_seed(seed)
        embeddings = {id(self.token_embedding.weight), id(self.position_embedding.weight)}
        with torch.no_grad():
            for p in self.parameters():
                # embeddings: about unit-norm rows; linear maps: fan-in scaling
                std = config.init_scale / math.sqrt(d) if id(p) in embeddings else 1.0 / math.sqrt(p.shape[1])
                p.copy_(torch.randn(p.shape, generator=generator) * std)

    def forward(self, tokens: torch.Tensor, *, return_attention: bool = False):
        if tokens.ndim != 2:
            raise ValueError(f"tokens must have shape (batch, seq); got {tuple(tokens.shape)}")
        b, t = tokens.shape
        if t > self.config.max_len:
            raise ValueError(f"sequence length {t} exceeds max_len={self.config.max_len}")
        positions = torch.arange(t, device=tokens.device)
        x = self.token_embedding(tokens) + self.position_embedding(positions)[None]  # (batch, seq, d_model)
        maps = []
        for layer in self.layers:
            update, weights = layer(x)
            x = x + update
            maps.append(weights)
        logits = self.unembed(x)  # (batch, seq, vocab)
        return (logits, maps) if return_attention else logits

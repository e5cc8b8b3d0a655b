"""The course's tiny decoder-only transformer with a pluggable positional encoding.

A pre-LayerNorm decoder (Radford et al. 2019, "Language Models are Unsupervised
Multitask Learners"; block layout of Xiong et al. 2020, "On Layer Normalization
in the Transformer Architecture") whose attention is written out so that its
weights can be returned and plotted. The position of a token reaches the model
in one of these ways (``TransformerConfig.positional``):

========== ================================================================
"none"      nothing but the causal mask (Haviv et al. 2022, "Transformer
            Language Models without Positional Encodings Still Learn
            Positional Information")
"sinusoidal" fixed sin/cos table added to the token embeddings (Vaswani et
            al. 2017, "Attention Is All You Need")
"learned"   a trained embedding per position, added (Gehring et al. 2017;
            GPT-2)
"rope"      queries and keys rotated by position in every layer (Su et al.
            2021, "RoFormer")
"alibi"     ``-slope * distance`` added to the attention scores (Press et al.
            2022, "Train Short, Test Long")
"relative"  a learned bias per distance bucket, shared by all layers (Raffel et
            al. 2020, T5)
"randomized" sinusoidal or RoPE fed with a sorted random subset of
            ``[0, max_len)`` during training (Ruoss et al. 2023, "Randomized
            Positional Encodings Boost Length Generalization of Transformers")
"bilevel"   two levels of position: the place inside a segment through the
            sinusoidal table, the segment index through RoPE (He et al. 2024,
            "Two Stones Hit One Bird: Bilevel Positional Encoding for Better
            Length Extrapolation"); ``positions`` is a pair
            ``(segment_index, position_in_segment)`` as returned by
            :func:`companion.positional.bilevel_positions`
========== ================================================================

The encodings themselves live in :mod:`companion.positional`; this module only
wires them in.

Example
-------
>>> import torch
>>> from companion.nn import TinyTransformer, TransformerConfig
>>> torch.manual_seed(0)  # doctest: +ELLIPSIS
<torch._C.Generator object at ...>
>>> model = TinyTransformer(TransformerConfig(vocab_size=10, d_model=32, positional="alibi"))
>>> logits, attn = model(torch.zeros(2, 5, dtype=torch.long), return_attention=True)
>>> tuple(logits.shape), len(attn), tuple(attn[0].shape)
((2, 5, 10), 2, (2, 4, 5, 5))
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_array, check_choice, check_float, check_int
from ..backend import array_kind, to_torch

POSITIONAL_OPTIONS = ("none", "sinusoidal", "learned", "rope", "alibi", "relative", "randomized", "bilevel")
ROPE_LAYOUTS = ("half", "interleaved")
RANDOMIZED_BASES = ("sinusoidal", "rope")
# Encodings that read position ids (the others work from the sequence length alone).
_USES_POSITIONS = ("sinusoidal", "learned", "rope", "randomized")


def _positional_module():
    """Import :mod:`companion.positional` when a model is built, not when this module is."""
    from .. import positional

    return positional


def _check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool; got {type(value).__name__} {value!r}")
    return bool(value)


@dataclasses.dataclass
class TransformerConfig:
    """Shape and positional encoding of a :class:`TinyTransformer`.

    Parameters
    ----------
    vocab_size : int
        Number of token ids (embedding rows and output logits).
    d_model : int
        Width of the residual stream; a multiple of ``n_heads``.
    n_heads : int
        Attention heads per layer.
    n_layers : int
        Decoder blocks.
    d_ff : int, optional
        Hidden width of the MLP; ``None`` means ``4 * d_model`` (see :attr:`ff_dim`).
    max_len : int
        Table size of the "learned" and "sinusoidal" encodings (positions must be
        below it); for "randomized", the range ``[0, max_len)`` positions are
        sampled from.
    positional : str
        One of :data:`POSITIONAL_OPTIONS`.
    rope_layout : {"half", "interleaved"}
        Which coordinates RoPE pairs up (passed to ``rope_apply_torch``).
    rope_base : float
        RoPE frequency base (> 0; 10000 in the paper).
    randomized_base : {"sinusoidal", "rope"}
        Which encoding the randomized positions feed.
    causal : bool
        Mask attention to later positions (a decoder). ``False`` gives a
        bidirectional encoder and symmetric ALiBi/relative biases.
    dropout : float
        Dropout on attention weights and residual branches, in ``[0, 1)``.
    tie_embeddings : bool
        Use the token embedding matrix as the output projection.
    """

    vocab_size: int
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    d_ff: Optional[int] = None
    max_len: int = 256
    positional: str = "rope"
    rope_layout: str = "half"
    rope_base: float = 10000.0
    randomized_base: str = "sinusoidal"
    causal: bool = True
    dropout: float = 0.0
    tie_embeddings: bool = False

    def __post_init__(self) -> None:
        self.vocab_size = check_int(self.vocab_size, "vocab_size", minimum=1)
        self.d_model = check_int(self.d_model, "d_model", minimum=1)
        self.n_heads = check_int(self.n_heads, "n_heads", minimum=1)
        self.n_layers = check_int(self.n_layers, "n_layers", minimum=1)
        if self.d_ff is not None:
            self.d_ff = check_int(self.d_ff, "d_ff", minimum=1)
        self.max_len = check_int(self.max_len, "max_len", minimum=1)
        check_choice(self.positional, "positional", POSITIONAL_OPTIONS)
        check_choice(self.rope_layout, "rope_layout", ROPE_LAYOUTS)
        self.rope_base = check_float(self.rope_base, "rope_base", minimum=0.0, strict_min=True)
        check_choice(self.randomized_base, "randomized_base", RANDOMIZED_BASES)
        self.causal = _check_bool(self.causal, "causal")
        self.dropout = check_float(self.dropout, "dropout", minimum=0.0)
        if self.dropout >= 1.0:
            raise ValueError(f"dropout must be < 1; got {self.dropout}")
        self.tie_embeddings = _check_bool(self.tie_embeddings, "tie_embeddings")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model must be a multiple of n_heads; got d_model={self.d_model}, n_heads={self.n_heads}"
            )
        encoding = self.encoding
        if encoding in ("rope", "bilevel") and self.head_dim % 2:
            raise ValueError(
                f"positional={self.positional!r} uses RoPE, which needs an even head size "
                f"d_model / n_heads; got {self.head_dim}"
            )
        if encoding in ("sinusoidal", "bilevel") and self.d_model % 2:
            raise ValueError(
                f"positional={self.positional!r} uses a sinusoidal table, which needs an even d_model; "
                f"got {self.d_model}"
            )

    @property
    def ff_dim(self) -> int:
        """Hidden width of the MLP (``d_ff`` or ``4 * d_model``)."""
        return self.d_ff if self.d_ff is not None else 4 * self.d_model

    @property
    def head_dim(self) -> int:
        """Width of one attention head, ``d_model // n_heads``."""
        return self.d_model // self.n_heads

    @property
    def encoding(self) -> str:
        """The encoding that actually runs: ``randomized_base`` for "randomized", else ``positional``."""
        return self.randomized_base if self.positional == "randomized" else self.positional


class SelfAttention(nn.Module):
    """Multi-head self-attention with an additive score bias.

    ``forward(x, bias, rotate=None, return_weights=False)``: ``x`` is
    ``(batch, seq, d_model)``; ``bias`` is added to the scaled scores and
    broadcasts to ``(batch, heads, seq, seq)`` (it carries the causal mask as
    ``-inf`` and any ALiBi/relative bias); ``rotate`` is applied to queries and
    keys (RoPE). Returns the output and, when asked, the attention weights
    ``(batch, heads, seq, seq)``.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def forward(self, x, bias, rotate=None, return_weights: bool = False):
        batch, seq, d_model = x.shape
        qkv = self.qkv(x).view(batch, seq, 3, self.n_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (batch, heads, seq, head_dim)
        if rotate is not None:
            q, k = rotate(q), rotate(k)
        p_drop = self.dropout if self.training else 0.0
        weights = None
        if return_weights:
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (batch, heads, seq, seq)
            if bias is not None:
                scores = scores + bias
            weights = torch.softmax(scores, dim=-1)
            mixed = F.dropout(weights, p_drop, self.training) @ v  # (batch, heads, seq, head_dim)
        else:
            mixed = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p_drop)
        mixed = mixed.transpose(1, 2).reshape(batch, seq, d_model)
        return self.out(mixed), weights


class DecoderBlock(nn.Module):
    """Pre-LayerNorm block: ``x + attn(ln(x))`` then ``x + mlp(ln(x))`` with a GELU MLP."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.ln_attn = nn.LayerNorm(config.d_model)
        self.attn = SelfAttention(config.d_model, config.n_heads, config.dropout)
        self.ln_mlp = nn.LayerNorm(config.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(config.d_model, config.ff_dim),
            nn.GELU(),
            nn.Linear(config.ff_dim, config.d_model),
        )
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x, bias, rotate=None, return_weights: bool = False):
        attended, weights = self.attn(self.ln_attn(x), bias, rotate, return_weights)
        x = x + self.drop(attended)
        x = x + self.drop(self.mlp(self.ln_mlp(x)))
        return x, weights


class TinyTransformer(nn.Module):
    """A small decoder-only transformer whose positional encoding is a config switch.

    Parameters
    ----------
    config : TransformerConfig
    seed : int
        Seed of the model's own ``torch.Generator``, used only by
        ``positional="randomized"`` to draw training positions (weights are
        initialised from torch's global generator: call ``torch.manual_seed``
        first for a reproducible model).

    Notes
    -----
    ``forward(tokens, positions=None, *, return_attention=False)``

    * ``tokens``: ``(batch, seq)`` integer tensor (or NumPy array) of ids in
      ``[0, vocab_size)``.
    * ``positions``: optional ``(seq,)`` or ``(batch, seq)`` non-negative
      integer position ids, for "sinusoidal", "learned", "rope" and
      "randomized" (default ``0 .. seq-1``; for "randomized" in training mode a
      fresh sorted sample of ``seq`` distinct positions from ``[0, max_len)``
      per call). Table encodings and "randomized" need ids below ``max_len``.
    * Returns logits ``(batch, seq, vocab_size)``, and with
      ``return_attention=True`` also a list (one per layer) of attention
      weights ``(batch, heads, seq, seq)`` whose rows sum to 1.

    Without ``return_attention`` attention runs through
    ``torch.nn.functional.scaled_dot_product_attention``; the explicit path
    gives the same logits up to rounding.
    """

    def __init__(self, config: TransformerConfig, *, seed: int = 0):
        super().__init__()
        if not isinstance(config, TransformerConfig):
            raise TypeError(f"config must be a TransformerConfig; got {type(config).__name__}")
        self.config = config
        self.seed = check_int(seed, "seed", minimum=0)
        self._generator = torch.Generator(device="cpu")
        self._generator.manual_seed(self.seed)

        d = config.d_model
        self.token_embedding = nn.Embedding(config.vocab_size, d)
        self.position_embedding = nn.Embedding(config.max_len, d) if config.positional == "learned" else None
        self.relative_bias = None
        encoding = config.encoding
        if encoding in ("sinusoidal", "rope", "alibi", "relative", "bilevel"):
            positional = _positional_module()
        if encoding in ("sinusoidal", "bilevel"):
            table = positional.sinusoidal_table(config.max_len, d)  # (max_len, d_model)
            self.register_buffer("sinusoidal", torch.as_tensor(np.asarray(table, dtype=np.float32)), persistent=False)
        if encoding in ("rope", "bilevel"):
            self._rope_apply = positional.rope_apply_torch
        if encoding == "alibi":
            slopes = np.asarray(positional.alibi_slopes(config.n_heads), dtype=np.float32)
            self.register_buffer("alibi_slopes", torch.as_tensor(slopes), persistent=False)  # (heads,)
        if encoding == "relative":
            self.relative_bias = positional.RelativePositionBias(
                config.n_heads, bidirectional=not config.causal
            )
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(DecoderBlock(config) for _ in range(config.n_layers))
        self.ln_final = nn.LayerNorm(d)
        self.lm_head = None if config.tie_embeddings else nn.Linear(d, config.vocab_size, bias=False)
        self._init_weights()

    # ------------------------------------------------------------------ init
    def _init_weights(self) -> None:
        cfg = self.config
        d = cfg.d_model
        # Token embeddings are scaled by sqrt(d_model) in forward (Vaswani et al.), so
        # they enter the residual stream at unit scale, like the sinusoidal table.
        nn.init.normal_(self.token_embedding.weight, std=d ** -0.5)
        if self.position_embedding is not None:
            nn.init.normal_(self.position_embedding.weight, std=2 ** -0.5)
        for block in self.blocks:
            for linear in (block.attn.qkv, block.mlp[0]):
                nn.init.normal_(linear.weight, std=0.02)
                nn.init.zeros_(linear.bias)
            # Residual-branch outputs shrink with depth (GPT-2).
            for linear in (block.attn.out, block.mlp[2]):
                nn.init.normal_(linear.weight, std=0.02 / math.sqrt(2 * cfg.n_layers))
                nn.init.zeros_(linear.bias)
        if self.lm_head is not None:
            nn.init.normal_(self.lm_head.weight, std=0.02)

    # -------------------------------------------------------------- helpers
    def n_parameters(self, trainable_only: bool = True) -> int:
        """Number of parameters (only those with ``requires_grad`` unless ``trainable_only=False``)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    @property
    def device(self) -> torch.device:
        return self.token_embedding.weight.device

    def position_ids(self, seq: int, positions: Any = None, *, batch: int | None = None):
        """The position ids the next forward pass would use, validated, on the model's device.

        Returns ``None`` for encodings that read no position ids ("none", "alibi",
        "relative"), else an int64 tensor of shape ``(seq,)`` or ``(batch, seq)``.
        For "randomized" in training mode without ``positions`` each call draws
        a new sorted sample of ``seq`` distinct ids from ``[0, max_len)`` with
        the model's generator (so calling this advances it).
        """
        cfg = self.config
        seq = check_int(seq, "seq", minimum=1)
        if cfg.positional == "bilevel":
            return self._bilevel_ids(seq, positions, batch)
        if cfg.positional not in _USES_POSITIONS:
            if positions is not None:
                raise ValueError(
                    f"positional={cfg.positional!r} takes no position ids (it works from the sequence "
                    "length alone); pass positions=None"
                )
            return None
        bounded = cfg.positional in ("sinusoidal", "learned", "randomized")
        if positions is None:
            if bounded and seq > cfg.max_len:
                raise ValueError(
                    f"sequence length {seq} exceeds max_len={cfg.max_len} of positional={cfg.positional!r}; "
                    "build the model with a larger max_len"
                )
            if cfg.positional == "randomized" and self.training:
                drawn = torch.randperm(cfg.max_len, generator=self._generator)[:seq]
                return torch.sort(drawn).values.to(self.device)  # (seq,)
            return torch.arange(seq, device=self.device)  # (seq,)
        check_array(positions, "positions", ndim=(1, 2), dtype_kind="iu")
        if positions.shape[-1] != seq or (positions.ndim == 2 and batch is not None and positions.shape[0] != batch):
            want = f"({seq},) or ({batch}, {seq})" if batch is not None else f"({seq},) or (batch, {seq})"
            raise ValueError(f"positions must have shape {want}; got {tuple(positions.shape)}")
        pos = to_torch(positions).to(device=self.device, dtype=torch.int64)
        low, high = int(pos.min()), int(pos.max())
        if low < 0:
            raise ValueError(f"positions must be >= 0; got a minimum of {low}")
        if bounded and high >= cfg.max_len:
            raise ValueError(
                f"positions must be < max_len={cfg.max_len} for positional={cfg.positional!r}; "
                f"got a maximum of {high}"
            )
        return pos

    def _bilevel_ids(self, seq: int, positions: Any, batch: int | None):
        """``(segment_index, position_in_segment)`` int64 tensors for "bilevel".

        Without ``positions`` the whole sequence is one segment. The place inside
        a segment indexes the sinusoidal table, so it must stay below ``max_len``;
        the segment index feeds RoPE and is unbounded.
        """
        cfg = self.config
        if positions is None:
            if seq > cfg.max_len:
                raise ValueError(
                    f"sequence length {seq} exceeds max_len={cfg.max_len} of positional='bilevel' "
                    "(one segment); pass (segment_index, position_in_segment) or a larger max_len"
                )
            zeros = torch.zeros(seq, dtype=torch.int64, device=self.device)
            return zeros, torch.arange(seq, device=self.device)
        if not isinstance(positions, (tuple, list)) or len(positions) != 2:
            raise TypeError(
                "positional='bilevel' takes positions=(segment_index, position_in_segment), e.g. the "
                f"pair returned by companion.positional.bilevel_positions; got {type(positions).__name__}"
            )
        out = []
        for name, ids in zip(("segment_index", "position_in_segment"), positions):
            check_array(ids, name, ndim=(1, 2), dtype_kind="iu")
            if ids.shape[-1] != seq or (ids.ndim == 2 and batch is not None and ids.shape[0] != batch):
                raise ValueError(f"{name} must have shape ({seq},) or ({batch}, {seq}); got {tuple(ids.shape)}")
            ids = to_torch(ids).to(device=self.device, dtype=torch.int64)
            if int(ids.min()) < 0:
                raise ValueError(f"{name} must be >= 0; got a minimum of {int(ids.min())}")
            out.append(ids)
        if int(out[1].max()) >= cfg.max_len:
            raise ValueError(
                f"position_in_segment must be < max_len={cfg.max_len}; got a maximum of {int(out[1].max())}"
            )
        return out[0], out[1]

    def _rotate(self, pos):
        """RoPE on (batch, heads, seq, head_dim) queries/keys at ids (seq,) or (batch, seq)."""
        cfg = self.config
        if pos.ndim == 2:
            pos = pos[:, None, :]  # (batch, 1, seq): the same ids for every head
        return lambda x: self._rope_apply(x, pos, base=cfg.rope_base, layout=cfg.rope_layout)

    def _score_bias(self, seq: int):
        """Additive score bias broadcastable to (batch, heads, seq, seq), or None."""
        cfg = self.config
        device = self.device
        dtype = self.token_embedding.weight.dtype
        bias = None
        idx = torch.arange(seq, device=device)
        distance = idx[:, None] - idx[None, :]  # (seq, seq): query i minus key j
        if cfg.encoding == "alibi":
            dist = distance.clamp(min=0) if cfg.causal else distance.abs()
            bias = -self.alibi_slopes.to(dtype)[:, None, None] * dist.to(dtype)  # (heads, seq, seq)
        elif cfg.encoding == "relative":
            bias = self.relative_bias(seq, seq).to(dtype)  # (heads, seq, seq)
        if cfg.causal:
            future = torch.zeros(seq, seq, device=device, dtype=dtype)
            future = future.masked_fill(distance < 0, float("-inf"))  # (seq, seq)
            bias = future if bias is None else bias + future
        return bias

    # -------------------------------------------------------------- forward
    def forward(self, tokens, positions=None, *, return_attention: bool = False):
        cfg = self.config
        check_array(tokens, "tokens", ndim=2, dtype_kind="iu")
        if array_kind(tokens) != "torch":
            tokens = to_torch(tokens)
        tokens = tokens.to(device=self.device, dtype=torch.int64)
        low, high = int(tokens.min()), int(tokens.max())
        if low < 0 or high >= cfg.vocab_size:
            raise ValueError(
                f"tokens must lie in [0, vocab_size={cfg.vocab_size}); got values in [{low}, {high}]"
            )
        batch, seq = tokens.shape
        pos = self.position_ids(seq, positions, batch=batch)

        h = self.token_embedding(tokens) * math.sqrt(cfg.d_model)  # (batch, seq, d_model)
        if cfg.encoding == "sinusoidal":
            h = h + self.sinusoidal[pos].to(h.dtype)  # (seq | batch, seq, d_model)
        elif cfg.encoding == "bilevel":
            h = h + self.sinusoidal[pos[1]].to(h.dtype)  # place inside the segment, absolute
        elif cfg.encoding == "learned":
            h = h + self.position_embedding(pos)
        h = self.drop(h)

        if cfg.encoding == "rope":
            rotate = self._rotate(pos)
        elif cfg.encoding == "bilevel":
            rotate = self._rotate(pos[0])  # segment index, relative through RoPE
        else:
            rotate = None
        bias = self._score_bias(seq)
        attention = []
        for block in self.blocks:
            h, weights = block(h, bias, rotate, return_attention)
            if return_attention:
                attention.append(weights)
        h = self.ln_final(h)
        if self.lm_head is None:
            logits = h @ self.token_embedding.weight.t()  # (batch, seq, vocab)
        else:
            logits = self.lm_head(h)
        return (logits, attention) if return_attention else logits

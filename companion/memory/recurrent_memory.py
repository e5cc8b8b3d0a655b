"""Memory tokens carried across segments: a Recurrent Memory Transformer around the course model.

A transformer with a fixed context reads a long sequence one **segment** at a
time. Without help, what happened in an earlier segment is gone. The Recurrent
Memory Transformer (Bulatov et al. 2022, "Recurrent Memory Transformer") adds
``m`` memory vectors to every segment:

* the segment's input is ``[read memory (m) | segment tokens (L) | write memory (m)]``;
* in a causal decoder the read slots come first, so every token can attend to
  them; the write slots come last, so they can attend to the whole segment;
* the transformer's outputs at the write slots become the read memory of the
  next segment (the first segment reads a learned initial memory).

Gradients flow through the memory from segment to segment (backpropagation
through time), so the model learns what to write. The write slots take the
current memory as input, as in the paper.

:class:`RecurrentMemoryTransformer` wraps a :class:`companion.nn.TinyTransformer`
and reuses its embeddings, blocks and output head unchanged; ``n_memory=0``
gives the no-memory baseline (each segment on its own).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .._validation import check_array, check_int
from ..backend import array_kind, to_torch

__all__ = ["RecurrentMemoryTransformer"]


class RecurrentMemoryTransformer(nn.Module):
    """Segment-recurrent wrapper that carries ``n_memory`` memory vectors between segments.

    Parameters
    ----------
    model : companion.nn.TinyTransformer
        A causal model; its modules are reused (and trained) as they are.
    n_memory : int
        Memory vectors ``m`` (>= 0; 0 processes every segment on its own).
    segment_len : int
        Tokens per segment ``L`` (>= 1); ``L + 2 m`` must fit ``max_len`` for
        table encodings ("learned", "sinusoidal").

    Notes
    -----
    ``forward(tokens, *, return_memory=False, carry_memory=True)``: ``tokens`` is
    ``(batch, seq)`` with any ``seq`` (the last segment may be shorter). Returns
    logits ``(batch, seq, vocab)`` and, with ``return_memory``, the list of memory
    states ``(batch, m, d_model)`` after each segment. ``carry_memory=False`` is the
    ablation: every segment reads the initial memory, so nothing crosses segments. Positions restart at 0 in
    every segment (read slots ``0..m-1``, tokens ``m..m+L-1``, write slots after).

    References
    ----------
    "Recurrent Memory Transformer" (Bulatov, Kuratov, Burtsev 2022).

    Example
    -------
    >>> import torch
    >>> from companion.nn import TinyTransformer, TransformerConfig
    >>> from companion.memory import RecurrentMemoryTransformer
    >>> _ = torch.manual_seed(0)
    >>> rmt = RecurrentMemoryTransformer(TinyTransformer(TransformerConfig(vocab_size=7, d_model=16)), 2, 5)
    >>> logits, memories = rmt(torch.zeros(3, 12, dtype=torch.long), return_memory=True)
    >>> tuple(logits.shape), len(memories), tuple(memories[-1].shape)
    ((3, 12, 7), 3, (3, 2, 16))
    """

    def __init__(self, model: nn.Module, n_memory: int, segment_len: int):
        super().__init__()
        from ..nn.transformer import TinyTransformer

        if not isinstance(model, TinyTransformer):
            raise TypeError(f"model must be a companion.nn.TinyTransformer; got {type(model).__name__}")
        cfg = model.config
        if not cfg.causal:
            raise ValueError("the recurrent memory wrapper needs a causal model (TransformerConfig(causal=True))")
        if cfg.positional in ("randomized", "bilevel"):
            raise ValueError(f"positional={cfg.positional!r} is not supported by the memory wrapper")
        self.model = model
        self.n_memory = check_int(n_memory, "n_memory", minimum=0)
        self.segment_len = check_int(segment_len, "segment_len", minimum=1)
        span = self.segment_len + 2 * self.n_memory
        if cfg.positional in ("learned", "sinusoidal") and span > cfg.max_len:
            raise ValueError(
                f"segment_len + 2 * n_memory = {span} exceeds max_len={cfg.max_len} of positional={cfg.positional!r}"
            )
        # Initial memory, at the scale of the embedded tokens (unit-variance entries).
        self.initial_memory = nn.Parameter(torch.randn(self.n_memory, cfg.d_model))  # (m, d_model)

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        model = self.model
        return model.token_embedding(tokens) * math.sqrt(model.config.d_model)  # (B, L, D)

    def _segment(self, memory: torch.Tensor, tokens: torch.Tensor):
        """One segment: ``[memory | tokens | memory]`` through every block; returns (logits, new memory)."""
        model, m = self.model, self.n_memory
        cfg = model.config
        x = torch.cat([memory, self._embed(tokens), memory], dim=1)  # (B, m + L + m, D)
        span = x.shape[1]
        pos = torch.arange(span, device=x.device)
        if cfg.encoding == "sinusoidal":
            x = x + model.sinusoidal[pos].to(x.dtype)
        elif cfg.positional == "learned":
            x = x + model.position_embedding(pos)
        x = model.drop(x)
        rotate = model._rotate(pos) if cfg.encoding == "rope" else None
        bias = model._score_bias(span)  # causal mask (and ALiBi / relative bias)
        for block in model.blocks:
            x, _ = block(x, bias, rotate)
        seg = x[:, m : x.shape[1] - m]  # (B, L, D): the token slots
        hidden = model.ln_final(seg)
        logits = hidden @ model.token_embedding.weight.t() if model.lm_head is None else model.lm_head(hidden)
        return logits, x[:, x.shape[1] - m :]  # write slots -> next read memory (B, m, D)

    def forward(self, tokens: Any, *, return_memory: bool = False, carry_memory: bool = True):
        cfg = self.model.config
        check_array(tokens, "tokens", ndim=2, dtype_kind="iu")
        if array_kind(tokens) != "torch":
            tokens = to_torch(tokens)
        tokens = tokens.to(device=self.model.device, dtype=torch.int64)
        low, high = int(tokens.min()), int(tokens.max())
        if low < 0 or high >= cfg.vocab_size:
            raise ValueError(f"tokens must lie in [0, vocab_size={cfg.vocab_size}); got values in [{low}, {high}]")
        batch = tokens.shape[0]
        initial = self.initial_memory.unsqueeze(0).expand(batch, -1, -1)  # (B, m, D)
        memory = initial
        memories = []
        outputs = []
        for start in range(0, tokens.shape[1], self.segment_len):
            logits, written = self._segment(memory, tokens[:, start : start + self.segment_len])
            outputs.append(logits)
            memories.append(written)
            memory = written if carry_memory else initial
        logits = torch.cat(outputs, dim=1)  # (B, seq, vocab)
        return (logits, memories) if return_memory else logits

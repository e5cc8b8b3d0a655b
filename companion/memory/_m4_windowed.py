"""A course transformer whose attention sees only a window, optionally retrieving evicted keys.

Private helper of chapter M4, re-exported by :mod:`companion.memory.retrieval`.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch

from .._validation import check_array, check_int
from ..backend import array_kind, to_torch

WINDOWED_ENCODINGS = ("none", "sinusoidal", "learned", "rope")


def _model_checks(model) -> None:
    from ..nn.transformer import TinyTransformer

    if not isinstance(model, TinyTransformer):
        raise TypeError(f"model must be a companion.nn.TinyTransformer; got {type(model).__name__}")
    if model.config.positional not in WINDOWED_ENCODINGS or not model.config.causal:
        raise ValueError(
            f"windowed attention needs a causal model with positional in {WINDOWED_ENCODINGS}; "
            f"got positional={model.config.positional!r}, causal={model.config.causal}"
        )


@torch.no_grad()
def windowed_logits(model, tokens: Any, *, window: int, retrieve_k: int = 0,
                    retrieve_layers: Optional[Sequence[int]] = None, return_hidden: bool = False):
    """Logits of ``model`` when each query sees only its newest ``window`` keys (plus retrieved ones).

    Parameters
    ----------
    model : companion.nn.TinyTransformer
        Causal, positional in ``("none", "sinusoidal", "learned", "rope")``; run
        without dropout and without gradients (inference).
    tokens : array of shape (batch, seq)
        Integer ids.
    window : int
        Keys at distance ``0 .. window - 1`` behind a query are attended
        (``window >= seq`` gives the full causal model).
    retrieve_k : int, default 0
        Per layer, head and query, also attend to the ``retrieve_k`` *evicted*
        keys (distance ``>= window``) with the largest scores ``q . k``, in one
        softmax with the window (Extended-Mind-style retrieval; keys keep the
        rotation of their true position under RoPE, so relative positions stay
        right). 0 disables retrieval.
    retrieve_layers : sequence of int, optional
        Layers that retrieve; default all.
    return_hidden : bool
        Also return the final hidden states ``(batch, seq, d_model)``.

    Returns
    -------
    torch.Tensor of shape (batch, seq, vocab)
        Logits (and the hidden states when asked).

    References
    ----------
    "Extended Mind Transformers"; Wu et al. 2022, "Memorizing Transformers".

    Example
    -------
    >>> import torch
    >>> from companion.nn import TinyTransformer, TransformerConfig
    >>> from companion.memory import windowed_logits
    >>> _ = torch.manual_seed(0)
    >>> model = TinyTransformer(TransformerConfig(vocab_size=9, d_model=16)).eval()
    >>> x = torch.randint(0, 9, (2, 12))
    >>> bool(torch.allclose(windowed_logits(model, x, window=12), model(x), atol=1e-5))
    True
    """
    _model_checks(model)
    check_array(tokens, "tokens", ndim=2, dtype_kind="iu")
    window = check_int(window, "window", minimum=1)
    retrieve_k = check_int(retrieve_k, "retrieve_k", minimum=0)
    cfg = model.config
    layers = set(range(cfg.n_layers)) if retrieve_layers is None else {
        check_int(i, "retrieve_layers[i]", minimum=0, maximum=cfg.n_layers - 1) for i in retrieve_layers}
    tokens = (tokens if array_kind(tokens) == "torch" else to_torch(tokens)).to(model.device, torch.int64)
    if int(tokens.min()) < 0 or int(tokens.max()) >= cfg.vocab_size:
        raise ValueError(f"tokens must lie in [0, vocab_size={cfg.vocab_size})")
    batch, seq = tokens.shape
    pos = torch.arange(seq, device=model.device)
    h = model.token_embedding(tokens) * math.sqrt(cfg.d_model)  # (B, T, D)
    if cfg.positional == "sinusoidal":
        h = h + model.sinusoidal[pos].to(h.dtype)
    elif cfg.positional == "learned":
        h = h + model.position_embedding(pos)
    rotate = model._rotate(pos) if cfg.positional == "rope" else None
    distance = pos[:, None] - pos[None, :]  # (T, T): query minus key
    local = (distance >= 0) & (distance < window)
    evicted = distance >= window
    for layer, block in enumerate(model.blocks):
        attn = block.attn
        qkv = attn.qkv(block.ln_attn(h)).view(batch, seq, 3, attn.n_heads, attn.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, T, Dh)
        if rotate is not None:
            q, k = rotate(q), rotate(k)
        scores = q @ k.transpose(-2, -1) / math.sqrt(attn.head_dim)  # (B, H, T, T)
        allowed = local.expand_as(scores)
        if retrieve_k and layer in layers and bool(evicted.any()):
            memory = scores.masked_fill(~evicted, float("-inf"))
            top, idx = memory.topk(min(retrieve_k, seq), dim=-1)  # exact top-k over the evicted keys
            chosen = torch.zeros_like(allowed).scatter(-1, idx, torch.isfinite(top))
            allowed = allowed | chosen
        weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
        mixed = (weights @ v).transpose(1, 2).reshape(batch, seq, cfg.d_model)
        h = h + attn.out(mixed)
        h = h + block.mlp(block.ln_mlp(h))
    hidden = model.ln_final(h)
    logits = hidden @ model.token_embedding.weight.t() if model.lm_head is None else model.lm_head(hidden)
    return (logits, hidden) if return_hidden else logits

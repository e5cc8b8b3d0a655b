"""Step-by-step decoding of a :class:`~companion.nn.TinyTransformer` with a pluggable KV cache.

A decoder generates one token at a time. Each layer keeps the keys and values
of every token it has seen (the *KV cache*), so a new token costs one query
against the cache instead of a whole forward pass. This module writes that
loop out so that what the cache holds can be changed: a :class:`KVStore`
decides what to keep (chapter C1 evicts and merges entries, chapter C2
quantizes them, chapter M4 retrieves from an external memory).

* :func:`prefill` runs the prompt through the model in one pass and returns
  the per-layer keys, values, attention weights and final hidden states;
* :func:`decode_step` feeds one token at a given position through every layer,
  attending over ``store.entries(layer)``;
* :func:`cached_nll` prefills a prompt, then decodes the rest of a sequence
  with teacher forcing and returns the negative log-likelihood per token.

With :class:`FullKVStore` (keep everything) the result equals a normal forward
pass up to float rounding: that is the reference every cache policy is
measured against. The loops run without dropout and without gradients
(inference). Supported positional encodings: ``"none"``, ``"sinusoidal"``,
``"learned"`` and ``"rope"`` (keys are cached after their rotation, as in
real deployments).

Example
-------
>>> import numpy as np, torch
>>> from companion.nn import TinyTransformer, TransformerConfig
>>> from companion.nn.decoding import FullKVStore, cached_nll
>>> _ = torch.manual_seed(0)
>>> model = TinyTransformer(TransformerConfig(vocab_size=11, d_model=16, n_heads=2)).eval()
>>> tokens = torch.randint(0, 11, (2, 9))
>>> nll = cached_nll(model, tokens, FullKVStore(), prefill_len=4)
>>> logp = torch.log_softmax(model(tokens), -1)[:, 3:-1].gather(-1, tokens[:, 4:, None])[..., 0]
>>> nll.shape, bool(np.allclose(nll, -logp.detach().numpy(), atol=1e-5))
((2, 5), True)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from .._validation import check_array, check_int
from ..backend import array_kind, to_torch
from .transformer import TinyTransformer

__all__ = ["Prefill", "KVStore", "FullKVStore", "prefill", "decode_step", "cached_nll", "DECODABLE_ENCODINGS"]

#: Positional encodings the decoding loop supports.
DECODABLE_ENCODINGS = ("none", "sinusoidal", "learned", "rope")


@dataclasses.dataclass
class Prefill:
    """What one full pass over a prompt produced.

    Attributes
    ----------
    logits : torch.Tensor
        ``(batch, seq, vocab)``.
    keys, values : list of torch.Tensor
        One ``(batch, heads, seq, head_dim)`` tensor per layer; keys after RoPE.
    hidden : torch.Tensor
        ``(batch, seq, d_model)`` final LayerNorm output, the input of the LM head.
    attention : list of torch.Tensor or None
        One ``(batch, heads, seq, seq)`` tensor of attention weights per layer, when asked.
    """

    logits: torch.Tensor
    keys: list
    values: list
    hidden: torch.Tensor
    attention: Optional[list] = None


class KVStore:
    """A KV cache that keeps every entry; subclass it to implement a cache policy.

    The decoding loop calls, for each new token and each layer in order,
    :meth:`append` (the token's own key and value), :meth:`entries` (what to
    attend over), :meth:`observe` (the attention weights the new query gave
    those entries), and after the last layer :meth:`end_step` (the place to
    enforce a budget). :meth:`load` receives the prompt's keys, values and
    attention weights after :func:`prefill`.

    Shapes: keys and values ``(batch, heads, n, head_dim)``; ``entries``
    returns them with an optional ``score_bias`` ``(batch, heads, n)`` added to
    the scaled attention logits (``-inf`` hides padding when heads keep
    different numbers of entries; ``log(count)`` weights a merged entry).
    """

    def reset(self, n_layers: int) -> None:
        """Forget everything; the next calls are for a model with ``n_layers`` layers."""
        self.n_layers = check_int(n_layers, "n_layers", minimum=1)
        self.keys: list = [None] * self.n_layers
        self.values: list = [None] * self.n_layers

    def load(self, layer: int, keys: torch.Tensor, values: torch.Tensor, attention: Optional[torch.Tensor]) -> None:
        """Take the prompt's ``keys``/``values`` ``(B, H, T, Dh)`` and ``attention`` ``(B, H, T, T)`` or None."""
        self.keys[layer], self.values[layer] = keys, values

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Add the newest token's key and value, each ``(B, H, 1, Dh)``."""
        if self.keys[layer] is None:
            self.keys[layer], self.values[layer] = k, v
        else:
            self.keys[layer] = torch.cat([self.keys[layer], k], dim=2)
            self.values[layer] = torch.cat([self.values[layer], v], dim=2)

    def entries(self, layer: int):
        """``(K, V, score_bias)`` to attend over: ``(B, H, n, Dh)`` twice and ``(B, H, n)`` or None."""
        return self.keys[layer], self.values[layer], None

    def observe(self, layer: int, weights: torch.Tensor) -> None:
        """The newest query's attention weights ``(B, H, 1, n)`` over :meth:`entries`."""

    def end_step(self) -> None:
        """Called once per decoded token, after every layer."""

    def n_entries(self) -> int:
        """Key-value pairs held per sequence, summed over layers and heads."""
        return int(sum(k.shape[1] * k.shape[2] for k in self.keys if k is not None))

    def bytes_held(self) -> int:
        """Bytes of every tensor the cache holds (whole batch)."""
        held = [t for t in (*self.keys, *self.values) if t is not None]
        return int(sum(t.numel() * t.element_size() for t in held))


class FullKVStore(KVStore):
    """Keep every key and value: the full cache, equal to a normal forward pass."""


def _check_model(model) -> None:
    if not isinstance(model, TinyTransformer):
        raise TypeError(f"model must be a companion.nn.TinyTransformer; got {type(model).__name__}")
    if model.config.positional not in DECODABLE_ENCODINGS:
        raise ValueError(
            f"decoding supports positional in {DECODABLE_ENCODINGS}; got {model.config.positional!r}"
        )
    if not model.config.causal:
        raise ValueError("decoding needs a causal model (TransformerConfig(causal=True))")


def _as_tokens(model, tokens, name: str = "tokens", ndim: int = 2) -> torch.Tensor:
    check_array(tokens, name, ndim=ndim, dtype_kind="iu")
    if array_kind(tokens) != "torch":
        tokens = to_torch(tokens)
    tokens = tokens.to(device=model.device, dtype=torch.int64)
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= model.config.vocab_size):
        raise ValueError(f"{name} must lie in [0, vocab_size={model.config.vocab_size})")
    return tokens


def _embed(model, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Token (+ absolute position) embeddings ``(B, T, D)`` for ids ``pos`` ``(T,)``."""
    cfg = model.config
    if cfg.positional in ("sinusoidal", "learned") and int(pos.max()) >= cfg.max_len:
        raise ValueError(f"position {int(pos.max())} is beyond max_len={cfg.max_len} of positional={cfg.positional!r}")
    h = model.token_embedding(tokens) * math.sqrt(cfg.d_model)
    if cfg.positional == "sinusoidal":
        h = h + model.sinusoidal[pos].to(h.dtype)
    elif cfg.positional == "learned":
        h = h + model.position_embedding(pos)
    return h


def _qkv(block, x: torch.Tensor, rotate):
    """Queries, keys, values ``(B, H, T, Dh)`` of one block for its normalised input ``x``."""
    attn = block.attn
    batch, seq, _ = x.shape
    qkv = attn.qkv(x).view(batch, seq, 3, attn.n_heads, attn.head_dim)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    if rotate is not None:
        q, k = rotate(q), rotate(k)
    return q, k, v


def _finish_block(block, h: torch.Tensor, mixed: torch.Tensor) -> torch.Tensor:
    """Output projection, residual and MLP, given the attention mix ``(B, H, T, Dh)``."""
    batch, _, seq, _ = mixed.shape
    h = h + block.attn.out(mixed.transpose(1, 2).reshape(batch, seq, -1))
    return h + block.mlp(block.ln_mlp(h))


def _logits(model, h: torch.Tensor):
    hidden = model.ln_final(h)
    logits = hidden @ model.token_embedding.weight.t() if model.lm_head is None else model.lm_head(hidden)
    return logits, hidden


@torch.no_grad()
def prefill(
    model,
    tokens,
    *,
    kv_transform: Optional[Callable] = None,
    return_attention: bool = False,
) -> Prefill:
    """Run a prompt through ``model`` in one causal pass, keeping what a cache needs.

    Parameters
    ----------
    model : TinyTransformer
        Causal, with ``positional`` in :data:`DECODABLE_ENCODINGS`.
    tokens : array_like
        ``(batch, seq)`` int ids (torch, NumPy or CuPy).
    kv_transform : callable, optional
        ``kv_transform(layer, k, v) -> (k, v)`` replaces the keys and values of
        every position before attention (e.g. quantize the whole cache); the
        returned tensors must keep their shapes.
    return_attention : bool
        Also return each layer's attention weights.

    Returns
    -------
    Prefill
    """
    _check_model(model)
    tokens = _as_tokens(model, tokens)
    batch, seq = tokens.shape
    pos = torch.arange(seq, device=model.device)
    rotate = model._rotate(pos) if model.config.positional == "rope" else None
    causal = torch.ones(seq, seq, dtype=torch.bool, device=model.device).tril()  # (T, T) True where allowed
    h = _embed(model, tokens, pos)
    keys, values, attention = [], [], []
    for layer, block in enumerate(model.blocks):
        q, k, v = _qkv(block, block.ln_attn(h), rotate)
        if kv_transform is not None:
            new_k, new_v = kv_transform(layer, k, v)
            if tuple(new_k.shape) != tuple(k.shape) or tuple(new_v.shape) != tuple(v.shape):
                raise ValueError("kv_transform must return keys and values of unchanged shape")
            k, v = new_k.to(q.dtype), new_v.to(q.dtype)
        scores = q @ k.transpose(-2, -1) / math.sqrt(block.attn.head_dim)  # (B, H, T, T)
        weights = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
        h = _finish_block(block, h, weights @ v)
        keys.append(k)
        values.append(v)
        if return_attention:
            attention.append(weights)
    logits, hidden = _logits(model, h)
    return Prefill(logits, keys, values, hidden, attention if return_attention else None)


def _check_store(store) -> None:
    if not isinstance(store, KVStore):
        raise TypeError(f"store must be a companion.nn.decoding.KVStore; got {type(store).__name__}")


@torch.no_grad()
def decode_step(model, tokens, position: int, store: KVStore):
    """Feed one token per sequence through ``model``, attending over ``store``.

    Parameters
    ----------
    model : TinyTransformer
    tokens : array_like
        ``(batch,)`` int ids of the new tokens.
    position : int
        Their absolute position (the number of tokens before them).
    store : KVStore
        Already :meth:`~KVStore.reset` (and usually loaded by a prefill).

    Returns
    -------
    logits : torch.Tensor
        ``(batch, vocab)``: the prediction of the next token.
    hidden : torch.Tensor
        ``(batch, d_model)``: final LayerNorm output.
    """
    _check_model(model)
    _check_store(store)
    tokens = _as_tokens(model, tokens, ndim=1)
    position = check_int(position, "position", minimum=0)
    pos = torch.tensor([position], device=model.device)
    rotate = model._rotate(pos) if model.config.positional == "rope" else None
    h = _embed(model, tokens[:, None], pos)  # (B, 1, D)
    for layer, block in enumerate(model.blocks):
        q, k, v = _qkv(block, block.ln_attn(h), rotate)  # (B, H, 1, Dh)
        store.append(layer, k, v)
        keys, values, score_bias = store.entries(layer)
        scores = q @ keys.transpose(-2, -1).to(q.dtype) / math.sqrt(block.attn.head_dim)  # (B, H, 1, n)
        if score_bias is not None:
            scores = scores + score_bias[:, :, None, :].to(q.dtype)
        weights = torch.softmax(scores, dim=-1)
        store.observe(layer, weights)
        h = _finish_block(block, h, weights @ values.to(q.dtype))
    store.end_step()
    logits, hidden = _logits(model, h)
    return logits[:, 0], hidden[:, 0]


@torch.no_grad()
def cached_nll(model, tokens, store: KVStore, *, prefill_len: int, progress: bool = False) -> np.ndarray:
    """Negative log-likelihood (nats) of a sequence's continuation, decoded through ``store``.

    The first ``prefill_len`` tokens run through :func:`prefill` with full
    attention and are handed to ``store.load`` (with attention weights); the
    remaining tokens are fed one at a time with :func:`decode_step` (teacher
    forcing), so the cache policy acts at every step.

    Parameters
    ----------
    model : TinyTransformer
    tokens : array_like
        ``(batch, seq)`` int ids.
    store : KVStore
        Reset here, so one store can score several batches.
    prefill_len : int
        ``1 <= prefill_len < seq``.
    progress : bool
        Show a ``tqdm.auto`` bar over the decoded positions.

    Returns
    -------
    numpy.ndarray
        ``(batch, seq - prefill_len)`` float64: ``-log p(tokens[:, t] | tokens[:, :t])``
        for ``t = prefill_len, ..., seq - 1``.
    """
    _check_model(model)
    _check_store(store)
    tokens = _as_tokens(model, tokens)
    seq = tokens.shape[1]
    prefill_len = check_int(prefill_len, "prefill_len", minimum=1)
    if prefill_len >= seq:
        raise ValueError(f"prefill_len must be below the sequence length {seq}; got {prefill_len}")
    store.reset(model.config.n_layers)
    first = prefill(model, tokens[:, :prefill_len], return_attention=True)
    for layer in range(model.config.n_layers):
        store.load(layer, first.keys[layer], first.values[layer], first.attention[layer])
    logits = first.logits[:, -1]  # (B, vocab): predicts tokens[:, prefill_len]
    nll = []
    steps = range(prefill_len, seq)
    for t in tqdm(steps, disable=not progress, desc="decoding", leave=False):
        logp = torch.log_softmax(logits.double(), dim=-1)
        nll.append(-logp.gather(-1, tokens[:, t, None])[:, 0])
        if t + 1 < seq:
            logits, _ = decode_step(model, tokens[:, t], t, store)
    return torch.stack(nll, dim=1).cpu().numpy()

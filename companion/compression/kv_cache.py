"""A KV cache with a token budget and pluggable eviction / merging policies (chapter C1).

During generation every layer caches the key and value of every token it has
seen; that cache grows linearly with the context and soon dominates memory.
:class:`KVCache` keeps at most ``budget`` entries per head and layer and asks a
*policy* what to drop (or merge) when a new token arrives. It plugs into the
decoding loop of :mod:`companion.nn.decoding` (it is a
:class:`~companion.nn.decoding.KVStore`), so
``cached_nll(model, tokens, KVCache(64, "heavy_hitter"), prefill_len=...)``
measures what a policy costs in loss.

Registered policies (:data:`KV_POLICIES`; add one with :func:`register_policy`):

==================== ==========================================================
``"full"``           keep everything (reference; ignores the budget)
``"window"``         the newest ``budget`` tokens
``"sinks_window"``   the first ``n_sinks`` tokens plus a window ("Efficient
                     Streaming Language Models with Attention Sinks")
``"heavy_hitter"``   a window plus the tokens with the most accumulated
                     attention ("H2O: Heavy-Hitter Oracle for Efficient
                     Generative Inference of Large Language Models")
``"adaptive"``       a profile per head chosen from the prompt's attention
                     ("Model Tells You What to Discard: Adaptive KV Cache
                     Compression for LLMs")
``"evict_merge"``    heavy-hitter eviction whose evicted tokens are merged into
                     their most similar kept token, weighted by ``log(count)``
                     ("D2O: Dynamic Discriminative Operations for Efficient
                     Generative Inference of Large Language Models"; "EMS:
                     Adaptive Evict-then-Merge Strategy for Head-wise KV Cache
                     Compression Based on Global-Local Importance")
``"subgen"``         a window plus clustered, sampled older keys ("SubGen:
                     Token Generation in Sublinear Time and Memory")
==================== ==========================================================

The hot loops (accumulating attention, choosing the entries to keep, merging)
are the kernels of :mod:`companion.kernels.eviction`.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from .._validation import check_int
from ..kernels.eviction import accumulate_attention
from ..nn.decoding import KVStore
from ._c1_policies import ADAPTIVE_PROFILES, KV_POLICIES, CachePolicy, make_policy, register_policy
from ._c1_state import LayerState

__all__ = ["KVCache", "KV_POLICIES", "CachePolicy", "register_policy", "ADAPTIVE_PROFILES", "kv_bytes_per_token"]


class KVCache(KVStore):
    """A budgeted KV cache: at most ``budget`` entries per head and layer, chosen by a policy.

    Parameters
    ----------
    budget : int or None
        Entries kept per head and layer (>= 1). ``None`` only for ``policy="full"``.
    policy : str or CachePolicy, default "window"
        A name from :data:`KV_POLICIES` or a policy instance.
    seed : int, default 0
        Seeds the generator of sampling policies (``"subgen"``) at every :meth:`reset`.
    **policy_options
        Passed to the policy, e.g. ``n_sinks=4`` for ``"sinks_window"``,
        ``n_recent=16`` for ``"heavy_hitter"``, ``threshold=0.5`` for
        ``"evict_merge"``, ``recovery=0.95`` for ``"adaptive"``.

    Notes
    -----
    The cache accumulates, for every entry, the attention it received (from
    the prompt's attention in :meth:`load`, then from every decoded query in
    :meth:`observe`); policies read it as ``state.score``. Entries carry a
    ``count`` (tokens they stand for, > 1 after merging) which
    :meth:`entries` turns into a ``log(count)`` score bias, and heads that keep
    fewer entries than others are padded with ``-inf``.

    :meth:`bytes_held` counts what a cache with ragged heads would really hold:
    keys and values of the valid entries, plus the per-entry bookkeeping the
    policy needs (a float32 score for attention-based policies, a float32
    count for merging ones); :meth:`payload_bytes` counts keys and values only.

    References
    ----------
    "Model Tells You What to Discard: Adaptive KV Cache Compression for LLMs";
    "D2O: Dynamic Discriminative Operations for Efficient Generative Inference of Large Language Models";
    "EMS: Adaptive Evict-then-Merge Strategy for Head-wise KV Cache Compression Based on Global-Local Importance";
    "SubGen: Token Generation in Sublinear Time and Memory".

    Examples
    --------
    >>> import torch
    >>> from companion.compression import KVCache
    >>> from companion.nn import TinyTransformer, TransformerConfig, cached_nll
    >>> _ = torch.manual_seed(0)
    >>> model = TinyTransformer(TransformerConfig(vocab_size=12, d_model=16, n_heads=2)).eval()
    >>> tokens = torch.randint(0, 12, (2, 20))
    >>> cache = KVCache(8, "heavy_hitter")
    >>> nll = cached_nll(model, tokens, cache, prefill_len=10)
    >>> nll.shape, cache.held_per_head(0).max().item()
    ((2, 10), 8)
    """

    def __init__(self, budget: Optional[int], policy="window", *, seed: int = 0, **policy_options):
        self.seed = check_int(seed, "seed", minimum=0)
        self.policy: CachePolicy = make_policy(policy, budget, policy_options)
        self.budget = self.policy.budget
        self.n_layers = 0
        self.states: list = []
        self._next_position: list = []

    # ------------------------------------------------------------ KVStore API
    def reset(self, n_layers: int) -> None:
        self.n_layers = check_int(n_layers, "n_layers", minimum=1)
        self.states = [None] * self.n_layers
        self._next_position = [0] * self.n_layers
        self.policy.seed(np.random.default_rng(self.seed))

    def _check_layer(self, layer: int) -> int:
        if not self.states:
            raise ValueError("call reset(n_layers) before using the cache")
        return check_int(layer, "layer", minimum=0, maximum=self.n_layers - 1)

    def load(self, layer, keys, values, attention) -> None:
        layer = self._check_layer(layer)
        if keys.ndim != 4 or tuple(values.shape[:3]) != tuple(keys.shape[:3]):
            raise ValueError(
                f"keys and values must be (batch, heads, seq, head_dim); got {tuple(keys.shape)} and {tuple(values.shape)}"
            )
        score = None
        if attention is not None:
            score = attention.float().sum(dim=-2)  # (B, H, T): attention each prompt token received
        state = LayerState.fresh(keys, values, 0, score)
        self.policy.profile(layer, state, attention)
        self.states[layer] = self.policy.enforce(layer, state)
        self._next_position[layer] = keys.shape[2]

    def append(self, layer, k, v) -> None:
        layer = self._check_layer(layer)
        new = LayerState.fresh(k, v, self._next_position[layer])
        self._next_position[layer] += k.shape[2]
        state = self.states[layer]
        self.states[layer] = new if state is None else state.cat(new)

    def entries(self, layer):
        layer = self._check_layer(layer)
        state = self.states[layer]
        return state.keys, state.values, state.score_bias()

    def observe(self, layer, weights) -> None:
        layer = self._check_layer(layer)
        state = self.states[layer]
        state.score = accumulate_attention(state.score, weights.float())  # (B, H, n)

    def end_step(self) -> None:
        for layer, state in enumerate(self.states):
            if state is not None:
                self.states[layer] = self.policy.enforce(layer, state)

    # -------------------------------------------------------------- accounting
    def held_per_head(self, layer: int) -> torch.Tensor:
        """Valid entries of every ``(sequence, head)`` of ``layer``, ``(B, H)`` int64."""
        return self.states[self._check_layer(layer)].held()

    def bounded_heads(self, layer: int) -> torch.Tensor:
        """``(B, H)`` bool: heads that promise to stay within the budget (all, except "full" profiles)."""
        layer = self._check_layer(layer)
        return self.policy.bounded_rows(layer, self.states[layer])

    def n_entries(self) -> int:
        """Valid key-value pairs per sequence (mean over the batch), summed over layers and heads."""
        held = [s.valid.sum().item() / s.valid.shape[0] for s in self.states if s is not None]
        return int(round(sum(held)))

    def payload_bytes(self) -> int:
        """Bytes of the valid keys and values (whole batch)."""
        total = 0
        for s in self.states:
            if s is not None:
                per_entry = s.keys.shape[-1] * s.keys.element_size() + s.values.shape[-1] * s.values.element_size()
                total += int(s.valid.sum()) * per_entry
        return total

    def bytes_held(self) -> int:
        """Bytes a ragged cache would hold: valid keys and values plus the policy's per-entry bookkeeping."""
        extra_per_entry = 0
        name = getattr(self.policy, "name", "")
        if name in ("heavy_hitter", "adaptive", "evict_merge", "subgen"):
            extra_per_entry += 4  # float32 accumulated attention
        if name in ("evict_merge", "subgen"):
            extra_per_entry += 4  # float32 count
        total = self.payload_bytes()
        for s in self.states:
            if s is not None:
                total += int(s.valid.sum()) * extra_per_entry
                centres = s.extra.get("centres")
                if centres is not None:  # SubGen keeps a centre per active cluster
                    active = s.valid[:, :, : centres.shape[2]]
                    total += int(active.sum()) * centres.shape[-1] * centres.element_size()
        return total

    def __repr__(self) -> str:
        return f"KVCache(budget={self.budget}, policy={self.policy!r})"


def kv_bytes_per_token(n_layers: int, n_kv_heads: int, head_dim: int, *, bytes_per_value: int = 2,
                       cached_layers: Optional[int] = None) -> int:
    """Bytes one token adds to a KV cache: ``2 * layers * kv_heads * head_dim * bytes``.

    ``cached_layers`` counts the layers that really keep a cache: a
    decoder-decoder model in the style of "You Only Cache Once: Decoder-Decoder
    Architectures for Language Models" caches one global KV set shared by all
    its cross-decoder layers, so it pays for one layer instead of ``n_layers``
    (plus a constant for its efficient self-attention half).

    Parameters
    ----------
    n_layers, n_kv_heads, head_dim : int
        Model shape (>= 1).
    bytes_per_value : int, default 2
        2 for fp16/bf16, 4 for fp32.
    cached_layers : int, optional
        Layers that keep a KV cache (default ``n_layers``).

    Returns
    -------
    int

    Examples
    --------
    >>> from companion.compression import kv_bytes_per_token
    >>> kv_bytes_per_token(32, 8, 128)              # a Llama-3-8B-like model: 128 KiB per token
    131072
    >>> kv_bytes_per_token(32, 8, 128, cached_layers=1)
    4096
    """
    n_layers = check_int(n_layers, "n_layers", minimum=1)
    n_kv_heads = check_int(n_kv_heads, "n_kv_heads", minimum=1)
    head_dim = check_int(head_dim, "head_dim", minimum=1)
    bytes_per_value = check_int(bytes_per_value, "bytes_per_value", minimum=1)
    cached = n_layers if cached_layers is None else check_int(cached_layers, "cached_layers", minimum=1, maximum=n_layers)
    return 2 * cached * n_kv_heads * head_dim * bytes_per_value

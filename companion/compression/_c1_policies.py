"""Eviction and merging policies of :class:`companion.compression.KVCache` (chapter C1, private).

A policy turns a layer's :class:`~companion.compression._c1_state.LayerState`
into one that respects the budget. :class:`~companion.compression.KVCache`
calls :meth:`CachePolicy.profile` once after the prefill (with the prompt's
attention weights) and :meth:`CachePolicy.enforce` after the prefill and after
every decoded token. The accumulated attention ``state.score`` is kept up to
date by the cache itself.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from .._validation import check_float, check_int
from ..kernels.eviction import merge_evicted, select_keep
from ._c1_state import LayerState, keep_by_priority, valid_rank

KV_POLICIES: dict = {}


def register_policy(name: str):
    """Class decorator adding a :class:`CachePolicy` subclass to :data:`KV_POLICIES` under ``name``."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"policy name must be a non-empty string; got {name!r}")

    def decorate(cls):
        if not (isinstance(cls, type) and issubclass(cls, CachePolicy)):
            raise TypeError(f"register_policy needs a CachePolicy subclass; got {cls!r}")
        cls.name = name
        KV_POLICIES[name] = cls
        return cls

    return decorate


class CachePolicy:
    """What to keep when a layer's cache holds more than ``budget`` entries per head.

    Subclasses set ``bounded`` (whether every head stays within the budget) and
    override :meth:`enforce` (and :meth:`profile` when they need the prompt's
    attention). Options are keyword arguments of the constructor.
    """

    name = "base"
    bounded = True
    needs_budget = True

    def __init__(self, budget: Optional[int]):
        if budget is None:
            if self.needs_budget:
                raise ValueError(f"policy {self.name!r} needs a budget (entries per head); got None")
            self.budget = None
        else:
            if isinstance(budget, (bool, np.bool_)) or not isinstance(budget, (int, np.integer)):
                raise TypeError(f"budget must be an integer number of entries per head; got {type(budget).__name__} {budget!r}")
            if budget < 1:
                raise ValueError(f"budget must be a positive number of entries per head; got {budget}")
            self.budget = int(budget)
        self.rng = np.random.default_rng(0)

    def seed(self, rng: np.random.Generator) -> None:
        """Generator for policies that sample (set by the cache at every reset)."""
        self.rng = rng

    def profile(self, layer: int, state: LayerState, attention: Optional[torch.Tensor]) -> None:
        """Look at the prompt's attention ``(B, H, T, T)`` once, before the first :meth:`enforce`."""

    def enforce(self, layer: int, state: LayerState) -> LayerState:
        """Return a state with at most ``budget`` valid entries in every bounded row."""
        raise NotImplementedError

    def bounded_rows(self, layer: int, state: LayerState) -> torch.Tensor:
        """``(B, H)`` bool: which rows promise to stay within the budget."""
        return torch.full(state.valid.shape[:2], self.bounded, dtype=torch.bool, device=state.valid.device)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(budget={self.budget})"


def _recent_default(budget: int, n_recent: Optional[int], name: str, minimum: int = 1, reserve: int = 0) -> int:
    if n_recent is None:
        return max(minimum, (budget - reserve) // 2)
    n_recent = check_int(n_recent, "n_recent", minimum=minimum)
    if n_recent + reserve > budget:
        raise ValueError(f"policy {name!r}: n_recent ({n_recent}) + {reserve} must be <= budget ({budget})")
    return n_recent


# ------------------------------------------------------------------ baselines
@register_policy("full")
class FullPolicy(CachePolicy):
    """Keep everything (the reference); the budget, if given, is ignored."""

    bounded = False
    needs_budget = False

    def enforce(self, layer, state):
        return state


@register_policy("window")
class WindowPolicy(CachePolicy):
    """Sliding window: keep the newest ``budget`` entries."""

    def enforce(self, layer, state):
        if state.n <= self.budget:
            return state
        return state.slice(state.n - self.budget)


@register_policy("sinks_window")
class SinksWindowPolicy(CachePolicy):
    """StreamingLLM: the first ``n_sinks`` tokens (attention sinks) plus a window of the newest.

    Options: ``n_sinks`` (default 4), at most ``budget - 1`` so that the newest token fits.
    """

    def __init__(self, budget, *, n_sinks: int = 4):
        super().__init__(budget)
        self.n_sinks = check_int(n_sinks, "n_sinks", minimum=0)
        if self.n_sinks >= self.budget:
            raise ValueError(
                f"policy 'sinks_window' needs budget > n_sinks (room for the sinks and the newest token); "
                f"got budget={self.budget}, n_sinks={self.n_sinks}"
            )

    def enforce(self, layer, state):
        if state.n <= self.budget:
            return state
        keep = select_keep(state.score, self.budget, n_sinks=self.n_sinks, n_recent=self.budget - self.n_sinks)
        return state.take(keep)


@register_policy("heavy_hitter")
class HeavyHitterPolicy(CachePolicy):
    """H2O: a window of ``n_recent`` newest entries plus the entries with the most accumulated attention.

    Options: ``n_recent`` (default ``budget // 2``, at least 1).
    """

    def __init__(self, budget, *, n_recent: Optional[int] = None):
        super().__init__(budget)
        self.n_recent = _recent_default(self.budget, n_recent, "heavy_hitter")

    def enforce(self, layer, state):
        if state.n <= self.budget:
            return state
        keep = select_keep(state.score, self.budget, n_recent=self.n_recent)  # (B, H, budget)
        return state.take(keep)


# --------------------------------------------------------------- merging
@register_policy("evict_merge")
class EvictMergePolicy(CachePolicy):
    """D2O / EMS: evict like H2O, then merge each evicted entry into its most similar kept heavy hitter.

    Merged entries hold the count-weighted mean of their members' keys and
    values and their count; attention adds ``log(count)`` to their logit.

    Options: ``n_recent`` (default ``budget // 2``; the window is never a merge
    target), ``threshold`` (minimum cosine similarity of keys for a merge,
    default 0.5; below it the evicted entry is dropped).
    """

    def __init__(self, budget, *, n_recent: Optional[int] = None, threshold: float = 0.5):
        super().__init__(budget)
        self.n_recent = _recent_default(self.budget, n_recent, "evict_merge")
        self.threshold = check_float(threshold, "threshold", minimum=-1.0, maximum=1.0)

    def enforce(self, layer, state):
        if state.n <= self.budget:
            return state
        n = state.n
        keep = select_keep(state.score, self.budget, n_recent=self.n_recent)  # (B, H, budget), ascending
        targets = keep < n - self.n_recent  # heavy hitters only
        merged_k, merged_v, merged_c = merge_evicted(
            state.keys.float(), state.values.float(), state.count, keep, targets=targets, threshold=self.threshold
        )
        out = state.take(keep)
        # the accumulated attention of an evicted entry goes to the entry that absorbed it
        out.keys, out.values = merged_k.to(state.keys.dtype), merged_v.to(state.values.dtype)
        absorbed = merged_c - out.count
        if bool((absorbed > 0).any()):
            evicted_score = state.score.sum(-1, keepdim=True) - out.score.sum(-1, keepdim=True)
            share = absorbed / absorbed.sum(-1, keepdim=True).clamp(min=1)
            out.score = out.score + share * evicted_score
        out.count = merged_c
        return out


@register_policy("subgen")
class SubGenPolicy(CachePolicy):
    """SubGen: a window of exact recent entries plus a clustered, sampled summary of older keys.

    An entry that leaves the window joins the nearest cluster centre when it
    lies within ``radius * |centre|`` of it (or when all ``budget - n_recent``
    cluster slots are taken); otherwise it opens a new cluster with itself as
    centre. Every cluster stores one member drawn uniformly (reservoir sampling
    with the cache's generator) and the number of members; attention sees that
    member with ``log(count)`` added to its logit, an estimate of the whole
    cluster's contribution.

    Options: ``n_recent`` (default ``budget // 2``), ``radius`` (default 0.5).
    """

    def __init__(self, budget, *, n_recent: Optional[int] = None, radius: float = 0.5):
        super().__init__(budget)
        self.n_recent = _recent_default(self.budget, n_recent, "subgen")
        self.radius = check_float(radius, "radius", minimum=0.0)
        self.n_slots = self.budget - self.n_recent

    def _slots(self, state: LayerState) -> int:
        return int(state.extra.get("slots", 0))

    def _open_slots(self, state: LayerState) -> LayerState:
        """Prepend ``n_slots`` empty (invalid) cluster slots and the centre table."""
        batch, heads, _, dim = state.keys.shape
        device = state.keys.device
        empty = LayerState(
            keys=torch.zeros(batch, heads, self.n_slots, dim, dtype=state.keys.dtype, device=device),
            values=torch.zeros(batch, heads, self.n_slots, state.values.shape[-1], dtype=state.values.dtype, device=device),
            score=torch.zeros(batch, heads, self.n_slots, device=device),
            count=torch.ones(batch, heads, self.n_slots, device=device),
            position=torch.zeros(batch, heads, self.n_slots, dtype=torch.int64, device=device),
            valid=torch.zeros(batch, heads, self.n_slots, dtype=torch.bool, device=device),
        )
        out = empty.cat(state)
        out.extra = {"slots": self.n_slots, "centres": torch.zeros(batch, heads, self.n_slots, dim, device=device)}
        return out

    def _absorb_oldest(self, state: LayerState) -> LayerState:
        """Move the oldest exact entry (index ``slots``) into the cluster summary."""
        s = self._slots(state)
        centres = state.extra["centres"]  # (B, H, S, Dh)
        active = state.valid[:, :, :s]  # (B, H, S)
        k_new = state.keys[:, :, s].float()  # (B, H, Dh)
        v_new = state.values[:, :, s]
        dist = torch.linalg.vector_norm(centres - k_new[:, :, None, :], dim=-1)  # (B, H, S)
        dist = dist.masked_fill(~active, float("inf"))
        nearest = dist.argmin(dim=-1)  # (B, H)
        near_dist = dist.min(dim=-1).values
        near_norm = torch.linalg.vector_norm(torch.take_along_dim(centres, nearest[..., None, None], dim=2)[:, :, 0], dim=-1)
        n_active = active.sum(-1)
        opens = (n_active < s) & ~(near_dist <= self.radius * near_norm)  # (B, H)
        free = torch.argmin(active.to(torch.int8), dim=-1)  # first inactive slot
        slot = torch.where(opens, free, nearest)  # (B, H)
        b, h = torch.meshgrid(torch.arange(slot.shape[0]), torch.arange(slot.shape[1]), indexing="ij")
        count_now = torch.where(opens, torch.zeros_like(near_dist), state.count[b, h, slot]) + 1
        draw = torch.as_tensor(self.rng.random(tuple(slot.shape)), dtype=torch.float32, device=slot.device)
        replace = opens | (draw < 1.0 / count_now)  # reservoir sample of size one
        keys, values = state.keys.clone(), state.values.clone()
        keys[b, h, slot] = torch.where(replace[..., None], state.keys[:, :, s], keys[b, h, slot])
        values[b, h, slot] = torch.where(replace[..., None], v_new, values[b, h, slot])
        centres = centres.clone()
        centres[b, h, slot] = torch.where(opens[..., None], k_new, centres[b, h, slot])
        count, valid, score, position = state.count.clone(), state.valid.clone(), state.score.clone(), state.position.clone()
        count[b, h, slot] = count_now
        valid[b, h, slot] = True
        score[b, h, slot] = torch.where(opens, state.score[:, :, s], score[b, h, slot] + state.score[:, :, s])
        position[b, h, slot] = torch.where(opens, state.position[:, :, s], position[b, h, slot])
        out = LayerState(keys, values, score, count, position, valid, extra={"slots": s, "centres": centres})
        keep = torch.cat([torch.arange(s), torch.arange(s + 1, state.n)]).to(keys.device)
        return out.take(keep.expand(*slot.shape, -1))

    def enforce(self, layer, state):
        if self._slots(state) == 0:
            if state.n <= self.budget:
                return state
            state = self._open_slots(state)
        s = self._slots(state)
        while state.n - s > self.n_recent and int(state.held().max()) > self.budget:
            state = self._absorb_oldest(state)
        return state


# ------------------------------------------------------------- adaptive
#: Compressed head profiles of the adaptive policy, each ``budget`` entries, plus "full".
ADAPTIVE_PROFILES = ("local", "special+local", "frequent", "special+frequent+local", "full")


@register_policy("adaptive")
class AdaptivePolicy(CachePolicy):
    """FastGen-style per-head profile chosen from the prompt's attention.

    For every head (and sequence) the prompt's attention decides which of the
    compressed profiles of :data:`ADAPTIVE_PROFILES` keeps the most attention
    mass of the last ``probe`` prompt queries (each query judged against what the
    profile would hold when it arrived): "local" (the newest ``budget``
    entries), "special+local" (``n_sinks`` first tokens and a window),
    "frequent" (``n_sinks`` first tokens, the newest token and the entries with
    the most accumulated attention) or "special+frequent+local" (sinks, half
    heavy hitters, half window). If even the best keeps less than ``recovery``
    of the mass, the head keeps its full cache. Heads whose profile is "full"
    are not bounded by the budget: the memory saved is what the model allows.

    Options: ``recovery`` (default 0.95), ``n_sinks`` (default 4), ``probe``
    (default 32 queries).
    """

    bounded = False  # heads profiled "full" keep everything (see bounded_rows)
    needs_attention = True

    def __init__(self, budget, *, recovery: float = 0.95, n_sinks: int = 4, probe: int = 32):
        super().__init__(budget)
        self.recovery = check_float(recovery, "recovery", minimum=0.0, maximum=1.0)
        self.n_sinks = check_int(n_sinks, "n_sinks", minimum=0)
        self.probe = check_int(probe, "probe", minimum=1)
        if self.n_sinks + 2 > self.budget:
            raise ValueError(
                f"policy 'adaptive' needs budget >= n_sinks + 2 (sinks, a heavy hitter and the newest token); "
                f"got budget={self.budget}, n_sinks={self.n_sinks}"
            )
        self.modes: dict = {}  # layer -> (B, H) int64 index into ADAPTIVE_PROFILES
        self.recovered: dict = {}  # layer -> (B, H, len(ADAPTIVE_PROFILES) - 1) attention mass kept

    def _layout(self, mode: torch.Tensor):
        """Per-row (sinks, recent, heavy, full) for mode indices ``(B, H)``."""
        b, s = self.budget, self.n_sinks
        table = torch.tensor(
            [[0, b, 0, 0], [s, b - s, 0, 0], [s, 1, b - s - 1, 0],
             [s, (b - s) // 2, b - s - (b - s) // 2, 0], [0, 0, 0, 1]],
            dtype=torch.int64, device=mode.device,
        )
        rows = table[mode]  # (B, H, 4)
        return rows[..., 0], rows[..., 1], rows[..., 2], rows[..., 3].bool()

    def _priority(self, state: LayerState, sinks, recent, heavy, full) -> torch.Tensor:
        before, after = valid_rank(state.valid)
        protect = (before < sinks[..., None]) | (after < recent[..., None]) | full[..., None]
        lowest = torch.finfo(torch.float32).min
        frequent = torch.where(heavy[..., None] > 0, state.score, torch.full_like(state.score, lowest))
        return torch.where(protect, torch.full_like(state.score, float("inf")), frequent)

    def profile(self, layer, state, attention):
        batch, heads = state.valid.shape[:2]
        if attention is None or state.n <= self.budget:
            # nothing to decide from, or nothing to compress yet: profile from the prompt when it is long enough
            if attention is None and state.n > self.budget:
                raise ValueError("policy 'adaptive' needs the prompt's attention weights in load(); got None")
            self.modes[layer] = torch.full((batch, heads), ADAPTIVE_PROFILES.index("full"), dtype=torch.int64)
            return
        att = attention.float()  # (B, H, T, T)
        T = att.shape[-1]
        seen = att.cumsum(dim=2)  # (B, H, T, T): attention each key received up to query i
        positions = torch.arange(T, device=att.device)
        rows = range(max(0, T - self.probe), T)
        kept_mass = []
        for mode in range(len(ADAPTIVE_PROFILES) - 1):
            m = torch.full((batch, heads), mode, dtype=torch.int64, device=att.device)
            layout = self._layout(m)
            mass = torch.zeros(batch, heads, device=att.device)
            for i in rows:  # what this profile would hold when query i arrives, and the mass it keeps
                prefix = LayerState(state.keys, state.values, seen[:, :, i], state.count, state.position,
                                    (positions <= i).expand(batch, heads, T))
                prio = self._priority(prefix, *layout).masked_fill(~prefix.valid, float("-inf"))
                order = torch.argsort(prio, dim=-1, descending=True, stable=True)[..., : self.budget]
                keep = torch.zeros_like(prefix.valid).scatter_(-1, order, True)
                mass += (att[:, :, i] * keep).sum(-1)
            kept_mass.append(mass / len(rows))  # (B, H)
        kept = torch.stack(kept_mass, dim=-1)  # (B, H, profiles)
        best_mass, best = kept.max(dim=-1)
        mode = torch.where(best_mass >= self.recovery, best, torch.full_like(best, ADAPTIVE_PROFILES.index("full")))
        self.modes[layer] = mode.cpu()
        self.recovered[layer] = kept.cpu()

    def enforce(self, layer, state):
        mode = self.modes.get(layer)
        if mode is None:
            mode = torch.full(state.valid.shape[:2], ADAPTIVE_PROFILES.index("full"), dtype=torch.int64)
            self.modes[layer] = mode
        sinks, recent, heavy, full = self._layout(mode.to(state.valid.device))
        capacity = torch.where(full, torch.full_like(sinks, 2**62), sinks + recent + heavy)  # (B, H)
        if not bool((state.held() > capacity).any()):
            return state
        return keep_by_priority(state, self._priority(state, sinks, recent, heavy, full), capacity)

    def bounded_rows(self, layer, state):
        mode = self.modes.get(layer)
        if mode is None:
            return super().bounded_rows(layer, state)
        return (mode != ADAPTIVE_PROFILES.index("full")).to(state.valid.device)


def make_policy(policy, budget, options) -> CachePolicy:
    """Build the policy named ``policy`` (or pass a :class:`CachePolicy` instance through)."""
    if isinstance(policy, CachePolicy):
        if options:
            raise TypeError("policy options go to the policy's constructor; got an instance and options")
        return policy
    if not isinstance(policy, str):
        raise TypeError(f"policy must be a name from KV_POLICIES or a CachePolicy; got {type(policy).__name__}")
    if policy not in KV_POLICIES:
        raise ValueError(f"unknown KV cache policy {policy!r}; registered policies: {sorted(KV_POLICIES)}")
    try:
        return KV_POLICIES[policy](budget, **options)
    except TypeError as err:
        if "unexpected keyword" in str(err):
            raise TypeError(f"policy {policy!r} got an unknown option: {err}") from None
        raise


"""Per-layer state of a budgeted KV cache and the row-wise operations on it (chapter C1, private).

A layer's cache is a set of padded tensors over ``(batch, heads, n)`` entries:
keys and values ``(B, H, n, Dh)``, the accumulated attention ``score``, the
number of original tokens ``count`` each entry stands for (1 unless merged),
the absolute ``position`` of the token (of the first member for merged
entries), and ``valid``: heads that keep fewer entries than others are padded
with invalid entries, which attention must not see.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch


@dataclasses.dataclass
class LayerState:
    """Everything one layer's cache holds; all tensors share the leading ``(B, H, n)``."""

    keys: torch.Tensor  # (B, H, n, Dh)
    values: torch.Tensor  # (B, H, n, Dh)
    score: torch.Tensor  # (B, H, n) float32, accumulated attention
    count: torch.Tensor  # (B, H, n) float32, tokens represented (>= 1)
    position: torch.Tensor  # (B, H, n) int64
    valid: torch.Tensor  # (B, H, n) bool
    extra: dict = dataclasses.field(default_factory=dict)  # policy-owned tensors

    @property
    def n(self) -> int:
        return int(self.keys.shape[2])

    @classmethod
    def fresh(cls, keys: torch.Tensor, values: torch.Tensor, first_position: int,
              score: Optional[torch.Tensor] = None) -> "LayerState":
        batch, heads, n, _ = keys.shape
        device = keys.device
        pos = torch.arange(first_position, first_position + n, device=device)
        return cls(
            keys=keys,
            values=values,
            score=torch.zeros(batch, heads, n, device=device) if score is None else score.float(),
            count=torch.ones(batch, heads, n, device=device),
            position=pos.expand(batch, heads, n).clone(),
            valid=torch.ones(batch, heads, n, dtype=torch.bool, device=device),
        )

    def cat(self, other: "LayerState") -> "LayerState":
        """Entries of ``self`` followed by those of ``other`` (extras of ``self`` kept)."""
        fields = {}
        for f in ("keys", "values", "score", "count", "position", "valid"):
            fields[f] = torch.cat([getattr(self, f), getattr(other, f)], dim=2)
        return LayerState(**fields, extra=self.extra)

    def take(self, index: torch.Tensor) -> "LayerState":
        """Entries ``index`` ``(B, H, m)`` of every row (same ``m`` for every row)."""
        idx = index.to(self.keys.device, torch.int64)
        gathered = {
            "keys": torch.take_along_dim(self.keys, idx[..., None], dim=2),
            "values": torch.take_along_dim(self.values, idx[..., None], dim=2),
        }
        for f in ("score", "count", "position", "valid"):
            gathered[f] = torch.take_along_dim(getattr(self, f), idx, dim=2)
        return LayerState(**gathered, extra=self.extra)

    def slice(self, start: int, stop: Optional[int] = None) -> "LayerState":
        """Entries ``start:stop`` of every row."""
        fields = {f: getattr(self, f)[:, :, start:stop] for f in ("keys", "values", "score", "count", "position", "valid")}
        return LayerState(**fields, extra=self.extra)

    def held(self) -> torch.Tensor:
        """Valid entries per row, ``(B, H)`` int64."""
        return self.valid.sum(dim=-1)

    def score_bias(self) -> Optional[torch.Tensor]:
        """``log(count)`` for merged entries and ``-inf`` for padding; None when neither occurs."""
        merged = bool((self.count != 1).any())
        padded = not bool(self.valid.all())
        if not merged and not padded:
            return None
        bias = torch.log(self.count)  # (B, H, n)
        return bias.masked_fill(~self.valid, float("-inf"))


def valid_rank(valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For every entry: how many valid entries precede it, and how many follow it (``(B, H, n)`` each)."""
    v = valid.to(torch.int64)
    before = torch.cumsum(v, dim=-1) - v
    after = v.sum(dim=-1, keepdim=True) - before - v
    return before, after


def keep_by_priority(state: LayerState, priority: torch.Tensor, capacity: torch.Tensor) -> LayerState:
    """Keep, in every row, its ``capacity`` highest-priority valid entries; pad rows that keep fewer.

    ``priority`` ``(B, H, n)`` (``+inf`` protects, ``-inf`` marks invalid
    entries); ``capacity`` ``(B, H)`` int64. The result is ``max_r min(capacity,
    held)`` entries long, in the original order; surplus entries of rows that
    keep fewer become invalid padding.
    """
    held = state.held()
    keep_n = torch.minimum(capacity, held)  # (B, H)
    width = int(keep_n.max())
    if width == state.n and bool((keep_n == held).all()):
        return state
    priority = priority.masked_fill(~state.valid, float("-inf"))
    order = torch.argsort(priority, dim=-1, descending=True, stable=True)[..., :width]  # (B, H, width)
    rank = torch.arange(width, device=order.device)
    inside = rank[None, None, :] < keep_n[..., None]  # (B, H, width)
    index, perm = torch.sort(order, dim=-1)  # back to position order
    out = state.take(index)
    out.valid = torch.take_along_dim(inside, perm, dim=-1) & out.valid
    return out

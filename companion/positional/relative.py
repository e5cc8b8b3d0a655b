"""Learned relative position biases.

Papers: Shaw, Uszkoreit and Vaswani, "Self-Attention with Relative Position
Representations" (NAACL 2018) and Raffel et al., "Exploring the Limits of
Transfer Learning with a Unified Text-to-Text Transformer" (JMLR 2020, T5).

Shaw et al. learn one vector per relative distance, clipped at a maximum, and
add it inside attention. T5 simplifies this to one learned *scalar* per head,
added to the attention logits, and shares it between distances through
buckets: each small offset has its own bucket, larger offsets share buckets
whose width grows logarithmically, and every offset beyond ``max_distance``
falls in the last bucket.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from .._validation import check_array, check_int
from ..backend import to_kind, to_numpy

__all__ = ["relative_position_bucket", "RelativePositionBias"]


def _check_bucket_options(bidirectional: Any, num_buckets: Any, max_distance: Any) -> tuple[bool, int, int]:
    if not isinstance(bidirectional, (bool, np.bool_)):
        raise TypeError(f"bidirectional must be a bool; got {type(bidirectional).__name__}")
    num_buckets = check_int(num_buckets, "num_buckets", minimum=4 if bidirectional else 2)
    per_side = num_buckets // 2 if bidirectional else num_buckets
    n_exact = per_side // 2
    max_distance = check_int(max_distance, "max_distance", minimum=n_exact + 1)
    return bool(bidirectional), num_buckets, max_distance


def _bucket_numpy(relative: np.ndarray, bidirectional: bool, num_buckets: int, max_distance: int) -> np.ndarray:
    """Reference bucketing of ``relative = key_position - query_position`` (int64 in, int64 out)."""
    relative = relative.astype(np.int64)
    if bidirectional:
        per_side = num_buckets // 2
        offset = np.where(relative > 0, per_side, 0)  # keys after the query use the upper half
        distance = np.abs(relative)
    else:
        per_side = num_buckets
        offset = np.zeros_like(relative)
        distance = np.maximum(-relative, 0)  # only the past is told apart; the future is bucket 0
    n_exact = per_side // 2  # offsets 0 .. n_exact - 1 get a bucket each
    # Beyond n_exact, the remaining per_side - n_exact buckets cover [n_exact, max_distance)
    # evenly in log(distance); log arguments are clamped to stay >= 1 where unused.
    ratio = np.log(np.maximum(distance, n_exact) / n_exact) / np.log(max_distance / n_exact)
    log_bucket = n_exact + (ratio * (per_side - n_exact)).astype(np.int64)
    log_bucket = np.minimum(log_bucket, per_side - 1)
    return offset + np.where(distance < n_exact, distance, log_bucket)


def relative_position_bucket(
    relative_position: Any,
    *,
    bidirectional: bool = True,
    num_buckets: int = 32,
    max_distance: int = 128,
) -> Any:
    """Map relative positions (key minus query) to T5's log-spaced buckets.

    With ``n = num_buckets`` (halved when ``bidirectional``, the upper half
    taking keys *after* the query), offsets ``0 .. n/2 - 1`` get one bucket each;
    larger offsets share the other ``n/2`` buckets, spaced evenly in
    ``log(distance)`` up to ``max_distance``; anything farther lands in the last
    bucket. Unidirectional (causal) bucketing tells only past keys apart; every
    future key maps to bucket 0.

    Parameters
    ----------
    relative_position : integer array of any shape
        ``key_position - query_position`` (NumPy, CuPy, torch, or a list).
    bidirectional : bool, default True
        Whether keys after the query get their own buckets.
    num_buckets : int, default 32
        Total number of buckets; >= 4 when bidirectional, >= 2 otherwise.
    max_distance : int, default 128
        Distance from which every offset shares the last bucket; must exceed
        the number of exact buckets.

    Returns
    -------
    int64 array, same shape and kind as ``relative_position`` (NumPy for lists)
        Values in ``[0, num_buckets)``.

    References
    ----------
    Raffel et al., "Exploring the Limits of Transfer Learning with a Unified
    Text-to-Text Transformer", JMLR 2020. Shaw, Uszkoreit and Vaswani,
    "Self-Attention with Relative Position Representations", NAACL 2018.

    Example
    -------
    >>> import numpy as np
    >>> from companion.positional import relative_position_bucket
    >>> relative_position_bucket(np.array([-3, -1, 0, 1, 3, 200]), num_buckets=8, max_distance=16).tolist()
    [2, 1, 0, 5, 6, 7]
    """
    if isinstance(relative_position, (list, tuple, range)):
        relative_position = np.asarray(relative_position, dtype=np.int64)
    kind = check_array(relative_position, "relative_position", dtype_kind="iu", allow_empty=True)
    bidirectional, num_buckets, max_distance = _check_bucket_options(bidirectional, num_buckets, max_distance)
    buckets = _bucket_numpy(np.asarray(to_numpy(relative_position)), bidirectional, num_buckets, max_distance)
    return to_kind(buckets, kind, like=relative_position)


def _relative_positions(q_len: int, k_len: int) -> np.ndarray:
    """``key_pos - query_pos`` (q_len, k_len), queries aligned to the end of the keys."""
    query_pos = np.arange(q_len)[:, None] + (k_len - q_len)  # (q_len, 1)
    key_pos = np.arange(k_len)[None, :]  # (1, k_len)
    return key_pos - query_pos  # (q_len, k_len)


class RelativePositionBias(nn.Module):
    """Learned per-head attention bias over bucketed relative positions (T5).

    ``forward(q_len, k_len)[h, i, j] = E[bucket(j - (i + k_len - q_len)), h]``
    with ``E`` an ``nn.Embedding(num_buckets, n_heads)``: queries are the last
    ``q_len`` of the ``k_len`` keys, as in :func:`alibi_bias`. Add the result to
    the attention logits before the softmax (causal masking is separate).

    The embedding is **zero-initialised**, so a fresh model starts
    position-agnostic and learns the bias from data (the gradient reaches it
    from the first step).

    Parameters
    ----------
    n_heads : int
        Number of attention heads, >= 1.
    num_buckets : int, default 32
        Number of buckets (rows of the embedding).
    max_distance : int, default 128
        Offsets at least this far share the last bucket.
    bidirectional : bool, default False
        False for decoders (only past offsets are told apart), True for encoders.

    References
    ----------
    Raffel et al., "Exploring the Limits of Transfer Learning with a Unified
    Text-to-Text Transformer", JMLR 2020. Shaw, Uszkoreit and Vaswani,
    "Self-Attention with Relative Position Representations", NAACL 2018.

    Example
    -------
    >>> from companion.positional import RelativePositionBias
    >>> bias = RelativePositionBias(4, num_buckets=8, max_distance=16)
    >>> tuple(bias(3, 5).shape)
    (4, 3, 5)
    """

    def __init__(self, n_heads: int, *, num_buckets: int = 32, max_distance: int = 128,
                 bidirectional: bool = False) -> None:
        super().__init__()
        self.n_heads = check_int(n_heads, "n_heads", minimum=1)
        self.bidirectional, self.num_buckets, self.max_distance = _check_bucket_options(
            bidirectional, num_buckets, max_distance
        )
        self.embedding = nn.Embedding(self.num_buckets, self.n_heads)  # (num_buckets, heads)
        nn.init.zeros_(self.embedding.weight)

    def buckets(self, q_len: int, k_len: int) -> "torch.Tensor":
        """Bucket index of every (query, key) pair, (q_len, k_len) int64 on the module's device."""
        q_len = check_int(q_len, "q_len", minimum=1)
        k_len = check_int(k_len, "k_len", minimum=1)
        idx = _bucket_numpy(_relative_positions(q_len, k_len), self.bidirectional,
                            self.num_buckets, self.max_distance)
        return torch.from_numpy(idx).to(self.embedding.weight.device)

    def forward(self, q_len: int, k_len: int) -> "torch.Tensor":
        """The bias, (n_heads, q_len, k_len), in the embedding's dtype and device."""
        values = self.embedding(self.buckets(q_len, k_len))  # (q_len, k_len, heads)
        return values.permute(2, 0, 1)  # (heads, q_len, k_len)

    def extra_repr(self) -> str:
        return (f"n_heads={self.n_heads}, num_buckets={self.num_buckets}, "
                f"max_distance={self.max_distance}, bidirectional={self.bidirectional}")

"""Chapter M5's long-range experiment: a needle task and a transformer whose attention follows a block mask.

The model is the course's :class:`~companion.nn.TinyTransformer` with one change:
its additive score bias also carries ``-inf`` on every (query, key) pair that the
block mask forbids. Training therefore uses dense masked attention in torch
(autograd included); the pattern, not the kernel, is what the experiment tests.
"""

from __future__ import annotations

import numpy as np
import torch

from .._validation import check_int
from ..nn.transformer import TinyTransformer, TransformerConfig

__all__ = ["BlockMaskedTransformer", "needle_task", "needle_vocab_size"]


def needle_vocab_size(n_noise: int, n_needles: int) -> int:
    """Token ids used by :func:`needle_task`: noise, needles, then GLOBAL and QUERY.

    Examples
    --------
    >>> needle_vocab_size(16, 8)
    26
    """
    return check_int(n_noise, "n_noise", minimum=1) + check_int(n_needles, "n_needles", minimum=1) + 2


def needle_task(
    rng: np.random.Generator,
    batch_size: int,
    seq_len: int,
    *,
    n_noise: int,
    n_needles: int,
    n_global: int,
    min_distance: int,
):
    """Find the one needle token, far from the question: ``(inputs, targets, mask)``.

    Each sequence is ``n_global`` GLOBAL tokens, then noise tokens (ids
    ``0 .. n_noise - 1``) with exactly one needle (ids ``n_noise .. n_noise +
    n_needles - 1``), then a QUERY token at the last position. The target at the
    QUERY position is the needle's id; no other position is scored. The needle
    lies at least ``min_distance`` positions before the QUERY, so a model whose
    attention reaches fewer positions back can only guess (accuracy ``1 / n_needles``).

    Parameters
    ----------
    rng : numpy.random.Generator
    batch_size : int
        Sequences (>= 1).
    seq_len : int
        Tokens per sequence, including the GLOBAL and QUERY tokens.
    n_noise, n_needles : int
        Sizes of the two token sets (>= 1).
    n_global : int
        GLOBAL tokens at the start (>= 0); ids ``n_noise + n_needles``.
    min_distance : int
        Smallest distance between needle and QUERY (>= 1); needs
        ``n_global < seq_len - min_distance``.

    Returns
    -------
    inputs : numpy.ndarray of shape (batch_size, seq_len), int64
    targets : numpy.ndarray of shape (batch_size, seq_len), int64
        The needle id at the last position, -100 elsewhere.
    mask : numpy.ndarray of shape (batch_size, seq_len), bool
        True only at the last position.

    Examples
    --------
    >>> import numpy as np
    >>> x, y, m = needle_task(np.random.default_rng(0), 2, 12, n_noise=4, n_needles=3, n_global=2, min_distance=5)
    >>> x.shape, int(m.sum()), bool(((x >= 4) & (x < 7)).sum(axis=1).tolist() == [1, 1])
    ((2, 12), 2, True)
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator; got {type(rng).__name__}")
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    seq_len = check_int(seq_len, "seq_len", minimum=3)
    n_noise = check_int(n_noise, "n_noise", minimum=1)
    n_needles = check_int(n_needles, "n_needles", minimum=1)
    n_global = check_int(n_global, "n_global", minimum=0)
    min_distance = check_int(min_distance, "min_distance", minimum=1)
    last = seq_len - 1
    if n_global > last - min_distance:
        raise ValueError(
            f"no room for the needle: n_global = {n_global}, seq_len = {seq_len}, min_distance = {min_distance} "
            "(need n_global <= seq_len - 1 - min_distance)"
        )
    global_id, query_id = n_noise + n_needles, n_noise + n_needles + 1
    inputs = rng.integers(0, n_noise, size=(batch_size, seq_len))  # (batch, seq)
    inputs[:, :n_global] = global_id
    inputs[:, last] = query_id
    where = rng.integers(n_global, last - min_distance + 1, size=batch_size)  # needle positions
    needles = n_noise + rng.integers(0, n_needles, size=batch_size)
    inputs[np.arange(batch_size), where] = needles
    targets = np.full((batch_size, seq_len), -100, dtype=np.int64)
    targets[:, last] = needles
    mask = np.zeros((batch_size, seq_len), dtype=bool)
    mask[:, last] = True
    return inputs.astype(np.int64), targets, mask


class BlockMaskedTransformer(TinyTransformer):
    """A :class:`~companion.nn.TinyTransformer` whose attention obeys a token-level mask.

    Parameters
    ----------
    config : TransformerConfig
        Model shape; ``config.causal`` adds the causal triangle on top of the mask.
    allowed : numpy.ndarray of shape (max_seq, max_seq), bool
        ``allowed[i, j]`` lets query ``i`` read key ``j`` (e.g. from
        :func:`companion.memory.token_mask`); sequences shorter than ``max_seq``
        use its top-left corner.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from companion.nn import TransformerConfig
    >>> _ = torch.manual_seed(0)
    >>> cfg = TransformerConfig(vocab_size=5, d_model=16, n_heads=2, positional="none", causal=False)
    >>> model = BlockMaskedTransformer(cfg, np.eye(6, dtype=bool))
    >>> tuple(model(torch.zeros(1, 6, dtype=torch.long)).shape)
    (1, 6, 5)
    """

    def __init__(self, config: TransformerConfig, allowed: np.ndarray, *, seed: int = 0):
        super().__init__(config, seed=seed)
        allowed = np.asarray(allowed, dtype=bool)
        if allowed.ndim != 2 or allowed.shape[0] != allowed.shape[1]:
            raise ValueError(f"allowed must be a square (max_seq, max_seq) boolean mask; got shape {allowed.shape}")
        bias = torch.zeros(allowed.shape, dtype=torch.float32)
        bias[~torch.as_tensor(allowed)] = float("-inf")  # (max_seq, max_seq)
        self.register_buffer("pattern_bias", bias, persistent=False)

    def _score_bias(self, seq: int):
        if seq > self.pattern_bias.shape[0]:
            raise ValueError(f"sequence length {seq} exceeds the mask's {self.pattern_bias.shape[0]} positions")
        base = super()._score_bias(seq)
        pattern = self.pattern_bias[:seq, :seq].to(self.token_embedding.weight.dtype)
        return pattern if base is None else base + pattern

"""Positions in attention (chapter P1).

Four ways to tell a transformer where its tokens are:

* :func:`sinusoidal_table` - fixed sin/cos encodings added to the inputs
  ("Attention Is All You Need");
* :func:`rope_apply` - rotary embeddings, rotating queries and keys by their
  positions ("RoFormer");
* :func:`alibi_attention_scores` / :func:`alibi_bias` - a linear distance
  penalty on the attention logits ("Train Short, Test Long");
* :class:`RelativePositionBias` - a learned bias per bucketed relative offset
  (Shaw et al. 2018; T5).

Example
-------
>>> import numpy as np
>>> from companion import positional
>>> q = np.ones((1, 2, 4, 8), dtype=np.float32)
>>> positional.rope_apply(q).shape
(1, 2, 4, 8)
"""

from .alibi import alibi_attention_scores, alibi_bias, alibi_slopes
from .relative import RelativePositionBias, relative_position_bucket
from .rope import LAYOUTS, rope_angles, rope_apply, rope_apply_torch
from .sinusoidal import sinusoidal_table

__all__ = [
    "sinusoidal_table",
    "rope_angles",
    "rope_apply",
    "rope_apply_torch",
    "LAYOUTS",
    "alibi_slopes",
    "alibi_bias",
    "alibi_attention_scores",
    "relative_position_bucket",
    "RelativePositionBias",
]

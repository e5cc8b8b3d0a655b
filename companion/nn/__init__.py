"""The course's tiny transformer and its training loop.

:class:`TinyTransformer` is a pre-LayerNorm decoder whose positional encoding
is chosen by :class:`TransformerConfig` (``"none"``, ``"sinusoidal"``,
``"learned"``, ``"rope"``, ``"alibi"``, ``"relative"``, ``"randomized"``);
:func:`train` fits it to a task from :mod:`companion.data` and
:func:`evaluate_accuracy` scores it.
"""

from .decoding import DECODABLE_ENCODINGS, FullKVStore, KVStore, Prefill, cached_nll, decode_step, prefill
from .training import (
    TrainConfig,
    TrainHistory,
    as_batch,
    evaluate_accuracy,
    masked_cross_entropy,
    train,
)
from .transformer import (
    POSITIONAL_OPTIONS,
    RANDOMIZED_BASES,
    ROPE_LAYOUTS,
    DecoderBlock,
    SelfAttention,
    TinyTransformer,
    TransformerConfig,
)

__all__ = [
    "DECODABLE_ENCODINGS",
    "FullKVStore",
    "KVStore",
    "Prefill",
    "cached_nll",
    "decode_step",
    "prefill",
    "POSITIONAL_OPTIONS",
    "RANDOMIZED_BASES",
    "ROPE_LAYOUTS",
    "DecoderBlock",
    "SelfAttention",
    "TinyTransformer",
    "TransformerConfig",
    "TrainConfig",
    "TrainHistory",
    "as_batch",
    "evaluate_accuracy",
    "masked_cross_entropy",
    "train",
]

"""Quantized KV caches: KIVI-style per-channel keys and per-token values, and coupled quantization.

A decoder's KV cache holds, per layer, keys and values of shape
``(batch, heads, tokens, head_dim)``. This module stores them in fewer bits:

* :class:`KVQuantConfig` says how: bits for keys and for values, which axis
  the groups of each run along (``"channel"``: groups of ``token_group``
  tokens inside one channel; ``"token"``: groups of ``channel_group``
  channels inside one token), and how many of the newest tokens stay in full
  precision (``residual``).
* :func:`quantize_kv` turns one layer's keys and values into a
  :class:`QuantizedKV` (packed codes, float16 scales and zeros, a
  full-precision tail); :class:`KVQuantTransform` does it for every layer as a
  ``kv_transform`` of :func:`companion.nn.decoding.prefill` and records the
  bytes held.
* :class:`QuantizedKVStore` is the same policy as a decoding cache
  (:class:`companion.nn.decoding.KVStore`): new tokens wait in full precision
  and are quantized in whole groups once more than ``residual`` tokens are
  waiting.

**Why keys wait.** A per-channel key group spans ``token_group`` consecutive
tokens; its minimum and maximum are only known once all of them have arrived.
Until then the tokens stay in full precision, so the full-precision tail holds
between ``residual`` and ``residual + token_group - 1`` tokens (KIVI's
"residual" buffer). Values use the same boundary so a token is either fully
quantized or fully exact. The bytes reported always include this tail and
every scale and zero.

Coupled quantization (several adjacent channels sharing one k-means codebook)
and entropy estimates live in ``_c2_coupled`` and are re-exported here:
:class:`CoupledCodebook`, :func:`fit_coupled_codebook`, :func:`coupled_encode`,
:func:`coupled_decode`, :class:`CoupledKeyTransform`,
:func:`channel_group_entropy`.

References: "More for Keys, Less for Values: Adaptive KV Cache Quantization";
"KV Cache is 1 Bit Per Channel: Efficient Large Language Model Inference with
Coupled Quantization"; KIVI (Liu et al. 2024) for the per-channel key /
per-token value split and the residual window.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np
import torch

from .._validation import check_array, check_choice, check_int
from ..nn.decoding import KVStore
from ._c2_coupled import (
    CoupledCodebook,
    CoupledKeyTransform,
    channel_group_entropy,
    coupled_decode,
    coupled_encode,
    fit_coupled_codebook,
)
from .quantization import SCALE_DTYPES, QuantizedTensor, dequantize, quantize

__all__ = [
    "KVQuantConfig",
    "QuantizedKV",
    "quantize_kv",
    "KVQuantTransform",
    "QuantizedKVStore",
    "CoupledCodebook",
    "fit_coupled_codebook",
    "coupled_encode",
    "coupled_decode",
    "CoupledKeyTransform",
    "channel_group_entropy",
]

MODES = ("channel", "token")


@dataclasses.dataclass(frozen=True)
class KVQuantConfig:
    """How a KV cache is quantized.

    Parameters
    ----------
    key_bits, value_bits : int or None
        Bits per element, 1 to 8; ``None`` keeps that side in full precision.
    key_mode, value_mode : {"channel", "token"}
        ``"channel"``: each channel gets its own scale and zero per group of
        ``token_group`` tokens (per-channel quantization); ``"token"``: each
        token gets its own per group of ``channel_group`` channels (per-token).
        KIVI uses ``key_mode="channel"``, ``value_mode="token"``.
    token_group : int
        Tokens per group in ``"channel"`` mode (KIVI: 32 or 128).
    channel_group : int, optional
        Channels per group in ``"token"`` mode; ``None`` is the whole head.
    residual : int
        Newest tokens never quantized (the full-precision window).
    scale_dtype : {"float16", "float32"}
        Storage type of scales and zeros.
    """

    key_bits: Optional[int] = 2
    value_bits: Optional[int] = 2
    key_mode: str = "channel"
    value_mode: str = "token"
    token_group: int = 32
    channel_group: Optional[int] = None
    residual: int = 0
    scale_dtype: str = "float16"

    def __post_init__(self) -> None:
        for name in ("key_bits", "value_bits"):
            value = getattr(self, name)
            if value is not None:
                check_int(value, name, minimum=1, maximum=8)
        check_choice(self.key_mode, "key_mode", MODES)
        check_choice(self.value_mode, "value_mode", MODES)
        check_int(self.token_group, "token_group", minimum=1)
        if self.channel_group is not None:
            check_int(self.channel_group, "channel_group", minimum=1)
        check_int(self.residual, "residual", minimum=0)
        check_choice(self.scale_dtype, "scale_dtype", SCALE_DTYPES)

    @property
    def flush_granularity(self) -> int:
        """Tokens quantized at once: ``token_group`` if a side groups along tokens, else 1."""
        sides = [(self.key_bits, self.key_mode), (self.value_bits, self.value_mode)]
        return self.token_group if any(b is not None and m == "channel" for b, m in sides) else 1

    def n_quantized(self, n_tokens: int) -> int:
        """How many of the oldest ``n_tokens`` are quantized: whole groups, leaving >= ``residual`` exact."""
        g = self.flush_granularity
        return max(0, (n_tokens - self.residual) // g * g)

    def label(self) -> str:
        """Short name such as ``"K2(channel) V2(token) R0"``."""
        def side(letter, bits, mode):
            return f"{letter}{bits}({mode})" if bits is not None else f"{letter}16(full)"

        keys = side("K", self.key_bits, self.key_mode)
        values = side("V", self.value_bits, self.value_mode)
        return f"{keys} {values} R{self.residual}"


def _quantize_side(x: torch.Tensor, bits: Optional[int], mode: str, config: KVQuantConfig):
    """One side (keys or values) ``(B, H, n, Dh)`` -> QuantizedTensor, or the tensor itself when ``bits`` is None."""
    if bits is None:
        return x
    if mode == "channel":
        return quantize(x, bits, axis=-2, group_size=config.token_group, scale_dtype=config.scale_dtype)
    group = config.channel_group if config.channel_group is not None else x.shape[-1]
    if x.shape[-1] % group:
        raise ValueError(f"channel_group={group} must divide head_dim={x.shape[-1]}")
    return quantize(x, bits, axis=-1, group_size=group, scale_dtype=config.scale_dtype)


def _side_nbytes(part) -> int:
    if isinstance(part, QuantizedTensor):
        return part.nbytes
    return int(part.numel() * part.element_size())


def _side_values(part) -> torch.Tensor:
    return dequantize(part) if isinstance(part, QuantizedTensor) else part


@dataclasses.dataclass
class QuantizedKV:
    """One layer's cache: a quantized prefix plus a full-precision tail.

    Attributes
    ----------
    keys_q, values_q : QuantizedTensor, torch.Tensor or None
        The oldest ``n_quantized`` tokens (a tensor when that side is kept
        exact; ``None`` when nothing is quantized yet).
    keys_tail, values_tail : torch.Tensor
        ``(B, H, n_tail, Dh)``: the newest tokens, exact.
    config : KVQuantConfig
    """

    keys_q: Any
    values_q: Any
    keys_tail: torch.Tensor
    values_tail: torch.Tensor
    config: KVQuantConfig

    @property
    def key_nbytes(self) -> int:
        """Bytes held for keys: quantized prefix (codes, scales, zeros) and exact tail."""
        return _side_nbytes(self.keys_tail) + (0 if self.keys_q is None else _side_nbytes(self.keys_q))

    @property
    def value_nbytes(self) -> int:
        """Bytes held for values, counted like :attr:`key_nbytes`."""
        return _side_nbytes(self.values_tail) + (0 if self.values_q is None else _side_nbytes(self.values_q))

    @property
    def nbytes(self) -> int:
        """Bytes held: packed codes, scales, zeros and the exact tail, keys and values."""
        return self.key_nbytes + self.value_nbytes

    def dequantize(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values ``(B, H, n, Dh)`` as attention would read them."""
        if self.keys_q is None:
            return self.keys_tail, self.values_tail
        k = torch.cat([_side_values(self.keys_q).to(self.keys_tail.dtype), self.keys_tail], dim=2)
        v = torch.cat([_side_values(self.values_q).to(self.values_tail.dtype), self.values_tail], dim=2)
        return k, v


def _check_kv(keys: Any, values: Any) -> None:
    for name, t in (("keys", keys), ("values", values)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(
                f"{name} must be a torch tensor of shape (batch, heads, tokens, head_dim); got {type(t).__name__}"
            )
        check_array(t, name, ndim=4, dtype_kind="f", allow_empty=True)
    if tuple(keys.shape) != tuple(values.shape):
        raise ValueError(f"keys and values must have the same shape; got {tuple(keys.shape)} and {tuple(values.shape)}")


def quantize_kv(keys: torch.Tensor, values: torch.Tensor, config: KVQuantConfig) -> QuantizedKV:
    """Quantize one layer's cache: the oldest whole groups, keeping the newest tokens exact.

    Parameters
    ----------
    keys, values : torch.Tensor of shape (batch, heads, tokens, head_dim)
        Floating, finite (keys after RoPE, as a cache holds them).
    config : KVQuantConfig

    Returns
    -------
    QuantizedKV
        ``config.n_quantized(tokens)`` tokens quantized, the rest exact.

    Raises
    ------
    TypeError
        Not torch tensors, or not floating.
    ValueError
        Shapes differ or are not 4-D, NaN/inf, ``channel_group`` not dividing
        ``head_dim``.

    Example
    -------
    >>> import torch
    >>> from companion.compression import KVQuantConfig, quantize_kv
    >>> k, v = torch.randn(1, 2, 70, 16), torch.randn(1, 2, 70, 16)
    >>> q = quantize_kv(k, v, KVQuantConfig(key_bits=2, value_bits=2, token_group=32, residual=4))
    >>> q.keys_tail.shape[2]            # 64 tokens in two key groups, 6 waiting
    6
    >>> q.nbytes < k.numel() * 4 * 2 // 4
    True
    """
    _check_kv(keys, values)
    if not isinstance(config, KVQuantConfig):
        raise TypeError(f"config must be a KVQuantConfig; got {type(config).__name__}")
    n_q = config.n_quantized(keys.shape[2])
    if n_q == 0:
        return QuantizedKV(None, None, keys, values, config)
    keys_q = _quantize_side(keys[:, :, :n_q], config.key_bits, config.key_mode, config)
    values_q = _quantize_side(values[:, :, :n_q], config.value_bits, config.value_mode, config)
    return QuantizedKV(keys_q, values_q, keys[:, :, n_q:], values[:, :, n_q:], config)


class KVQuantTransform:
    """A ``kv_transform`` for :func:`companion.nn.decoding.prefill` that quantizes every layer's cache.

    Every query then attends over keys and values read back from the quantized
    store (with ``residual=0`` and a sequence length that is a multiple of
    ``token_group``, every position is quantized). The bytes each layer's cache
    would hold are kept in :attr:`nbytes` (by layer; split into
    :attr:`key_nbytes` and :attr:`value_nbytes`) next to :attr:`full_nbytes`
    (the same cache in its original float dtype).

    Parameters
    ----------
    config : KVQuantConfig

    Example
    -------
    >>> import torch
    >>> from companion.compression import KVQuantConfig, KVQuantTransform
    >>> t = KVQuantTransform(KVQuantConfig(key_bits=4, value_bits=2))
    >>> k, v = t(0, torch.randn(2, 4, 64, 32), torch.randn(2, 4, 64, 32))
    >>> t.compression_ratio()   # 32-bit floats vs (4 + 1) bits per key and (2 + 1) per value
    8.0
    """

    def __init__(self, config: KVQuantConfig):
        if not isinstance(config, KVQuantConfig):
            raise TypeError(f"config must be a KVQuantConfig; got {type(config).__name__}")
        self.config = config
        self.nbytes: dict[int, int] = {}
        self.key_nbytes: dict[int, int] = {}
        self.value_nbytes: dict[int, int] = {}
        self.full_nbytes: dict[int, int] = {}

    def __call__(self, layer: int, keys: torch.Tensor, values: torch.Tensor):
        q = quantize_kv(keys, values, self.config)
        self.key_nbytes[layer], self.value_nbytes[layer] = q.key_nbytes, q.value_nbytes
        self.nbytes[layer] = q.nbytes
        self.full_nbytes[layer] = _side_nbytes(keys) + _side_nbytes(values)
        return q.dequantize()

    def compression_ratio(self) -> float:
        """Full-precision bytes over quantized bytes, summed over the layers seen."""
        return sum(self.full_nbytes.values()) / max(1, sum(self.nbytes.values()))


class QuantizedKVStore(KVStore):
    """A decoding cache that quantizes tokens in whole groups once they leave the exact window.

    After :meth:`load` (the prompt) and after every decoded token
    (:meth:`end_step`), the oldest waiting tokens are quantized whenever at
    least ``residual + g`` tokens wait, ``g`` being
    :attr:`KVQuantConfig.flush_granularity`; so the exact tail always holds
    ``residual`` to ``residual + g - 1`` tokens (the key-group buffering of KIVI).

    Attention reads a dequantized mirror of the quantized segments, built once
    per segment; it is a simulation aid (a deployed kernel reads the packed
    codes directly) and is not counted in :meth:`bytes_held`, which reports the
    packed codes, scales, zeros and the exact tail.

    Parameters
    ----------
    config : KVQuantConfig

    Example
    -------
    >>> import torch
    >>> from companion.compression import KVQuantConfig, QuantizedKVStore
    >>> store = QuantizedKVStore(KVQuantConfig(key_bits=2, value_bits=2, token_group=8, residual=4))
    >>> store.reset(1)
    >>> store.load(0, torch.randn(1, 2, 10, 4), torch.randn(1, 2, 10, 4), None)
    >>> store.n_quantized(0), store.tail_length(0)
    (0, 10)
    >>> for _ in range(2):
    ...     store.append(0, torch.randn(1, 2, 1, 4), torch.randn(1, 2, 1, 4)); store.end_step()
    >>> store.n_quantized(0), store.tail_length(0)
    (8, 4)
    """

    def __init__(self, config: KVQuantConfig):
        if not isinstance(config, KVQuantConfig):
            raise TypeError(f"config must be a KVQuantConfig; got {type(config).__name__}")
        self.config = config

    def reset(self, n_layers: int) -> None:
        super().reset(n_layers)
        self._segments: list = [[] for _ in range(self.n_layers)]  # QuantizedKV with empty tails
        self._mirror_k: list = [None] * self.n_layers
        self._mirror_v: list = [None] * self.n_layers

    def _flush(self, layer: int) -> None:
        """Quantize the oldest whole groups of the exact tail of ``layer``."""
        tail_k, tail_v = self.keys[layer], self.values[layer]
        if tail_k is None:
            return
        n_q = self.config.n_quantized(tail_k.shape[2])
        if n_q == 0:
            return
        segment = quantize_kv(tail_k[:, :, :n_q], tail_v[:, :, :n_q], dataclasses.replace(self.config, residual=0))
        self._segments[layer].append(segment)
        k_hat, v_hat = segment.dequantize()
        if self._mirror_k[layer] is None:
            self._mirror_k[layer], self._mirror_v[layer] = k_hat, v_hat
        else:
            self._mirror_k[layer] = torch.cat([self._mirror_k[layer], k_hat], dim=2)
            self._mirror_v[layer] = torch.cat([self._mirror_v[layer], v_hat], dim=2)
        self.keys[layer], self.values[layer] = tail_k[:, :, n_q:], tail_v[:, :, n_q:]

    def load(self, layer: int, keys, values, attention) -> None:
        _check_kv(keys, values)
        super().load(layer, keys, values, attention)
        self._flush(layer)

    def entries(self, layer: int):
        tail_k, tail_v = self.keys[layer], self.values[layer]
        if self._mirror_k[layer] is None:
            return tail_k, tail_v, None
        k = torch.cat([self._mirror_k[layer].to(tail_k.dtype), tail_k], dim=2)
        v = torch.cat([self._mirror_v[layer].to(tail_v.dtype), tail_v], dim=2)
        return k, v, None

    def end_step(self) -> None:
        for layer in range(self.n_layers):
            self._flush(layer)

    def n_quantized(self, layer: int) -> int:
        """Tokens of ``layer`` held in quantized form."""
        return 0 if self._mirror_k[layer] is None else int(self._mirror_k[layer].shape[2])

    def tail_length(self, layer: int) -> int:
        """Tokens of ``layer`` waiting in full precision."""
        return 0 if self.keys[layer] is None else int(self.keys[layer].shape[2])

    def n_entries(self) -> int:
        heads = next((k.shape[1] for k in self.keys if k is not None), 0)
        return int(sum((self.n_quantized(i) + self.tail_length(i)) * heads for i in range(self.n_layers)))

    def bytes_held(self) -> int:
        tails = sum(_side_nbytes(t) for t in (*self.keys, *self.values) if t is not None)
        return int(tails + sum(s.nbytes for segs in self._segments for s in segs))

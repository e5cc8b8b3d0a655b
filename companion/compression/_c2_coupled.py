"""Coupled quantization of KV channels and the entropy estimates behind it (chapter C2).

Quantizing every channel on its own spends the same bits on each channel
whatever its neighbours say. Channels of a key are not independent, though:
the joint entropy of a group of channels is below the sum of their marginal
entropies, so a code for the *group* can be shorter than a code per channel.
Coupled quantization ("KV Cache is 1 Bit Per Channel: Efficient Large Language
Model Inference with Coupled Quantization") cuts the ``head_dim`` channels into
groups of ``c`` adjacent channels and learns, per group, a codebook of
``2 ** (c * b)`` centroids with k-means; a token stores one ``c * b``-bit index
per group, that is ``b`` bits per channel on average. The paper also weighs the
k-means objective with Fisher information; here the plain (unweighted)
k-means of :func:`companion.compression.kmeans` is used.

Public names are re-exported by :mod:`companion.compression.kv_quantization`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np
import torch

from .._validation import check_array, check_int
from ..backend import to_kind, to_numpy
from ..kernels.assign import nearest_centroid
from ..kernels.bitpack import packed_nbytes
from .codebooks import kmeans

__all__ = [
    "CoupledCodebook",
    "fit_coupled_codebook",
    "coupled_encode",
    "coupled_decode",
    "CoupledKeyTransform",
    "channel_group_entropy",
]

_F16_MAX = float(np.finfo(np.float16).max)


@dataclasses.dataclass(frozen=True)
class CoupledCodebook:
    """One k-means codebook per group of ``channels`` adjacent channels.

    Attributes
    ----------
    centroids : numpy.ndarray of shape (n_groups, 2 ** (channels * bits_per_channel), channels), float16
        Stored in float16 (counted in :attr:`nbytes`).
    channels : int
        Adjacent channels coupled in one group (``c``).
    bits_per_channel : int
        Average bits per channel (``b``); each group index has ``c * b <= 8`` bits.
    """

    centroids: np.ndarray
    channels: int
    bits_per_channel: int

    @property
    def n_groups(self) -> int:
        """Channel groups, ``dim / channels``."""
        return int(self.centroids.shape[0])

    @property
    def dim(self) -> int:
        """Channels covered, ``n_groups * channels``."""
        return self.n_groups * self.channels

    @property
    def code_bits(self) -> int:
        """Bits of one group index, ``channels * bits_per_channel``."""
        return self.channels * self.bits_per_channel

    @property
    def nbytes(self) -> int:
        """Bytes of the centroid tables (a fixed cost, shared by every token)."""
        return int(self.centroids.nbytes)

    def code_nbytes(self, n_vectors: int) -> int:
        """Bytes of the bit-packed indices of ``n_vectors`` vectors."""
        return packed_nbytes(int(n_vectors) * self.n_groups, self.code_bits)


def _check_points(x: Any, name: str = "x") -> str:
    return check_array(x, name, ndim=2, dtype_kind="f")


def fit_coupled_codebook(
    x: Any,
    channels: int,
    bits_per_channel: int = 1,
    *,
    iters: int = 25,
    rng: Any = None,
    backend: Optional[str] = None,
) -> CoupledCodebook:
    """Learn one codebook of ``2 ** (channels * bits_per_channel)`` centroids per channel group.

    Parameters
    ----------
    x : array of shape (n, dim)
        Calibration vectors (e.g. one head's keys, one row per token);
        floating NumPy array or torch tensor, finite.
    channels : int
        Adjacent channels per group; must divide ``dim``.
    bits_per_channel : int, default 1
        Bits per channel; ``channels * bits_per_channel`` must be at most 8 (one
        byte per index) and ``n`` at least the codebook size.
    iters : int, default 25
        Lloyd iterations of each k-means.
    rng : numpy.random.Generator or int, optional
        Seeds the k-means++ draws.
    backend : {None, "auto", "numpy", "numba", "cupy"}, optional
        Kernel of the assignment step.

    Returns
    -------
    CoupledCodebook

    Raises
    ------
    TypeError
        ``x`` not a floating 2-D array, non-integer options.
    ValueError
        ``channels`` not dividing ``dim``, ``channels * bits_per_channel > 8``,
        fewer points than centroids, NaN/inf, values beyond float16 range.

    References
    ----------
    "KV Cache is 1 Bit Per Channel: Efficient Large Language Model Inference with
    Coupled Quantization".

    Example
    -------
    >>> import numpy as np
    >>> from companion.compression import fit_coupled_codebook, coupled_encode, coupled_decode
    >>> x = np.random.default_rng(0).standard_normal((512, 8)).astype(np.float32)
    >>> book = fit_coupled_codebook(x, 4, 1, rng=0)
    >>> book.centroids.shape, book.code_nbytes(512)     # 2 groups of 4 channels, 16 centroids each
    ((2, 16, 4), 512)
    >>> coupled_decode(coupled_encode(x, book), book).shape
    (512, 8)
    """
    _check_points(x)
    channels = check_int(channels, "channels", minimum=1)
    bits_per_channel = check_int(bits_per_channel, "bits_per_channel", minimum=1, maximum=8)
    n, dim = x.shape
    if dim % channels:
        raise ValueError(f"channels must divide the vector width {dim}; got channels={channels}")
    if channels * bits_per_channel > 8:
        raise ValueError(
            f"channels * bits_per_channel must be <= 8 (one byte per group index); got {channels} * {bits_per_channel}"
        )
    k = 1 << (channels * bits_per_channel)
    if n < k:
        raise ValueError(f"x must hold at least {k} vectors to fit {k} centroids; got {n}")
    pts = np.asarray(to_numpy(x), dtype=np.float32)
    if np.abs(pts).max() > _F16_MAX:
        raise ValueError(f"values of magnitude above {_F16_MAX:.0f} do not fit float16 centroids")
    gen = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    tables = []
    for g in range(dim // channels):
        block = np.ascontiguousarray(pts[:, g * channels:(g + 1) * channels])  # (n, channels)
        centroids, _ = kmeans(block, k, iters=iters, rng=gen, backend=backend)
        tables.append(np.asarray(to_numpy(centroids), dtype=np.float32))
    return CoupledCodebook(np.stack(tables).astype(np.float16), channels, bits_per_channel)


def _check_book(book: Any) -> None:
    if not isinstance(book, CoupledCodebook):
        raise TypeError(f"codebook must be a CoupledCodebook (from fit_coupled_codebook); got {type(book).__name__}")


def coupled_encode(x: Any, codebook: CoupledCodebook, *, backend: Optional[str] = None) -> Any:
    """Index of the nearest centroid of every channel group of every vector.

    Parameters
    ----------
    x : array of shape (n, dim)
        Floating NumPy array or torch tensor, ``dim == codebook.dim``.
    codebook : CoupledCodebook
    backend : {None, "auto", "numpy", "numba", "cupy"}, optional
        Kernel of :func:`companion.kernels.nearest_centroid`.

    Returns
    -------
    array of shape (n, n_groups), uint8
        Same kind as ``x``.

    Example
    -------
    >>> import numpy as np
    >>> from companion.compression import CoupledCodebook, coupled_encode
    >>> book = CoupledCodebook(np.array([[[0.0, 0.0], [1.0, 1.0]]], dtype=np.float16), 2, 1)  # 2 centroids
    >>> coupled_encode(np.array([[0.9, 0.8], [0.1, -0.2]]), book).ravel().tolist()
    [1, 0]
    """
    kind = _check_points(x)
    _check_book(codebook)
    if x.shape[1] != codebook.dim:
        raise ValueError(f"x must have {codebook.dim} columns for this codebook; got shape {tuple(x.shape)}")
    pts = np.asarray(to_numpy(x), dtype=np.float32)
    c = codebook.channels
    codes = np.empty((pts.shape[0], codebook.n_groups), dtype=np.uint8)  # (n, n_groups)
    for g in range(codebook.n_groups):
        block = np.ascontiguousarray(pts[:, g * c:(g + 1) * c])
        labels, _ = nearest_centroid(block, codebook.centroids[g].astype(np.float32), backend=backend)
        codes[:, g] = to_numpy(labels)
    return to_kind(codes, kind, like=x)


def coupled_decode(codes: Any, codebook: CoupledCodebook) -> Any:
    """Vectors ``(n, dim)`` float32 rebuilt from their group indices (a table lookup).

    Parameters
    ----------
    codes : array of shape (n, n_groups)
        Integer indices from :func:`coupled_encode` (NumPy or torch).
    codebook : CoupledCodebook

    Returns
    -------
    array of shape (n, dim), float32
        Same kind as ``codes``.

    Example
    -------
    >>> import numpy as np
    >>> from companion.compression import CoupledCodebook, coupled_decode
    >>> book = CoupledCodebook(np.array([[[0.0, 0.0], [1.0, 2.0]]], dtype=np.float16), 2, 1)
    >>> coupled_decode(np.array([[1], [0]]), book).tolist()
    [[1.0, 2.0], [0.0, 0.0]]
    """
    kind = check_array(codes, "codes", ndim=2, dtype_kind="iu")
    _check_book(codebook)
    if codes.shape[1] != codebook.n_groups:
        raise ValueError(f"codes must have {codebook.n_groups} columns; got shape {tuple(codes.shape)}")
    idx = np.asarray(to_numpy(codes), dtype=np.int64)
    k = codebook.centroids.shape[1]
    if idx.size and (idx.min() < 0 or idx.max() >= k):
        raise ValueError(f"codes must lie in 0 .. {k - 1}")
    tables = codebook.centroids.astype(np.float32)  # (n_groups, k, channels)
    out = tables[np.arange(codebook.n_groups)[None, :], idx]  # (n, n_groups, channels)
    return to_kind(out.reshape(idx.shape[0], codebook.dim), kind, like=codes)


class CoupledKeyTransform:
    """A ``kv_transform`` for :func:`companion.nn.decoding.prefill`: keys through coupled codebooks.

    ``codebooks[layer][head]`` is the :class:`CoupledCodebook` of that head's
    keys. Values are quantized as ``value_config`` says (its key settings are
    ignored) or kept exact. :attr:`nbytes` records per layer the packed key
    indices, the centroid tables and the values' bytes (:attr:`key_nbytes`:
    the first two only).

    Parameters
    ----------
    codebooks : list of list of CoupledCodebook
        One list (over heads) per layer.
    value_config : KVQuantConfig, optional
        How values are stored; ``None`` keeps them exact.

    Example
    -------
    >>> import torch
    >>> from companion.compression import CoupledKeyTransform
    >>> keys = [torch.randn(4, 2, 64, 8)]                       # one layer, 2 heads
    >>> t = CoupledKeyTransform.fit(keys, channels=4, bits_per_channel=1, rng=0)
    >>> k_hat, v = t(0, keys[0], torch.zeros(4, 2, 64, 8))
    >>> tuple(k_hat.shape), t.nbytes[0] > 0
    ((4, 2, 64, 8), True)
    """

    def __init__(self, codebooks, *, value_config=None):
        if not codebooks or not all(isinstance(b, CoupledCodebook) for layer in codebooks for b in layer):
            raise TypeError("codebooks must be a non-empty list (layers) of lists (heads) of CoupledCodebook")
        self.codebooks = codebooks
        self.value_config = None if value_config is None else dataclasses.replace(value_config, key_bits=None)
        self.nbytes: dict[int, int] = {}
        self.key_nbytes: dict[int, int] = {}
        self.full_nbytes: dict[int, int] = {}

    @classmethod
    def fit(cls, keys, channels: int, bits_per_channel: int = 1, *, iters: int = 25, rng: Any = None,
            max_points: Optional[int] = None, backend: Optional[str] = None, value_config=None):
        """Fit one codebook per layer and head on calibration keys.

        Parameters
        ----------
        keys : list of torch.Tensor
            One ``(batch, heads, tokens, head_dim)`` tensor per layer.
        channels, bits_per_channel, iters, backend
            As in :func:`fit_coupled_codebook`.
        rng : numpy.random.Generator or int, optional
            Seeds the subsampling and the k-means++ draws.
        max_points : int, optional
            Fit on a random subset of at most this many tokens per head.
        value_config : KVQuantConfig, optional
            Passed to the constructor.
        """
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        books = []
        for k in keys:
            if not isinstance(k, torch.Tensor) or k.ndim != 4:
                raise TypeError("keys must be a list of (batch, heads, tokens, head_dim) torch tensors")
            layer_books = []
            for h in range(k.shape[1]):
                pts = k[:, h].reshape(-1, k.shape[-1]).detach().cpu().numpy().astype(np.float32)  # (B*T, Dh)
                if max_points is not None and pts.shape[0] > max_points:
                    pts = pts[gen.choice(pts.shape[0], max_points, replace=False)]
                layer_books.append(fit_coupled_codebook(pts, channels, bits_per_channel, iters=iters, rng=gen,
                                                        backend=backend))
            books.append(layer_books)
        return cls(books, value_config=value_config)

    def __call__(self, layer: int, keys: torch.Tensor, values: torch.Tensor):
        books = self.codebooks[layer]
        if keys.shape[1] != len(books):
            raise ValueError(f"layer {layer} has codebooks for {len(books)} heads; keys have {keys.shape[1]}")
        batch, heads, tokens, dim = keys.shape
        out = torch.empty_like(keys)
        key_bytes = 0
        for h, book in enumerate(books):
            pts = keys[:, h].reshape(-1, dim).detach().cpu().numpy().astype(np.float32)  # (B*T, Dh)
            rebuilt = coupled_decode(coupled_encode(pts, book), book)
            out[:, h] = torch.from_numpy(rebuilt).reshape(batch, tokens, dim).to(keys.dtype)
            key_bytes += book.code_nbytes(pts.shape[0]) + book.nbytes
        value_bytes = int(values.numel() * values.element_size())
        if self.value_config is not None:
            from .kv_quantization import quantize_kv  # (that module imports this one)

            q = quantize_kv(keys, values, self.value_config)  # keys stay exact there
            _, values = q.dequantize()
            value_bytes = q.nbytes - int(keys.numel() * keys.element_size())
        self.key_nbytes[layer] = key_bytes
        self.nbytes[layer] = key_bytes + value_bytes
        self.full_nbytes[layer] = 2 * int(keys.numel() * keys.element_size())
        return out, values

    def compression_ratio(self) -> float:
        """Full-precision bytes over held bytes, summed over the layers seen."""
        return sum(self.full_nbytes.values()) / max(1, sum(self.nbytes.values()))


def channel_group_entropy(x: Any, channels: int, *, levels: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Joint entropy of each group of adjacent channels and the sum of their marginal entropies.

    Every channel is cut into ``levels`` equal-frequency bins (its own
    quantiles), so each marginal entropy is close to ``log2(levels)`` bits and
    the comparison measures dependence, not scale. The joint entropy of a group
    is the plug-in entropy of the tuples of bin indices. By subadditivity the
    joint entropy never exceeds the sum of the marginals; the gap is the
    multi-information of the group, the bits a coupled code can save. The
    plug-in estimate is biased low when ``n`` is not much larger than
    ``levels ** channels``: compare with channels shuffled independently.

    Parameters
    ----------
    x : array of shape (n, dim)
        Floating NumPy array or torch tensor, finite, ``n >= 2``.
    channels : int
        Channels per group; must divide ``dim``.
    levels : int, default 2
        Bins per channel, ``levels ** channels <= 2 ** 24``.

    Returns
    -------
    joint : numpy.ndarray of shape (dim // channels,)
        Joint entropy of each group, bits.
    marginal_sum : numpy.ndarray of shape (dim // channels,)
        Sum of the group's marginal entropies, bits.

    Example
    -------
    >>> import numpy as np
    >>> from companion.compression import channel_group_entropy
    >>> a = np.random.default_rng(0).standard_normal((4000, 1))
    >>> joint, marg = channel_group_entropy(np.hstack([a, a + 0.01]), 2)   # two near-copies
    >>> round(float(marg[0]), 2), bool(joint[0] < 0.6 * marg[0])
    (2.0, True)
    """
    _check_points(x)
    channels = check_int(channels, "channels", minimum=1)
    levels = check_int(levels, "levels", minimum=2)
    n, dim = x.shape
    if n < 2:
        raise ValueError(f"x must hold at least 2 vectors; got {n}")
    if dim % channels:
        raise ValueError(f"channels must divide the vector width {dim}; got channels={channels}")
    if levels ** channels > 2 ** 24:
        raise ValueError(f"levels ** channels must be <= 2**24 joint cells; got {levels}**{channels}")
    pts = np.asarray(to_numpy(x), dtype=np.float64)
    inner = np.arange(1, levels) / levels
    edges = np.quantile(pts, inner, axis=0)  # (levels - 1, dim)
    bins = np.empty(pts.shape, dtype=np.int64)  # (n, dim) bin index of each value
    for j in range(dim):
        bins[:, j] = np.searchsorted(edges[:, j], pts[:, j], side="right")

    def entropy(ids: np.ndarray) -> float:
        counts = np.bincount(ids)
        p = counts[counts > 0] / ids.shape[0]
        return float(-(p * np.log2(p)).sum())

    groups = dim // channels
    joint = np.empty(groups)
    marginal = np.empty(groups)
    place = levels ** np.arange(channels)  # mixed-radix weights
    for g in range(groups):
        block = bins[:, g * channels:(g + 1) * channels]
        joint[g] = entropy(block @ place)
        marginal[g] = sum(entropy(block[:, i]) for i in range(channels))
    return joint, marginal

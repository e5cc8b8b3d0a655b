"""Torch modules of chapter C3: codebook-compressed linear layers and straight-through VQ."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .._validation import check_int
from ._c3_kmeans import as_generator, kmeans

__all__ = ["CodebookLinear", "compress_linear_layers", "bits_per_weight", "StraightThroughVQ"]


class CodebookLinear(nn.Module):
    """A linear layer whose weight matrix is stored as codebook indices plus a codebook.

    Each row of the ``(out, in)`` weight is cut into groups of ``group_size``
    consecutive weights; every group is replaced by the index of a codeword of
    one shared ``(K, group_size)`` codebook learned by k-means over all groups.
    The layer stores ``out * in / group_size`` indices of ``log2(K)`` bits and
    ``K * group_size`` float32 codebook entries; the bias stays in float32.
    The codebook is an ``nn.Parameter``: fine-tuning it by gradient descent
    (indices fixed) recovers part of the accuracy lost to clustering.

    Parameters
    ----------
    codes : torch.Tensor of shape (out, in / group_size), integer
        Index of the codeword of each group.
    codebook : torch.Tensor of shape (K, group_size)
        Codewords.
    bias : torch.Tensor of shape (out,), optional
        Bias, or ``None``.

    References
    ----------
    Yvinec et al., "Network Memory Footprint Compression Through Jointly Learnable
    Codebooks and Mappings", 2023.

    Examples
    --------
    >>> import torch
    >>> from companion.compression import CodebookLinear
    >>> torch.manual_seed(0) and None
    >>> layer = CodebookLinear.from_linear(torch.nn.Linear(8, 4), n_centroids=4, group_size=2, rng=0)
    >>> layer(torch.zeros(3, 8)).shape, layer.codes.shape, tuple(layer.codebook.shape)
    (torch.Size([3, 4]), torch.Size([4, 4]), (4, 2))
    >>> round(layer.bits_per_weight(), 3)  # (16 codes * 2 bits + 8 entries * 32 bits) / 32 weights
    9.0
    """

    def __init__(self, codes: torch.Tensor, codebook: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        if not isinstance(codes, torch.Tensor) or codes.dtype.is_floating_point or codes.ndim != 2:
            raise TypeError(f"codes must be a 2-D integer torch tensor; got {type(codes).__name__} {getattr(codes, 'dtype', '')}")
        if not isinstance(codebook, torch.Tensor) or not codebook.dtype.is_floating_point or codebook.ndim != 2:
            raise TypeError("codebook must be a 2-D floating torch tensor of shape (K, group_size)")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= codebook.shape[0]):
            raise ValueError(f"codes must lie in [0, {codebook.shape[0]}); got [{int(codes.min())}, {int(codes.max())}]")
        self.register_buffer("codes", codes.to(torch.int64))
        self.codebook = nn.Parameter(codebook.detach().clone())
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())
        self.group_size = int(codebook.shape[1])
        self.out_features = int(codes.shape[0])
        self.in_features = int(codes.shape[1]) * self.group_size

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        n_centroids: int,
        *,
        group_size: int = 1,
        iters: int = 25,
        rng: Any = None,
        backend: str | None = None,
    ) -> "CodebookLinear":
        """Cluster the weights of ``linear`` (k-means over groups) into a codebook layer.

        Parameters
        ----------
        linear : torch.nn.Linear
            The float layer to compress (left unchanged).
        n_centroids : int
            Codebook size ``K``; at most the number of groups.
        group_size : int, default 1
            Weights per codeword (1: scalar codebook; must divide ``in_features``).
        iters : int, default 25
            Lloyd iterations.
        rng : numpy.random.Generator or int, optional
            Seeding draws (``None`` means seed 0).
        backend : {None, "auto", "numpy", "numba", "cupy"}, optional
            Assignment kernel.

        Returns
        -------
        CodebookLinear
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be a torch.nn.Linear; got {type(linear).__name__}")
        group_size = check_int(group_size, "group_size", minimum=1)
        out_f, in_f = linear.weight.shape
        if in_f % group_size:
            raise ValueError(f"group_size = {group_size} must divide in_features = {in_f}")
        w = linear.weight.detach().cpu().to(torch.float32).numpy().reshape(-1, group_size)  # (groups, group_size)
        centroids, labels = kmeans(w, n_centroids, iters=iters, rng=rng, backend=backend)
        codes = torch.from_numpy(np.asarray(labels).reshape(out_f, in_f // group_size))
        layer = cls(codes, torch.from_numpy(np.asarray(centroids)), linear.bias)
        return layer.to(linear.weight.device)

    @property
    def n_centroids(self) -> int:
        """Codebook size ``K``."""
        return int(self.codebook.shape[0])

    @property
    def weight(self) -> torch.Tensor:
        """The decoded ``(out, in)`` weight matrix (differentiable in the codebook)."""
        return self.codebook[self.codes].reshape(self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def index_bits(self) -> int:
        """Bits of the stored indices: ``ceil(log2 K)`` per group (at least 1)."""
        return self.codes.numel() * max(1, math.ceil(math.log2(self.n_centroids)))

    def codebook_bits(self, codebook_bits_per_entry: int = 32) -> int:
        """Bits of the codebook (float32 entries by default)."""
        return self.codebook.numel() * codebook_bits_per_entry

    def bits_per_weight(self, codebook_bits_per_entry: int = 32) -> float:
        """``(index bits + codebook bits) / (out * in)``; the bias is not counted."""
        return (self.index_bits() + self.codebook_bits(codebook_bits_per_entry)) / (self.out_features * self.in_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"n_centroids={self.n_centroids}, group_size={self.group_size}, bias={self.bias is not None}"
        )


def compress_linear_layers(
    model: nn.Module,
    n_centroids: int,
    *,
    group_size: int = 1,
    iters: int = 25,
    rng: Any = None,
    backend: str | None = None,
) -> nn.Module:
    """A deep copy of ``model`` with every ``nn.Linear`` replaced by a :class:`CodebookLinear`.

    Each layer gets its own codebook; ``n_centroids`` is capped at the layer's
    number of weight groups.

    Parameters
    ----------
    model : torch.nn.Module
        Model to compress (unchanged).
    n_centroids : int
        Codebook size ``K`` per layer.
    group_size : int, default 1
        Weights per codeword; must divide every layer's ``in_features``.
    iters : int, default 25
        Lloyd iterations.
    rng : numpy.random.Generator or int, optional
        Seeding draws, shared across layers in module order (``None``: seed 0).
    backend : {None, "auto", "numpy", "numba", "cupy"}, optional
        Assignment kernel.

    Returns
    -------
    torch.nn.Module
        The compressed copy.

    Examples
    --------
    >>> import torch
    >>> from companion.compression import compress_linear_layers, bits_per_weight
    >>> torch.manual_seed(0) and None
    >>> mlp = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    >>> small = compress_linear_layers(mlp, 16, rng=0)
    >>> type(small[0]).__name__, round(bits_per_weight(small), 2)
    ('CodebookLinear', 5.6)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    n_centroids = check_int(n_centroids, "n_centroids", minimum=1)
    gen = as_generator(rng)
    out = copy.deepcopy(model)

    def replace(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if isinstance(child, nn.Linear):
                groups = child.weight.numel() // group_size
                setattr(parent, name, CodebookLinear.from_linear(
                    child, min(n_centroids, groups), group_size=group_size, iters=iters, rng=gen, backend=backend))
            else:
                replace(child)

    if isinstance(out, nn.Linear):
        groups = out.weight.numel() // group_size
        return CodebookLinear.from_linear(out, min(n_centroids, groups), group_size=group_size, iters=iters, rng=gen, backend=backend)
    replace(out)
    return out


def bits_per_weight(model: nn.Module, codebook_bits_per_entry: int = 32) -> float:
    """Storage of all weight matrices of ``model`` in bits per weight, codebooks counted.

    :class:`CodebookLinear` layers count index and codebook bits; plain
    ``nn.Linear`` layers count 32 bits per weight; biases are not counted.

    Parameters
    ----------
    model : torch.nn.Module
        A model with linear layers.
    codebook_bits_per_entry : int, default 32
        Bits of one codebook entry.

    Returns
    -------
    float
    """
    bits = 0
    weights = 0
    for module in model.modules():
        if isinstance(module, CodebookLinear):
            bits += module.index_bits() + module.codebook_bits(codebook_bits_per_entry)
            weights += module.out_features * module.in_features
        elif isinstance(module, nn.Linear):
            bits += 32 * module.weight.numel()
            weights += module.weight.numel()
    if weights == 0:
        raise ValueError("model has no linear layers to count")
    return bits / weights


class StraightThroughVQ(nn.Module):
    """Vector quantization layer trained with the straight-through estimator.

    The forward pass replaces each input vector by its nearest codeword (lower
    index on ties); the backward pass copies the gradient of the output to the
    input unchanged, as if quantization were the identity. The codebook learns
    through the codebook loss ``|sg(z) - e|^2``; the encoder is pulled toward its
    codeword by ``beta |z - sg(e)|^2`` (``sg``: stop gradient).

    Parameters
    ----------
    n_codes : int
        Codebook size ``K``.
    dim : int
        Vector size.
    beta : float, default 0.25
        Weight of the commitment term.
    generator : torch.Generator, optional
        Source of the codebook's initial values (normal, std ``1/sqrt(dim)``).

    References
    ----------
    van den Oord, Vinyals and Kavukcuoglu, "Neural Discrete Representation Learning", 2017.

    Examples
    --------
    >>> import torch
    >>> from companion.compression import StraightThroughVQ
    >>> vq = StraightThroughVQ(8, 4, generator=torch.Generator().manual_seed(0))
    >>> z = torch.randn(5, 4, requires_grad=True)
    >>> zq, codes, loss = vq(z)
    >>> zq.shape, codes.shape, bool(torch.allclose(zq, vq.codebook[codes]))
    (torch.Size([5, 4]), torch.Size([5]), True)
    >>> (zq.sum() + loss).backward(); z.grad.shape
    torch.Size([5, 4])
    """

    def __init__(self, n_codes: int, dim: int, *, beta: float = 0.25, generator: torch.Generator | None = None):
        super().__init__()
        n_codes = check_int(n_codes, "n_codes", minimum=1)
        dim = check_int(dim, "dim", minimum=1)
        if not (isinstance(beta, (int, float)) and beta >= 0 and math.isfinite(beta)):
            raise ValueError(f"beta must be a finite number >= 0; got {beta!r}")
        self.beta = float(beta)
        init = torch.randn(n_codes, dim, generator=generator) / math.sqrt(dim)  # (K, dim)
        self.codebook = nn.Parameter(init)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantize ``z`` of shape (..., dim); returns ``(z_q, codes, loss)``.

        ``z_q`` has the values of the nearest codewords and the gradient of the
        identity; ``codes`` has shape ``z.shape[:-1]``; ``loss`` is the scalar
        codebook plus commitment loss.
        """
        if not isinstance(z, torch.Tensor) or not z.dtype.is_floating_point:
            raise TypeError(f"z must be a floating torch tensor; got {type(z).__name__}")
        if z.ndim < 1 or z.shape[-1] != self.codebook.shape[1]:
            raise ValueError(f"z must have last dimension {self.codebook.shape[1]}; got shape {tuple(z.shape)}")
        if z.numel() == 0:
            raise ValueError(f"z must not be empty; got shape {tuple(z.shape)}")
        if not bool(torch.isfinite(z).all()):
            raise ValueError("z must contain only finite values; found NaN or infinity")
        flat = z.reshape(-1, z.shape[-1])  # (N, dim)
        with torch.no_grad():
            dist = torch.cdist(flat.to(torch.float64), self.codebook.to(torch.float64),
                               compute_mode="donot_use_mm_for_euclid_dist")  # (N, K), exact differences
            codes = dist.argmin(dim=1)  # first minimum: ties -> lower index
        e = self.codebook[codes]  # (N, dim)
        loss = F.mse_loss(e, flat.detach()) + self.beta * F.mse_loss(flat, e.detach())
        zq = flat + (e - flat).detach()  # value of e, gradient of the identity
        return zq.reshape(z.shape), codes.reshape(z.shape[:-1]), loss

    def extra_repr(self) -> str:
        return f"n_codes={self.codebook.shape[0]}, dim={self.codebook.shape[1]}, beta={self.beta}"

"""Fourier features and shifted-basis embeddings for coordinates (chapter P3).

A small MLP fed raw coordinates ``x in [0, 1]^d`` learns smooth functions easily
and fine detail very slowly (its *spectral bias*). Mapping the coordinates
through many sinusoids first fixes that:

* :func:`fourier_features` - ``[cos(2 pi B x), sin(2 pi B x)]`` with a random
  Gaussian matrix ``B`` (Tancik et al. 2020, "Fourier Features Let Networks
  Learn High Frequency Functions in Low Dimensional Domains") or axis-aligned,
  log-spaced frequencies (``kind="axis"``); ``learnable=True`` gives a torch
  module whose ``B`` is trained (Li et al. 2021, "Learnable Fourier Features
  for Multi-Dimensional Spatial Positional Encoding");
* :func:`gaussian_basis_features` - Gaussian bumps at shifted centres on a grid
  per axis, a non-Fourier embedding that works as well (Zheng et al. 2021,
  "Rethinking Positional Encoding");
* :class:`CoordinateMLP` - the coordinate network, with ReLU, sine (SIREN) or
  SPDER activations ("SPDER: Semiperiodic Damping-Enabled Object
  Representation": ``sin(z) * sqrt(|z|)``); :func:`fit_coordinates` trains it.

The feature maps have three layers, as everywhere in ``companion``: the public
function validates and dispatches; ``_fourier_numpy`` / ``_gaussian_basis_numpy``
are the readable references; numba and CuPy kernels compute one output entry
per (point, frequency) without building the ``(n, F)`` phase matrix first.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import time
from typing import Any, Optional

import numba
import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .._validation import check_array, check_choice, check_float, check_int
from ..backend import dispatch, for_backend, to_kind, to_numpy, to_torch

__all__ = [
    "FOURIER_KINDS",
    "ACTIVATIONS",
    "fourier_frequencies",
    "fourier_features",
    "gaussian_basis_centers",
    "gaussian_basis_features",
    "spder_activation",
    "FourierFeatures",
    "CoordinateMLP",
    "FitHistory",
    "fit_coordinates",
    "predict_coordinates",
]

FOURIER_KINDS = ("gaussian", "axis")
ACTIVATIONS = ("relu", "sine", "spder")
TWO_PI = 2.0 * math.pi
# Gaussian bumps smaller than exp(-GAUSS_CUTOFF) ~ 1e-30 are stored as exact zeros: float32
# subnormals (below ~1e-38) would otherwise appear far from the centres and slow every
# matrix product that reads the features by an order of magnitude.
GAUSS_CUTOFF = 69.0


# ------------------------------------------------------------------ helpers
def _as_generator(rng: Any, name: str = "rng") -> np.random.Generator:
    """``None`` -> seed 0 (so repeated calls agree), an int -> that seed, a Generator as is."""
    if rng is None:
        return np.random.default_rng(0)
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, numbers.Integral) and not isinstance(rng, (bool, np.bool_)):
        if rng < 0:
            raise ValueError(f"{name} must be a non-negative seed; got {rng}")
        return np.random.default_rng(int(rng))
    raise TypeError(f"{name} must be None, an int seed or a numpy.random.Generator; got {type(rng).__name__}")


def _check_coords(coords: Any, name: str = "coords") -> str:
    kind = check_array(coords, name, ndim=2, dtype_kind="f")
    return kind


def _kernel_dtype(dtype) -> np.dtype:
    """float32 and float64 run natively; other floats (float16) compute in float32."""
    dt = np.dtype(dtype)
    return dt if dt in (np.dtype(np.float32), np.dtype(np.float64)) else np.dtype(np.float32)


def _torch_needs_torch_path(coords, name: str, backend: str) -> bool:
    """Torch input goes through torch ops when it needs autograd, has a dtype NumPy lacks,
    or sits on a GPU without CuPy (rather than taking a round trip through the host)."""
    needs_grad = coords.requires_grad and torch.is_grad_enabled()
    odd_dtype = coords.dtype not in (torch.float16, torch.float32, torch.float64)  # e.g. bfloat16
    gpu_without_cupy = coords.device.type == "cuda" and name != "cupy" and backend in (None, "auto")
    return needs_grad or odd_dtype or gpu_without_cupy


def _torch_generator(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int(seed))
    return g


# ------------------------------------------------------------ frequencies
def fourier_frequencies(
    in_features: int,
    n_frequencies: int,
    *,
    scale: float,
    kind: str = "gaussian",
    rng: Any = None,
) -> np.ndarray:
    """The frequency matrix ``B`` of a Fourier feature map.

    Parameters
    ----------
    in_features : int
        Coordinate dimension ``d`` (>= 1).
    n_frequencies : int
        Number of frequencies ``F`` (>= 1); the features have ``2 F`` columns.
    scale : float
        ``kind="gaussian"``: standard deviation of every entry of ``B`` (> 0),
        in cycles per unit of coordinate. ``kind="axis"``: the highest
        frequency is just below ``scale`` (>= 1).
    kind : {"gaussian", "axis"}, default "gaussian"
        ``"gaussian"``: ``B_ij ~ N(0, scale^2)``, random directions and
        magnitudes. ``"axis"``: each axis gets ``L = F / d`` frequencies
        ``scale ** (l / L)``, ``l = 0 .. L-1``, along that axis only (the
        "positional encoding" of Tancik et al.; ``F`` must be a multiple of ``d``).
    rng : None, int or numpy.random.Generator
        Source of the Gaussian draw. ``None`` means seed 0, so two calls with
        the same arguments give the same ``B``; an int is a seed. Unused for
        ``kind="axis"``.

    Returns
    -------
    numpy.ndarray of shape (n_frequencies, in_features), float64

    References
    ----------
    Tancik et al., "Fourier Features Let Networks Learn High Frequency Functions
    in Low Dimensional Domains", NeurIPS 2020.

    Example
    -------
    >>> from companion.positional import fourier_frequencies
    >>> fourier_frequencies(2, 4, scale=16.0, kind="axis").tolist()
    [[1.0, 0.0], [4.0, 0.0], [0.0, 1.0], [0.0, 4.0]]
    >>> bool((fourier_frequencies(2, 8, scale=3.0, rng=7) == fourier_frequencies(2, 8, scale=3.0, rng=7)).all())
    True
    """
    d = check_int(in_features, "in_features", minimum=1)
    n_freq = check_int(n_frequencies, "n_frequencies", minimum=1)
    kind = check_choice(kind, "kind", FOURIER_KINDS)
    if kind == "gaussian":
        scale = check_float(scale, "scale", minimum=0.0, strict_min=True)
        return _as_generator(rng).normal(0.0, scale, size=(n_freq, d))  # (F, d)
    scale = check_float(scale, "scale", minimum=1.0)
    if n_freq % d:
        raise ValueError(f"kind='axis' needs n_frequencies to be a multiple of in_features = {d}; got {n_freq}")
    per_axis = n_freq // d
    mags = scale ** (np.arange(per_axis, dtype=np.float64) / per_axis)  # (L,)
    B = np.zeros((n_freq, d))
    for axis in range(d):
        B[axis * per_axis:(axis + 1) * per_axis, axis] = mags
    return B


# --------------------------------------------------------- NumPy reference
def _fourier_numpy(coords: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Reference: ``[cos(2 pi x B^T), sin(2 pi x B^T)]`` for coords (n, d), B (F, d)."""
    phase = TWO_PI * (np.asarray(coords, dtype=np.float64) @ B.T)  # (n, F)
    out = np.concatenate([np.cos(phase), np.sin(phase)], axis=1)  # (n, 2F)
    return out.astype(_kernel_dtype(coords.dtype), copy=False)


# ------------------------------------------------------------ numba kernel
@numba.njit(cache=True, parallel=True)
def _fourier_rows_numba(coords, B, out):  # pragma: no cover - jitted
    n, d = coords.shape
    n_freq = B.shape[0]
    for i in numba.prange(n):  # rows in parallel; phases in float64 so large scales stay accurate
        for f in range(n_freq):
            acc = 0.0
            for k in range(d):
                acc += coords[i, k] * B[f, k]
            phase = 6.283185307179586 * acc
            out[i, f] = math.cos(phase)
            out[i, n_freq + f] = math.sin(phase)


def _fourier_numba(coords: np.ndarray, B: np.ndarray) -> np.ndarray:
    dtype = _kernel_dtype(coords.dtype)
    x = np.ascontiguousarray(coords, dtype=dtype)  # (n, d)
    out = np.empty((x.shape[0], 2 * B.shape[0]), dtype=dtype)  # (n, 2F)
    _fourier_rows_numba(x, np.ascontiguousarray(B, dtype=np.float64), out)
    return out


# ------------------------------------------------------------- CuPy kernel
_FOURIER_CUDA = r"""
extern "C" __global__ void fourier_features(
    const T* __restrict__ coords, const double* __restrict__ B,
    const long long n, const int d, const int n_freq, T* __restrict__ out)
{
    const long long total = n * (long long)n_freq;
    for (long long p = blockIdx.x * (long long)blockDim.x + threadIdx.x; p < total;
         p += (long long)blockDim.x * gridDim.x) {
        const long long i = p / n_freq;
        const int f = (int)(p - i * n_freq);
        double acc = 0.0;
        for (int k = 0; k < d; ++k) acc += (double)coords[i * d + k] * B[(long long)f * d + k];
        double s, c;
        sincos(6.283185307179586 * acc, &s, &c);
        out[i * 2LL * n_freq + f] = (T)c;
        out[i * 2LL * n_freq + n_freq + f] = (T)s;
    }
}
"""


@functools.lru_cache(maxsize=None)
def _cupy_kernel(source: str, name: str, ctype: str):
    import cupy

    return cupy.RawKernel(f"typedef {ctype} T;\n" + source, name)


def _launch_shape(total: int, threads: int = 256) -> tuple[tuple[int], tuple[int]]:
    return (max(1, min((total + threads - 1) // threads, 1 << 20)),), (threads,)


def _fourier_cupy(coords, B: np.ndarray):
    import cupy

    dtype = _kernel_dtype(coords.dtype)
    x = cupy.ascontiguousarray(coords, dtype=dtype)  # (n, d)
    n, d = x.shape
    n_freq = B.shape[0]
    out = cupy.empty((n, 2 * n_freq), dtype=dtype)  # (n, 2F)
    kernel = _cupy_kernel(_FOURIER_CUDA, "fourier_features", "float" if dtype == np.float32 else "double")
    blocks, threads = _launch_shape(n * n_freq)
    kernel(blocks, threads, (x, cupy.asarray(B, dtype=cupy.float64), np.int64(n), np.int32(d), np.int32(n_freq), out))
    return out


_FOURIER_KERNELS = {"numpy": _fourier_numpy, "numba": _fourier_numba, "cupy": _fourier_cupy}


def _fourier_torch(coords, B):
    """Differentiable torch version (autograd flows through ``coords`` and ``B``)."""
    phase = TWO_PI * (coords @ B.T)  # (n, F)
    return torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)  # (n, 2F)


# ----------------------------------------------------------- public entry
def fourier_features(
    coords: Any,
    *,
    n_frequencies: Optional[int] = None,
    scale: Optional[float] = None,
    learnable: bool = False,
    rng: Any = None,
    kind: str = "gaussian",
    frequencies: Any = None,
    backend: str = "auto",
):
    """Map coordinates to Fourier features ``[cos(2 pi B x), sin(2 pi B x)]``.

    Parameters
    ----------
    coords : array of shape (n, d)
        Floating coordinates (NumPy, CuPy or torch, CPU or CUDA); finite. The
        course scales them into ``[0, 1]``, so ``B`` is in cycles per image.
    n_frequencies : int
        Number of frequencies ``F`` (rows of ``B``); ignored when ``frequencies``
        is given.
    scale : float
        Bandwidth of ``B`` (see :func:`fourier_frequencies`): the standard
        deviation of the Gaussian entries, or the top of the log-spaced range
        for ``kind="axis"``. Ignored when ``frequencies`` is given.
    learnable : bool, default False
        ``True`` returns a :class:`FourierFeatures` torch module (``B`` a trainable
        parameter, initialised from the same draw) instead of features; ``coords``
        then only fixes ``d``. Call the module on coordinates to get features.
    rng : None, int or numpy.random.Generator
        Source of the Gaussian draw; ``None`` means seed 0, so the same call
        always gives the same ``B``.
    kind : {"gaussian", "axis"}, default "gaussian"
        Random Gaussian frequencies, or axis-aligned log-spaced ones.
    frequencies : array of shape (F, d), optional
        Use this ``B`` instead of drawing one (e.g. the matrix from
        :func:`fourier_frequencies`, to embed train and test points alike).
    backend : {"auto", "numpy", "numba", "cupy"}, default "auto"
        Which kernel computes the features; ``"auto"`` picks CuPy for GPU input
        and numba otherwise. Torch input that requires grad takes a
        differentiable torch path.

    Returns
    -------
    array of shape (n, 2 F), or :class:`FourierFeatures` when ``learnable``
        Columns ``0 .. F-1`` are cosines, ``F .. 2F-1`` sines, so columns ``j`` and
        ``F + j`` form a pair of unit norm. Same kind (and device) as ``coords``;
        float32 in, float32 out; float64 in, float64 out.

    References
    ----------
    Tancik et al., "Fourier Features Let Networks Learn High Frequency Functions
    in Low Dimensional Domains", NeurIPS 2020; Li et al., "Learnable Fourier
    Features for Multi-Dimensional Spatial Positional Encoding", NeurIPS 2021.

    Example
    -------
    >>> import numpy as np
    >>> from companion.positional import fourier_features
    >>> x = np.random.default_rng(0).random((5, 2)).astype(np.float32)
    >>> z = fourier_features(x, n_frequencies=8, scale=10.0, rng=0)
    >>> z.shape, z.dtype.name
    ((5, 16), 'float32')
    >>> bool(np.allclose(z[:, :8] ** 2 + z[:, 8:] ** 2, 1.0, atol=1e-6))
    True
    """
    kind_x = _check_coords(coords)
    d = int(coords.shape[1])
    if not isinstance(learnable, (bool, np.bool_)):
        raise TypeError(f"learnable must be a bool; got {type(learnable).__name__}")
    if frequencies is None:
        if n_frequencies is None or scale is None:
            raise ValueError("fourier_features needs n_frequencies and scale (or a frequencies matrix)")
        B = fourier_frequencies(d, n_frequencies, scale=scale, kind=kind, rng=rng)
    else:
        check_array(frequencies, "frequencies", ndim=2, dtype_kind="fiu")
        if int(frequencies.shape[1]) != d:
            raise ValueError(
                f"frequencies must have shape (F, d) with d = coords.shape[1] = {d}; got {tuple(frequencies.shape)}"
            )
        B = np.asarray(to_numpy(frequencies), dtype=np.float64)
    if learnable:
        return FourierFeatures(d, B.shape[0], frequencies=B, learnable=True)
    name, kernel = dispatch(_FOURIER_KERNELS, backend, coords)
    if kind_x == "torch" and _torch_needs_torch_path(coords, name, backend):
        return _fourier_torch(coords, torch.as_tensor(B, dtype=coords.dtype, device=coords.device))
    out = kernel(for_backend(coords, name), B)
    out = to_kind(out, kind_x, like=coords)
    if kind_x == "torch" and out.dtype != coords.dtype:
        out = out.to(coords.dtype)
    return out


# ------------------------------------------------------- Gaussian basis
def gaussian_basis_centers(n_centers: int, *, low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """``n_centers`` equally spaced centres covering ``[low, high]`` (pixel-centre style).

    Centre ``k`` sits at ``low + (k + 0.5) (high - low) / n_centers``, so the
    bumps tile the interval as pixels tile an image.

    Example
    -------
    >>> gaussian_basis_centers(4).tolist()
    [0.125, 0.375, 0.625, 0.875]
    """
    n_centers = check_int(n_centers, "n_centers", minimum=1)
    low = check_float(low, "low")
    high = check_float(high, "high")
    if not high > low:
        raise ValueError(f"high must be > low; got low={low}, high={high}")
    return low + (np.arange(n_centers, dtype=np.float64) + 0.5) * (high - low) / n_centers


def _gaussian_basis_numpy(coords: np.ndarray, centers: np.ndarray, sigma: float) -> np.ndarray:
    """Reference: ``exp(-(x_k - t_m)^2 / (2 sigma^2))`` for every axis k and centre m, axis-major."""
    x = np.asarray(coords, dtype=np.float64)  # (n, d)
    half_sq = 0.5 * ((x[:, :, None] - centers[None, None, :]) / sigma) ** 2  # (n, d, M)
    bumps = np.where(half_sq > GAUSS_CUTOFF, 0.0, np.exp(-half_sq))
    return bumps.reshape(x.shape[0], -1).astype(_kernel_dtype(coords.dtype), copy=False)  # (n, d*M)


@numba.njit(cache=True)
def _gaussian_basis_rows_numba(coords, centers, inv_sigma, cutoff, out):  # pragma: no cover - jitted
    n, d = coords.shape
    m = centers.shape[0]
    for i in range(n):
        for k in range(d):
            x = float(coords[i, k])
            for c in range(m):
                t = (x - centers[c]) * inv_sigma
                half_sq = 0.5 * t * t
                out[i, k * m + c] = 0.0 if half_sq > cutoff else math.exp(-half_sq)


def _gaussian_basis_numba(coords: np.ndarray, centers: np.ndarray, sigma: float) -> np.ndarray:
    dtype = _kernel_dtype(coords.dtype)
    x = np.ascontiguousarray(coords, dtype=dtype)
    out = np.empty((x.shape[0], x.shape[1] * centers.shape[0]), dtype=dtype)  # (n, d*M)
    _gaussian_basis_rows_numba(x, np.ascontiguousarray(centers, dtype=np.float64), 1.0 / sigma, GAUSS_CUTOFF, out)
    return out


_GAUSSIAN_CUDA = r"""
extern "C" __global__ void gaussian_basis(
    const T* __restrict__ coords, const double* __restrict__ centers,
    const long long n, const int d, const int m, const double inv_sigma, const double cutoff,
    T* __restrict__ out)
{
    const long long total = n * (long long)d * m;
    for (long long p = blockIdx.x * (long long)blockDim.x + threadIdx.x; p < total;
         p += (long long)blockDim.x * gridDim.x) {
        const long long i = p / ((long long)d * m);
        const int rest = (int)(p - i * (long long)d * m);
        const int k = rest / m;
        const int c = rest - k * m;
        const double t = ((double)coords[i * d + k] - centers[c]) * inv_sigma;
        const double half_sq = 0.5 * t * t;
        out[p] = half_sq > cutoff ? (T)0 : (T)exp(-half_sq);
    }
}
"""


def _gaussian_basis_cupy(coords, centers: np.ndarray, sigma: float):
    import cupy

    dtype = _kernel_dtype(coords.dtype)
    x = cupy.ascontiguousarray(coords, dtype=dtype)
    n, d = x.shape
    m = centers.shape[0]
    out = cupy.empty((n, d * m), dtype=dtype)  # (n, d*M)
    kernel = _cupy_kernel(_GAUSSIAN_CUDA, "gaussian_basis", "float" if dtype == np.float32 else "double")
    blocks, threads = _launch_shape(n * d * m)
    kernel(blocks, threads, (x, cupy.asarray(centers, dtype=cupy.float64), np.int64(n), np.int32(d), np.int32(m),
                             np.float64(1.0 / sigma), np.float64(GAUSS_CUTOFF), out))
    return out


_GAUSSIAN_KERNELS = {"numpy": _gaussian_basis_numpy, "numba": _gaussian_basis_numba, "cupy": _gaussian_basis_cupy}


def gaussian_basis_features(
    coords: Any,
    *,
    n_centers: int,
    sigma: float,
    low: float = 0.0,
    high: float = 1.0,
    backend: str = "auto",
):
    """Embed each coordinate axis with Gaussian bumps at shifted centres.

    For every axis ``k`` and centre ``t_m`` (``n_centers`` of them, equally
    spaced over ``[low, high]``, see :func:`gaussian_basis_centers`) the feature is
    ``exp(-(x_k - t_m)^2 / (2 sigma^2))``, stored as 0 where it is below about
    ``1e-30`` (so float32 features never hold slow subnormal numbers). The
    per-axis embeddings are concatenated, axis 0 first. This is the "shifted basis" view of positional
    encoding: one bump shape, shifted over a grid. A small ``sigma`` keeps nearby
    coordinates apart (high rank, fine detail), a large one makes them overlap
    (smooth interpolation).

    Parameters
    ----------
    coords : array of shape (n, d)
        Floating coordinates (NumPy, CuPy or torch); finite.
    n_centers : int
        Centres per axis ``M`` (>= 1).
    sigma : float
        Width of every bump (> 0), in coordinate units; about the centre spacing
        ``(high - low) / n_centers`` is a good start.
    low, high : float, default 0.0 and 1.0
        Interval the centres cover.
    backend : {"auto", "numpy", "numba", "cupy"}, default "auto"

    Returns
    -------
    array of shape (n, d * n_centers)
        Same kind as ``coords``; float32 in, float32 out.

    References
    ----------
    Zheng, Ramasinghe and Lucey, "Rethinking Positional Encoding", 2021.

    Example
    -------
    >>> import numpy as np
    >>> from companion.positional import gaussian_basis_features
    >>> z = gaussian_basis_features(np.array([[0.125, 0.875]]), n_centers=4, sigma=0.1)
    >>> z.round(2).tolist()
    [[1.0, 0.04, 0.0, 0.0, 0.0, 0.0, 0.04, 1.0]]
    """
    kind_x = _check_coords(coords)
    centers = gaussian_basis_centers(n_centers, low=low, high=high)
    sigma = check_float(sigma, "sigma", minimum=0.0, strict_min=True)
    name, kernel = dispatch(_GAUSSIAN_KERNELS, backend, coords)
    if kind_x == "torch" and _torch_needs_torch_path(coords, name, backend):
        t = torch.as_tensor(centers, dtype=coords.dtype, device=coords.device)
        half_sq = 0.5 * ((coords[:, :, None] - t) / sigma) ** 2  # (n, d, M)
        bumps = torch.where(half_sq > GAUSS_CUTOFF, torch.zeros_like(half_sq), torch.exp(-half_sq))
        return bumps.reshape(coords.shape[0], -1)
    out = to_kind(kernel(for_backend(coords, name), centers, sigma), kind_x, like=coords)
    if kind_x == "torch" and out.dtype != coords.dtype:
        out = out.to(coords.dtype)
    return out


# ------------------------------------------------------------ activations
def spder_activation(z: Any):
    """The SPDER activation ``sin(z) * sqrt(|z|)``: a sine whose amplitude grows sublinearly.

    The sine gives every neuron a periodic response (as in SIREN); the damping
    factor ``sqrt(|z|)`` keeps the size of ``z`` visible in the output, so the
    network is not confined to a bounded, periodic view of its input.

    Parameters
    ----------
    z : NumPy array or torch tensor
        Any shape.

    Returns
    -------
    Same kind and shape as ``z``. For torch the gradient at ``z = 0`` is 0
    (``|z|`` is clamped at ``1e-12`` inside the square root).

    References
    ----------
    "SPDER: Semiperiodic Damping-Enabled Object Representation" (2023). The
    paper applies it to ``omega_0 (W z + b)`` with SIREN's initialisation, as
    :class:`CoordinateMLP` does for ``activation="spder"``.

    Example
    -------
    >>> import numpy as np
    >>> spder_activation(np.array([0.0, np.pi / 2, -4.0])).round(3).tolist()
    [0.0, 1.253, 1.514]
    """
    if isinstance(z, torch.Tensor):
        return torch.sin(z) * torch.sqrt(torch.clamp(torch.abs(z), min=1e-12))
    z = np.asarray(z)
    return np.sin(z) * np.sqrt(np.abs(z))


class _Periodic(nn.Module):
    """``act(omega_0 * z)`` for act = sine or SPDER."""

    def __init__(self, kind: str, omega_0: float):
        super().__init__()
        self.kind = kind
        self.omega_0 = float(omega_0)

    def forward(self, z):
        z = self.omega_0 * z
        return torch.sin(z) if self.kind == "sine" else spder_activation(z)

    def extra_repr(self) -> str:
        return f"{self.kind}, omega_0={self.omega_0:g}"


# -------------------------------------------------------------- modules
def _init_linear(layer: nn.Linear, generator: torch.Generator, weight_bound: float) -> None:
    """Uniform weights in ``[-weight_bound, weight_bound]``, biases like torch's default, from ``generator``."""
    bias_bound = 1.0 / math.sqrt(layer.in_features)
    with torch.no_grad():
        layer.weight.uniform_(-weight_bound, weight_bound, generator=generator)
        if layer.bias is not None:
            layer.bias.uniform_(-bias_bound, bias_bound, generator=generator)


class FourierFeatures(nn.Module):
    """Fourier feature map ``[cos(2 pi B x), sin(2 pi B x)]`` as a torch module, optionally trainable.

    With ``learnable=True`` the frequency matrix ``B`` is a parameter that the
    optimiser moves along with the network, as in Li et al. (2021); with
    ``mlp_hidden`` the features pass through a small MLP (Linear, GELU, Linear)
    as in that paper, giving a learned positional encoding of ``out_features``
    dimensions.

    Parameters
    ----------
    in_features : int
        Coordinate dimension ``d``.
    n_frequencies : int
        Number of frequencies ``F``.
    scale : float, optional
        Initial bandwidth (see :func:`fourier_frequencies`); needed unless
        ``frequencies`` is given.
    kind : {"gaussian", "axis"}, default "gaussian"
    rng : None, int or numpy.random.Generator
        Draws ``B`` and seeds the MLP's initial weights; ``None`` means seed 0.
    learnable : bool, default True
        Register ``B`` as an ``nn.Parameter`` (else a fixed buffer).
    mlp_hidden : int, optional
        Width of the MLP after the features; ``None`` for no MLP.
    out_features : int, optional
        Output width of the MLP (default ``mlp_hidden``); without an MLP the
        output has ``2 F`` columns.
    frequencies : array of shape (F, d), optional
        Initial ``B`` to use instead of a draw.

    Attributes
    ----------
    frequencies : torch.Tensor of shape (F, d)
        ``B`` (a parameter or a buffer).
    out_features : int
        Width of the output.

    Example
    -------
    >>> import torch
    >>> from companion.positional import FourierFeatures
    >>> ff = FourierFeatures(2, 16, scale=10.0, rng=0)
    >>> y = ff(torch.rand(5, 2))
    >>> y.shape, ff.frequencies.requires_grad
    (torch.Size([5, 32]), True)
    """

    def __init__(
        self,
        in_features: int,
        n_frequencies: int,
        *,
        scale: Optional[float] = None,
        kind: str = "gaussian",
        rng: Any = None,
        learnable: bool = True,
        mlp_hidden: Optional[int] = None,
        out_features: Optional[int] = None,
        frequencies: Any = None,
    ):
        super().__init__()
        self.in_features = check_int(in_features, "in_features", minimum=1)
        n_freq = check_int(n_frequencies, "n_frequencies", minimum=1)
        gen = _as_generator(rng)
        if frequencies is None:
            if scale is None:
                raise ValueError("FourierFeatures needs scale (or a frequencies matrix)")
            B = fourier_frequencies(self.in_features, n_freq, scale=scale, kind=kind, rng=gen)
        else:
            check_array(frequencies, "frequencies", ndim=2, dtype_kind="fiu")
            B = np.asarray(to_numpy(frequencies), dtype=np.float64)
            if B.shape != (n_freq, self.in_features):
                raise ValueError(f"frequencies must have shape ({n_freq}, {self.in_features}); got {B.shape}")
        B_t = torch.tensor(B, dtype=torch.float32)  # (F, d)
        if learnable:
            self.frequencies = nn.Parameter(B_t)
        else:
            self.register_buffer("frequencies", B_t)
        self.n_frequencies = n_freq
        self.mlp = None
        self.out_features = 2 * n_freq
        if mlp_hidden is not None:
            hidden = check_int(mlp_hidden, "mlp_hidden", minimum=1)
            out = hidden if out_features is None else check_int(out_features, "out_features", minimum=1)
            self.mlp = nn.Sequential(nn.Linear(2 * n_freq, hidden), nn.GELU(), nn.Linear(hidden, out))
            g = _torch_generator(int(gen.integers(2**31)))
            for layer in (self.mlp[0], self.mlp[2]):
                _init_linear(layer, g, 1.0 / math.sqrt(layer.in_features))
            self.out_features = out
        elif out_features is not None:
            raise ValueError("out_features needs mlp_hidden (without an MLP the output has 2 * n_frequencies columns)")

    def forward(self, coords):
        if coords.shape[-1] != self.in_features:
            raise ValueError(f"coords must have {self.in_features} columns; got shape {tuple(coords.shape)}")
        feats = _fourier_torch(coords, self.frequencies.to(coords.dtype))  # (n, 2F)
        return feats if self.mlp is None else self.mlp(feats)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, n_frequencies={self.n_frequencies}, "
                f"learnable={isinstance(self.frequencies, nn.Parameter)}")


class CoordinateMLP(nn.Module):
    """A coordinate network: (optional embedding) -> ``n_layers`` hidden layers -> linear output.

    Parameters
    ----------
    in_features : int
        Width of the input: the coordinate dimension, or the feature width when
        the features are computed outside the model (e.g. by
        :func:`fourier_features`).
    hidden : int
        Width of every hidden layer.
    n_layers : int
        Number of hidden layers (>= 1).
    out_features : int
        Output channels (1 for a grayscale image).
    embedding : torch.nn.Module, optional
        Applied to the input first (e.g. a :class:`FourierFeatures`); it must have
        an ``out_features`` attribute, and an ``in_features`` attribute equal to
        ``in_features`` if it has one.
    activation : {"relu", "sine", "spder"}, default "relu"
        ``"sine"``: SIREN layers ``sin(omega_0 (W z + b))`` with SIREN's
        initialisation (first layer ``U(-1/fan_in, 1/fan_in)``, later layers
        ``U(-sqrt(6/fan_in)/omega_0, ...)``). ``"spder"``: the same layers and
        initialisation with ``sin(u) sqrt(|u|)``, ``u = omega_0 (W z + b)``.
    omega_0 : float, default 30.0
        Frequency factor of the sine and SPDER layers.
    seed : int, default 0
        Seeds the initial weights (the caller's torch generator is not used).

    Example
    -------
    >>> import torch
    >>> from companion.positional import CoordinateMLP
    >>> net = CoordinateMLP(2, 32, 2, 1, activation="sine")
    >>> net(torch.rand(7, 2)).shape
    torch.Size([7, 1])
    """

    def __init__(
        self,
        in_features: int,
        hidden: int,
        n_layers: int,
        out_features: int,
        *,
        embedding: Optional[nn.Module] = None,
        activation: str = "relu",
        omega_0: float = 30.0,
        seed: int = 0,
    ):
        super().__init__()
        self.in_features = check_int(in_features, "in_features", minimum=1)
        hidden = check_int(hidden, "hidden", minimum=1)
        n_layers = check_int(n_layers, "n_layers", minimum=1)
        self.out_features = check_int(out_features, "out_features", minimum=1)
        self.activation = check_choice(activation, "activation", ACTIVATIONS)
        self.omega_0 = check_float(omega_0, "omega_0", minimum=0.0, strict_min=True)
        seed = check_int(seed, "seed", minimum=0)
        if embedding is not None:
            if not isinstance(embedding, nn.Module):
                raise TypeError(f"embedding must be a torch.nn.Module; got {type(embedding).__name__}")
            if not isinstance(getattr(embedding, "out_features", None), int):
                raise TypeError("embedding must have an integer attribute out_features (its output width)")
            emb_in = getattr(embedding, "in_features", None)
            if isinstance(emb_in, int) and emb_in != self.in_features:
                raise ValueError(f"embedding.in_features = {emb_in} but in_features = {self.in_features}")
        self.embedding = embedding
        width_in = embedding.out_features if embedding is not None else self.in_features
        g = _torch_generator(seed)
        layers: list[nn.Module] = []
        widths = [width_in] + [hidden] * n_layers
        for i in range(n_layers):
            linear = nn.Linear(widths[i], widths[i + 1])
            if self.activation == "relu":
                _init_linear(linear, g, 1.0 / math.sqrt(linear.in_features))
                layers += [linear, nn.ReLU()]
            else:
                bound = 1.0 / linear.in_features if i == 0 else math.sqrt(6.0 / linear.in_features) / self.omega_0
                _init_linear(linear, g, bound)
                layers += [linear, _Periodic(self.activation, self.omega_0)]
        head = nn.Linear(hidden, self.out_features)
        if self.activation == "relu":
            _init_linear(head, g, 1.0 / math.sqrt(hidden))
        else:
            _init_linear(head, g, math.sqrt(6.0 / hidden) / self.omega_0)
        layers.append(head)
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        if self.embedding is not None:
            x = self.embedding(x)
        return self.net(x)

    def n_parameters(self, trainable_only: bool = True) -> int:
        """Number of (trainable) parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


# --------------------------------------------------------------- training
@dataclasses.dataclass
class FitHistory:
    """What :func:`fit_coordinates` recorded.

    Attributes
    ----------
    steps : list of int
        Step index of every entry of ``losses`` (1-based).
    losses : list of float
        Mean squared error on the training batch before each update.
    eval_steps, eval_losses : list
        Steps and mean squared errors on the evaluation set, when one was given.
    seconds : float
        Wall time of the loop.
    """

    steps: list = dataclasses.field(default_factory=list)
    losses: list = dataclasses.field(default_factory=list)
    eval_steps: list = dataclasses.field(default_factory=list)
    eval_losses: list = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    @staticmethod
    def to_psnr(losses, data_range: float = 1.0) -> np.ndarray:
        """Convert mean squared errors to PSNR in dB (``inf`` for zero error)."""
        mse = np.asarray(losses, dtype=np.float64)
        with np.errstate(divide="ignore"):
            return 10.0 * np.log10(data_range**2 / mse)


def _as_float_tensor(x: Any, name: str, device) -> torch.Tensor:
    check_array(x, name, ndim=(1, 2), dtype_kind="f")
    t = to_torch(x).to(device=device, dtype=torch.float32)
    return t[:, None] if t.ndim == 1 else t


def fit_coordinates(
    model: nn.Module,
    coords: Any,
    targets: Any,
    *,
    steps: int,
    lr: float = 1e-3,
    seed: int = 0,
    device: Any = None,
    batch_size: Optional[int] = None,
    eval_coords: Any = None,
    eval_targets: Any = None,
    eval_every: int = 10,
    callback: Optional[Any] = None,
    progress: bool = False,
) -> FitHistory:
    """Fit a coordinate network to ``targets`` by mean squared error with Adam.

    Parameters
    ----------
    model : torch.nn.Module
        Maps ``(n, in)`` inputs to ``(n, out)`` outputs (e.g. :class:`CoordinateMLP`);
        trained in place and moved to ``device``.
    coords : array of shape (n, in)
        Model inputs: coordinates, or features computed from them.
    targets : array of shape (n, out) or (n,)
        Values to fit.
    steps : int
        Optimiser steps (>= 1).
    lr : float, default 1e-3
        Adam learning rate (> 0).
    seed : int, default 0
        Seeds the order of mini-batches (unused for full-batch training).
    device : torch.device or str, optional
        Where to train; default the model's device.
    batch_size : int, optional
        Points per step; ``None`` uses all of them every step (full batch).
    eval_coords, eval_targets : arrays, optional
        A held-out set whose error is recorded every ``eval_every`` steps and after the last.
    eval_every : int, default 10
        Steps between evaluations (and ``callback`` calls).
    callback : callable, optional
        ``callback(step, model)`` is called (under ``torch.no_grad``, model in eval
        mode) at step 0 and every ``eval_every`` steps, e.g. to record predictions
        during training.
    progress : bool, default False
        Show a ``tqdm`` progress bar.

    Returns
    -------
    FitHistory

    Example
    -------
    >>> import numpy as np
    >>> from companion.positional import CoordinateMLP, fit_coordinates
    >>> x = np.linspace(0, 1, 64, dtype=np.float32)[:, None]
    >>> net = CoordinateMLP(1, 16, 2, 1)
    >>> h = fit_coordinates(net, x, np.sin(6 * x), steps=50, lr=1e-2)
    >>> h.losses[-1] < h.losses[0]
    True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    steps = check_int(steps, "steps", minimum=1)
    lr = check_float(lr, "lr", minimum=0.0, strict_min=True)
    seed = check_int(seed, "seed", minimum=0)
    eval_every = check_int(eval_every, "eval_every", minimum=1)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable; got {type(callback).__name__}")
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    x = _as_float_tensor(coords, "coords", device)
    y = _as_float_tensor(targets, "targets", device)
    if x.ndim != 2 or y.shape[0] != x.shape[0]:
        raise ValueError(f"coords (n, in) and targets (n, out) must have the same n; got {tuple(x.shape)} and {tuple(y.shape)}")
    has_eval = eval_coords is not None or eval_targets is not None
    if has_eval:
        if eval_coords is None or eval_targets is None:
            raise ValueError("give both eval_coords and eval_targets, or neither")
        xe = _as_float_tensor(eval_coords, "eval_coords", device)
        ye = _as_float_tensor(eval_targets, "eval_targets", device)
        if ye.shape[0] != xe.shape[0] or xe.shape[1] != x.shape[1] or ye.shape[1] != y.shape[1]:
            raise ValueError(f"eval set shapes {tuple(xe.shape)}, {tuple(ye.shape)} do not match "
                             f"the training set {tuple(x.shape)}, {tuple(y.shape)}")
    n = x.shape[0]
    if batch_size is not None:
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        batch_size = min(batch_size, n)
    model.to(device).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    order_rng = np.random.default_rng(seed)
    history = FitHistory()

    def _evaluate(step: int) -> None:
        model.eval()
        with torch.no_grad():
            history.eval_losses.append(float(torch.mean((model(xe) - ye) ** 2)))
        history.eval_steps.append(step)
        model.train()

    def _call_back(step: int) -> None:
        model.eval()
        with torch.no_grad():
            callback(step, model)
        model.train()

    start = time.perf_counter()
    if callback is not None:
        _call_back(0)
    perm, cursor = None, n
    for step in tqdm(range(1, steps + 1), disable=not progress, desc="fit", leave=False):
        if batch_size is None or batch_size == n:
            xb, yb = x, y
        else:
            if cursor + batch_size > n:
                perm = torch.as_tensor(order_rng.permutation(n), device=device)
                cursor = 0
            idx = perm[cursor:cursor + batch_size]
            cursor += batch_size
            xb, yb = x[idx], y[idx]
        loss = torch.mean((model(xb) - yb) ** 2)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        history.steps.append(step)
        history.losses.append(float(loss.detach()))
        if has_eval and (step % eval_every == 0 or step == steps):
            _evaluate(step)
        if callback is not None and step % eval_every == 0:
            _call_back(step)
    history.seconds = time.perf_counter() - start
    model.eval()
    return history


def predict_coordinates(model: nn.Module, coords: Any, *, batch_size: int = 65536) -> np.ndarray:
    """Evaluate a coordinate network on ``coords`` without gradients; returns NumPy ``(n, out)``.

    Example
    -------
    >>> import numpy as np
    >>> from companion.positional import CoordinateMLP, predict_coordinates
    >>> predict_coordinates(CoordinateMLP(2, 8, 1, 3), np.zeros((4, 2), np.float32)).shape
    (4, 3)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    x = _as_float_tensor(coords, "coords", device)
    model.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            outs.append(model(x[i:i + batch_size]).cpu())
    return torch.cat(outs).numpy()

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
* the coordinate network that consumes these features (:class:`CoordinateMLP`,
  :class:`FourierFeatures`, :func:`fit_coordinates`) lives in
  :mod:`companion.positional.coordinate_mlp`.

The feature maps have three layers, as everywhere in ``companion``: the public
function validates and dispatches; ``_fourier_numpy`` / ``_gaussian_basis_numpy``
are the readable references; numba and CuPy kernels compute one output entry
per (point, frequency) without building the ``(n, F)`` phase matrix first.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Any, Optional

import numba
import numpy as np
import torch

from .._validation import check_array, check_choice, check_float, check_int
from ..backend import dispatch, for_backend, to_kind, to_numpy

__all__ = [
    "FOURIER_KINDS",
    "fourier_frequencies",
    "fourier_features",
    "gaussian_basis_centers",
    "gaussian_basis_features",
]

FOURIER_KINDS = ("gaussian", "axis")
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


@numba.njit(cache=True, parallel=True)
def _fourier_rows_numba_f32(coords, BT, out):  # pragma: no cover - jitted
    """float32 output: exact range reduction in float64, then float32 polynomials.

    The phase in turns, ``x . b``, is split in float64 into a quarter-turn count
    ``q`` and a remainder of at most 1/8 turn, so no accuracy is lost however
    large the phase. cos and sin of the remainder (``|t| <= pi/4``) are short
    Taylor polynomials in float32 (truncation error below 4e-7, float32's own
    rounding is 6e-8), and the quadrant ``q mod 4`` swaps and negates them
    without branches, so the loop over frequencies vectorizes.
    """
    n, d = coords.shape
    n_freq = BT.shape[1]
    one = np.float32(1.0)
    for i in numba.prange(n):
        for f in range(n_freq):
            acc = 0.0
            for k in range(d):
                acc += coords[i, k] * BT[k, f]
            q = np.floor(4.0 * acc + 0.5)  # nearest quarter turn
            t = np.float32(6.283185307179586 * (acc - 0.25 * q))  # radians, |t| <= pi/4
            m = np.int64(q) & 3
            t2 = t * t
            s = t * (one + t2 * (np.float32(-1.0 / 6) + t2 * (np.float32(1.0 / 120) + t2 * np.float32(-1.0 / 5040))))
            c = one + t2 * (np.float32(-0.5) + t2 * (np.float32(1.0 / 24) + t2 * (
                np.float32(-1.0 / 720) + t2 * np.float32(1.0 / 40320))))
            # quadrant m: (cos, sin) = (c, s), (-s, c), (-c, -s), (s, -c)
            odd = np.float32(m & 1)
            sign_cos = np.float32(1 - 2 * (((m + 1) >> 1) & 1))
            sign_sin = np.float32(1 - 2 * ((m >> 1) & 1))
            out[i, f] = sign_cos * (c + odd * (s - c))
            out[i, n_freq + f] = sign_sin * (s + odd * (c - s))


def _fourier_numba(coords: np.ndarray, B: np.ndarray) -> np.ndarray:
    dtype = _kernel_dtype(coords.dtype)
    x = np.ascontiguousarray(coords, dtype=dtype)  # (n, d)
    out = np.empty((x.shape[0], 2 * B.shape[0]), dtype=dtype)  # (n, 2F)
    if dtype == np.float32:
        _fourier_rows_numba_f32(x, np.ascontiguousarray(np.asarray(B, dtype=np.float64).T), out)  # B^T (d, F)
    else:
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
        from .coordinate_mlp import FourierFeatures  # the module lives with the coordinate MLP

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

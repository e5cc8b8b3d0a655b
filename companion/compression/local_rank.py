"""Local rank of layer features, and binned mutual-information estimates.

Two ways to ask whether a network *compresses* its input as it trains:

* **Local rank** ("Learning to Compress: Local Rank and Information Compression in
  Deep Neural Networks"): near an input ``x``, a layer's features ``f(x)`` vary along
  as many directions as the Jacobian ``J = df/dx`` has (non-negligible) singular
  values. Averaged over inputs, this counts the dimension of the feature manifold
  the layer really uses. We count singular values above ``tol * sigma_max`` per input
  (``relative=True``) or above ``tol`` (``relative=False``); the count depends on
  ``tol``, which is why the chapter lets you move it.
* **Binned mutual information** ("Adaptive Estimators Show Information Compression
  in Deep Neural Networks"): discretize each unit of a layer, treat the binned
  vector ``T`` as a symbol, and estimate ``I(X; T) = H(T)`` (the network is
  deterministic and every input distinct) and ``I(T; Y)``. Equal-width bins depend
  on the activation range; the adaptive estimator uses equal-mass (quantile) bins
  per unit, which removed artefacts of the fixed-bin estimates.

Local rank has three kernels: a NumPy reference (batched ``svd``), a numba loop over
samples, and CuPy's batched ``svd``. :func:`layer_jacobians` computes the Jacobians
with ``torch.func``.
"""

from __future__ import annotations

from typing import Any, Callable

import numba
import numpy as np

from .._validation import check_array, check_float, check_int
from ..backend import dispatch, for_backend, to_kind, to_numpy

# ``local_rank`` is also this module's name, which the package ``__init__`` needs to keep:
# the package-level name is ``jacobian_local_rank``; ``local_rank`` stays a module-level alias.
__all__ = ["jacobian_local_rank", "layer_jacobians", "binned_mutual_information"]


# --------------------------------------------------------------- local rank
def _count(s, tol, relative, xp):
    limit = tol * s[..., :1] if relative else tol
    return (s > limit).sum(-1)


def _local_rank_numpy(j, tol, relative):
    """Reference: singular values of every Jacobian, counted above the threshold."""
    s = np.linalg.svd(np.asarray(j, dtype=np.float64), compute_uv=False)  # (n, min(p, d)), descending
    return _count(s, tol, relative, np)


@numba.njit(cache=True, parallel=True)
def _local_rank_rows_numba(j, tol, relative):  # pragma: no cover - jitted
    n = j.shape[0]
    out = np.zeros(n, dtype=np.int64)
    for i in numba.prange(n):
        s = np.linalg.svd(j[i], full_matrices=False)[1]  # numba's svd always returns (u, s, vt)
        limit = tol * s[0] if relative else tol
        c = 0
        for v in s:
            if v > limit:
                c += 1
        out[i] = c
    return out


def _local_rank_numba(j, tol, relative):
    j = np.asarray(j, dtype=np.float64)
    lead = j.shape[:-2]
    flat = np.ascontiguousarray(j.reshape((-1,) + j.shape[-2:]))
    return _local_rank_rows_numba(flat, float(tol), bool(relative)).reshape(lead)


def _local_rank_cupy(j, tol, relative):
    import cupy

    s = cupy.linalg.svd(j.astype(cupy.float64), compute_uv=False)  # batched over leading axes
    return _count(s, tol, relative, cupy)


_KERNELS = {"numpy": _local_rank_numpy, "numba": _local_rank_numba, "cupy": _local_rank_cupy}


def jacobian_local_rank(jacobians: Any, *, tol: float = 1e-2, relative: bool = True, backend: str | None = None) -> Any:
    """Number of singular values of each Jacobian above a threshold.

    Parameters
    ----------
    jacobians : array of shape (..., p, d)
        Jacobians of a ``p``-dimensional feature map with respect to a
        ``d``-dimensional input, one per sample (NumPy, CuPy or torch; finite).
    tol : float, default 1e-2
        Threshold, > 0: ``tol * sigma_max`` of that Jacobian when ``relative``,
        else an absolute value.
    relative : bool, default True
        Relative or absolute threshold.
    backend : {"auto", "numpy", "numba", "cupy"}, optional
        Kernel.

    Returns
    -------
    integer array of shape jacobians.shape[:-2]
        Same kind as ``jacobians``; average it for the layer's local rank.

    References
    ----------
    Patel and Shwartz-Ziv, "Learning to Compress: Local Rank and Information
    Compression in Deep Neural Networks", 2024.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.compression import jacobian_local_rank
    >>> j = np.diag([3.0, 1.0, 1e-4])[None]        # one sample, a 3x3 Jacobian
    >>> jacobian_local_rank(j).tolist(), jacobian_local_rank(j, tol=1e-6).tolist()
    ([2], [3])
    """
    kind = check_array(jacobians, "jacobians", min_ndim=2, dtype_kind="f")
    tol = check_float(tol, "tol", minimum=0.0, strict_min=True)
    name, kernel = dispatch(_KERNELS, backend, jacobians)
    j = jacobians.detach() if kind == "torch" else jacobians
    out = kernel(for_backend(j, name), tol, bool(relative))
    return to_kind(out, kind, like=jacobians)


local_rank = jacobian_local_rank  # the name used in the course text (see __all__ above)


def layer_jacobians(feature_fn: Callable[[Any], Any], x: Any):
    """Jacobians ``d feature_fn(x_i) / d x_i`` for every row of ``x`` (torch.func, vectorized).

    Parameters
    ----------
    feature_fn : callable
        Maps one input tensor (d,) to a feature tensor (p,); pure torch ops.
    x : torch.Tensor of shape (n, d)
        Inputs (floating).

    Returns
    -------
    torch.Tensor of shape (n, p, d)

    Examples
    --------
    >>> import torch
    >>> from companion.compression import layer_jacobians
    >>> w = torch.randn(3, 5)
    >>> j = layer_jacobians(lambda v: w @ v, torch.randn(4, 5))
    >>> j.shape, bool(torch.allclose(j[0], w))
    (torch.Size([4, 3, 5]), True)
    """
    import torch
    from torch.func import jacrev, vmap

    if not callable(feature_fn):
        raise TypeError(f"feature_fn must be callable; got {type(feature_fn).__name__}")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch tensor of shape (n, d); got {type(x).__name__}")
    check_array(x, "x", ndim=2, dtype_kind="f")
    return vmap(jacrev(feature_fn))(x)


# ----------------------------------------------------- mutual information
def _entropy_of_rows(codes: np.ndarray) -> float:
    """Entropy (bits) of the empirical distribution of the distinct rows of ``codes``."""
    _, counts = np.unique(codes, axis=0, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def binned_mutual_information(features: Any, labels: Any, *, n_bins: int = 30, adaptive: bool = True) -> tuple[float, float]:
    """``(I(X; T), I(T; Y))`` in bits for a layer's activations ``T``, by binning every unit.

    Parameters
    ----------
    features : array of shape (n, p)
        Activations of one layer for ``n`` distinct inputs.
    labels : integer array of shape (n,)
        Class of each input.
    n_bins : int, default 30
        Bins per unit (>= 2).
    adaptive : bool, default True
        Equal-mass bins per unit (quantiles; the adaptive estimator) instead of
        equal-width bins over the unit's range.

    Returns
    -------
    (float, float)
        ``I(X; T) = H(T)`` and ``I(T; Y) = H(T) - H(T | Y)``, both at most
        ``log2 n``; ``I(T; Y) <= H(Y)``.

    References
    ----------
    Chelombiev, Houghton and O'Donnell, "Adaptive Estimators Show Information
    Compression in Deep Neural Networks", 2019.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.compression import binned_mutual_information
    >>> y = np.repeat([0, 1], 50)
    >>> t = y[:, None] + 0.0                             # a layer that only keeps the label
    >>> binned_mutual_information(t, y, n_bins=2)
    (1.0, 1.0)
    """
    check_array(features, "features", ndim=2, dtype_kind="f")
    check_array(labels, "labels", ndim=1, dtype_kind="iu")
    t = np.asarray(to_numpy(features), dtype=np.float64)
    y = np.asarray(to_numpy(labels))
    if len(y) != len(t):
        raise ValueError(f"labels must have one entry per row of features ({len(t)}); got {len(y)}")
    n_bins = check_int(n_bins, "n_bins", minimum=2)
    codes = np.empty(t.shape, dtype=np.int64)
    for u in range(t.shape[1]):
        col = t[:, u]
        if adaptive:
            edges = np.unique(np.quantile(col, np.linspace(0, 1, n_bins + 1)[1:-1]))
        else:
            lo, hi = col.min(), col.max()
            edges = np.linspace(lo, hi, n_bins + 1)[1:-1] if hi > lo else np.empty(0)
        codes[:, u] = np.searchsorted(edges, col, side="right")
    h_t = _entropy_of_rows(codes)
    h_t_given_y = 0.0
    for c in np.unique(y):
        mask = y == c
        h_t_given_y += mask.mean() * _entropy_of_rows(codes[mask])
    return float(h_t), float(h_t - h_t_given_y)

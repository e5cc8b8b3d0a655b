"""Coding rate and rate reduction (MCR^2), batched over leading axes.

The *coding rate* of ``m`` feature vectors ``z_i`` in ``R^d`` is, up to a constant, the
number of nats needed to encode them up to a squared error ``eps^2`` per vector when
they are modelled as a Gaussian cloud:

``R(Z, eps) = 1/2 logdet(I_d + d / (m eps^2) Z^T Z)``,

where the rows of ``Z`` (m, d) are the vectors. *Rate reduction* compares the rate of
the whole set with the rates of its classes coded separately:

``Delta R(Z, Pi, eps) = R(Z, eps) - sum_j (m_j / m) R(Z_j, eps)``

with ``R(Z_j, eps) = 1/2 logdet(I_d + d / (m_j eps^2) Z_j^T Z_j)``. It is large when the
whole set spans a big volume while each class is squeezed into a small one: the
objective of "Learning Diverse and Discriminative Representations via the Principle of
Maximal Coding Rate Reduction", and, with a sparsity term added, the objective that
"White-Box Transformers via Sparse Rate Reduction" unrolls into a transformer.

Convention for ``eps`` (the libraries differ, see BENCHMARKS note 3): here ``eps`` is
the distortion itself and enters **squared**, ``d / (m eps^2)``, as in the MCR^2 paper.
CRATE's code writes ``p / (m * eps)`` with ``eps = 0.01``, and the ``mcr2`` package
names its argument ``eps_sq``: both pass ``eps^2``. So CRATE's ``eps = 0.01`` is our
``eps = 0.1``. Rates are in nats (natural log); divide by ``log 2`` for bits.

Three layers: :func:`coding_rate` / :func:`rate_reduction` validate and dispatch;
``_rates_numpy`` is the reference (``slogdet`` of the ``d x d`` matrices, or of the
``m x m`` Gram matrix when that is smaller: Sylvester's identity
``det(I_d + a Z^T Z) = det(I_m + a Z Z^T)``); ``_rates_numba`` accumulates each class's
``Z_j^T Z_j`` in one pass over the rows and takes a Cholesky log-determinant; the CuPy
path builds all class matrices with one batched product and one batched Cholesky.
A torch tensor that requires grad goes through differentiable ``torch.linalg`` calls,
so the rates can be used as training losses.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from .._validation import check_array, check_float
from ..backend import dispatch, for_backend, to_kind, to_numpy

# The function ``rate_reduction`` shares its name with this module; the package's
# ``__init__`` star-imports ``__all__`` and then reads ``rate_reduction.__all__``, so the
# package-level name is ``coding_rate_reduction`` and ``rate_reduction`` (the name the
# course text uses) is kept as a module-level alias: ``companion.compression.rate_reduction.rate_reduction``.
__all__ = ["coding_rate", "coding_rate_reduction"]


# ------------------------------------------------------------------ checks
def _check_z(z: Any) -> str:
    return check_array(z, "z", min_ndim=2, dtype_kind="f")


def _check_eps(eps: Any) -> float:
    return check_float(eps, "eps", minimum=0.0, strict_min=True)


def _check_labels(labels: Any, z_shape: tuple[int, ...]) -> np.ndarray:
    if isinstance(labels, (list, tuple, range)):
        labels = np.asarray(labels)
    check_array(labels, "labels", min_ndim=1, dtype_kind="iu")
    lab = np.asarray(to_numpy(labels), dtype=np.int64)
    lead, m = tuple(z_shape[:-2]), z_shape[-2]
    if lab.shape[-1] != m:
        raise ValueError(f"labels must have one entry per row of z: expected shape (..., {m}) (z has shape "
                         f"{tuple(z_shape)}, rows on axis -2); got shape {lab.shape}")
    try:
        lab = np.broadcast_to(lab, lead + (m,))
    except ValueError:
        raise ValueError(f"labels of shape {lab.shape} do not broadcast to z.shape[:-1] = {lead + (m,)}") from None
    if lab.min() < 0:
        raise ValueError(f"labels must be non-negative class indices; found {int(lab.min())}")
    return np.ascontiguousarray(lab)


# -------------------------------------------------------------- reference
def _logdet_term(z: np.ndarray, weight: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``1/2 logdet(I + scale * Z^T W Z)`` for a 0/1 row weight, batched; the smaller Gram side is used."""
    m, d = z.shape[-2:]
    zw = z * weight[..., None]  # (..., m, d), rows outside the class zeroed
    if m < d:
        gram = zw @ np.swapaxes(zw, -1, -2)  # (..., m, m)
        eye = np.eye(m)
    else:
        gram = np.swapaxes(zw, -1, -2) @ zw  # (..., d, d)
        eye = np.eye(d)
    return 0.5 * np.linalg.slogdet(eye + scale[..., None, None] * gram)[1]


def _rates_numpy(z: np.ndarray, labels: np.ndarray | None, eps: float, n_classes: int):
    """Reference: ``(R(Z), [R(Z_j) for each class], [m_j])`` with leading batch axes kept."""
    z = np.asarray(z, dtype=np.float64)
    lead, (m, d) = z.shape[:-2], z.shape[-2:]
    whole = _logdet_term(z, np.ones(lead + (m,)), np.full(lead, d / (m * eps**2)))
    if labels is None:
        return whole, None, None
    rates = np.zeros(lead + (n_classes,))
    counts = np.zeros(lead + (n_classes,))
    for j in range(n_classes):
        mask = (labels == j).astype(np.float64)  # (..., m)
        m_j = mask.sum(-1)
        safe = np.where(m_j > 0, m_j, 1.0)
        rates[..., j] = np.where(m_j > 0, _logdet_term(z, mask, d / (safe * eps**2)), 0.0)
        counts[..., j] = m_j
    return whole, rates, counts


# ------------------------------------------------------------------ numba
@numba.njit(cache=True)
def _chol_logdet(a):  # pragma: no cover - jitted
    """``logdet`` of a symmetric positive definite matrix (in-place Cholesky of a copy)."""
    n = a.shape[0]
    l = a.copy()
    total = 0.0
    for j in range(n):
        s = l[j, j]
        for k in range(j):
            s -= l[j, k] * l[j, k]
        piv = np.sqrt(s)
        l[j, j] = piv
        total += np.log(piv)
        for i in range(j + 1, n):
            t = l[i, j]
            for k in range(j):
                t -= l[i, k] * l[j, k]
            l[i, j] = t / piv
    return 2.0 * total


@numba.njit(cache=True, parallel=True)
def _rates_batch_numba(z, labels, n_classes, eps, with_classes):  # pragma: no cover - jitted
    """z (B, m, d), labels (B, m) -> whole (B,), rates (B, C), counts (B, C)."""
    b_n, m, d = z.shape
    whole = np.zeros(b_n)
    rates = np.zeros((b_n, n_classes))
    counts = np.zeros((b_n, n_classes))
    for b in numba.prange(b_n):
        cov = np.zeros((n_classes + 1, d, d))  # slot 0: all rows; slot j + 1: class j
        for i in range(m):
            j = labels[b, i] + 1 if with_classes else 0
            counts[b, j - 1] += 1.0 if with_classes else 0.0
            for p in range(d):
                zp = z[b, i, p]
                for q in range(p + 1):
                    v = zp * z[b, i, q]
                    cov[0, p, q] += v
                    if with_classes:
                        cov[j, p, q] += v
        for s in range(n_classes + 1 if with_classes else 1):
            size = m if s == 0 else counts[b, s - 1]
            if size == 0:
                continue
            scale = d / (size * eps * eps)
            a = np.empty((d, d))
            for p in range(d):
                for q in range(p + 1):
                    a[p, q] = scale * cov[s, p, q] + (1.0 if p == q else 0.0)
                    a[q, p] = a[p, q]
            value = 0.5 * _chol_logdet(a)
            if s == 0:
                whole[b] = value
            else:
                rates[b, s - 1] = value
    return whole, rates, counts


def _rates_numba(z, labels, eps, n_classes):
    z = np.asarray(z, dtype=np.float64)
    lead, (m, d) = z.shape[:-2], z.shape[-2:]
    z3 = np.ascontiguousarray(z.reshape((-1, m, d)))  # (B, m, d)
    with_classes = labels is not None
    lab = (np.ascontiguousarray(labels.reshape(-1, m)) if with_classes
           else np.zeros((z3.shape[0], m), dtype=np.int64))
    whole, rates, counts = _rates_batch_numba(z3, lab, max(n_classes, 1), float(eps), with_classes)
    if not with_classes:
        return whole.reshape(lead), None, None
    return whole.reshape(lead), rates.reshape(lead + (n_classes,)), counts.reshape(lead + (n_classes,))


# ------------------------------------------------------------------- cupy
def _rates_cupy(z, labels, eps, n_classes):
    import cupy

    z = z.astype(cupy.float64)
    lead, (m, d) = z.shape[:-2], z.shape[-2:]
    n_slots = n_classes + 1 if labels is not None else 1
    weights = cupy.ones(lead + (n_slots, m))  # (..., slots, m): slot 0 all rows, slot j + 1 class j
    if labels is not None:
        lab = cupy.asarray(labels)
        weights[..., 1:, :] = (lab[..., None, :] == cupy.arange(n_classes)[:, None]).astype(cupy.float64)
    sizes = weights.sum(-1)  # (..., slots)
    zt = cupy.swapaxes(z, -1, -2)[..., None, :, :]  # (..., 1, d, m)
    cov = (zt * weights[..., None, :]) @ z[..., None, :, :]  # (..., slots, d, d), one batched GEMM
    scale = d / (cupy.maximum(sizes, 1.0) * eps**2)
    mats = cupy.eye(d) + scale[..., None, None] * cov
    chol = cupy.linalg.cholesky(mats.reshape(-1, d, d)).reshape(mats.shape)
    values = cupy.log(cupy.diagonal(chol, axis1=-2, axis2=-1)).sum(-1)  # 1/2 logdet = sum log diag(L)
    values = cupy.where(sizes > 0, values, 0.0)
    if labels is None:
        return values[..., 0], None, None
    return values[..., 0], values[..., 1:], sizes[..., 1:]


_KERNELS = {"numpy": _rates_numpy, "numba": _rates_numba, "cupy": _rates_cupy}


# ------------------------------------------------------------------ torch
def _rates_torch(z, labels, eps, n_classes):
    """Differentiable rates (torch.linalg.slogdet); used when ``z`` requires grad."""
    import torch

    m, d = z.shape[-2:]
    eye = torch.eye(d, dtype=z.dtype, device=z.device)
    whole = 0.5 * torch.linalg.slogdet(eye + d / (m * eps**2) * z.transpose(-1, -2) @ z)[1]
    if labels is None:
        return whole, None, None
    lab = torch.as_tensor(labels, device=z.device)
    rates, counts = [], []
    for j in range(n_classes):
        mask = (lab == j).to(z.dtype)  # (..., m)
        m_j = mask.sum(-1)
        zj = z * mask[..., None]
        scale = d / (torch.clamp(m_j, min=1.0) * eps**2)
        r = 0.5 * torch.linalg.slogdet(eye + scale[..., None, None] * zj.transpose(-1, -2) @ zj)[1]
        rates.append(torch.where(m_j > 0, r, torch.zeros_like(r)))
        counts.append(m_j)
    return whole, torch.stack(rates, -1), torch.stack(counts, -1)


def _run(z, labels, eps, backend):
    kind = _check_z(z)
    eps = _check_eps(eps)
    lab = None if labels is None else _check_labels(labels, tuple(z.shape))
    n_classes = 0 if lab is None else int(lab.max()) + 1
    if kind == "torch":
        import torch

        if z.requires_grad and torch.is_grad_enabled():
            return kind, _rates_torch(z, lab, eps, n_classes)
    name, kernel = dispatch(_KERNELS, backend, z)
    zb = for_backend(z, name)
    return kind, kernel(zb, lab, eps, n_classes)


# ----------------------------------------------------------------- public
def coding_rate(z: Any, eps: float, *, backend: str | None = None) -> Any:
    """Coding rate ``R(Z, eps) = 1/2 logdet(I + d / (m eps^2) Z^T Z)`` in nats, rows of ``z`` as samples.

    ``eps`` enters squared (see the module docstring: CRATE's ``eps = 0.01`` and
    ``mcr2``'s ``eps_sq = 0.01`` mean ``eps = 0.1`` here).

    Parameters
    ----------
    z : array of shape (..., m, d)
        ``m`` feature vectors of dimension ``d`` per batch entry (NumPy, CuPy or
        torch; floating, finite).
    eps : float
        Allowed distortion, > 0.
    backend : {"auto", "numpy", "numba", "cupy"}, optional
        Kernel; a torch tensor that requires grad uses differentiable torch ops.

    Returns
    -------
    array of shape z.shape[:-2], float64
        Same kind as ``z`` (0-d for a single matrix).

    References
    ----------
    Yu et al., "White-Box Transformers via Sparse Rate Reduction", 2023.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.compression import coding_rate
    >>> z = np.eye(4)[:2]                     # two orthogonal unit vectors in R^4
    >>> round(float(coding_rate(z, eps=1.0)), 4)   # 2 * 1/2 log(1 + 4/2)
    1.0986
    """
    kind, (whole, _, _) = _run(z, None, eps, backend)
    return _as_kind(whole, kind, z)


def coding_rate_reduction(z: Any, labels: Any, eps: float, *, backend: str | None = None) -> Any:
    """Rate reduction ``R(Z) - sum_j (m_j / m) R(Z_j)`` in nats (the MCR^2 objective).

    Parameters
    ----------
    z : array of shape (..., m, d)
        Feature vectors as rows (NumPy, CuPy or torch; floating, finite).
    labels : integer array of shape (m,) or broadcastable to z.shape[:-1]
        Class of each row, >= 0; classes absent from a batch entry count 0.
    eps : float
        Allowed distortion, > 0 (enters squared, as in :func:`coding_rate`).
    backend : {"auto", "numpy", "numba", "cupy"}, optional
        Kernel; a torch tensor that requires grad uses differentiable torch ops.

    Returns
    -------
    array of shape z.shape[:-2], float64
        Same kind as ``z``.

    References
    ----------
    Yu et al., "White-Box Transformers via Sparse Rate Reduction", 2023; Yu et al.,
    "Learning Diverse and Discriminative Representations via the Principle of
    Maximal Coding Rate Reduction", 2020.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.compression import coding_rate_reduction
    >>> z = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    >>> round(float(coding_rate_reduction(z, np.array([0, 0, 1, 1]), eps=1.0)), 4)  # log 2 - 1/2 log 3
    0.1438
    """
    kind, (whole, rates, counts) = _run(z, labels, eps, backend)
    m = z.shape[-2]
    reduction = whole - (counts / m * rates).sum(-1)
    return _as_kind(reduction, kind, z)


rate_reduction = coding_rate_reduction  # the name used in the course text (see __all__ above)


def _as_kind(value: Any, kind: str, like: Any) -> Any:
    """Return ``value`` as the caller's array kind (a differentiable torch result passes through)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (float, np.floating)):
        value = np.asarray(value)
    return to_kind(value, kind, like=like)

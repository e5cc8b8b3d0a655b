"""Sparse codes: ISTA, a top-k sparse autoencoder, and the Matryoshka prefix baseline.

A sparse code writes a signal ``x`` (d,) as a combination of a few atoms of an
overcomplete dictionary ``D`` (k, d), ``x ~ z D`` with most of ``z`` (k,) zero. Two ways
to get ``z``:

* **ISTA** (iterative shrinkage-thresholding) solves the lasso
  ``min_z 1/2 ||x - z D||^2 + lam ||z||_1`` by a gradient step on the squared error
  followed by soft-thresholding, ``z <- S_{eta lam}(z - eta (z D - x) D^T)`` with
  ``eta = 1 / ||D||_2^2``. One ISTA step with a ReLU (non-negative codes) is the MLP
  block of the CRATE white-box transformer ("White-Box Transformers via Sparse Rate
  Reduction").
* A **top-k sparse autoencoder** (:class:`TopKSparseAutoencoder`) learns the
  dictionary and an amortized encoder together: ``z = topk(ReLU(W (x - b)))``,
  ``x_hat = z D + b``. "Beyond Matryoshka: Revisiting Sparse Coding for Adaptive
  Representation" trains such a model on frozen embeddings and varies ``k`` to get
  representations of adjustable cost.

The baseline is **Matryoshka prefix truncation**: an encoder trained so that every
prefix ``z[:m]`` of its embedding is useful on its own, then cut to ``m`` coordinates
(:func:`prefix_truncate`, :func:`train_embedding_encoder` with ``prefixes``).
:func:`nearest_neighbor_accuracy` scores any of these representations by retrieval.

ISTA has three kernels (NumPy reference, numba over rows, CuPy fused array code with
an ``ElementwiseKernel`` shrinkage); the autoencoder and the encoders are torch.
"""

from __future__ import annotations

import functools
from typing import Any

import numba
import numpy as np

from .._validation import check_array, check_float, check_int
from ..backend import dispatch, for_backend, to_kind, to_numpy
from ._c4_training import (
    TopKSparseAutoencoder,
    nearest_neighbor_accuracy,
    train_embedding_encoder,
    train_sparse_autoencoder,
)

__all__ = [
    "soft_threshold",
    "ista",
    "topk_sparsify",
    "prefix_truncate",
    "TopKSparseAutoencoder",
    "train_sparse_autoencoder",
    "train_embedding_encoder",
    "nearest_neighbor_accuracy",
]


# ------------------------------------------------------------- small pieces
def soft_threshold(x: Any, threshold: float, *, nonnegative: bool = False) -> Any:
    """``sign(x) max(|x| - t, 0)`` (or ``max(x - t, 0)`` with ``nonnegative``), elementwise.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.compression import soft_threshold
    >>> soft_threshold(np.array([-2.0, -0.5, 0.5, 3.0]), 1.0).tolist()
    [-1.0, -0.0, 0.0, 2.0]
    """
    kind = check_array(x, "x", dtype_kind="f")
    t = check_float(threshold, "threshold", minimum=0.0)
    a = to_numpy(x)
    out = np.maximum(a - t, 0.0) if nonnegative else np.sign(a) * np.maximum(np.abs(a) - t, 0.0)
    return to_kind(out, kind, like=x)


def topk_sparsify(z: Any, k: int) -> Any:
    """Keep the ``k`` largest entries of each row of ``z`` (n, p), zero the rest (ties: lower index first).

    Examples
    --------
    >>> import numpy as np
    >>> from companion.compression import topk_sparsify
    >>> topk_sparsify(np.array([[0.1, 0.9, 0.5, 0.7]]), 2).tolist()
    [[0.0, 0.9, 0.0, 0.7]]
    """
    kind = check_array(z, "z", ndim=2, dtype_kind="f")
    k = check_int(k, "k", minimum=1, maximum=z.shape[1])
    a = np.asarray(to_numpy(z))
    idx = np.argsort(-a, axis=1, kind="stable")[:, :k]  # (n, k)
    out = np.zeros_like(a)
    np.put_along_axis(out, idx, np.take_along_axis(a, idx, 1), 1)
    return to_kind(out, kind, like=z)


def prefix_truncate(z: Any, m: int) -> Any:
    """The first ``m`` coordinates of each row of ``z`` (n, p): the Matryoshka way to shrink an embedding.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.compression import prefix_truncate
    >>> prefix_truncate(np.arange(8.0).reshape(2, 4), 2).tolist()
    [[0.0, 1.0], [4.0, 5.0]]
    """
    check_array(z, "z", ndim=2, dtype_kind="f")
    m = check_int(m, "m", minimum=1, maximum=z.shape[1])
    return z[:, :m]


# -------------------------------------------------------------------- ISTA
def _ista_numpy(x, dictionary, lam, step, n_iter, nonnegative, z0):
    """Reference: ``n_iter`` steps of ``z <- S(z - step (z D - x) D^T)`` for all rows at once."""
    z = np.zeros((x.shape[0], dictionary.shape[0])) if z0 is None else np.array(z0, dtype=np.float64)
    for _ in range(n_iter):
        grad = (z @ dictionary - x) @ dictionary.T  # (n, k)
        v = z - step * grad
        z = np.maximum(v - step * lam, 0.0) if nonnegative else np.sign(v) * np.maximum(np.abs(v) - step * lam, 0.0)
    return z


@numba.njit(cache=True, parallel=True)
def _ista_rows_numba(x, dictionary, dictionary_t, lam, step, n_iter, nonnegative, z):  # pragma: no cover - jitted
    """Rows are independent problems: each thread runs all iterations of one row.

    Per iteration the residual ``r = z D - x`` is built from the *non-zero* codes only
    (``nnz * d`` work, small once the code is sparse), then ``g = r D^T`` (``k * d``),
    both as ``axpy`` loops (no floating-point reductions, so LLVM vectorizes them
    without changing the result); ``dictionary_t`` is ``D^T`` stored contiguously.
    """
    n, d = x.shape
    k = dictionary.shape[0]
    thr = step * lam
    for row in numba.prange(n):
        zr = z[row].copy()
        resid = np.empty(d)
        g = np.empty(k)
        for _ in range(n_iter):
            for c in range(d):
                resid[c] = -x[row, c]
            for a in range(k):
                za = zr[a]
                if za != 0.0:
                    for c in range(d):
                        resid[c] += za * dictionary[a, c]
            g[:] = 0.0
            for c in range(d):
                rc = resid[c]
                for a in range(k):
                    g[a] += rc * dictionary_t[c, a]
            for a in range(k):
                v = zr[a] - step * g[a]
                if nonnegative:
                    zr[a] = v - thr if v > thr else 0.0
                else:
                    zr[a] = v - thr if v > thr else (v + thr if v < -thr else 0.0)
        z[row] = zr
    return z


def _ista_numba(x, dictionary, lam, step, n_iter, nonnegative, z0):
    x = np.ascontiguousarray(x, dtype=np.float64)
    dic = np.ascontiguousarray(dictionary, dtype=np.float64)
    z = np.zeros((x.shape[0], dic.shape[0])) if z0 is None else np.array(z0, dtype=np.float64)
    return _ista_rows_numba(x, dic, np.ascontiguousarray(dic.T), float(lam), float(step), int(n_iter),
                            bool(nonnegative), z)


@functools.lru_cache(maxsize=None)
def _cupy_shrink(nonnegative: bool):
    import cupy

    body = ("z = v > t ? v - t : 0.0" if nonnegative else
            "z = v > t ? v - t : (v < -t ? v + t : 0.0)")
    return cupy.ElementwiseKernel("float64 v, float64 t", "float64 z", body, "ista_shrink")


def _ista_cupy(x, dictionary, lam, step, n_iter, nonnegative, z0):
    import cupy

    x = x.astype(cupy.float64)
    dic = cupy.asarray(dictionary, dtype=cupy.float64)
    gram = dic @ dic.T  # (k, k)
    xd = x @ dic.T  # (n, k)
    z = cupy.zeros_like(xd) if z0 is None else cupy.asarray(z0, dtype=cupy.float64)
    shrink = _cupy_shrink(bool(nonnegative))
    for _ in range(n_iter):
        z = shrink(z - step * (z @ gram - xd), step * lam)
    return z


_ISTA = {"numpy": _ista_numpy, "numba": _ista_numba, "cupy": _ista_cupy}


def ista(x: Any, dictionary: Any, lam: float, *, n_iter: int = 100, step: float | None = None,
         nonnegative: bool = False, init: Any = None, backend: str | None = None) -> Any:
    """Sparse codes by ISTA: ``argmin_z 1/2 ||x - z D||^2 + lam ||z||_1`` for every row of ``x``.

    Parameters
    ----------
    x : array of shape (n, d)
        Signals as rows (NumPy, CuPy or torch; floating, finite).
    dictionary : array of shape (k, d)
        Atoms as rows; ``x ~ z @ dictionary``.
    lam : float
        Weight of the L1 penalty, >= 0.
    n_iter : int, default 100
        Iterations (>= 1).
    step : float, optional
        Step size; default ``1 / ||D||_2^2``, which guarantees the lasso objective
        never increases.
    nonnegative : bool, default False
        Non-negative codes (the shrinkage becomes ``max(v - step lam, 0)``, the
        ReLU step of CRATE).
    init : array of shape (n, k), optional
        Starting codes; default zeros.
    backend : {"auto", "numpy", "numba", "cupy"}, optional
        Kernel.

    Returns
    -------
    array of shape (n, k), float64
        Same kind as ``x``.

    References
    ----------
    Daubechies, Defrise and De Mol, "An iterative thresholding algorithm for linear
    inverse problems with a sparsity constraint", 2004; Yu et al., "White-Box
    Transformers via Sparse Rate Reduction", 2023.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.compression import ista
    >>> D = np.eye(3)                            # orthonormal atoms: ISTA = soft-thresholding
    >>> ista(np.array([[2.0, -0.5, 0.1]]), D, lam=1.0).round(6).tolist()
    [[1.0, 0.0, 0.0]]
    """
    kind = check_array(x, "x", ndim=2, dtype_kind="f")
    check_array(dictionary, "dictionary", ndim=2, dtype_kind="f")
    if dictionary.shape[1] != x.shape[1]:
        raise ValueError(f"dictionary must have shape (k, d) with d = {x.shape[1]} (the columns of x); "
                         f"got shape {tuple(dictionary.shape)}")
    lam = check_float(lam, "lam", minimum=0.0)
    n_iter = check_int(n_iter, "n_iter", minimum=1)
    dic_host = np.asarray(to_numpy(dictionary), dtype=np.float64)
    if step is None:
        norm2 = float(np.linalg.norm(dic_host, 2)) ** 2
        if norm2 == 0.0:
            raise ValueError("dictionary is all zeros: no step size can be derived")
        step = 1.0 / norm2
    step = check_float(step, "step", minimum=0.0, strict_min=True)
    if init is not None:
        check_array(init, "init", ndim=2, dtype_kind="f")
        if tuple(init.shape) != (x.shape[0], dictionary.shape[0]):
            raise ValueError(f"init must have shape (n, k) = {(x.shape[0], dictionary.shape[0])}; got {tuple(init.shape)}")
    name, kernel = dispatch(_ISTA, backend, x)
    xb = for_backend(x, name)
    if name != "cupy":
        xb = np.asarray(xb, dtype=np.float64)
    z0 = None if init is None else for_backend(init, name)
    out = kernel(xb, dic_host if name != "cupy" else for_backend(dictionary, "cupy"), lam, step, n_iter,
                 bool(nonnegative), z0)
    return to_kind(out, kind, like=x)

"""Causal linear attention: softmax replaced by a feature map, computed as a running memory.

Papers: Katharopoulos et al., "Transformers are RNNs: Fast Autoregressive
Transformers with Linear Attention" (2020) (the scan); Zhang et al., "Linear
Attention via Orthogonal Memory" (2023) (why the running memory fills up, and
a remedy: compress the context onto a fixed set of orthogonal bases).

With a feature map ``phi`` the attention weight ``exp(q . k)`` becomes
``phi(q) . phi(k)``, and the causal output factorises:

    ``out_t = phi(q_t)^T S_t / (phi(q_t)^T z_t)``,
    ``S_t = sum_{s <= t} phi(k_s) v_s^T`` (d x dv),  ``z_t = sum_{s <= t} phi(k_s)``.

``S_t`` is a fixed-size memory written with outer products, exactly the
associative memory of chapter M1, so a step costs ``O(d dv)`` whatever the
length: ``O(n)`` in all instead of ``O(n^2)``. The quadratic form
``tril(phi(Q) phi(K)^T) V`` computes the same numbers and is the NumPy reference.

Three layers: :func:`causal_linear_attention` validates and dispatches;
``_linear_attention_numpy`` is the quadratic reference; ``_linear_scan_numba``
and the CuPy ``linear_attention_scan`` kernel run the recurrence.
"""

from __future__ import annotations

import functools
from typing import Any

import numba
import numpy as np

from .._validation import check_array, check_choice, check_float
from ..backend import array_module, dispatch, for_backend, to_kind

__all__ = ["causal_linear_attention", "FEATURE_MAPS"]

FEATURE_MAPS = ("elu+1", "relu", "identity")


def _feature_map(x, name: str):
    """``phi`` applied elementwise (NumPy or CuPy)."""
    xp = array_module(x)
    if name == "elu+1":
        return xp.where(x > 0, x + 1.0, xp.exp(xp.minimum(x, 0.0))).astype(x.dtype, copy=False)
    if name == "relu":
        return xp.maximum(x, 0.0)
    return x


# --------------------------------------------------------- NumPy reference
def _linear_attention_numpy(phi_q, phi_k, v, normalize: bool, eps: float):
    """Quadratic form: ``A = tril(phi(Q) phi(K)^T)``, ``out = A V / (A 1 + eps)``."""
    n = phi_q.shape[1]
    a = np.einsum("bid,bjd->bij", phi_q, phi_k) * np.tri(n, dtype=phi_q.dtype)  # (rows, n, n)
    out = a @ v  # (rows, n, dv)
    if normalize:
        out = out / (a.sum(axis=-1, keepdims=True) + eps)
    return out.astype(phi_q.dtype, copy=False)


# ------------------------------------------------------------ numba kernel
@numba.njit(cache=True, parallel=True, fastmath={"reassoc", "contract", "nsz", "arcp"})
def _linear_scan_numba(phi_q, phi_k, v, normalize, eps, out):  # pragma: no cover - jitted
    """Recurrence over time for every row: ``S += phi(k_t) v_t^T``, ``z += phi(k_t)``, read with ``phi(q_t)``."""
    rows, n, d = phi_q.shape
    dv = v.shape[2]
    for b in numba.prange(rows):
        state = np.zeros((d, dv))  # S_t, the memory
        z = np.zeros(d)  # running sum of keys (normaliser)
        num = np.empty(dv)
        for t in range(n):
            for a in range(d):
                ka = phi_k[b, t, a]
                z[a] += ka
                for c in range(dv):
                    state[a, c] += ka * v[b, t, c]
            for c in range(dv):
                num[c] = 0.0
            den = 0.0
            for a in range(d):
                qa = phi_q[b, t, a]
                den += qa * z[a]
                for c in range(dv):
                    num[c] += qa * state[a, c]
            scale = 1.0 / (den + eps) if normalize else 1.0
            for c in range(dv):
                out[b, t, c] = num[c] * scale


def _linear_attention_numba(phi_q, phi_k, v, normalize: bool, eps: float):
    out = np.empty((phi_q.shape[0], phi_q.shape[1], v.shape[2]), dtype=phi_q.dtype)
    _linear_scan_numba(phi_q, phi_k, v, bool(normalize), float(eps), out)
    return out


# ------------------------------------------------------------- CuPy kernel
_LINEAR_SCAN_CUDA = r"""
extern "C" __global__ void linear_attention_scan(
    const T* __restrict__ phi_q, const T* __restrict__ phi_k, const T* __restrict__ v,
    const long long n, const int dv, const int normalize, const T eps, T* __restrict__ out)
{
    // one thread block per row of heads; thread c owns column c of the memory S (D values)
    const long long b = blockIdx.x;
    const int c = threadIdx.x;
    __shared__ T k_t[D];
    __shared__ T q_t[D];
    T column[D];
    T z[D];
    for (int a = 0; a < D; ++a) { column[a] = (T)0; z[a] = (T)0; }
    for (long long t = 0; t < n; ++t) {
        __syncthreads();
        for (int a = c; a < D; a += blockDim.x) {
            k_t[a] = phi_k[(b * n + t) * D + a];
            q_t[a] = phi_q[(b * n + t) * D + a];
        }
        __syncthreads();
        const T v_tc = c < dv ? v[(b * n + t) * dv + c] : (T)0;
        T num = (T)0, den = (T)0;
        for (int a = 0; a < D; ++a) {
            z[a] += k_t[a];
            column[a] += k_t[a] * v_tc;
            num += q_t[a] * column[a];
            den += q_t[a] * z[a];
        }
        if (c < dv) out[(b * n + t) * dv + c] = normalize ? num / (den + eps) : num;
    }
}
"""


@functools.lru_cache(maxsize=None)
def _cupy_linear_kernel(ctype: str, d: int):
    import cupy

    return cupy.RawKernel(f"typedef {ctype} T;\n#define D {d}\n" + _LINEAR_SCAN_CUDA, "linear_attention_scan")


def _linear_attention_cupy(phi_q, phi_k, v, normalize: bool, eps: float):
    import cupy

    rows, n, d = phi_q.shape
    dv = v.shape[2]
    if dv > 1024:
        raise ValueError(f"the CuPy scan runs one thread per value column: dv must be <= 1024; got {dv}")
    dtype = np.dtype(phi_q.dtype)
    kernel = _cupy_linear_kernel("float" if dtype == np.float32 else "double", int(d))
    out = cupy.empty((rows, n, dv), dtype=dtype)
    threads = max(32, ((dv + 31) // 32) * 32)
    kernel((rows,), (threads,), (phi_q, phi_k, v, np.int64(n), np.int32(dv), np.int32(bool(normalize)),
                                 dtype.type(eps), out))
    return out


_KERNELS = {"numpy": _linear_attention_numpy, "numba": _linear_attention_numba, "cupy": _linear_attention_cupy}


# ----------------------------------------------------------- public entry
def causal_linear_attention(
    q: Any,
    k: Any,
    v: Any,
    *,
    feature_map: str = "elu+1",
    normalize: bool = True,
    eps: float = 1e-6,
    backend: str | None = None,
) -> Any:
    """Causal linear attention ``out_t = phi(q_t)^T S_t / (phi(q_t)^T z_t + eps)``.

    ``S_t = sum_{s <= t} phi(k_s) v_s^T`` is a ``d x dv`` memory updated once per
    token, so the cost grows linearly with the length. The numba and CuPy
    backends run this recurrence (a scan); the NumPy reference computes the
    equivalent quadratic form ``tril(phi(Q) phi(K)^T) V`` row-normalised.

    Parameters
    ----------
    q : array of shape (..., n, d)
        Queries: floating NumPy array, CuPy array or torch tensor; finite.
    k : array of shape (..., n, d)
        Keys, same shape as ``q``.
    v : array of shape (..., n, dv)
        Values, same leading dimensions and ``n``.
    feature_map : {"elu+1", "relu", "identity"}, default "elu+1"
        ``phi``: ``elu(x) + 1`` (positive, Katharopoulos et al.), ``max(x, 0)``,
        or none (then use ``normalize=False``: the denominator can vanish).
    normalize : bool, default True
        Divide by ``phi(q_t)^T z_t + eps``; ``False`` returns the raw memory read
        ``phi(q_t)^T S_t``.
    eps : float, default 1e-6
        Added to the denominator (>= 0).
    backend : {None, "auto", "numpy", "numba", "cupy"}, optional
        Kernel choice through :func:`companion.backend.dispatch`.

    Returns
    -------
    array of shape (..., n, dv)
        Same kind and dtype as ``q`` (float16/bfloat16 computed in float32).

    Raises
    ------
    TypeError
        non-floating inputs.
    ValueError
        empty inputs, NaN/inf, mismatched shapes, unknown feature map, ``eps < 0``.

    References
    ----------
    Katharopoulos et al., "Transformers are RNNs: Fast Autoregressive Transformers
    with Linear Attention", 2020; Zhang et al., "Linear Attention via Orthogonal
    Memory", 2023.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.memory import causal_linear_attention
    >>> q, k, v = np.random.default_rng(0).standard_normal((3, 2, 16, 4))
    >>> scan = causal_linear_attention(q, k, v, backend="numba")
    >>> quadratic = causal_linear_attention(q, k, v, backend="numpy")
    >>> scan.shape, bool(np.allclose(scan, quadratic))
    ((2, 16, 4), True)
    """
    kind = check_array(q, "q", min_ndim=2, dtype_kind="f")
    check_array(k, "k", min_ndim=2, dtype_kind="f")
    check_array(v, "v", min_ndim=2, dtype_kind="f")
    feature_map = check_choice(feature_map, "feature_map", FEATURE_MAPS)
    if not isinstance(normalize, (bool, np.bool_)):
        raise TypeError(f"normalize must be a bool; got {type(normalize).__name__} {normalize!r}")
    eps = check_float(eps, "eps", minimum=0.0)
    q_shape, k_shape, v_shape = tuple(q.shape), tuple(k.shape), tuple(v.shape)
    if q_shape != k_shape or v_shape[:-1] != q_shape[:-1]:
        raise ValueError(
            "q, k, v must have shapes (..., n, d), (..., n, d), (..., n, dv) with the same leading "
            f"dimensions; got {q_shape}, {k_shape}, {v_shape}"
        )
    name, kernel = dispatch(_KERNELS, backend, q, k, v)
    if kind == "torch":
        import torch

        work = q.dtype if q.dtype in (torch.float32, torch.float64) else torch.float32
        arrays = [for_backend(t.detach().to(work), name) for t in (q, k, v)]
    else:
        work = q.dtype if q.dtype in (np.float32, np.float64) else np.dtype(np.float32)
        arrays = [for_backend(a, name).astype(work, copy=False) for a in (q, k, v)]
    lead, n, d, dv = q_shape[:-2], q_shape[-2], q_shape[-1], v_shape[-1]
    rows = int(np.prod(lead)) if lead else 1
    xp = array_module(arrays[0])
    qb, kb, vb = (xp.ascontiguousarray(a.reshape(rows, n, a.shape[-1]).astype(arrays[0].dtype, copy=False))
                  for a in arrays)  # (rows, n, d|dv)
    out = kernel(_feature_map(qb, feature_map), _feature_map(kb, feature_map), vb, bool(normalize), eps)
    out = out.reshape(lead + (n, dv))
    result = to_kind(out, kind, like=q)
    return result.to(q.dtype) if kind == "torch" else result.astype(q.dtype, copy=False)

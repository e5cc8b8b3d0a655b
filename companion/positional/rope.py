"""Rotary position embeddings (RoPE).

Paper: Su et al., "RoFormer: Enhanced Transformer with Rotary Position
Embedding" (2021, Neurocomputing 2024).

The last axis of a query or key vector is cut into ``dim / 2`` pairs; pair ``j``
of the token at position ``p`` is rotated by the angle ``p * theta_j`` with
``theta_j = base ** (-2 j / dim)``. A rotation keeps lengths, and the dot
product of a query rotated by ``m`` with a key rotated by ``n`` sees only the
difference ``m - n``: relative position falls out of an absolute encoding.

Two layouts say which coordinates form a pair:

* ``"half"``: pair ``j`` is ``(x[j], x[j + dim/2])`` (rotate-half; GPT-NeoX, Llama);
* ``"interleaved"``: pair ``j`` is ``(x[2j], x[2j + 1])`` (the RoFormer paper; GPT-J).

Three layers: :func:`rope_apply` validates and dispatches; ``_rope_numpy`` is the
readable reference; ``_rope_rows_numba`` and the CuPy ``rope_rotate`` kernel
stream ``x`` once, reading cos/sin from a small table built per distinct position.
"""

from __future__ import annotations

import functools
from typing import Any

import numba
import numpy as np

from .._validation import check_array, check_choice, check_float, check_int
from ..backend import dispatch, for_backend, to_kind, to_numpy, to_torch

__all__ = ["rope_angles", "rope_apply", "rope_apply_torch", "LAYOUTS"]

LAYOUTS = ("half", "interleaved")


# ------------------------------------------------------------------ helpers
def _inverse_frequencies(dim: int, base: float) -> np.ndarray:
    """``theta_j = base ** (-2 j / dim)`` for ``j = 0 .. dim/2 - 1``, float64."""
    return base ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)  # (dim/2,)


def _as_array(value: Any) -> Any:
    """Let notebooks pass plain lists/ranges of positions."""
    if isinstance(value, (list, tuple, range)):
        return np.asarray(value)
    return value


def _check_x(x: Any, *, finite: bool = True) -> str:
    kind = check_array(x, "x", min_ndim=2, dtype_kind="f", finite=finite)
    dim = x.shape[-1]
    if dim % 2:
        raise ValueError(f"x must have an even last dimension (dim = 2 * pairs); got shape {tuple(x.shape)}")
    return kind


def _check_positions(positions: Any, x_shape: tuple[int, ...]) -> Any:
    """Validate ``positions`` against ``x.shape[:-1]``; return it (as an array) or None."""
    if positions is None:
        return None
    positions = _as_array(positions)
    check_array(positions, "positions", dtype_kind="iuf")
    lead = tuple(x_shape[:-1])
    shape = tuple(positions.shape)
    ok = len(shape) <= len(lead)
    if ok:
        try:
            ok = np.broadcast_shapes(shape, lead) == lead
        except ValueError:
            ok = False
    if not ok:
        raise ValueError(
            f"positions must have shape (seq,) = ({lead[-1]},) or be broadcastable to "
            f"x.shape[:-1] = {lead}; got shape {shape}"
        )
    return positions


def _check_options(base: Any, layout: Any) -> tuple[float, bool]:
    base = check_float(base, "base", minimum=0.0, strict_min=True)
    layout = check_choice(layout, "layout", LAYOUTS)
    return base, layout == "interleaved"


# --------------------------------------------------------------- rope_angles
def rope_angles(positions: Any, dim: int, *, base: float = 10000.0) -> Any:
    """Rotation angles ``theta_j * p`` for each position and pair.

    Parameters
    ----------
    positions : array of shape (seq,)
        Integer or floating positions (NumPy, CuPy, torch, or a list); finite.
    dim : int
        Head dimension; even and >= 2. There are ``dim // 2`` pairs.
    base : float, default 10000.0
        Frequency base, > 0; ``theta_j = base ** (-2 j / dim)``.

    Returns
    -------
    array of shape (seq, dim // 2), float64
        Same kind as ``positions`` (NumPy for lists).

    References
    ----------
    Su et al., "RoFormer: Enhanced Transformer with Rotary Position Embedding", 2021.

    Example
    -------
    >>> from companion.positional import rope_angles
    >>> rope_angles([0, 1, 2], 4).round(3).tolist()
    [[0.0, 0.0], [1.0, 0.01], [2.0, 0.02]]
    """
    positions = _as_array(positions)
    kind = check_array(positions, "positions", ndim=1, dtype_kind="iuf")
    dim = check_int(dim, "dim", minimum=2)
    if dim % 2:
        raise ValueError(f"dim must be even (dim = 2 * pairs); got {dim}")
    base = check_float(base, "base", minimum=0.0, strict_min=True)
    pos = np.asarray(to_numpy(positions), dtype=np.float64)  # (seq,)
    angles = pos[:, None] * _inverse_frequencies(dim, base)[None, :]  # (seq, dim/2)
    return to_kind(angles, kind, like=positions)


# --------------------------------------------------------- NumPy reference
def _rope_numpy(x: np.ndarray, positions: np.ndarray | None, inv_freq: np.ndarray, interleaved: bool) -> np.ndarray:
    """Reference: rotate every pair of ``x`` (..., seq, dim) by ``positions * inv_freq``."""
    half = x.shape[-1] // 2
    if positions is None:
        positions = np.arange(x.shape[-2])
    angles = np.asarray(positions, dtype=np.float64)[..., None] * inv_freq  # (..., seq, half)
    cos = np.cos(angles).astype(x.dtype)
    sin = np.sin(angles).astype(x.dtype)
    if interleaved:
        a, b = x[..., 0::2], x[..., 1::2]
    else:
        a, b = x[..., :half], x[..., half:]
    rotated_a = a * cos - b * sin
    rotated_b = b * cos + a * sin
    out = np.empty_like(x)  # (..., seq, dim)
    if interleaved:
        out[..., 0::2], out[..., 1::2] = rotated_a, rotated_b
    else:
        out[..., :half], out[..., half:] = rotated_a, rotated_b
    return out


# ------------------------------------------------------- shared kernel prep
def _compact_positions(xp, positions, lead: tuple[int, ...]):
    """Positions padded to ``len(lead)`` dims (C-contiguous float64) and per-dim element strides.

    A row ``r`` of ``x`` (flattened lead index) reads table row
    ``sum_k index_k(r) * strides[k]``; broadcast dims get stride 0, so a table is
    built once per *distinct* position, not once per row.
    """
    if positions is None:
        pos = xp.arange(lead[-1], dtype=xp.float64)
    else:
        pos = xp.asarray(positions, dtype=xp.float64)
    pshape = (1,) * (len(lead) - pos.ndim) + tuple(pos.shape)
    pos = xp.ascontiguousarray(pos.reshape(pshape))
    strides = np.zeros(len(lead), dtype=np.int64)
    step = 1
    for k in range(len(lead) - 1, -1, -1):
        strides[k] = 0 if pshape[k] == 1 else step
        step *= pshape[k]
    return pos.reshape(-1), strides


def _kernel_dtype(dtype) -> np.dtype:
    """float32 and float64 run natively; other floats (float16) compute in float32."""
    return np.dtype(dtype) if np.dtype(dtype) in (np.float32, np.float64) else np.dtype(np.float32)


# ------------------------------------------------------------ numba kernel
@numba.njit(cache=True)
def _table_row(r, lead_shape, pos_strides, nd):  # pragma: no cover - jitted
    """Row of the cos/sin table that flattened row ``r`` of ``x`` uses (stride arithmetic)."""
    rem = np.int64(r)  # prange indices may be unsigned; mixing with int64 would give floats
    t = np.int64(0)
    for k in range(nd - 1, -1, -1):
        n = lead_shape[k]
        t += (rem % n) * pos_strides[k]
        rem //= n
    return t


@numba.njit(cache=True, parallel=True)
def _rope_rows_numba(x, cos_t, sin_t, lead_shape, pos_strides, interleaved, out, bad):  # pragma: no cover - jitted
    """Rotate every row of ``x`` (rows, dim) into ``out``; ``bad[r] = 1`` when row ``r`` holds NaN/inf.

    The finiteness check rides along the single pass over ``x`` (``z != z`` is
    true only for NaN, and ``a * 0`` is NaN for NaN and inf), so validating costs
    no extra read of the input.
    """
    n_rows, dim = x.shape
    half = dim // 2
    nd = lead_shape.shape[0]
    for r in numba.prange(n_rows):
        t = _table_row(r, lead_shape, pos_strides, nd)
        flag = False
        if interleaved:
            for j in range(half):
                a = x[r, 2 * j]
                b = x[r, 2 * j + 1]
                c = cos_t[t, j]
                s = sin_t[t, j]
                out[r, 2 * j] = a * c - b * s
                out[r, 2 * j + 1] = b * c + a * s
                z = a * 0 + b * 0
                flag |= z != z
        else:
            for j in range(half):
                a = x[r, j]
                b = x[r, j + half]
                c = cos_t[t, j]
                s = sin_t[t, j]
                out[r, j] = a * c - b * s
                out[r, j + half] = b * c + a * s
                z = a * 0 + b * 0
                flag |= z != z
        bad[r] = flag


_TABLE_CACHE: dict = {}


def _cos_sin_table(pos: np.ndarray, inv_freq: np.ndarray, dtype, default: bool):
    """cos/sin of ``pos * inv_freq`` (distinct positions, half) in ``dtype``.

    Tables for the default positions ``0..seq-1`` are cached (a handful of
    entries): models call RoPE with the same length over and over. The cached
    arrays are read-only.
    """
    key = (len(pos), inv_freq.tobytes(), np.dtype(dtype).str)
    if default and key in _TABLE_CACHE:
        return _TABLE_CACHE[key]
    angles = pos[:, None] * inv_freq[None, :]  # (distinct positions, half)
    cos_t = np.cos(angles).astype(dtype)
    sin_t = np.sin(angles).astype(dtype)
    if default:
        cos_t.setflags(write=False)
        sin_t.setflags(write=False)
        if len(_TABLE_CACHE) >= 16:
            _TABLE_CACHE.pop(next(iter(_TABLE_CACHE)))
        _TABLE_CACHE[key] = (cos_t, sin_t)
    return cos_t, sin_t


def _rope_numba(x: np.ndarray, positions, inv_freq: np.ndarray, interleaved: bool, out=None) -> np.ndarray:
    lead = tuple(x.shape[:-1])
    dtype = _kernel_dtype(x.dtype)
    pos, strides = _compact_positions(np, None if positions is None else to_numpy(positions), lead)
    cos_t, sin_t = _cos_sin_table(pos, inv_freq, dtype, default=positions is None)
    x2 = np.ascontiguousarray(x, dtype=dtype).reshape(-1, x.shape[-1])  # (rows, dim)
    # Writing into a caller's buffer (or into x itself: each pair is read before it is
    # written) skips the page faults of a fresh output array, about half the time at 134 MB.
    out2 = np.empty_like(x2) if out is None or out.dtype != dtype else out.reshape(x2.shape)
    bad = np.zeros(x2.shape[0], dtype=np.bool_)
    _rope_rows_numba(x2, cos_t, sin_t, np.asarray(lead, dtype=np.int64), strides, bool(interleaved), out2, bad)
    if bad.any():
        raise ValueError("x must contain only finite values; found NaN or infinity")
    if out is not None:
        if out2 is not out and out2.base is not out:
            out[...] = out2.reshape(x.shape)
        return out
    return out2.reshape(x.shape).astype(x.dtype, copy=False)


# ------------------------------------------------------------- CuPy kernel
_ROPE_CUDA = r"""
extern "C" __global__ void rope_rotate(
    const T* __restrict__ x, const T* __restrict__ cos_t, const T* __restrict__ sin_t,
    const long long* __restrict__ lead_shape, const long long* __restrict__ pos_strides,
    const int nd, const long long n_rows, const int half, const int interleaved,
    T* __restrict__ out)
{
    const long long n_pairs = n_rows * (long long)half;
    for (long long p = blockIdx.x * (long long)blockDim.x + threadIdx.x; p < n_pairs;
         p += (long long)blockDim.x * gridDim.x) {
        const long long r = p / half;
        const int j = (int)(p - r * half);
        long long rem = r, t = 0;
        for (int k = nd - 1; k >= 0; --k) {
            const long long n = lead_shape[k];
            t += (rem % n) * pos_strides[k];
            rem /= n;
        }
        const long long row = r * 2LL * half;
        const long long ia = interleaved ? row + 2 * j : row + j;
        const long long ib = interleaved ? ia + 1 : ia + half;
        const T a = x[ia], b = x[ib];
        const T c = cos_t[t * half + j], s = sin_t[t * half + j];
        out[ia] = a * c - b * s;
        out[ib] = b * c + a * s;
    }
}
"""


@functools.lru_cache(maxsize=None)
def _cupy_rope_kernel(ctype: str):
    import cupy

    return cupy.RawKernel(f"typedef {ctype} T;\n" + _ROPE_CUDA, "rope_rotate")


def _rope_cupy(x, positions, inv_freq: np.ndarray, interleaved: bool):
    import cupy

    lead = tuple(x.shape[:-1])
    dtype = _kernel_dtype(x.dtype)
    pos, strides = _compact_positions(cupy, None if positions is None else for_backend(positions, "cupy"), lead)
    angles = pos[:, None] * cupy.asarray(inv_freq)[None, :]  # (distinct positions, half)
    cos_t = cupy.ascontiguousarray(cupy.cos(angles).astype(dtype))
    sin_t = cupy.ascontiguousarray(cupy.sin(angles).astype(dtype))
    x2 = cupy.ascontiguousarray(x, dtype=dtype)
    out = cupy.empty_like(x2)
    half = x.shape[-1] // 2
    n_rows = x2.size // x.shape[-1]
    threads = 256
    blocks = max(1, min((n_rows * half + threads - 1) // threads, 1 << 20))
    kernel = _cupy_rope_kernel("float" if dtype == np.float32 else "double")
    kernel(
        (blocks,), (threads,),
        (x2, cos_t, sin_t, cupy.asarray(lead, dtype=cupy.int64), cupy.asarray(strides),
         np.int32(len(lead)), np.int64(n_rows), np.int32(half), np.int32(bool(interleaved)), out),
    )
    return out.astype(x.dtype, copy=False)


_KERNELS = {"numpy": _rope_numpy, "numba": _rope_numba, "cupy": _rope_cupy}


# ------------------------------------------------------------- torch path
def _rope_torch(x, positions, inv_freq: np.ndarray, interleaved: bool):
    """Differentiable torch version (same maths as the NumPy reference)."""
    import torch

    half = x.shape[-1] // 2
    inv = torch.as_tensor(inv_freq, dtype=torch.float64, device=x.device)  # (half,)
    if positions is None:
        pos = torch.arange(x.shape[-2], dtype=torch.float64, device=x.device)
    else:
        pos = to_torch(positions, device=x.device).detach().to(torch.float64)
    angles = pos[..., None] * inv  # (..., seq, half)
    cos = torch.cos(angles).to(x.dtype)
    sin = torch.sin(angles).to(x.dtype)
    if interleaved:
        a, b = x[..., 0::2], x[..., 1::2]
        return torch.stack((a * cos - b * sin, b * cos + a * sin), dim=-1).flatten(-2)
    a, b = x[..., :half], x[..., half:]
    return torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)


def rope_apply_torch(x, positions: Any = None, *, base: float = 10000.0, layout: str = "half"):
    """Rotary embedding with differentiable torch ops (autograd flows through ``x``).

    Same maths and arguments as :func:`rope_apply`; used by ``companion.nn``
    inside models that train. Positions are constants (no gradient).

    Parameters
    ----------
    x : torch.Tensor of shape (..., seq, dim)
        Floating tensor, ``dim`` even, CPU or CUDA.
    positions : array of shape (seq,) or broadcastable to x.shape[:-1], optional
        Integer or floating positions; default ``0 .. seq - 1``.
    base : float, default 10000.0
        Frequency base, ``theta_j = base ** (-2 j / dim)``.
    layout : {"half", "interleaved"}, default "half"
        Which coordinates form a rotated pair (see the module docstring).

    Returns
    -------
    torch.Tensor of shape (..., seq, dim)
        Same dtype and device as ``x``.

    References
    ----------
    Su et al., "RoFormer: Enhanced Transformer with Rotary Position Embedding", 2021.

    Example
    -------
    >>> import torch
    >>> from companion.positional import rope_apply_torch
    >>> x = torch.randn(2, 5, 8, requires_grad=True)
    >>> y = rope_apply_torch(x)
    >>> y.sum().backward()
    >>> x.grad.shape
    torch.Size([2, 5, 8])
    """
    kind = _check_x(x)
    if kind != "torch":
        raise TypeError(f"x must be a torch tensor for rope_apply_torch; got a {kind} array (use rope_apply)")
    positions = _check_positions(positions, tuple(x.shape))
    base, interleaved = _check_options(base, layout)
    return _rope_torch(x, positions, _inverse_frequencies(x.shape[-1], base), interleaved)


# ----------------------------------------------------------- public entry
def rope_apply(
    x: Any,
    positions: Any = None,
    *,
    base: float = 10000.0,
    layout: str = "half",
    backend: str = "auto",
    out: Any = None,
) -> Any:
    """Rotate queries or keys by their positions (rotary position embedding).

    Pair ``j`` of the vector at position ``p`` becomes
    ``(a cos(p theta_j) - b sin(p theta_j), b cos(p theta_j) + a sin(p theta_j))``
    with ``theta_j = base ** (-2 j / dim)``. Angles are computed in float64 and
    cast to ``x``'s dtype; the result has ``x``'s dtype.

    Parameters
    ----------
    x : array of shape (..., seq, dim)
        Floating NumPy array, CuPy array or torch tensor (CPU or CUDA); ``dim``
        even; finite.
    positions : array of shape (seq,) or broadcastable to x.shape[:-1], optional
        Integer or floating positions, e.g. ``(batch, 1, seq)`` or
        ``(batch, heads, seq)``; finite. Default ``0 .. seq - 1``.
    base : float, default 10000.0
        Frequency base, > 0.
    layout : {"half", "interleaved"}, default "half"
        ``"half"`` pairs ``(j, j + dim/2)`` (GPT-NeoX / Llama);
        ``"interleaved"`` pairs ``(2j, 2j + 1)`` (RoFormer / GPT-J).
    backend : {"auto", "numpy", "numba", "cupy"}, default "auto"
        Kernel for non-differentiable input. A torch tensor that requires grad
        (with grad mode on), a bfloat16 tensor, or (under ``"auto"``) a CUDA
        tensor when CuPy is missing goes through :func:`rope_apply_torch`.
    out : numpy.ndarray, optional
        C-contiguous NumPy array of ``x``'s shape and dtype to write the result
        into (``out=x`` rotates in place); NumPy input and the ``"numpy"`` or
        ``"numba"`` backend only. Saves allocating (and page-faulting) a new
        array on every call.

    Returns
    -------
    array of shape (..., seq, dim)
        Same kind, dtype and device as ``x`` (``out`` itself when given).

    Raises
    ------
    TypeError
        ``x`` is not a floating array, ``positions`` not numeric.
    ValueError
        odd ``dim``, ``x`` with fewer than 2 dims, NaN/inf, positions of a
        shape that does not broadcast, unknown ``layout`` or ``backend``.

    References
    ----------
    Su et al., "RoFormer: Enhanced Transformer with Rotary Position Embedding", 2021.

    Example
    -------
    >>> import numpy as np
    >>> from companion.positional import rope_apply
    >>> x = np.random.default_rng(0).standard_normal((2, 4, 8)).astype(np.float32)
    >>> y = rope_apply(x)
    >>> y.shape, y.dtype
    ((2, 4, 8), dtype('float32'))
    >>> bool(np.allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), atol=1e-5))
    True
    """
    kind = _check_x(x, finite=False)
    positions = _check_positions(positions, tuple(x.shape))
    base, interleaved = _check_options(base, layout)
    inv_freq = _inverse_frequencies(x.shape[-1], base)
    name, kernel = dispatch(_KERNELS, backend, x)
    if out is not None:
        _check_out(out, x, kind, name)
    if name != "numba":  # the numba kernel checks finiteness during its single pass
        check_array(x, "x", min_ndim=2, dtype_kind="f")
    if kind == "torch":
        import torch

        needs_grad = x.requires_grad and torch.is_grad_enabled()
        odd_dtype = x.dtype not in (torch.float16, torch.float32, torch.float64)  # e.g. bfloat16
        # a CUDA tensor without CuPy stays on its GPU rather than taking a round trip through the host
        gpu_without_cupy = x.device.type == "cuda" and name != "cupy" and backend in (None, "auto")
        if needs_grad or odd_dtype or gpu_without_cupy:
            if name == "numba":
                check_array(x, "x", min_ndim=2, dtype_kind="f")
            return _rope_torch(x, positions, inv_freq, interleaved)
    xb = for_backend(x, name)
    pb = None if positions is None else for_backend(positions, name)
    if out is not None:
        if name == "numba":
            return _rope_numba(xb, pb, inv_freq, interleaved, out=out)
        out[...] = kernel(xb, pb, inv_freq, interleaved)
        return out
    result = kernel(xb, pb, inv_freq, interleaved)
    return to_kind(result, kind, like=x)


def _check_out(out: Any, x: Any, kind: str, backend_name: str) -> None:
    """``out=`` must be a C-contiguous NumPy array shaped and typed like NumPy ``x``."""
    if kind != "numpy" or backend_name not in ("numpy", "numba"):
        raise TypeError(
            f"out= is supported for NumPy input on the 'numpy' and 'numba' backends; got {kind} input "
            f"on backend {backend_name!r}"
        )
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray; got {type(out).__name__}")
    if out.shape != x.shape or out.dtype != x.dtype or not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(
            f"out must be a writeable C-contiguous array of shape {tuple(x.shape)} and dtype {x.dtype}; got "
            f"shape {out.shape}, dtype {out.dtype}, contiguous={out.flags.c_contiguous}, "
            f"writeable={out.flags.writeable}"
        )

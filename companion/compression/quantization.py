"""Group-wise asymmetric min-max quantization with real bit packing (1 to 8 bits).

A floating array is cut into groups of ``group_size`` consecutive elements along
one axis. Each group keeps its minimum ``z`` (the *zero*) and a step
``s = (max - z) / (2**bits - 1)`` (the *scale*); element ``x`` becomes the code
``q = round((x - z) / s)`` in ``0 .. 2**bits - 1`` and is read back as
``q * s + z``. Rounding to the nearest level means that every element comes back
within half a step, ``|x - (q s + z)| <= s / 2`` (plus float rounding).

Which axis the groups run along decides what the statistics adapt to. For a key
cache of shape ``(batch, heads, tokens, head_dim)``:

* ``axis=-1`` groups the channels of one token: **per-token** quantization;
* ``axis=-2`` groups the tokens of one channel: **per-channel** quantization,
  which follows a channel with a large typical magnitude instead of letting it
  stretch the range of every token (the observation behind KIVI and the
  papers of chapter C2).

Scales and zeros are stored in float16 by default, as deployed caches do. They
are rounded *outward* (zero down, scale up) so the half-step bound still holds
with the stored values. The codes are bit-packed
(:func:`companion.kernels.pack_bits` layout), so :attr:`QuantizedTensor.nbytes`
counts the bytes actually held: packed codes plus scales plus zeros.

Three layers: :func:`quantize` / :func:`dequantize` validate and dispatch;
``_quantize_numpy`` / ``_dequantize_numpy`` are the references; the numba and
CuPy kernels fuse "compute code and pack" and "unpack and rescale" into one pass
over blocks of 8 codes. When the groups run along an inner axis and fill whole
bytes (per-channel keys), the numba path reads the array in place tile by tile
instead of copying it into the grouped layout first.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numba
import numpy as np

from .._validation import check_array, check_choice, check_int
from ..backend import dispatch, for_backend, to_kind, to_numpy
from ..kernels.bitpack import _pack_numpy, _unpack_numpy

__all__ = ["QuantizedTensor", "quantize", "dequantize", "fake_quantize", "SCALE_DTYPES"]

SCALE_DTYPES = ("float16", "float32")
_F16_MAX = float(np.finfo(np.float16).max)


@dataclasses.dataclass(frozen=True)
class QuantizedTensor:
    """A quantized array: packed codes plus one scale and one zero per group.

    Attributes
    ----------
    packed : array of shape (ceil(size * bits / 8),), uint8
        Codes in the order of ``x`` with ``axis`` moved last, bit-packed.
    scales, zeros : arrays of shape (rows, n_groups)
        Step and minimum of each group (``scale_dtype``); ``rows`` is the
        product of the other axes.
    shape : tuple of int
        Shape of the original array.
    axis : int
        Non-negative axis the groups run along.
    group_size : int
        Elements per group.
    bits : int
        Bits per code, 1 to 8.
    dtype : str
        NumPy name of the original dtype (``dequantize`` returns it).
    kind : str
        ``"numpy"``, ``"cupy"`` or ``"torch"``: the kind ``dequantize`` returns.
    device : str or None
        torch device of the original tensor.
    """

    packed: Any
    scales: Any
    zeros: Any
    shape: tuple
    axis: int
    group_size: int
    bits: int
    dtype: str
    kind: str = "numpy"
    device: Any = None

    @property
    def size(self) -> int:
        """Number of quantized elements."""
        return int(np.prod(self.shape))

    @property
    def n_groups(self) -> int:
        """Number of groups (one scale and one zero each)."""
        return int(np.prod(self.scales.shape))

    @property
    def nbytes(self) -> int:
        """Bytes actually held: packed codes + scales + zeros."""
        return int(self.packed.nbytes + self.scales.nbytes + self.zeros.nbytes)

    @property
    def bits_per_element(self) -> float:
        """``8 * nbytes / size``: the real cost per element, metadata included."""
        return 8.0 * self.nbytes / self.size


# ------------------------------------------------------------------ helpers
def _grouped(xp, x, axis: int, group_size: int):
    """``x`` with ``axis`` moved last, as a C-contiguous (rows, n_groups, group_size) array."""
    moved = xp.moveaxis(x, axis, -1)
    return xp.ascontiguousarray(moved).reshape(-1, x.shape[axis] // group_size, group_size)


def _outward_scale_zero(mins: np.ndarray, maxs: np.ndarray, bits: int, scale_dtype: str):
    """Zero = min rounded down, scale = (max - zero) / levels rounded up, in ``scale_dtype``.

    Rounding outward keeps every element inside ``[zero, zero + levels * scale]``,
    so the half-step bound survives the narrow storage type.
    """
    dtype = np.dtype(scale_dtype)
    mins = np.asarray(mins, dtype=np.float64)
    if dtype == np.float16 and (np.abs(mins).max() > _F16_MAX or np.abs(maxs).max() > _F16_MAX):
        raise ValueError(
            f"values of magnitude above {_F16_MAX:.0f} do not fit float16 scales and zeros; "
            "pass scale_dtype='float32'"
        )
    zeros = mins.astype(dtype)
    low = zeros.astype(np.float64) > mins
    zeros[low] = _next_float(zeros[low], up=False)
    steps = (np.asarray(maxs, dtype=np.float64) - zeros.astype(np.float64)) / ((1 << bits) - 1)
    scales = steps.astype(dtype)
    short = scales.astype(np.float64) < steps
    scales[short] = _next_float(scales[short], up=True)
    return scales, zeros


def _next_float(v: np.ndarray, *, up: bool) -> np.ndarray:
    """``np.nextafter(v, +-inf)`` for finite float16/float32 through their bit patterns.

    NumPy's float16 ``nextafter`` is emulated and slow; stepping the integer
    pattern is exact: away from zero adds one to the magnitude, towards zero
    subtracts one, and a zero steps to the smallest subnormal of the right sign.
    """
    uint = np.uint16 if v.dtype == np.float16 else np.uint32
    sign = uint(1) << uint(8 * v.dtype.itemsize - 1)
    pattern = v.view(uint)
    negative = (pattern & sign) != 0
    zero = (pattern & ~sign) == 0
    grows = negative != up  # the magnitude grows when moving up from a positive or down from a negative
    stepped = np.where(grows, pattern + uint(1), pattern - uint(1)).astype(uint)
    stepped = np.where(zero, uint(1) if up else (sign | uint(1)), stepped).astype(uint)
    return stepped.view(v.dtype)


def _array_module(backend_name: str):
    """``numpy`` for the host backends, ``cupy`` for the GPU one."""
    if backend_name == "cupy":
        import cupy

        return cupy
    return np


def _compute_dtype(dtype) -> np.dtype:
    """float64 stays float64; every other float dequantizes in float32."""
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


# --------------------------------------------------------- NumPy reference
def _quantize_numpy(x3: np.ndarray, bits: int, scale_dtype: str):
    """Reference: per-group min/max, outward scale/zero, round to nearest level, pack."""
    mins, maxs = x3.min(axis=-1), x3.max(axis=-1)  # (rows, n_groups)
    scales, zeros = _outward_scale_zero(mins, maxs, bits, scale_dtype)
    s = scales.astype(np.float64)[..., None]
    z = zeros.astype(np.float64)[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        levels = np.rint((x3.astype(np.float64) - z) / s)
    codes = np.where(s > 0, np.clip(levels, 0, (1 << bits) - 1), 0).astype(np.uint8)  # (rows, n_groups, g)
    return _pack_numpy(codes, bits), scales, zeros


def _dequantize_numpy(packed: np.ndarray, scales: np.ndarray, zeros: np.ndarray, bits: int, group_size: int, dtype):
    """Reference: unpack, then ``code * scale + zero`` per group (float64 maths, cast once)."""
    codes = _unpack_numpy(packed, bits, scales.size * group_size).reshape(*scales.shape, group_size)
    values = codes * scales.astype(np.float64)[..., None] + zeros.astype(np.float64)[..., None]
    return values.astype(_compute_dtype(dtype))


# ------------------------------------------------------------ numba kernels
@numba.njit(cache=True, parallel=True)
def _group_min_max_numba(x2, mins, maxs):  # pragma: no cover - jitted
    """Min and max of each row of ``x2`` (groups, group_size) in float64."""
    for r in numba.prange(x2.shape[0]):
        lo = np.float64(x2[r, 0])
        hi = lo
        for j in range(1, x2.shape[1]):
            v = np.float64(x2[r, j])
            lo = min(lo, v)
            hi = max(hi, v)
        mins[r] = lo
        maxs[r] = hi


@numba.njit(cache=True, parallel=True)
def _quantize_pack_numba(flat, scales, zeros, group_size, bits, out):  # pragma: no cover - jitted
    """Fused: code of each element (float64 maths, as the reference) packed 8 codes per iteration."""
    n = flat.shape[0]
    top = np.float64((1 << bits) - 1)
    for blk in numba.prange((n + 7) // 8):
        acc = np.uint64(0)
        start = blk * 8
        stop = min(start + 8, n)
        for i in range(start, stop):
            g = i // group_size
            s = scales[g]
            code = 0.0
            if s > 0:
                code = np.rint((np.float64(flat[i]) - zeros[g]) / s)
                code = min(max(code, 0.0), top)
            acc |= np.uint64(code) << np.uint64((i - start) * bits)
        first = blk * bits
        for j in range(min(bits, out.shape[0] - first)):
            out[first + j] = np.uint8((acc >> np.uint64(8 * j)) & np.uint64(0xFF))


@numba.njit(cache=True, parallel=True)
def _unpack_dequantize_numba(packed, scales, zeros, group_size, bits, out):  # pragma: no cover - jitted
    """Fused: unpack 8 codes per iteration and write ``code * scale + zero`` of their group."""
    n = out.shape[0]
    mask = np.uint64((1 << bits) - 1)
    for blk in numba.prange((n + 7) // 8):
        first = blk * bits
        acc = np.uint64(0)
        for j in range(min(bits, packed.shape[0] - first)):
            acc |= np.uint64(packed[first + j]) << np.uint64(8 * j)
        start = blk * 8
        stop = min(start + 8, n)
        for i in range(start, stop):
            g = i // group_size
            code = np.float64((acc >> np.uint64((i - start) * bits)) & mask)
            out[i] = code * scales[g] + zeros[g]


def _quantize_numba(x3: np.ndarray, bits: int, scale_dtype: str):
    if x3.dtype == np.float16:  # numba has no float16 arithmetic; float32 holds every float16 exactly
        x3 = x3.astype(np.float32)
    rows, n_groups, g = x3.shape
    mins = np.empty(rows * n_groups)
    maxs = np.empty(rows * n_groups)
    _group_min_max_numba(x3.reshape(-1, g), mins, maxs)
    scales, zeros = _outward_scale_zero(mins, maxs, bits, scale_dtype)
    out = np.empty((x3.size * bits + 7) // 8, dtype=np.uint8)
    _quantize_pack_numba(x3.reshape(-1), scales.astype(np.float64), zeros.astype(np.float64), g, bits, out)
    return out, scales.reshape(rows, n_groups), zeros.reshape(rows, n_groups)


def _dequantize_numba(packed, scales, zeros, bits: int, group_size: int, dtype):
    ct = _compute_dtype(dtype)
    out = np.empty(scales.size * group_size, dtype=ct)
    _unpack_dequantize_numba(packed, scales.reshape(-1).astype(np.float64), zeros.reshape(-1).astype(np.float64),
                             group_size, bits, out)
    return out.reshape(*scales.shape, group_size)


# ------------------------------------------- numba kernels, groups not along the last axis
# When the groups run along an inner axis (per-channel keys: axis=-2), moving that axis
# last costs a full copy of the input. These kernels read the array in place as
# (outer, length, inner) tiles, one group of ``group_size`` rows at a time, and write
# the codes of each group straight to its bytes. They apply when a group's codes fill
# whole bytes (``group_size * bits % 8 == 0``); the layout is identical to the reference.
def _tile_eligible(shape: tuple, axis: int, group_size: int, bits: int) -> bool:
    inner = int(np.prod(shape[axis + 1:]))
    return inner > 1 and (group_size * bits) % 8 == 0


@numba.njit(cache=True, parallel=True)
def _tile_min_max_numba(x3, group_size, mins, maxs):  # pragma: no cover - jitted
    """Min and max of every group of ``x3`` (outer, length, inner) into ``mins``/``maxs`` (outer, inner, n_groups)."""
    outer, length, inner = x3.shape
    n_groups = length // group_size
    for task in numba.prange(outer * n_groups):
        o = task // n_groups
        j = task - o * n_groups
        t0 = j * group_size
        for i in range(inner):  # the tile (group_size x inner) stays in cache across channels
            lo = np.float64(x3[o, t0, i])
            hi = lo
            for t in range(t0 + 1, t0 + group_size):
                v = np.float64(x3[o, t, i])
                lo = min(lo, v)
                hi = max(hi, v)
            mins[o, i, j] = lo
            maxs[o, i, j] = hi


@numba.njit(cache=True, parallel=True)
def _tile_quantize_pack_numba(x3, scales, zeros, group_size, bits, out):  # pragma: no cover - jitted
    """Codes of every group (float64 maths, as the reference), packed at the group's byte offset."""
    outer, length, inner = x3.shape
    n_groups = length // group_size
    group_bytes = group_size * bits // 8
    top = np.float64((1 << bits) - 1)
    for task in numba.prange(outer * n_groups):
        o = task // n_groups
        j = task - o * n_groups
        t0 = j * group_size
        for i in range(inner):
            s = scales[o, i, j]
            z = zeros[o, i, j]
            pos = ((o * inner + i) * n_groups + j) * group_bytes  # group (row o*inner+i, j) in the moved layout
            acc = np.uint64(0)
            n_acc = 0
            for t in range(t0, t0 + group_size):
                code = 0.0
                if s > 0:
                    code = min(max(np.rint((np.float64(x3[o, t, i]) - z) / s), 0.0), top)
                acc |= np.uint64(code) << np.uint64(n_acc)
                n_acc += bits
                while n_acc >= 8:
                    out[pos] = np.uint8(acc & np.uint64(0xFF))
                    acc >>= np.uint64(8)
                    n_acc -= 8
                    pos += 1


@numba.njit(cache=True, parallel=True)
def _tile_unpack_dequantize_numba(packed, scales, zeros, group_size, bits, out3):  # pragma: no cover - jitted
    """Inverse of :func:`_tile_quantize_pack_numba`, writing ``out3`` (outer, length, inner) in place."""
    outer, length, inner = out3.shape
    n_groups = length // group_size
    group_bytes = group_size * bits // 8
    mask = np.uint64((1 << bits) - 1)
    for task in numba.prange(outer * n_groups):
        o = task // n_groups
        j = task - o * n_groups
        t0 = j * group_size
        for i in range(inner):
            s = scales[o, i, j]
            z = zeros[o, i, j]
            pos = ((o * inner + i) * n_groups + j) * group_bytes
            acc = np.uint64(0)
            n_acc = 0
            for t in range(t0, t0 + group_size):
                if n_acc < bits:
                    acc |= np.uint64(packed[pos]) << np.uint64(n_acc)
                    pos += 1
                    n_acc += 8
                out3[o, t, i] = np.float64(acc & mask) * s + z
                acc >>= np.uint64(bits)
                n_acc -= bits


def _tile_shape(shape: tuple, axis: int) -> tuple[int, int, int]:
    return int(np.prod(shape[:axis])), int(shape[axis]), int(np.prod(shape[axis + 1:]))


def _quantize_numba_tiles(x: np.ndarray, axis: int, group_size: int, bits: int, scale_dtype: str):
    if x.dtype == np.float16:
        x = x.astype(np.float32)
    outer, length, inner = _tile_shape(x.shape, axis)
    x3 = np.ascontiguousarray(x).reshape(outer, length, inner)  # a view for C-contiguous input
    n_groups = length // group_size
    mins = np.empty((outer, inner, n_groups))
    maxs = np.empty((outer, inner, n_groups))
    _tile_min_max_numba(x3, group_size, mins, maxs)
    scales, zeros = _outward_scale_zero(mins, maxs, bits, scale_dtype)
    out = np.empty(x.size * bits // 8, dtype=np.uint8)
    _tile_quantize_pack_numba(x3, scales.astype(np.float64), zeros.astype(np.float64), group_size, bits, out)
    return out, scales.reshape(outer * inner, n_groups), zeros.reshape(outer * inner, n_groups)


def _dequantize_numba_tiles(packed, scales, zeros, bits: int, group_size: int, dtype, shape: tuple, axis: int):
    outer, length, inner = _tile_shape(shape, axis)
    n_groups = length // group_size
    out3 = np.empty((outer, length, inner), dtype=_compute_dtype(dtype))
    _tile_unpack_dequantize_numba(packed, scales.astype(np.float64).reshape(outer, inner, n_groups),
                                  zeros.astype(np.float64).reshape(outer, inner, n_groups), group_size, bits, out3)
    return out3.reshape(shape)


# ------------------------------------------------------------- CuPy kernels
_QUANT_CUDA = r"""
extern "C" __global__ void quantize_pack(const T* __restrict__ x, const double* __restrict__ scales,
    const double* __restrict__ zeros, const long long n, const long long group_size, const int bits,
    const long long n_out, unsigned char* __restrict__ out)
{
    const double top = (double)((1 << bits) - 1);
    for (long long blk = blockIdx.x * (long long)blockDim.x + threadIdx.x; blk < (n + 7) / 8;
         blk += (long long)blockDim.x * gridDim.x) {
        unsigned long long acc = 0;
        const long long start = blk * 8;
        const long long stop = start + 8 < n ? start + 8 : n;
        for (long long i = start; i < stop; ++i) {
            const long long g = i / group_size;
            const double s = scales[g];
            double code = 0.0;
            if (s > 0.0) code = fmin(fmax(rint(((double)x[i] - zeros[g]) / s), 0.0), top);
            acc |= ((unsigned long long)code) << ((i - start) * bits);
        }
        const long long first = blk * bits;
        for (int j = 0; j < bits && first + j < n_out; ++j)
            out[first + j] = (unsigned char)((acc >> (8 * j)) & 0xFFull);
    }
}

extern "C" __global__ void unpack_dequantize(const unsigned char* __restrict__ packed, const long long n_in,
    const double* __restrict__ scales, const double* __restrict__ zeros, const long long n, const long long group_size,
    const int bits, C* __restrict__ out)
{
    const unsigned long long mask = (1ull << bits) - 1ull;
    for (long long blk = blockIdx.x * (long long)blockDim.x + threadIdx.x; blk < (n + 7) / 8;
         blk += (long long)blockDim.x * gridDim.x) {
        const long long first = blk * bits;
        unsigned long long acc = 0;
        for (int j = 0; j < bits && first + j < n_in; ++j)
            acc |= ((unsigned long long)packed[first + j]) << (8 * j);
        const long long start = blk * 8;
        const long long stop = start + 8 < n ? start + 8 : n;
        for (long long i = start; i < stop; ++i) {
            const long long g = i / group_size;
            out[i] = (C)((double)((acc >> ((i - start) * bits)) & mask) * scales[g] + zeros[g]);
        }
    }
}
"""


@functools.lru_cache(maxsize=None)
def _cupy_quant_kernels(x_ctype: str, c_ctype: str):
    import cupy

    module = cupy.RawModule(code=f"typedef {x_ctype} T;\ntypedef {c_ctype} C;\n" + _QUANT_CUDA)
    return module.get_function("quantize_pack"), module.get_function("unpack_dequantize")


def _ctype(dtype) -> str:
    return {"float16": "__half", "float32": "float", "float64": "double"}[np.dtype(dtype).name]


def _launch(n: int, threads: int = 256) -> tuple[tuple[int], tuple[int]]:
    return (max(1, min(((n + 7) // 8 + threads - 1) // threads, 1 << 20)),), (threads,)


def _quantize_cupy(x3, bits: int, scale_dtype: str):
    import cupy

    if x3.dtype == cupy.float16:
        x3 = x3.astype(cupy.float32)
    rows, n_groups, g = x3.shape
    mins, maxs = x3.min(axis=-1), x3.max(axis=-1)  # (rows, n_groups), on the device
    # outward rounding of the (small) per-group statistics on the host, as the reference does
    scales, zeros = _outward_scale_zero(mins.get(), maxs.get(), bits, scale_dtype)
    out = cupy.zeros((x3.size * bits + 7) // 8, dtype=cupy.uint8)
    kernel = _cupy_quant_kernels(_ctype(x3.dtype), "float")[0]
    grid, block = _launch(x3.size)
    kernel(grid, block, (x3.reshape(-1), cupy.asarray(scales, dtype=cupy.float64),
                         cupy.asarray(zeros, dtype=cupy.float64),
                         np.int64(x3.size), np.int64(g), np.int32(bits), np.int64(out.size), out))
    return out, cupy.asarray(scales), cupy.asarray(zeros)


def _dequantize_cupy(packed, scales, zeros, bits: int, group_size: int, dtype):
    import cupy

    ct = _compute_dtype(dtype)
    n = scales.size * group_size
    out = cupy.empty(n, dtype=ct)
    kernel = _cupy_quant_kernels("float", _ctype(ct))[1]
    grid, block = _launch(n)
    kernel(grid, block, (cupy.ascontiguousarray(packed), np.int64(packed.size),
                         cupy.ascontiguousarray(scales.reshape(-1), dtype=cupy.float64),
                         cupy.ascontiguousarray(zeros.reshape(-1), dtype=cupy.float64),
                         np.int64(n), np.int64(group_size), np.int32(bits), out))
    return out.reshape(*scales.shape, group_size)


_QUANTIZE = {"numpy": _quantize_numpy, "numba": _quantize_numba, "cupy": _quantize_cupy}
_DEQUANTIZE = {"numpy": _dequantize_numpy, "numba": _dequantize_numba, "cupy": _dequantize_cupy}


# ----------------------------------------------------------- public entry
def _check_options(x: Any, bits: Any, axis: Any, group_size: Any, scale_dtype: Any) -> tuple[int, int, int, str]:
    bits = check_int(bits, "bits", minimum=1, maximum=8)
    ndim = len(x.shape)
    axis = check_int(axis, "axis", minimum=-ndim, maximum=ndim - 1) % ndim
    length = int(x.shape[axis])
    if group_size is None:
        group_size = length
    group_size = check_int(group_size, "group_size", minimum=1)
    if length % group_size:
        raise ValueError(
            f"group_size must divide the length of axis {axis} ({length}); got group_size={group_size}. "
            "Groups are never padded: pick a divisor, or keep the remainder unquantized as KIVI does"
        )
    scale_dtype = check_choice(np.dtype(scale_dtype).name if not isinstance(scale_dtype, str) else scale_dtype,
                               "scale_dtype", SCALE_DTYPES)
    return bits, axis, group_size, scale_dtype


def quantize(
    x: Any,
    bits: int,
    *,
    axis: int = -1,
    group_size: int | None = None,
    scale_dtype: str = "float16",
    backend: str | None = None,
) -> QuantizedTensor:
    """Quantize ``x`` to ``bits``-bit codes, asymmetric min-max per group along ``axis``.

    Parameters
    ----------
    x : array of any shape with at least one axis
        Floating NumPy array, CuPy array or torch tensor; finite, not empty.
    bits : int
        Bits per code, 1 to 8 (``2**bits`` levels).
    axis : int, default -1
        The axis the groups run along: ``-1`` of a ``(..., tokens, channels)``
        cache is per-token quantization, ``-2`` per-channel.
    group_size : int, optional
        Consecutive elements along ``axis`` that share a scale and a zero; must
        divide ``x.shape[axis]`` (no padding). ``None`` (default): the whole axis
        is one group.
    scale_dtype : {"float16", "float32"}, default "float16"
        Storage type of scales and zeros (rounded outward, see the module notes).
        float16 refuses values beyond its range (about 65504).
    backend : {None, "auto", "numpy", "numba", "cupy"}
        Kernel choice; all give identical codes.

    Returns
    -------
    QuantizedTensor
        ``nbytes`` counts packed codes, scales and zeros.

    Raises
    ------
    TypeError
        ``x`` not a floating array, ``bits``/``axis``/``group_size`` not integers.
    ValueError
        ``bits`` outside 1..8, ``axis`` out of range, ``group_size`` that does not
        divide the axis, empty ``x``, NaN or infinity in ``x``, values beyond the
        float16 range with ``scale_dtype="float16"``.

    References
    ----------
    "KV Cache is 1 Bit Per Channel: Efficient Large Language Model Inference with
    Coupled Quantization"; "More for Keys, Less for Values: Adaptive KV Cache
    Quantization" (per-channel keys, per-token values).

    Example
    -------
    >>> import numpy as np
    >>> from companion.compression import quantize, dequantize
    >>> x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    >>> q = quantize(x, 4, group_size=32)
    >>> q.nbytes                      # 128 bytes of codes + 8 fp16 scales + 8 fp16 zeros
    160
    >>> step = np.repeat(q.scales.astype(np.float32), 32, axis=-1)   # each element's step, (4, 64)
    >>> bool((np.abs(dequantize(q) - x) <= 0.5 * step + 1e-6).all())
    True
    """
    kind = check_array(x, "x", min_ndim=1, dtype_kind="f")
    bits, axis, group_size, scale_dtype = _check_options(x, bits, axis, group_size, scale_dtype)
    name, kernel = dispatch(_QUANTIZE, backend, x)
    xb = for_backend(x, name)
    xp = _array_module(name)
    if xb.dtype not in (np.float16, np.float32, np.float64):  # e.g. bfloat16 via torch
        xb = xb.astype(np.float32)
    if name == "numba" and _tile_eligible(tuple(xb.shape), axis, group_size, bits):
        packed, scales, zeros = _quantize_numba_tiles(xb, axis, group_size, bits, scale_dtype)  # no transpose copy
    else:
        x3 = _grouped(xp, xb, axis, group_size)  # (rows, n_groups, group_size)
        packed, scales, zeros = kernel(x3, bits, scale_dtype)  # scales, zeros: (rows, n_groups)
    dtype = str(x.dtype).replace("torch.", "")
    device = str(x.device) if kind == "torch" else None
    return QuantizedTensor(packed, scales, zeros, tuple(int(s) for s in x.shape), axis, group_size, bits,
                           dtype, kind, device)


def dequantize(q: QuantizedTensor, *, backend: str | None = None) -> Any:
    """Read a :class:`QuantizedTensor` back: ``code * scale + zero`` per element.

    Parameters
    ----------
    q : QuantizedTensor
        From :func:`quantize`.
    backend : {None, "auto", "numpy", "numba", "cupy"}
        Kernel choice.

    Returns
    -------
    array of shape ``q.shape``
        The kind (NumPy, CuPy, torch) and dtype ``quantize`` was given; every
        element lies within half a step (``scale / 2``) of the original, up to
        float rounding.

    Example
    -------
    >>> import numpy as np
    >>> from companion.compression import quantize, dequantize
    >>> x = np.linspace(0, 1, 8).reshape(2, 4)
    >>> dequantize(quantize(x, 8, scale_dtype="float32")).round(3).tolist()
    [[0.0, 0.143, 0.286, 0.429], [0.571, 0.714, 0.857, 1.0]]
    """
    if not isinstance(q, QuantizedTensor):
        raise TypeError(f"q must be a QuantizedTensor (from quantize); got {type(q).__name__}")
    name, kernel = dispatch(_DEQUANTIZE, backend, q.packed)
    packed = for_backend(q.packed, name)
    scales, zeros = for_backend(q.scales, name), for_backend(q.zeros, name)
    if name == "numba" and _tile_eligible(q.shape, q.axis, q.group_size, q.bits):
        out = _dequantize_numba_tiles(packed, scales, zeros, q.bits, q.group_size, _torch_free_dtype(q.dtype),
                                      q.shape, q.axis)
    else:
        x3 = kernel(packed, scales, zeros, q.bits, q.group_size, _torch_free_dtype(q.dtype))
        xp = _array_module(name)
        moved_shape = q.shape[: q.axis] + q.shape[q.axis + 1:] + (q.shape[q.axis],)
        out = xp.ascontiguousarray(xp.moveaxis(x3.reshape(moved_shape), -1, q.axis))
    if q.kind == "torch":
        import torch

        t = torch.from_numpy(to_numpy(out)) if name != "cupy" else torch.from_dlpack(out)
        return t.to(device=q.device, dtype=getattr(torch, q.dtype))
    if np.dtype(q.dtype) != out.dtype:
        out = out.astype(q.dtype)
    return to_kind(out, q.kind)


def _torch_free_dtype(name: str) -> np.dtype:
    """NumPy dtype for a stored dtype name (bfloat16 dequantizes through float32)."""
    try:
        return np.dtype(name)
    except TypeError:
        return np.dtype(np.float32)


def fake_quantize(x: Any, bits: int, *, axis: int = -1, group_size: int | None = None,
                  scale_dtype: str = "float16", backend: str | None = None) -> Any:
    """``dequantize(quantize(x, ...))``: the values a quantized store would give back.

    Same parameters as :func:`quantize`; returns an array like ``x``.

    Example
    -------
    >>> import numpy as np
    >>> from companion.compression import fake_quantize
    >>> fake_quantize(np.array([[0.0, 0.4, 1.0]]), 1, scale_dtype="float32").tolist()
    [[0.0, 0.0, 1.0]]
    """
    return dequantize(quantize(x, bits, axis=axis, group_size=group_size, scale_dtype=scale_dtype, backend=backend),
                      backend=backend)

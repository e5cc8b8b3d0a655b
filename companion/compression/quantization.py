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
bytes (per-channel keys), the numba path reads the array in place, one pass over
it: per tile of ``group_size`` rows x all inner channels it takes the min/max, the
outward-rounded scale and zero (branch-free float16 rounding), the codes (float32
arithmetic for float32 input and up to 4 bits, with an exact float64 redo of any
tile holding a near-tie) and packs them, and it checks finiteness on the way; its
codes, scales and zeros are bit-identical to the reference's. The inverse kernel
writes the output tile by tile, into ``dequantize(..., out=)`` when given.
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
        raise _f16_overflow()
    zeros = mins.astype(dtype)
    low = zeros.astype(np.float64) > mins
    zeros[low] = _next_float(zeros[low], up=False)
    steps = (np.asarray(maxs, dtype=np.float64) - zeros.astype(np.float64)) / ((1 << bits) - 1)
    scales = steps.astype(dtype)
    short = scales.astype(np.float64) < steps
    scales[short] = _next_float(scales[short], up=True)
    return scales, zeros


def _f16_overflow() -> ValueError:
    return ValueError(
        f"values of magnitude above {_F16_MAX:.0f} do not fit float16 scales and zeros; pass scale_dtype='float32'"
    )


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
# (outer, length, inner) tiles and do everything for one tile of ``group_size`` rows x
# ``inner`` channels while it sits in the L1 cache: per-channel min/max, outward
# float16/float32 scale and zero, codes, packing; one pass over the input. Every inner
# loop runs along the contiguous channels, so LLVM vectorizes it (AVX2/AVX-512 here). They
# apply when a group's codes fill whole bytes (``group_size * bits % 8 == 0``); the
# layout, the codes, the scales and the zeros are identical to the reference.
#
# Exactness without a division per element: the reference's code is
# ``rint((x - zero) / scale)`` in float64. The kernel computes ``(x - zero) * (1 / scale)``
# instead (in float32 for float32 input and up to 4 bits, :func:`_tile_codes_f32`; in
# float64 otherwise, :func:`_tile_codes`), which differs from the quotient by a few
# units in the last place; the two round to different integers only when the quotient
# lies within that distance of a half-integer. Any element closer than the band
# (``_TIE_BAND`` in float64, ``_tie_band_f32`` in float32: about one tile in 130 for
# real 2-bit data; exact midpoints in tests) sends its whole tile through the exact
# division (:func:`_tile_codes_exact`), so the codes always equal the reference's.
_TIE_BAND = 1e-9  # >> 2 ulp of any quotient below 2**20; above that every code is clipped to the top level


@numba.njit(inline="always")
def _tie_band_f32(levels):  # pragma: no cover - jitted
    """Near-tie band of the float32 path: 4 * 2**-24 * (levels + 1), above its 3.01 * 2**-24 * (levels + 1) error."""
    return 2.384185791015625e-07 * (levels + 1.0)


def _tile_eligible(shape: tuple, axis: int, group_size: int, bits: int) -> bool:
    inner = int(np.prod(shape[axis + 1:]))
    return inner > 1 and (group_size * bits) % 8 == 0


@numba.njit(inline="always")
def _pow2(e):  # pragma: no cover - jitted
    """``2.0 ** e`` for an integer ``e`` in the normal float64 range, built from the exponent bits."""
    return np.int64((e + 1023) << 52).view(np.float64)


@numba.njit(inline="always")
def _f16_nearest(v):  # pragma: no cover - jitted
    """``(value, bit pattern)`` of the float16 nearest to float64 ``v``: ties to even, overflow to inf.

    Branch-free (vectorizable): the float64 pattern is rounded to 10 mantissa bits,
    subnormal float16 results are multiples of ``2**-24``. Equals ``v.astype(np.float16)``
    (tested on every float16, every midpoint between neighbours and random values).
    """
    b = np.float64(v).view(np.int64)
    sign = (b >> 63) & 1
    ab = b & 0x7FFFFFFFFFFFFFFF
    a = np.int64(ab).view(np.float64)
    rb = (ab + (0x1FFFFFFFFFF + ((ab >> 42) & 1))) & ~np.int64(0x3FFFFFFFFFF)  # round half to even
    pn = (((rb >> 52) - 1008) << 10) | ((rb >> 42) & 0x3FF)  # rebias the exponent: 1023 -> 15
    ms = np.rint(a * 16777216.0)  # subnormal float16: multiples of 2**-24
    sub = a < 6.103515625e-05  # 2**-14, the smallest normal float16
    r = ms * 5.9604644775390625e-08 if sub else np.int64(rb).view(np.float64)
    p = np.int64(ms) if sub else pn
    over = r > 65504.0
    r = np.inf if over else r
    p = np.int64(0x7C00) if over else p
    return (-r if sign else r), p | (sign << 15)


@numba.njit(inline="always")
def _f16_value(p):  # pragma: no cover - jitted
    """float64 value of the float16 bit pattern ``p`` (finite or inf)."""
    e = (p >> 10) & 0x1F
    m = (p & 0x3FF) + (1024 if e > 0 else 0)
    v = np.float64(m) * _pow2(max(e, 1) - 25)
    v = np.inf if e == 31 else v
    return -v if (p >> 15) & 1 else v


@numba.njit(inline="always")
def _f32_value(p):  # pragma: no cover - jitted
    """float64 value of the float32 bit pattern ``p``."""
    return np.float64(np.uint32(p).view(np.float32))


@numba.njit(inline="always")
def _next_pattern(p, up, sign_bit):  # pragma: no cover - jitted
    """The neighbouring float (towards +inf if ``up``) of bit pattern ``p``, as :func:`_next_float` does."""
    negative = (p & sign_bit) != 0
    zero = (p & (sign_bit - 1)) == 0
    stepped = p + 1 if negative != up else p - 1
    return (1 if up else sign_bit | 1) if zero else stepped


@numba.njit(inline="always")
def _zero_down_f16(lo):  # pragma: no cover - jitted
    """``(value, pattern)`` of the zero: ``lo`` rounded to float16, stepped down if that landed above ``lo``.

    Both candidates are computed and one selected: no branch, so a loop over channels vectorizes.
    """
    zv, zp = _f16_nearest(lo)
    zp_down = _next_pattern(zp, False, 0x8000)
    low = zv > lo
    return (_f16_value(zp_down) if low else zv), (zp_down if low else zp)


@numba.njit(inline="always")
def _scale_up_f16(steps):  # pragma: no cover - jitted
    """``(value, pattern)`` of the scale: ``steps`` rounded to float16, stepped up if that landed below."""
    sv, sp = _f16_nearest(steps)
    sp_up = _next_pattern(sp, True, 0x8000)
    short = sv < steps
    return (_f16_value(sp_up) if short else sv), (sp_up if short else sp)


@numba.njit(inline="always")
def _zero_down_f32(lo):  # pragma: no cover - jitted
    """:func:`_zero_down_f16` in float32."""
    z32 = np.float32(lo)
    zp = np.int64(z32.view(np.uint32))
    zv = np.float64(z32)
    zp_down = _next_pattern(zp, False, 0x80000000)
    low = zv > lo
    return (_f32_value(zp_down) if low else zv), (zp_down if low else zp)


@numba.njit(inline="always")
def _scale_up_f32(steps):  # pragma: no cover - jitted
    """:func:`_scale_up_f16` in float32."""
    s32 = np.float32(steps)
    sp = np.int64(s32.view(np.uint32))
    sv = np.float64(s32)
    sp_up = _next_pattern(sp, True, 0x80000000)
    short = sv < steps
    return (_f32_value(sp_up) if short else sv), (sp_up if short else sp)


# The per-tile steps are separate (not inlined) jitted functions: each loop then sees
# only its own arrays, and LLVM vectorizes it (inlined into one body, the runtime alias
# checks between all the scratch arrays made it give up).
@numba.njit(cache=True)
def _tile_min_max(x3, o, t0, group_size, lo, hi, chk):  # pragma: no cover - jitted
    """Per-channel min and max of rows ``t0 .. t0 + group_size - 1`` of ``x3[o]`` (exact, input dtype).

    Returns the number of channels holding a NaN or an infinity: ``chk`` sums
    ``v - v`` (0 for a finite ``v``, NaN otherwise), which costs far less than a
    separate ``isfinite`` pass over the input. Four rows per pass: a pass that read
    and wrote ``lo``/``hi`` once per row ran at half the speed of NumPy's ``max``
    (a store-to-load chain through ``lo``/``hi``).
    """
    inner = lo.shape[0]
    for i in range(inner):
        lo[i] = x3[o, t0, i]
        hi[i] = x3[o, t0, i]
        chk[i] = x3[o, t0, i] - x3[o, t0, i]
    t = t0 + 1
    while t + 4 <= t0 + group_size:
        for i in range(inner):
            a = x3[o, t, i]
            b = x3[o, t + 1, i]
            c = x3[o, t + 2, i]
            d = x3[o, t + 3, i]
            m1 = a if a < b else b  # selects, which vectorize (min/max do not)
            m2 = c if c < d else d
            m = m1 if m1 < m2 else m2
            n1 = a if a > b else b
            n2 = c if c > d else d
            n = n1 if n1 > n2 else n2
            lo[i] = m if m < lo[i] else lo[i]
            hi[i] = n if n > hi[i] else hi[i]
            chk[i] += ((a - a) + (b - b)) + ((c - c) + (d - d))
        t += 4
    while t < t0 + group_size:
        for i in range(inner):
            v = x3[o, t, i]
            lo[i] = v if v < lo[i] else lo[i]
            hi[i] = v if v > hi[i] else hi[i]
            chk[i] += v - v
        t += 1
    n_bad = 0
    for i in range(inner):
        n_bad += chk[i] != 0
    return n_bad


@numba.njit(cache=True)
def _tile_scale_zero(lo, hi, levels, f16, ss, zz, inv, spat, zpat):  # pragma: no cover - jitted
    """:func:`_outward_scale_zero` for every channel of a tile: values, reciprocal of the scale, bit patterns.

    Zeros and scales are two loops (one loop doing both is not vectorized by LLVM).
    Returns how many channels hold a value beyond the float16 range (``f16`` only).
    """
    inner = lo.shape[0]
    n_over = 0
    if f16:
        for i in range(inner):
            n_over += (abs(np.float64(lo[i])) > _F16_MAX) | (abs(np.float64(hi[i])) > _F16_MAX)
        for i in range(inner):
            zz[i], zpat[i] = _zero_down_f16(np.float64(lo[i]))
        for i in range(inner):
            ss[i], spat[i] = _scale_up_f16((np.float64(hi[i]) - zz[i]) / levels)
    else:
        for i in range(inner):
            zz[i], zpat[i] = _zero_down_f32(np.float64(lo[i]))
        for i in range(inner):
            ss[i], spat[i] = _scale_up_f32((np.float64(hi[i]) - zz[i]) / levels)
    for i in range(inner):
        inv[i] = 1.0 / ss[i] if ss[i] > 0 else 0.0
    return n_over


@numba.njit(cache=True)
def _tile_codes(x3, o, t0, group_size, bits, levels, zz, inv, acc):  # pragma: no cover - jitted
    """Codes ``rint((x - zero) * (1 / scale))`` clipped, packed into ``acc`` (words, channels).

    Returns how many quotients lie within ``_TIE_BAND`` of a half-integer.
    """
    inner = zz.shape[0]
    acc[:, :] = 0
    n_near = 0
    for t in range(group_size):
        bp = t * bits
        w = bp >> 6
        sh = np.uint64(bp & 63)
        for i in range(inner):
            y = (np.float64(x3[o, t0 + t, i]) - zz[i]) * inv[i]
            r = np.rint(y)
            n_near += abs(y - r) > 0.5 - _TIE_BAND
            acc[w, i] |= np.uint64(r if r < levels else levels) << sh
        if (bp & 63) + bits > 64:  # this code straddles two words (3, 5, 6, 7 bits)
            back = np.uint64(64 - (bp & 63))
            for i in range(inner):
                r = np.rint((np.float64(x3[o, t0 + t, i]) - zz[i]) * inv[i])
                acc[w + 1, i] |= np.uint64(r if r < levels else levels) >> back
    return n_near


@numba.njit(cache=True)
def _tile_codes_f32(x3, o, t0, group_size, bits, levels, zz, ss, z32, inv32, dev, acc32, acc):  # pragma: no cover - jitted
    """:func:`_tile_codes` in float32 (8 lanes a vector instead of 4), for float32 input and ``bits <= 4``.

    ``fl32(fl32(x - zero) * fl32(1 / scale))`` is within ``3.01 * 2**-24 * levels`` of
    the exact quotient (``zero`` is exact in float32, the quotient lies in
    ``[0, levels]``), so an element farther than ``_tie_band_f32(levels)`` from every
    half-integer gets the reference's code. Returns the number of channels with an
    element closer than that (the caller then redoes the tile exactly), or -1 when a
    scale or zero is outside ``[2**-100, 1e30]`` (the float32 bound would not hold).
    """
    inner = zz.shape[0]
    n_bad = 0
    for i in range(inner):
        n_bad += ((ss[i] > 0) & (ss[i] < 7.888609052210118e-31)) | (ss[i] > 1e30) | (abs(zz[i]) > 1e30)
    if n_bad:
        return -1
    for i in range(inner):
        z32[i] = np.float32(zz[i])
        inv32[i] = np.float32(1.0 / ss[i]) if ss[i] > 0 else np.float32(0.0)
        dev[i] = np.float32(0.0)
    top = np.float32(levels)
    acc32[:, :] = 0
    t = 0
    if 32 % bits == 0:  # 1, 2 or 4 bits: four rows per pass, their codes or-ed into one word together
        # the four codes are placed with exact float32 multiplications by powers of two (at most
        # 16 bits of codes, shifted by at most 28 bits: exact, below 2**32) and converted once
        m1 = np.float32(1 << bits)
        m2 = np.float32(1 << (2 * bits))
        m3 = np.float32(1 << (3 * bits))
        while t + 4 <= group_size:
            bp = t * bits
            w = bp >> 5
            place = np.float32(1 << (bp & 31))
            for i in range(inner):
                y0 = (x3[o, t0 + t, i] - z32[i]) * inv32[i]
                y1 = (x3[o, t0 + t + 1, i] - z32[i]) * inv32[i]
                y2 = (x3[o, t0 + t + 2, i] - z32[i]) * inv32[i]
                y3 = (x3[o, t0 + t + 3, i] - z32[i]) * inv32[i]
                r0 = np.rint(y0)
                r1 = np.rint(y1)
                r2 = np.rint(y2)
                r3 = np.rint(y3)
                d0 = abs(y0 - r0)
                d1 = abs(y1 - r1)
                d2 = abs(y2 - r2)
                d3 = abs(y3 - r3)
                da = d0 if d0 > d1 else d1
                db = d2 if d2 > d3 else d3
                d = da if da > db else db
                dev[i] = d if d > dev[i] else dev[i]  # per-channel running max: no cross-lane reduction
                q01 = (r0 if r0 < top else top) + (r1 if r1 < top else top) * m1
                q23 = (r2 if r2 < top else top) * m2 + (r3 if r3 < top else top) * m3
                acc32[w, i] |= np.uint32((q01 + q23) * place)
            t += 4
    while t < group_size:
        bp = t * bits
        w = bp >> 5
        sh = np.uint32(bp & 31)
        for i in range(inner):
            y = (x3[o, t0 + t, i] - z32[i]) * inv32[i]
            r = np.rint(y)
            d = abs(y - r)
            dev[i] = d if d > dev[i] else dev[i]  # per-channel running max: no cross-lane reduction
            acc32[w, i] |= np.uint32(r if r < top else top) << sh
        if (bp & 31) + bits > 32:  # straddles two words (3 bits)
            back = np.uint32(32 - (bp & 31))
            for i in range(inner):
                r = np.rint((x3[o, t0 + t, i] - z32[i]) * inv32[i])
                acc32[w + 1, i] |= np.uint32(r if r < top else top) >> back
        t += 1
    half = np.float32(0.5 - _tie_band_f32(levels))
    n_near = 0
    for i in range(inner):
        n_near += dev[i] >= half
    for w in range(acc.shape[0]):
        for i in range(inner):
            low = np.uint64(acc32[2 * w, i])
            high = np.uint64(acc32[2 * w + 1, i]) if 2 * w + 1 < acc32.shape[0] else np.uint64(0)
            acc[w, i] = low | (high << np.uint64(32))
    return n_near


@numba.njit(cache=True)
def _tile_codes_exact(x3, o, t0, group_size, bits, levels, zz, ss, acc):  # pragma: no cover - jitted
    """:func:`_tile_codes` with the reference's division (for tiles with a near-tie)."""
    inner = zz.shape[0]
    acc[:, :] = 0
    for t in range(group_size):
        bp = t * bits
        w = bp >> 6
        for i in range(inner):
            c = np.uint64(0)
            if ss[i] > 0:
                r = np.rint((np.float64(x3[o, t0 + t, i]) - zz[i]) / ss[i])
                r = r if r > 0.0 else 0.0
                c = np.uint64(r if r < levels else levels)
            acc[w, i] |= c << np.uint64(bp & 63)
            if (bp & 63) + bits > 64:
                acc[w + 1, i] |= c >> np.uint64(64 - (bp & 63))


_BLOCK = 16  # groups per task: a channel's codes of 8 groups of 32 2-bit codes fill one 64-byte line


@numba.njit(cache=True, parallel=True)
def _tile_quantize_fused_numba(x3, group_size, bits, f16, fast32, out, out64, sc_bits, zr_bits, over):  # pragma: no cover - jitted
    """One pass: per tile of ``group_size`` rows of ``x3`` (outer, length, inner), min/max, scale/zero, codes, pack.

    ``sc_bits``/``zr_bits`` (outer, inner, n_groups) receive the bit patterns of the
    float16 (``f16``) or float32 scales and zeros. Group (row ``o*inner+i``, ``j``)
    owns bytes ``[(row*n_groups + j) * group_bytes, ...)`` of ``out``; when
    ``group_bytes`` is a multiple of 8, ``out64`` (the same buffer as uint64) takes
    whole words. ``fast32`` (float32 input, ``bits <= 4``) computes the codes in
    float32. A task is ``_BLOCK`` consecutive groups of one ``o``: their outputs are
    kept and written channel by channel, whole cache lines at a time (the outputs of
    one group are 128 scattered words). ``over[task]`` gets bit 1 when a float16 task
    holds a value beyond the float16 range and bit 2 when it holds a NaN or an
    infinity (the caller refuses the input, as the reference does).
    """
    outer, length, inner = x3.shape
    n_groups = length // group_size
    nbits = group_size * bits
    group_bytes = nbits // 8
    nwords = (nbits + 63) // 64
    use64 = group_bytes % 8 == 0 and out64.shape[0] > 0
    levels = np.float64((1 << bits) - 1)
    n_blocks = (n_groups + _BLOCK - 1) // _BLOCK
    for task in numba.prange(outer * n_blocks):
        o = task // n_blocks
        j0 = (task - o * n_blocks) * _BLOCK
        j1 = min(j0 + _BLOCK, n_groups)
        lo = np.empty(inner, dtype=x3.dtype)
        hi = np.empty(inner, dtype=x3.dtype)
        chk = np.empty(inner, dtype=x3.dtype)
        zz = np.empty(inner)
        ss = np.empty(inner)
        inv = np.empty(inner)
        z32 = np.empty(inner, dtype=np.float32)
        inv32 = np.empty(inner, dtype=np.float32)
        dev = np.empty(inner, dtype=np.float32)
        acc32 = np.empty((2 * nwords, inner), dtype=np.uint32)
        accb = np.empty((_BLOCK, nwords, inner), dtype=np.uint64)
        spb = np.empty((_BLOCK, inner), dtype=np.int64)
        zpb = np.empty((_BLOCK, inner), dtype=np.int64)
        n_over = 0
        n_nonfinite = 0
        for j in range(j0, j1):
            t0 = j * group_size
            acc = accb[j - j0]
            n_nonfinite += _tile_min_max(x3, o, t0, group_size, lo, hi, chk)
            n_over += _tile_scale_zero(lo, hi, levels, f16, ss, zz, inv, spb[j - j0], zpb[j - j0])
            if fast32:
                near = _tile_codes_f32(x3, o, t0, group_size, bits, levels, zz, ss, z32, inv32, dev, acc32, acc)
            else:
                near = _tile_codes(x3, o, t0, group_size, bits, levels, zz, inv, acc)
            if near:
                _tile_codes_exact(x3, o, t0, group_size, bits, levels, zz, ss, acc)  # a near-tie: exact division
        over[task] = (n_over > 0) | ((n_nonfinite > 0) << 1)
        for i in range(inner):  # one output array at a time (measured faster than interleaving the three)
            for j in range(j0, j1):
                sc_bits[o, i, j] = spb[j - j0, i]
        for i in range(inner):
            for j in range(j0, j1):
                zr_bits[o, i, j] = zpb[j - j0, i]
        for i in range(inner):
            base = (o * inner + i) * n_groups
            if use64:
                for j in range(j0, j1):
                    for w in range(nwords):
                        out64[(base + j) * nwords + w] = accb[j - j0, w, i]
            else:
                for j in range(j0, j1):
                    pos = (base + j) * group_bytes
                    for b in range(group_bytes):
                        out[pos + b] = np.uint8((accb[j - j0, b >> 3, i] >> np.uint64((b & 7) * 8)) & np.uint64(0xFF))


@numba.njit(cache=True)
def _tile_dequant(out3, o, t0, group_size, bits, f16, sp, zp, ss, zz, acc):  # pragma: no cover - jitted
    """One tile: decode the scale/zero patterns, then ``code * scale + zero`` (float64) for every element."""
    inner = zz.shape[0]
    if f16:
        for i in range(inner):
            ss[i] = _f16_value(sp[i])
        for i in range(inner):
            zz[i] = _f16_value(zp[i])
    else:
        for i in range(inner):
            ss[i] = _f32_value(sp[i])
        for i in range(inner):
            zz[i] = _f32_value(zp[i])
    mask = np.uint64((1 << bits) - 1)
    for t in range(group_size):
        bp = t * bits
        w = bp >> 6
        sh = np.uint64(bp & 63)
        if (bp & 63) + bits > 64:  # straddles two words
            back = np.uint64(64 - (bp & 63))
            for i in range(inner):
                c = (acc[w, i] >> sh) | (acc[w + 1, i] << back)
                out3[o, t0 + t, i] = np.float64(c & mask) * ss[i] + zz[i]
        else:
            for i in range(inner):
                out3[o, t0 + t, i] = np.float64((acc[w, i] >> sh) & mask) * ss[i] + zz[i]


@numba.njit(cache=True)
def _tile_dequant_f32(out3, o, t0, group_size, bits, sp, zp, ss32, zz32, acc, acc32):  # pragma: no cover - jitted
    """:func:`_tile_dequant` in float32 (8 lanes a vector), for float16 scales, float32 output and ``32 % bits == 0``.

    Identical to the float64 result: ``code * scale`` (at most 8 + 11 significant bits,
    between ``2**-24`` and ``2**24``) is exact in float32, and ``code * scale + zero``
    spans at most 48 bits, so the float64 sum is exact and its rounding to float32 is
    the float32 sum's single rounding.
    """
    inner = zz32.shape[0]
    for i in range(inner):
        ss32[i] = np.float32(_f16_value(sp[i]))
    for i in range(inner):
        zz32[i] = np.float32(_f16_value(zp[i]))
    for w in range(acc.shape[0]):
        for i in range(inner):
            acc32[2 * w, i] = np.uint32(acc[w, i] & np.uint64(0xFFFFFFFF))
            acc32[2 * w + 1, i] = np.uint32(acc[w, i] >> np.uint64(32))
    mask = np.uint32((1 << bits) - 1)
    for t in range(group_size):
        bp = t * bits
        w = bp >> 5
        sh = np.uint32(bp & 31)
        for i in range(inner):
            out3[o, t0 + t, i] = np.float32((acc32[w, i] >> sh) & mask) * ss32[i] + zz32[i]


@numba.njit(cache=True, parallel=True)
def _tile_unpack_dequantize_numba(packed, packed64, sc_bits, zr_bits, f16, fast32, group_size, bits, out3):  # pragma: no cover - jitted
    """Inverse of :func:`_tile_quantize_fused_numba`: ``code * scale + zero`` (float64) into ``out3`` in place.

    ``sc_bits``/``zr_bits`` (outer, inner, n_groups) hold float16 (``f16``) or float32
    bit patterns; ``packed64`` is ``packed`` as uint64 when a group's codes fill whole
    words (empty otherwise). A task is ``_BLOCK`` consecutive groups of one ``o``: their
    codes, scales and zeros are gathered channel by channel (whole cache lines), then
    each tile is written row by row, contiguously; ``fast32`` (float16 scales, float32
    output, ``32 % bits == 0``) computes in float32 (:func:`_tile_dequant_f32`).
    """
    outer, length, inner = out3.shape
    n_groups = length // group_size
    nbits = group_size * bits
    group_bytes = nbits // 8
    nwords = (nbits + 63) // 64
    use64 = group_bytes % 8 == 0 and packed64.shape[0] > 0
    n_blocks = (n_groups + _BLOCK - 1) // _BLOCK
    for task in numba.prange(outer * n_blocks):
        o = task // n_blocks
        j0 = (task - o * n_blocks) * _BLOCK
        j1 = min(j0 + _BLOCK, n_groups)
        ss = np.empty(inner)
        zz = np.empty(inner)
        ss32 = np.empty(inner, dtype=np.float32)
        zz32 = np.empty(inner, dtype=np.float32)
        acc32 = np.empty((2 * nwords, inner), dtype=np.uint32)
        accb = np.empty((_BLOCK, nwords, inner), dtype=np.uint64)
        spb = np.empty((_BLOCK, inner), dtype=np.int64)
        zpb = np.empty((_BLOCK, inner), dtype=np.int64)
        for i in range(inner):
            base = (o * inner + i) * n_groups
            for j in range(j0, j1):
                spb[j - j0, i] = sc_bits[o, i, j]
                zpb[j - j0, i] = zr_bits[o, i, j]
            if use64:
                for j in range(j0, j1):
                    for w in range(nwords):
                        accb[j - j0, w, i] = packed64[(base + j) * nwords + w]
            else:
                for j in range(j0, j1):
                    for w in range(nwords):
                        accb[j - j0, w, i] = 0
                    pos = (base + j) * group_bytes
                    for b in range(group_bytes):
                        accb[j - j0, b >> 3, i] |= np.uint64(packed[pos + b]) << np.uint64((b & 7) * 8)
        for j in range(j0, j1):
            if fast32:
                _tile_dequant_f32(out3, o, j * group_size, group_size, bits, spb[j - j0], zpb[j - j0], ss32, zz32,
                                  accb[j - j0], acc32)
            else:
                _tile_dequant(out3, o, j * group_size, group_size, bits, f16, spb[j - j0], zpb[j - j0], ss, zz,
                              accb[j - j0])


def _tile_shape(shape: tuple, axis: int) -> tuple[int, int, int]:
    return int(np.prod(shape[:axis])), int(shape[axis]), int(np.prod(shape[axis + 1:]))


def _as_words(buf: np.ndarray, group_bytes: int) -> np.ndarray:
    """``buf`` (uint8) viewed as uint64 when every group owns whole aligned words; else an empty array."""
    if group_bytes % 8 == 0 and buf.ctypes.data % 8 == 0 and buf.flags.c_contiguous:
        return buf.view(np.uint64)
    return np.empty(0, dtype=np.uint64)


def _quantize_numba_tiles(x: np.ndarray, axis: int, group_size: int, bits: int, scale_dtype: str):
    if x.dtype == np.float16:
        x = x.astype(np.float32)
    outer, length, inner = _tile_shape(x.shape, axis)
    x3 = np.ascontiguousarray(x).reshape(outer, length, inner)  # a view for C-contiguous input
    n_groups = length // group_size
    f16 = scale_dtype == "float16"
    pattern = np.uint16 if f16 else np.uint32
    sc_bits = np.empty((outer, inner, n_groups), dtype=pattern)
    zr_bits = np.empty((outer, inner, n_groups), dtype=pattern)
    out = np.empty(x.size * bits // 8, dtype=np.uint8)
    over = np.zeros(outer * ((n_groups + _BLOCK - 1) // _BLOCK), dtype=np.uint8)  # tasks beyond float16's range
    fast32 = x3.dtype == np.float32 and bits <= 4  # codes in float32 (see _tile_codes_f32)
    _tile_quantize_fused_numba(x3, group_size, bits, f16, fast32, out, _as_words(out, group_size * bits // 8),
                               sc_bits, zr_bits, over)
    if (over & 2).any():  # NaN or inf: the caller raises its usual error
        return None, None, None
    if f16 and (over & 1).any():
        raise _f16_overflow()
    scales = sc_bits.view(np.dtype(scale_dtype)).reshape(outer * inner, n_groups)
    zeros = zr_bits.view(np.dtype(scale_dtype)).reshape(outer * inner, n_groups)
    return out, scales, zeros


def _dequantize_numba_tiles(packed, scales, zeros, bits: int, group_size: int, dtype, shape: tuple, axis: int,
                            out=None):
    """Tile kernel; ``scales``/``zeros`` float16 or float32; ``out`` (C-contiguous, ``dtype``) or a new array."""
    outer, length, inner = _tile_shape(shape, axis)
    n_groups = length // group_size
    out3 = np.empty((outer, length, inner), dtype=dtype) if out is None else out.reshape(outer, length, inner)
    pattern = np.uint16 if scales.dtype == np.float16 else np.uint32
    sc_bits = np.ascontiguousarray(scales).view(pattern).reshape(outer, inner, n_groups)
    zr_bits = np.ascontiguousarray(zeros).view(pattern).reshape(outer, inner, n_groups)
    packed = np.ascontiguousarray(packed)
    fast32 = pattern is np.uint16 and out3.dtype == np.float32 and 32 % bits == 0
    _tile_unpack_dequantize_numba(packed, _as_words(packed, group_size * bits // 8), sc_bits, zr_bits,
                                  pattern is np.uint16, fast32, group_size, bits, out3)
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
    kind = check_array(x, "x", min_ndim=1, dtype_kind="f", finite=False)
    try:
        bits, axis, group_size, scale_dtype = _check_options(x, bits, axis, group_size, scale_dtype)
    except (TypeError, ValueError):
        check_array(x, "x", min_ndim=1, dtype_kind="f")  # NaN/inf is reported first, as it always was
        raise
    name, kernel = dispatch(_QUANTIZE, backend, x)
    tiles = name == "numba" and _tile_eligible(tuple(x.shape), axis, group_size, bits)
    if not tiles:  # the numba tile kernel checks finiteness during its single pass
        check_array(x, "x", min_ndim=1, dtype_kind="f")
    xb = for_backend(x, name)
    xp = _array_module(name)
    if xb.dtype not in (np.float16, np.float32, np.float64):  # e.g. bfloat16 via torch
        xb = xb.astype(np.float32)
    if tiles:
        packed, scales, zeros = _quantize_numba_tiles(xb, axis, group_size, bits, scale_dtype)  # no transpose copy
        if packed is None:
            check_array(x, "x", min_ndim=1, dtype_kind="f")  # the kernel saw NaN or inf: raise the usual error
    else:
        x3 = _grouped(xp, xb, axis, group_size)  # (rows, n_groups, group_size)
        packed, scales, zeros = kernel(x3, bits, scale_dtype)  # scales, zeros: (rows, n_groups)
    dtype = str(x.dtype).replace("torch.", "")
    device = str(x.device) if kind == "torch" else None
    return QuantizedTensor(packed, scales, zeros, tuple(int(s) for s in x.shape), axis, group_size, bits,
                           dtype, kind, device)


def dequantize(q: QuantizedTensor, *, backend: str | None = None, out: np.ndarray | None = None) -> Any:
    """Read a :class:`QuantizedTensor` back: ``code * scale + zero`` per element.

    Parameters
    ----------
    q : QuantizedTensor
        From :func:`quantize`.
    backend : {None, "auto", "numpy", "numba", "cupy"}
        Kernel choice.
    out : numpy.ndarray, optional
        Writeable C-contiguous NumPy array of shape ``q.shape`` and dtype
        ``q.dtype`` to write the result into; for a quantized NumPy array on the
        ``"numpy"`` or ``"numba"`` backend only. Saves allocating (and
        page-faulting) a new array on every call: the numba kernel for groups
        along an inner axis (per-channel keys) writes straight into it.

    Returns
    -------
    array of shape ``q.shape``
        The kind (NumPy, CuPy, torch) and dtype ``quantize`` was given (``out``
        itself when given); every element lies within half a step (``scale / 2``)
        of the original, up to float rounding.

    Raises
    ------
    TypeError
        ``q`` not a QuantizedTensor; ``out`` given for a torch or CuPy result or
        the ``"cupy"`` backend.
    ValueError
        ``out`` of the wrong shape or dtype, not C-contiguous or not writeable.

    Example
    -------
    >>> import numpy as np
    >>> from companion.compression import quantize, dequantize
    >>> x = np.linspace(0, 1, 8).reshape(2, 4)
    >>> dequantize(quantize(x, 8, scale_dtype="float32")).round(3).tolist()
    [[0.0, 0.143, 0.286, 0.429], [0.571, 0.714, 0.857, 1.0]]
    >>> buf = np.empty((2, 4))
    >>> dequantize(quantize(x, 8, scale_dtype="float32"), out=buf) is buf
    True
    """
    if not isinstance(q, QuantizedTensor):
        raise TypeError(f"q must be a QuantizedTensor (from quantize); got {type(q).__name__}")
    name, kernel = dispatch(_DEQUANTIZE, backend, q.packed)
    if out is not None:
        _check_out(out, q, name)
    packed = for_backend(q.packed, name)
    scales, zeros = for_backend(q.scales, name), for_backend(q.zeros, name)
    compute = _compute_dtype(_torch_free_dtype(q.dtype))
    if (name == "numba" and _tile_eligible(q.shape, q.axis, q.group_size, q.bits)
            and scales.dtype in (np.float16, np.float32) and zeros.dtype == scales.dtype):
        direct = out if out is not None and out.dtype == compute else None
        result = _dequantize_numba_tiles(packed, scales, zeros, q.bits, q.group_size, compute, q.shape, q.axis,
                                         out=direct)
        if direct is not None:
            return out
    else:
        x3 = kernel(packed, scales, zeros, q.bits, q.group_size, _torch_free_dtype(q.dtype))
        xp = _array_module(name)
        moved_shape = q.shape[: q.axis] + q.shape[q.axis + 1:] + (q.shape[q.axis],)
        result = xp.moveaxis(x3.reshape(moved_shape), -1, q.axis)
        if out is None:
            result = xp.ascontiguousarray(result)
    if out is not None:
        np.copyto(out, result, casting="unsafe")
        return out
    if q.kind == "torch":
        import torch

        t = torch.from_numpy(to_numpy(result)) if name != "cupy" else torch.from_dlpack(result)
        return t.to(device=q.device, dtype=getattr(torch, q.dtype))
    if np.dtype(q.dtype) != result.dtype:
        result = result.astype(q.dtype)
    return to_kind(result, q.kind)


def _check_out(out: Any, q: QuantizedTensor, backend_name: str) -> None:
    """``out=`` must be a writeable C-contiguous NumPy array of ``q``'s shape and dtype."""
    if q.kind != "numpy" or backend_name not in ("numpy", "numba"):
        raise TypeError(
            f"out= is supported for a quantized NumPy array on the 'numpy' and 'numba' backends; got a {q.kind} "
            f"result on backend {backend_name!r}"
        )
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray; got {type(out).__name__}")
    if (out.shape != tuple(q.shape) or out.dtype != np.dtype(q.dtype) or not out.flags.c_contiguous
            or not out.flags.writeable):
        raise ValueError(
            f"out must be a writeable C-contiguous array of shape {tuple(q.shape)} and dtype {q.dtype}; got "
            f"shape {out.shape}, dtype {out.dtype}, contiguous={out.flags.c_contiguous}, "
            f"writeable={out.flags.writeable}"
        )


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

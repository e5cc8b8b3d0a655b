"""Vectorisable ``exp`` for numba kernels (private).

numba compiles ``math.exp``/``np.exp`` to a call into the C math library, which
LLVM cannot vectorise (there is no SVML here), so a loop that takes one ``exp``
per element runs at scalar speed. :func:`exp_f32` and :func:`exp_f64` are
straight-line replacements, with no branches and no calls: inlined into a
``fastmath=True`` loop they vectorise (AVX2/AVX-512), typically 5-10x faster.

Method (Cody and Waite; Cephes ``expf``): ``x = n ln 2 + r`` with ``n`` the
nearest integer to ``x / ln 2`` and ``|r| <= ln(2) / 2``; ``ln 2`` is split in two
constants so ``r`` is computed without cancellation; ``exp(r)`` is a polynomial
(Cephes' minimax polynomial of degree 7 in float32, Taylor of degree 13 in
float64); ``2^n`` is built from the exponent bits as two factors ``2^(n//2)``
and ``2^(n - n//2)``, so results are right over the whole range, subnormal
results included. Written to survive ``fastmath`` callers (numba applies the
caller's fast-math flags to inlined code): the tail of ``ln 2`` multiplies
``float(n)`` from the integer, so reassociation cannot merge the two products
into a rounded ``n * ln 2``, and ``2^n`` is applied in one product.

Accuracy (measured in ``tests/unit/test_fastmath.py`` against float64/
long-double ``exp`` on dense grids, also with ``fastmath=True`` callers):

* ``exp_f32``: max relative error ``< 4e-7`` (measured 1.2e-7, about 1 float32 ulp) for results in the
  normal range (``-87.3 <= x <= 88.7``); ``0.0`` below ``x = -104``, ``inf`` above
  ``x = 88.73``; subnormal results have absolute error ``< 3e-45``.
* ``exp_f64``: max relative error ``< 1e-15`` (measured 2.2e-16, about 1 float64 ulp) for results in the
  normal range (``-708 <= x <= 709.7``); ``0.0`` below ``x = -745.2``, ``inf`` above.

:func:`maxnum` is the larger of two floats as LLVM's ``maxnum`` intrinsic: unlike
Python's ``max`` (which numba compiles to compare-and-branch), a loop
``m = maxnum(m, row[j])`` vectorises into a ``vmaxps`` reduction (about 20x faster
for a float32 row maximum).

NaN input to the exps gives an unspecified result (fastmath callers assume no NaN). All three are
``numba.njit(inline="always")`` functions: call them from other njit kernels
(``parallel=True`` and ``fastmath=True`` welcome); called from Python they work
on scalars (slowly).

Examples
--------
>>> import math
>>> import numpy as np
>>> from companion._fastmath import exp_f32, exp_f64, maxnum
>>> abs(float(exp_f32(1.0)) / math.e - 1) < 4e-7
True
>>> abs(exp_f64(-2.5) / math.exp(-2.5) - 1) < 1e-15
True
>>> float(maxnum(np.float32(-1.5), np.float32(2.0)))
2.0
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

__all__ = ["exp_f32", "exp_f64", "maxnum"]


@intrinsic
def _f32_from_bits(typingctx, bits):
    """Reinterpret the low 32 bits of an integer as a float32 (no conversion)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        value = args[0]
        width = signature.args[0].bitwidth
        if width > 32:
            value = builder.trunc(value, ir.IntType(32))
        elif width < 32:
            value = builder.sext(value, ir.IntType(32))
        return builder.bitcast(value, ir.FloatType())

    return types.float32(bits), codegen


@intrinsic
def _f32_bits(typingctx, value):
    """The bits of a float32 as an int32 (no conversion)."""
    if value != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(value), codegen


@intrinsic
def _f64_bits(typingctx, value):
    """The bits of a float64 as an int64 (no conversion)."""
    if value != types.float64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(value), codegen


@intrinsic
def _f64_from_bits(typingctx, bits):
    """Reinterpret a 64-bit integer as a float64 (no conversion)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        value = args[0]
        if signature.args[0].bitwidth < 64:
            value = builder.sext(value, ir.IntType(64))
        return builder.bitcast(value, ir.DoubleType())

    return types.float64(bits), codegen


@intrinsic
def _maxnum(typingctx, a, b):
    """``llvm.maxnum`` of two floats of the same type."""
    if not (isinstance(a, types.Float) and a == b):
        return None

    def codegen(context, builder, signature, args):
        ftype = context.get_value_type(signature.return_type)
        fn = builder.module.declare_intrinsic("llvm.maxnum", [ftype], ir.FunctionType(ftype, [ftype, ftype]))
        return builder.call(fn, args)

    return a(a, b), codegen


@numba.njit(inline="always", cache=True)
def maxnum(a, b):
    """The larger of ``a`` and ``b`` (both float32 or both float64), as ``llvm.maxnum``.

    Vectorises inside loops (a row maximum becomes a ``vmaxps`` reduction); if one
    argument is NaN the other is returned.
    """
    return _maxnum(a, b)


_F32 = np.float32


@numba.njit(inline="always", cache=True)
def exp_f32(x):
    """``exp(x)`` in float32, branch-free (vectorises); max relative error < 4e-7."""
    x = _F32(x)
    xc = min(max(x, _F32(-104.0)), _F32(88.75))  # beyond: 0 and inf come out of the scaling
    n = np.floor(xc * _F32(1.4426950408889634) + _F32(0.5))  # nearest integer to x / ln 2
    k = np.int32(n)  # -150 .. 129
    r = xc - n * _F32(0.693359375)  # exact: 0.693359375 has 9 significant bits, n at most 8
    # ln 2 = 0.693359375 - 2.12194440e-4 (Cody-Waite); the tail multiplies float(k), not n,
    # so that fastmath reassociation cannot merge the two products into n * fl(ln 2)
    r = r - _F32(k) * _F32(-2.12194440e-4)
    r2 = r * r
    p = _F32(1.9875691500e-4)
    p = p * r + _F32(1.3981999507e-3)
    p = p * r + _F32(8.3334519073e-3)
    p = p * r + _F32(4.1665795894e-2)
    p = p * r + _F32(1.6666665459e-1)
    p = p * r + _F32(5.0000001201e-1)
    p = p * r2 + r + _F32(1.0)  # exp(r), |r| <= ln(2) / 2
    half = k >> np.int32(1)
    # p * 2^k as (p * 2^half) * 2^(k - half): p * 2^half by adding half to p's exponent
    # bits (p in [0.7, 1.42], so the sum stays a normal float), then one rounded product
    # with the normal float 2^(k - half), which gives subnormals, 0 and inf correctly.
    # (One multiply only: fastmath may reassociate a product of three factors.)
    scaled = _f32_from_bits(_f32_bits(p) + (half << np.int32(23)))
    return scaled * _f32_from_bits((k - half + np.int32(127)) << np.int32(23))


@numba.njit(inline="always", cache=True)
def exp_f64(x):
    """``exp(x)`` in float64, branch-free (vectorises); max relative error < 1e-15."""
    x = np.float64(x)
    xc = min(max(x, -746.0), 710.0)
    n = np.floor(xc * 1.4426950408889634 + 0.5)
    k = np.int64(n)  # -1077 .. 1025
    r = xc - n * 6.93145751953125e-1  # ln 2 split: 16-bit head (exact product) + tail
    r = r - np.float64(k) * 1.42860682030941723212e-6  # float(k), not n: see exp_f32
    # Taylor polynomial of degree 13 (truncation < 2e-18 relative for |r| <= ln(2) / 2)
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * (r * r) + r + 1.0
    half = k >> 1
    scaled = _f64_from_bits(_f64_bits(p) + (half << 52))  # p * 2^half, exactly (see exp_f32)
    return scaled * _f64_from_bits((k - half + 1023) << 52)

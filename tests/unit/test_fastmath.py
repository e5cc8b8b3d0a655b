"""Tests of companion._fastmath: accuracy of the vectorisable exp, edge values, maxnum, and that the loops vectorise."""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest

from companion._fastmath import exp_f32, exp_f64, maxnum


@numba.njit(fastmath=True)
def _exp32_loop(x, out):
    for i in range(x.size):
        out[i] = exp_f32(x[i])


@numba.njit(fastmath=True)
def _exp64_loop(x, out):
    for i in range(x.size):
        out[i] = exp_f64(x[i])


@numba.njit  # no fastmath: the functions must be right under both flag sets
def _exp32_strict(x, out):
    for i in range(x.size):
        out[i] = exp_f32(x[i])


@numba.njit
def _exp64_strict(x, out):
    for i in range(x.size):
        out[i] = exp_f64(x[i])


@numba.njit(fastmath=True)
def _row_max(a):
    top = a[0]
    for i in range(1, a.size):
        top = maxnum(top, a[i])
    return top


def _rel_err(got, x):
    exact = np.exp(x.astype(np.longdouble))
    return float(np.max(np.abs(got.astype(np.longdouble) / exact - 1)))


@pytest.mark.parametrize("loop", [_exp32_loop, _exp32_strict])
def test_exp_f32_relative_error_over_the_normal_range(loop):
    x = np.linspace(-87.3, 88.7, 2_000_001, dtype=np.float64).astype(np.float32)
    x = np.concatenate([x, np.float32([0.0, -0.0, 1e-30, -1e-30, 0.5, -0.34657359, 0.34657359])])
    got = np.empty_like(x)
    loop(x, got)
    assert got.dtype == np.float32
    assert _rel_err(got, x) < 4e-7  # documented bound (about 3 ulps); measured 1.2e-7
    rng = np.random.default_rng(0)
    y = rng.uniform(-30.0, 0.0, 100_003).astype(np.float32)  # the softmax range, odd length (vector tail)
    out = np.empty_like(y)
    loop(y, out)
    assert _rel_err(out, y) < 4e-7


@pytest.mark.parametrize("loop", [_exp64_loop, _exp64_strict])
def test_exp_f64_relative_error_over_the_normal_range(loop):
    x = np.concatenate([np.linspace(-708.0, 709.7, 2_000_001), [0.0, 1e-300, -1e-300, 1.0, -1.0, 0.34657359028]])
    got = np.empty_like(x)
    loop(x, got)
    assert _rel_err(got, x) < 1e-15  # documented bound; measured 2.2e-16
    small = np.linspace(-1.0, 1.0, 200_001)
    out = np.empty_like(small)
    loop(small, out)
    assert _rel_err(out, small) < 5e-16


def test_exp_f32_underflow_subnormals_and_overflow():
    x = np.float32([-200.0, -104.5, -103.0, -95.0, -88.0, 88.72, 88.8, 100.0, 3e38, -3e38])
    got = np.empty_like(x)
    _exp32_loop(x, got)
    with np.errstate(over="ignore"):
        exact = np.exp(x.astype(np.float64))
    assert got[0] == 0.0 and got[1] == 0.0 and got[-1] == 0.0
    # subnormal results: absolute error of a few subnormal steps (1.4e-45)
    np.testing.assert_allclose(got[2:5].astype(np.float64), exact[2:5], rtol=0, atol=3e-45)
    assert 0 < got[3] < np.finfo(np.float32).tiny
    np.testing.assert_allclose(got[5], exact[5], rtol=4e-7)  # largest finite results
    assert np.isinf(got[6:9]).all() and (got[6:9] > 0).all()


def test_exp_f64_underflow_subnormals_and_overflow():
    x = np.array([-800.0, -745.5, -740.0, -720.0, -708.5, 709.7, 709.9, 1e300, -1e300])
    got = np.empty_like(x)
    _exp64_loop(x, got)
    with np.errstate(over="ignore"):
        exact = np.exp(x)
    assert got[0] == 0.0 and got[1] == 0.0 and got[-1] == 0.0
    np.testing.assert_allclose(got[2:4], exact[2:4], rtol=0, atol=2e-323)
    assert 0 < got[2] < np.finfo(np.float64).tiny
    np.testing.assert_allclose(got[4:6], exact[4:6], rtol=1e-15)
    assert np.isinf(got[6:8]).all()


def test_scalar_calls_from_python_and_dtypes():
    assert isinstance(exp_f32(0.5), (float, np.floating))
    assert abs(float(exp_f32(np.float32(2.0))) - math.exp(2.0)) < 4e-7 * math.exp(2.0)
    assert exp_f64(0.0) == 1.0
    assert abs(exp_f64(-3.25) - math.exp(-3.25)) < 1e-15 * math.exp(-3.25)
    assert maxnum(1.5, -2.0) == 1.5 and maxnum(np.float32(-1.0), np.float32(3.0)) == 3.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 7, 64, 1001])
def test_maxnum_reduction_equals_numpy_max(dtype, n):
    a = np.random.default_rng(n).standard_normal(n).astype(dtype)
    assert _row_max(a) == a.max()
    a[n // 2] = 1e30
    assert _row_max(a) == dtype(1e30)


def test_loops_vectorise():
    # packed single-precision FMAs (ymm/zmm) in the exp loop and packed max in the reduction
    x = np.zeros(16, dtype=np.float32)
    _exp32_loop(x, x.copy())
    _row_max(x)
    asm = _exp32_loop.inspect_asm(_exp32_loop.signatures[0])
    assert "vfmadd" in asm and "ps" in asm and ("ymm" in asm or "zmm" in asm)
    asm_max = _row_max.inspect_asm(_row_max.signatures[0])
    assert "vmaxps" in asm_max

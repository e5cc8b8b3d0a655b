"""Tests of companion.compression.quantization: half-step bound, packing, backends, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from companion import backend
from companion.compression import QuantizedTensor, dequantize, fake_quantize, quantize

NO_GPU = "needs CuPy and a CUDA device; none is usable here"
GPU = [pytest.mark.gpu, pytest.mark.skipif(not backend.cupy_available(), reason=NO_GPU)]
BACKENDS = ["numpy", "numba", pytest.param("cupy", marks=GPU)]
CASES = [  # (shape, axis, group_size)
    ((64,), 0, None),
    ((4, 64), -1, 32),
    ((4, 64), -1, 8),
    ((6, 10), 0, 3),
    ((3, 8, 16), 1, 4),
    ((2, 3, 12, 8), -2, 12),
    ((2, 3, 12, 8), -2, 3),
    ((2, 3, 12, 8), 3, 1),
]


def _step_per_element(q: QuantizedTensor) -> np.ndarray:
    """Each element's quantization step, in the original layout."""
    steps = np.repeat(q.scales.astype(np.float64), q.group_size, axis=-1)  # (rows, axis length)
    moved = q.shape[: q.axis] + q.shape[q.axis + 1:] + (q.shape[q.axis],)
    return np.moveaxis(steps.reshape(moved), -1, q.axis)


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("shape,axis,group_size", CASES)
@pytest.mark.parametrize("scale_dtype", ["float16", "float32"])
def test_round_trip_within_half_a_step(bits, shape, axis, group_size, scale_dtype):
    rng = np.random.default_rng(bits + 10 * len(shape))
    x = (rng.standard_normal(shape) * rng.uniform(0.1, 10.0, size=shape[-1:])).astype(np.float32)
    q = quantize(x, bits, axis=axis, group_size=group_size, scale_dtype=scale_dtype)
    back = dequantize(q)
    assert back.shape == x.shape and back.dtype == x.dtype
    step = _step_per_element(q)
    err = np.abs(back.astype(np.float64) - x)
    assert (err <= 0.5 * step + 1e-6 * (np.abs(x) + step)).all(), float((err - 0.5 * step).max())
    # the step is the group's range over (levels), never much wider than that
    assert q.scales.dtype == np.dtype(scale_dtype) and q.zeros.dtype == np.dtype(scale_dtype)


@pytest.mark.parametrize("bits", range(1, 9))
def test_float64_bound_is_tight(bits):
    x = np.random.default_rng(bits).uniform(-3, 5, size=(5, 40))
    q = quantize(x, bits, group_size=10, scale_dtype="float32")
    err = np.abs(dequantize(q) - x)
    assert (err <= 0.5 * _step_per_element(q) * (1 + 1e-6)).all()
    # with 8 bits and a uniform spread, the largest error gets close to half a step
    assert err.max() > 0.3 * _step_per_element(q).max() if bits == 8 else True


def test_codes_hit_both_ends_and_error_shrinks_with_bits():
    x = np.random.default_rng(0).standard_normal((8, 128)).astype(np.float32)
    errors = [np.abs(fake_quantize(x, b, group_size=32) - x).mean() for b in range(1, 9)]
    assert all(a > b for a, b in zip(errors, errors[1:]))
    q = quantize(x, 2, group_size=32, scale_dtype="float32", backend="numpy")
    from companion.kernels import unpack_bits

    codes = unpack_bits(q.packed, 2, x.size)
    assert codes.min() == 0 and codes.max() == 3


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_outward_rounding_steps_like_nextafter(dtype):
    from companion.compression.quantization import _next_float

    v = np.concatenate([np.random.default_rng(0).standard_normal(500) * 10.0 ** np.arange(-4, 1).repeat(100),
                        [0.0, -0.0, 1e-7, -1e-7]]).astype(dtype)
    for up, target in ((True, np.inf), (False, -np.inf)):
        np.testing.assert_array_equal(_next_float(v, up=up), np.nextafter(v, dtype(target)))


def test_constant_groups_come_back_exactly():
    x = np.full((3, 16), 0.25, dtype=np.float32)  # 0.25 is exact in float16
    np.testing.assert_array_equal(fake_quantize(x, 3, group_size=4), x)


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_nbytes_counts_codes_scales_and_zeros(bits):
    x = np.zeros((4, 2, 32, 16), dtype=np.float32)
    q = quantize(x, bits, axis=-2, group_size=16)  # groups of 16 tokens in each channel
    n_groups = 4 * 2 * 16 * 2
    assert q.scales.shape == (4 * 2 * 16, 2)
    assert q.nbytes == x.size * bits // 8 + 2 * 2 * n_groups  # float16 scale + zero per group
    assert q.bits_per_element == pytest.approx(bits + 32 / 16)
    q32 = quantize(x, bits, axis=-2, group_size=16, scale_dtype="float32")
    assert q32.nbytes == x.size * bits // 8 + 2 * 4 * n_groups


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("bits", [1, 3, 8])
@pytest.mark.parametrize("shape,axis,group_size", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backends_match_reference(name, bits, shape, axis, group_size, dtype):
    x = np.random.default_rng(bits * 7 + len(shape)).standard_normal(shape).astype(dtype)
    ref = quantize(x, bits, axis=axis, group_size=group_size, backend="numpy")
    got = quantize(x, bits, axis=axis, group_size=group_size, backend=name)
    np.testing.assert_array_equal(backend.to_numpy(got.packed) if name != "cupy" else got.packed.get(), ref.packed)
    np.testing.assert_array_equal(np.asarray(backend.to_numpy(got.scales) if name != "cupy" else got.scales.get()),
                                  ref.scales)
    back_ref = dequantize(ref, backend="numpy")
    back = dequantize(ref, backend=name)
    back = back.get() if name == "cupy" else back
    np.testing.assert_allclose(back, back_ref, rtol=1e-7 if dtype == np.float32 else 1e-15, atol=0)


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("shape,axis,group_size", [((2, 3, 64, 16), -2, 32), ((2, 3, 64, 16), -2, 8),
                                                    ((4, 24, 5), 1, 24), ((16, 6), 0, 8)])
def test_numba_in_place_tiles_match_reference(bits, shape, axis, group_size):
    """Groups along an inner axis that fill whole bytes take the numba tile path (no transpose copy)."""
    from companion.compression.quantization import _tile_eligible

    x = np.random.default_rng(bits).standard_normal(shape).astype(np.float32)
    ref = quantize(x, bits, axis=axis, group_size=group_size, backend="numpy")
    got = quantize(x, bits, axis=axis, group_size=group_size, backend="numba")
    np.testing.assert_array_equal(got.packed, ref.packed)
    np.testing.assert_array_equal(got.scales, ref.scales)
    np.testing.assert_array_equal(dequantize(ref, backend="numba"), dequantize(ref, backend="numpy"))
    assert _tile_eligible(shape, axis % len(shape), group_size, bits) == ((group_size * bits) % 8 == 0)
    strided = np.random.default_rng(0).standard_normal((16, 64, 2)).astype(np.float32)[..., 0].T  # (64, 16), strided
    np.testing.assert_array_equal(quantize(strided, bits, axis=0, group_size=16, backend="numba").packed,
                                  quantize(strided, bits, axis=0, group_size=16, backend="numpy").packed)


def test_float16_and_torch_inputs_keep_their_kind():
    x16 = np.random.default_rng(1).standard_normal((4, 32)).astype(np.float16)
    assert fake_quantize(x16, 4).dtype == np.float16
    t = torch.randn(2, 3, 8, 16, dtype=torch.float64)
    back = fake_quantize(t, 4, axis=-2, group_size=4)
    assert isinstance(back, torch.Tensor) and back.dtype == torch.float64 and back.shape == t.shape
    expected = fake_quantize(t.numpy(), 4, axis=-2, group_size=4)
    np.testing.assert_array_equal(back.numpy(), expected)


def test_per_channel_beats_per_token_on_outlier_channels():
    """The motivating case: one channel with a large offset spoils every per-token group."""
    rng = np.random.default_rng(5)
    k = rng.standard_normal((64, 16))  # (tokens, channels)
    k[:, 3] += 20.0
    per_token = np.abs(fake_quantize(k, 2, axis=-1) - k).mean()
    per_channel = np.abs(fake_quantize(k, 2, axis=-2, group_size=16) - k).mean()
    assert per_channel < 0.5 * per_token


# ----------------------------------------------------------------- bad input
@pytest.mark.parametrize("bits", [0, 9, 16, -2])
def test_bits_outside_range(bits):
    with pytest.raises(ValueError, match="bits must be"):
        quantize(np.ones((2, 4)), bits)


def test_group_size_must_divide_axis():
    with pytest.raises(ValueError, match="group_size must divide the length of axis 1"):
        quantize(np.ones((2, 10)), 4, group_size=4)
    with pytest.raises(ValueError, match="group_size must be >= 1"):
        quantize(np.ones((2, 10)), 4, group_size=0)


def test_bad_axis_and_types():
    with pytest.raises(ValueError, match="axis must be <= 1"):
        quantize(np.ones((2, 4)), 4, axis=2)
    with pytest.raises(TypeError, match="floating"):
        quantize(np.ones((2, 4), dtype=np.int32), 4)
    with pytest.raises(TypeError, match="NumPy array"):
        quantize([1.0, 2.0], 4)
    with pytest.raises(ValueError, match="scale_dtype must be one of"):
        quantize(np.ones((2, 4)), 4, scale_dtype="int8")
    with pytest.raises(TypeError, match="QuantizedTensor"):
        dequantize(np.ones(3))


def test_empty_input_refused():
    with pytest.raises(ValueError, match="must not be empty"):
        quantize(np.ones((0, 4)), 4)
    with pytest.raises(ValueError, match="at least 1 dimensions"):
        quantize(np.array(1.0), 4)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_refused(bad):
    x = np.ones((2, 4))
    x[1, 2] = bad
    with pytest.raises(ValueError, match="finite"):
        quantize(x, 4)


def test_float16_range_overflow_refused():
    x = np.array([[0.0, 1e6]])
    with pytest.raises(ValueError, match="scale_dtype='float32'"):
        quantize(x, 4)
    assert np.abs(fake_quantize(x, 4, scale_dtype="float32") - x).max() <= 1e6 / 30 + 1


# --------------------------------------------------- numba one-pass tile kernel
def _same_quantized(got, ref):
    np.testing.assert_array_equal(got.packed, ref.packed)
    assert got.scales.dtype == ref.scales.dtype and got.scales.tobytes() == ref.scales.tobytes()  # -0.0 included
    assert got.zeros.dtype == ref.zeros.dtype and got.zeros.tobytes() == ref.zeros.tobytes()


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 8])
@pytest.mark.parametrize("shape,axis,group_size", [((1, 3, 96, 128), -2, 32), ((2, 40, 7), 1, 40),
                                                    ((3, 24, 130), 1, 8), ((2, 64, 5), 1, 16)])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("scale_dtype", ["float16", "float32"])
def test_tile_kernel_identical_to_reference(bits, shape, axis, group_size, dtype, scale_dtype):
    """Odd channel counts (vector tails), rows not a multiple of 4, float32 codes (bits <= 4) and float64 codes."""
    from companion.compression.quantization import _tile_eligible

    if not _tile_eligible(shape, axis % len(shape), group_size, bits):
        pytest.skip("not a tile-kernel case")
    rng = np.random.default_rng(bits)
    x = (rng.standard_normal(shape) * rng.uniform(0.01, 100.0, size=shape[-1:]) + rng.uniform(-50, 50, size=shape[-1:]))
    x = x.astype(dtype)
    ref = quantize(x, bits, axis=axis, group_size=group_size, scale_dtype=scale_dtype, backend="numpy")
    _same_quantized(quantize(x, bits, axis=axis, group_size=group_size, scale_dtype=scale_dtype, backend="numba"), ref)
    back = dequantize(ref, backend="numpy")
    np.testing.assert_array_equal(dequantize(ref, backend="numba"), back)
    out = np.full(x.shape, np.nan, dtype=x.dtype)
    assert dequantize(ref, backend="numba", out=out) is out
    np.testing.assert_array_equal(out, back)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("scale_dtype", ["float16", "float32"])
def test_tile_kernel_exact_ties_and_flat_groups(bits, scale_dtype):
    """Quotients exactly on half-integers (the near-tie fallback), constant groups, +-0 and tiny values."""
    levels = (1 << bits) - 1
    t = np.arange(64) % 32
    ties = (t % (2 * levels + 1)) / 2.0  # 0, 0.5, 1, ... steps of exactly 1: quotients on half-integers
    ties[[0, 31, 32, 63]] = [0.0, levels, 0.0, levels]
    x = np.stack([ties, ties * 0.25, np.full(64, 0.3), np.full(64, -0.0), np.zeros(64),
                  np.full(64, -1e-7), np.linspace(-1e-6, 1e-6, 64), np.r_[np.zeros(63), 65504.0]], axis=1)
    x = np.ascontiguousarray(x, dtype=np.float32)  # (tokens, channels): groups along tokens
    ref = quantize(x, bits, axis=0, group_size=32, scale_dtype=scale_dtype, backend="numpy")
    _same_quantized(quantize(x, bits, axis=0, group_size=32, scale_dtype=scale_dtype, backend="numba"), ref)
    np.testing.assert_array_equal(dequantize(ref, backend="numba"), dequantize(ref, backend="numpy"))


def test_tile_kernel_non_contiguous_and_torch_input():
    x = np.random.default_rng(3).standard_normal((2, 128, 16, 2)).astype(np.float32)[..., 0]  # strided view
    ref = quantize(np.ascontiguousarray(x), 2, axis=1, group_size=32, backend="numpy")
    _same_quantized(quantize(x, 2, axis=1, group_size=32, backend="numba"), ref)
    t = torch.from_numpy(np.ascontiguousarray(x))
    got = quantize(t, 2, axis=1, group_size=32, backend="numba")
    _same_quantized(got, ref)
    assert isinstance(dequantize(got, backend="numba"), torch.Tensor)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [(0, 0, 0), (0, 37, 5), (1, 63, 15), (1, 62, 3)])
def test_tile_kernel_refuses_non_finite(bad, where):
    """The tile kernel checks finiteness during its pass (no separate isfinite pass)."""
    x = np.random.default_rng(0).standard_normal((2, 64, 16)).astype(np.float32)
    x[where] = bad
    with pytest.raises(ValueError, match="finite"):
        quantize(x, 2, axis=1, group_size=32, backend="numba")
    with pytest.raises(ValueError, match="finite"):  # an invalid option is still reported after the NaN
        quantize(x, 2, axis=1, group_size=5, backend="numba")


def test_tile_kernel_float16_overflow_refused():
    x = np.zeros((64, 8), dtype=np.float32)
    x[40, 3] = -7e4
    with pytest.raises(ValueError, match="scale_dtype='float32'"):
        quantize(x, 2, axis=0, group_size=32, backend="numba")
    q = quantize(x, 2, axis=0, group_size=32, scale_dtype="float32", backend="numba")
    _same_quantized(q, quantize(x, 2, axis=0, group_size=32, scale_dtype="float32", backend="numpy"))


def test_float16_rounding_helpers_match_numpy():
    """The branch-free float64 -> float16 rounding of the tile kernel, on every float16, midpoints and random values."""
    import numba

    from companion.compression.quantization import _f16_nearest, _f16_value

    @numba.njit
    def nearest(v, out_v, out_p):
        for i in range(v.size):
            out_v[i], out_p[i] = _f16_nearest(v[i])

    @numba.njit
    def value(p, out):
        for i in range(p.size):
            out[i] = _f16_value(np.int64(p[i]))

    patterns = np.arange(65536, dtype=np.uint16)
    halves = patterns.view(np.float16)
    finite = halves[np.isfinite(halves)].astype(np.float64)
    pos = np.sort(finite[finite > 0])
    mid = (pos[:-1] + pos[1:]) / 2
    rng = np.random.default_rng(0)
    v = np.concatenate([finite, mid, -mid, np.nextafter(mid, 0), np.nextafter(mid, np.inf), [0.0, -0.0, 65519.99, 65520.0,
                        1e300, -1e300, 2.0**-25, 3 * 2.0**-26], rng.standard_normal(10000) * 10.0 ** rng.uniform(-9, 5, 10000)])
    got_v, got_p = np.empty_like(v), np.empty(v.size, dtype=np.int64)
    nearest(v, got_v, got_p)
    with np.errstate(over="ignore"):
        want = v.astype(np.float16)
    np.testing.assert_array_equal(got_p.astype(np.uint16), want.view(np.uint16))
    np.testing.assert_array_equal(got_v, want.astype(np.float64))
    back = np.empty(65536)
    value(patterns, back)
    keep = np.isfinite(halves) | np.isinf(halves)
    np.testing.assert_array_equal(back[keep], halves[keep].astype(np.float64))


def test_dequantize_out_argument():
    x = np.random.default_rng(2).standard_normal((4, 64)).astype(np.float32)
    for axis, group in ((-1, 32), (0, 4)):  # the generic path and the tile path
        q = quantize(x, 3 if axis == -1 else 2, axis=axis, group_size=group)
        for name in ("numpy", "numba"):
            out = np.empty_like(x)
            assert dequantize(q, backend=name, out=out) is out
            np.testing.assert_array_equal(out, dequantize(q, backend="numpy"))
    q16 = quantize(x.astype(np.float16), 2, axis=0, group_size=4)
    out16 = np.empty(x.shape, dtype=np.float16)
    np.testing.assert_array_equal(dequantize(q16, backend="numba", out=out16), dequantize(q16, backend="numpy"))
    with pytest.raises(ValueError, match="out must be a writeable C-contiguous array"):
        dequantize(q, out=np.empty((4, 64), dtype=np.float64))
    with pytest.raises(ValueError, match="out must be a writeable C-contiguous array"):
        dequantize(q, out=np.empty((64, 4), dtype=np.float32).T)
    with pytest.raises(TypeError, match="out must be a numpy.ndarray"):
        dequantize(q, out=[0.0])
    with pytest.raises(TypeError, match="out= is supported"):
        dequantize(quantize(torch.from_numpy(x), 2, axis=0, group_size=4), out=np.empty_like(x))


def test_float32_codes_flag_near_ties_and_bad_scales():
    """The float32 code path reports near-ties (the kernel then redoes the tile by exact division) and odd scales."""
    from companion.compression.quantization import _tile_codes_f32

    def run(x, ss, zz):
        inner = x.shape[2]
        z32, inv32, dev = (np.empty(inner, dtype=np.float32) for _ in range(3))
        acc32, acc = np.empty((2, inner), dtype=np.uint32), np.empty((1, inner), dtype=np.uint64)
        return _tile_codes_f32(x, 0, 0, 32, 2, 3.0, zz, ss, z32, inv32, dev, acc32, acc), acc

    rng = np.random.default_rng(0)
    x = rng.uniform(0.01, 2.99, size=(1, 32, 8)).astype(np.float32)
    x[0, :, 1] = np.round(x[0, :, 1]) + 0.25
    ss, zz = np.ones(8), np.zeros(8)
    near, acc = run(x, ss, zz)
    assert near == 0
    codes = (acc[0][None, :] >> (2 * np.arange(32, dtype=np.uint64))[:, None]) & np.uint64(3)
    np.testing.assert_array_equal(codes, np.clip(np.rint(x[0].astype(np.float64)), 0, 3))
    x[0, 7, 3] = 1.5  # an exact half-integer quotient
    assert run(x, ss, zz)[0] == 1
    ss[5] = 1e-35  # a float32 reciprocal too large for the error bound
    assert run(x, ss, zz)[0] == -1

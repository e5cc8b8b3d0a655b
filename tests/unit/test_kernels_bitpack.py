"""Tests of companion.kernels.bitpack: exact round trips, layout, backends, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from companion import backend
from companion.kernels import pack_bits, packed_nbytes, unpack_bits

NO_GPU = "needs CuPy and a CUDA device; none is usable here"
GPU = [pytest.mark.gpu, pytest.mark.skipif(not backend.cupy_available(), reason=NO_GPU)]
BACKENDS = ["numpy", "numba", pytest.param("cupy", marks=GPU)]
SIZES = [0, 1, 7, 8, 9, 63, 1000, 4097]


def _bitstream_pack(codes, bits):
    """Independent reference: build the bit stream one bit at a time in Python."""
    out = bytearray(packed_nbytes(len(codes), bits))
    for i, c in enumerate(int(c) for c in codes):
        for j in range(bits):
            if (c >> j) & 1:
                pos = i * bits + j
                out[pos // 8] |= 1 << (pos % 8)
    return np.frombuffer(bytes(out), dtype=np.uint8)


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("n", [0, 1, 5, 8, 13, 33])
def test_layout_matches_bit_by_bit_reference(bits, n):
    codes = np.random.default_rng(bits * 100 + n).integers(0, 1 << bits, n).astype(np.uint8)
    expected = _bitstream_pack(codes, bits)
    for name in ("numpy", "numba"):
        got = pack_bits(codes, bits, backend=name)
        assert got.dtype == np.uint8 and got.shape == (packed_nbytes(n, bits),)
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("n", SIZES)
def test_round_trip_is_exact(name, bits, n):
    rng = np.random.default_rng(1000 * bits + n)
    codes = rng.integers(0, 1 << bits, n).astype(np.uint8)
    packed = pack_bits(codes, bits, backend=name)
    np.testing.assert_array_equal(packed, pack_bits(codes, bits, backend="numpy"))
    np.testing.assert_array_equal(unpack_bits(packed, bits, n, backend=name), codes)


def test_extreme_codes_and_multidimensional_input():
    for bits in range(1, 9):
        codes = np.array([[0, (1 << bits) - 1], [(1 << bits) - 1, 0]], dtype=np.int64)  # any integer dtype
        packed = pack_bits(codes, bits)
        np.testing.assert_array_equal(unpack_bits(packed, bits, 4), codes.reshape(-1))


def test_unused_high_bits_are_zero():
    packed = pack_bits(np.array([7, 7, 7], dtype=np.uint8), 3)  # 9 bits -> 2 bytes
    assert packed.tolist() == [0xFF, 0x01]


def test_packing_saves_the_expected_memory():
    codes = np.zeros(1024, dtype=np.uint8)
    for bits in range(1, 9):
        assert pack_bits(codes, bits).nbytes == 1024 * bits // 8


def test_torch_input_returns_torch():
    codes = torch.randint(0, 8, (5, 7), dtype=torch.int32)
    packed = pack_bits(codes, 3)
    assert isinstance(packed, torch.Tensor) and packed.dtype == torch.uint8
    back = unpack_bits(packed, 3, 35)
    assert isinstance(back, torch.Tensor)
    assert torch.equal(back.to(torch.int32), codes.reshape(-1))


@pytest.mark.gpu
@pytest.mark.skipif(not backend.cupy_available(), reason=NO_GPU)
def test_cupy_input_stays_on_gpu():
    import cupy

    codes = cupy.asarray(np.random.default_rng(3).integers(0, 32, 999).astype(np.uint8))
    packed = pack_bits(codes, 5)
    assert isinstance(packed, cupy.ndarray)
    assert bool((unpack_bits(packed, 5, 999) == codes).all())


# ----------------------------------------------------------------- bad input
@pytest.mark.parametrize("bits", [0, 9, -1])
def test_bits_outside_range(bits):
    with pytest.raises(ValueError, match="bits must be"):
        pack_bits(np.zeros(4, dtype=np.uint8), bits)
    with pytest.raises(ValueError, match="bits must be"):
        unpack_bits(np.zeros(4, dtype=np.uint8), bits, 4)


def test_bits_must_be_integer():
    with pytest.raises(TypeError, match="bits must be an integer"):
        pack_bits(np.zeros(4, dtype=np.uint8), 2.0)


def test_codes_out_of_range():
    with pytest.raises(ValueError, match=r"codes must lie in 0 \.\. 3"):
        pack_bits(np.array([0, 4], dtype=np.uint8), 2)
    with pytest.raises(ValueError, match="codes must lie in"):
        pack_bits(np.array([-1, 0]), 2)


def test_float_codes_refused():
    with pytest.raises(TypeError, match="codes must have a signed integer or unsigned integer dtype"):
        pack_bits(np.array([0.0, 1.0]), 2)


def test_wrong_packed_length_or_dtype():
    with pytest.raises(ValueError, match="must hold ceil"):
        unpack_bits(np.zeros(3, dtype=np.uint8), 2, 5)
    with pytest.raises(TypeError, match="uint8"):
        unpack_bits(np.zeros(2, dtype=np.uint16), 2, 5)
    with pytest.raises(ValueError, match="n must be >= 0"):
        unpack_bits(np.zeros(0, dtype=np.uint8), 2, -1)


def test_empty_round_trip():
    packed = pack_bits(np.zeros(0, dtype=np.uint8), 5)
    assert packed.shape == (0,)
    assert unpack_bits(packed, 5, 0).shape == (0,)

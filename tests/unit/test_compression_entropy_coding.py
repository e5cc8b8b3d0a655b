"""Tests of companion.compression.entropy_coding: exact round trips, quantization, overhead bound, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from companion import backend
from companion.compression import (
    cross_entropy_bits,
    quantize_probabilities,
    quantized_code_length_bits,
    rans_decode,
    rans_encode,
    rans_overhead_bound_bits,
)
from companion.compression import entropy_coding

NO_GPU = "needs CuPy and a CUDA device; none is usable here"
GPU = [pytest.mark.gpu, pytest.mark.skipif(not backend.cupy_available(), reason=NO_GPU)]
CODERS = ["numpy", "numba"]


def _draw(rng, n, k, concentration=0.3, per_symbol=True):
    """Random tables and symbols drawn from them."""
    if per_symbol:
        p = rng.dirichlet(np.full(k, concentration), size=n)  # (n, K)
        u = rng.random((n, 1))
        x = (u > np.cumsum(p, axis=1)).sum(1).clip(0, k - 1)
    else:
        p = rng.dirichlet(np.full(k, concentration))
        x = rng.choice(k, p=p, size=n)
    return x.astype(np.int64), p


# ------------------------------------------------------------ quantization
@pytest.mark.parametrize("name", ["numpy", "numba", pytest.param("cupy", marks=GPU)])
@pytest.mark.parametrize("precision", [2, 8, 12, 16])
def test_quantization_backends_agree_and_keep_invariants(name, precision):
    rng = np.random.default_rng(precision)
    for k in (1, 2, 3, 4, 17):
        if k > 2 ** precision:
            continue
        p = rng.dirichlet(np.full(k, 0.2), size=200)
        p[:5] = np.eye(k)[rng.integers(0, k, 5)]  # some rows with exact zeros
        ref = quantize_probabilities(p, precision, backend="numpy")
        got = quantize_probabilities(p, precision, backend=name)
        np.testing.assert_array_equal(np.asarray(got.get() if hasattr(got, "get") else got), ref)
        assert (ref >= 1).all() and (ref.sum(1) == 2 ** precision).all()
        assert (ref >= p * (2 ** precision - k)).all()  # the overhead bound's premise


def test_quantization_of_ties_is_deterministic_and_fair():
    f = quantize_probabilities(np.full(3, 1 / 3), precision=4)  # 16 slots for 3 equal symbols
    assert f.tolist() == [6, 5, 5]
    assert quantize_probabilities(np.array([1.0]), precision=3).tolist() == [8]


def test_quantization_keeps_the_input_kind():
    p = torch.tensor([[0.25, 0.75]], dtype=torch.float64)
    got = quantize_probabilities(p, 8)
    assert isinstance(got, torch.Tensor) and got.tolist() == [[65, 191]]  # 1 + floor(63.5), 1 + floor(190.5), the tie goes to index 0


# -------------------------------------------------------------- round trips
@pytest.mark.parametrize("name", CODERS)
def test_round_trip_on_many_random_inputs(name):
    rng = np.random.default_rng(1)
    for trial in range(60):
        k = int(rng.integers(1, 40))
        n = int(rng.integers(1, 400))
        x, p = _draw(rng, n, k, concentration=float(rng.choice([0.05, 0.5, 5.0])), per_symbol=bool(trial % 2))
        precision = int(rng.integers(max(1, int(np.ceil(np.log2(k)))), 17))
        code = rans_encode(x, p, precision=precision, backend=name)
        assert code.dtype == np.uint8
        np.testing.assert_array_equal(rans_decode(code, p, n, precision=precision, backend=name), x)


def test_backends_write_identical_codes():
    rng = np.random.default_rng(2)
    x, p = _draw(rng, 3000, 7)
    np.testing.assert_array_equal(rans_encode(x, p, backend="numpy"), rans_encode(x, p, backend="numba"))


@pytest.mark.parametrize("name", CODERS)
def test_edge_cases_round_trip(name):
    one = np.array([1.0])
    assert rans_decode(rans_encode(np.zeros(5, dtype=int), one, backend=name), one, 5, backend=name).tolist() == [0] * 5
    assert rans_encode(np.zeros(1000, dtype=int), one, backend=name).size == 4  # a certain symbol costs nothing
    # symbols the model called impossible still round-trip (frequency 1)
    p = np.array([1.0, 0.0, 0.0])
    x = np.array([2, 1, 0, 0, 2])
    np.testing.assert_array_equal(rans_decode(rans_encode(x, p, backend=name), p, 5, backend=name), x)
    # a single symbol; the largest alphabet a precision allows; long runs of a rare symbol
    for x, p in [(np.array([3]), np.full(4, 0.25)), (np.arange(256), np.full(256, 1 / 256)),
                 (np.ones(2000, dtype=int), np.array([1 - 1e-9, 1e-9]))]:
        prec = 8 if len(p) == 256 else 16
        code = rans_encode(x, p, precision=prec, backend=name)
        np.testing.assert_array_equal(rans_decode(code, p, len(x), precision=prec, backend=name), x)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 9), st.integers(1, 60), st.integers(4, 16))
def test_round_trip_property(seed, k, n, precision):
    rng = np.random.default_rng(seed)
    x, p = _draw(rng, n, k, concentration=0.1)
    np.testing.assert_array_equal(rans_decode(rans_encode(x, p, precision=precision), p, precision=precision), x)


def test_inputs_of_other_kinds():
    x = torch.tensor([0, 2, 1, 1])
    p = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float32)
    code = rans_encode(x, p)
    np.testing.assert_array_equal(rans_decode(code, p, 4), x.numpy())
    np.testing.assert_array_equal(rans_decode(bytes(code), p, 4), x.numpy())
    np.testing.assert_array_equal(rans_encode([0, 2, 1, 1], p.numpy().astype(np.float64)), code)


# ---------------------------------------------------------- code lengths
@pytest.mark.parametrize("per_symbol", [False, True])
def test_code_length_is_close_to_cross_entropy(per_symbol):
    rng = np.random.default_rng(3)
    for k, n in [(2, 50_000), (5, 20_000), (64, 5_000)]:
        x, p = _draw(rng, n, k, concentration=0.5, per_symbol=per_symbol)
        bits = 8 * rans_encode(x, p).size
        ce = cross_entropy_bits(x, p)
        q = quantized_code_length_bits(x, p)
        assert bits <= ce + rans_overhead_bound_bits(n, k)
        assert bits <= q + n * np.log2(1 + 2.0 ** -7) + 32
        assert bits >= q - 32  # cannot beat the quantized model's own cross-entropy by more than the flush
        assert abs(bits / ce - 1) < 0.02


def test_overhead_bound_is_tight_enough_to_fail():
    # a coder that wrote one extra byte per 100 symbols would break the bound
    rng = np.random.default_rng(4)
    x, p = _draw(rng, 20_000, 2, concentration=1.0, per_symbol=False)
    bound = cross_entropy_bits(x, p) + rans_overhead_bound_bits(len(x), 2)
    assert 8 * rans_encode(x, p).size + 8 * len(x) / 100 > bound


# ----------------------------------------------------------------- errors
def test_bad_input_raises_clear_errors():
    p = np.array([0.5, 0.5])
    x = np.array([0, 1, 1])
    with pytest.raises(ValueError, match="must sum to 1.*0.9"):
        rans_encode(x, np.array([0.5, 0.4]))
    with pytest.raises(ValueError, match="must be non-negative"):
        rans_encode(x, np.array([1.5, -0.5]))
    with pytest.raises(ValueError, match="only finite values"):
        rans_encode(x, np.array([np.nan, 0.5]))
    with pytest.raises(ValueError, match="only finite values"):
        rans_encode(x, np.array([np.inf, 0.5]))
    with pytest.raises(ValueError, match="symbols must lie in \\[0, 2\\).*found 2"):
        rans_encode(np.array([0, 2]), p)
    with pytest.raises(ValueError, match="symbols must lie in \\[0, 2\\).*found -1"):
        rans_encode(np.array([-1, 0]), p)
    with pytest.raises(ValueError, match="symbols must not be empty"):
        rans_encode(np.array([], dtype=np.int64), p)
    with pytest.raises(ValueError, match="probabilities must not be empty"):
        rans_encode(x, np.zeros(0))
    with pytest.raises(TypeError, match="symbols must have a signed integer or unsigned integer dtype; got float64"):
        rans_encode(np.array([0.0, 1.0]), p)
    with pytest.raises(ValueError, match="one row per symbol.*got 2 rows for 3 symbols"):
        rans_encode(x, np.full((2, 2), 0.5))
    with pytest.raises(ValueError, match="probabilities must have 1 or 2 dimensions"):
        rans_encode(x, np.full((3, 1, 2), 0.5))
    with pytest.raises(TypeError, match="probabilities must be a NumPy array"):
        rans_encode(x, [0.5, 0.5])
    with pytest.raises(ValueError, match="fewer than the 300 symbols"):
        rans_encode(x, np.full(300, 1 / 300), precision=8)
    with pytest.raises(ValueError, match="precision must be <= 16; got 20"):
        rans_encode(x, p, precision=20)
    with pytest.raises(ValueError, match="no 'cupy' kernel: the coder is a sequential recurrence"):
        rans_encode(x, p, backend="cupy")
    code = rans_encode(x, p)
    with pytest.raises(ValueError, match="length is required"):
        rans_decode(code, p)
    with pytest.raises(ValueError, match="at least the 4 bytes"):
        rans_decode(code[:3], p, 3)
    with pytest.raises(TypeError, match="code must be a 1-d NumPy uint8 array"):
        rans_decode(code.astype(np.int64), p, 3)
    with pytest.raises(ValueError, match="length=4 disagrees with the 3 rows"):
        rans_decode(code, np.full((3, 2), 0.5), 4)


@pytest.mark.parametrize("name", CODERS)
def test_decoder_detects_mismatched_codes(name):
    rng = np.random.default_rng(5)
    x, p = _draw(rng, 500, 4, concentration=1.0, per_symbol=False)
    code = rans_encode(x, p, backend=name)
    with pytest.raises(ValueError, match="truncated|left over"):
        rans_decode(code[:-3], p, 500, backend=name)
    with pytest.raises(ValueError, match="left over"):
        rans_decode(code, p, 499, backend=name)
    with pytest.raises(ValueError, match="truncated|left over"):
        rans_decode(code, p[::-1].copy(), 500, backend=name)


def test_module_names_the_missing_gpu_coder():
    assert "sequential recurrence" in entropy_coding.__doc__
    assert entropy_coding.encode is rans_encode and entropy_coding.decode is rans_decode

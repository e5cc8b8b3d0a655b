"""Tests of companion.positional.sinusoidal_table."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.positional import sinusoidal_table


def test_values_match_the_formula_entry_by_entry():
    table = sinusoidal_table(7, 6, base=50.0)
    assert table.shape == (7, 6) and table.dtype == np.float32
    for p in range(7):
        for i in range(3):
            w = 50.0 ** (-2 * i / 6)
            assert table[p, 2 * i] == pytest.approx(math.sin(p * w), abs=1e-7)
            assert table[p, 2 * i + 1] == pytest.approx(math.cos(p * w), abs=1e-7)


def test_first_row_and_default_base():
    table = sinusoidal_table(3, 4)
    np.testing.assert_array_equal(table[0], [0, 1, 0, 1])
    np.testing.assert_allclose(table[2], [math.sin(2), math.cos(2), math.sin(0.02), math.cos(0.02)], atol=1e-7)


def test_positions_select_rows_and_accept_floats_and_torch():
    full = sinusoidal_table(64, 16)
    picked = sinusoidal_table(None, 16, positions=np.array([3, 40, 1]))
    np.testing.assert_array_equal(picked, full[[3, 40, 1]])
    same = sinusoidal_table(3, 16, positions=torch.tensor([3, 40, 1]))
    assert isinstance(same, np.ndarray)
    np.testing.assert_array_equal(same, picked)
    half_step = sinusoidal_table(None, 2, positions=np.array([0.5]))
    np.testing.assert_allclose(half_step, [[math.sin(0.5), math.cos(0.5)]], atol=1e-7)


@settings(max_examples=40, deadline=None)
@given(
    dim=st.integers(1, 32).map(lambda n: 2 * n),
    positions=st.lists(st.integers(-100_000, 100_000), min_size=1, max_size=20),
)
def test_values_are_bounded_by_one(dim, positions):
    table = sinusoidal_table(None, dim, positions=np.array(positions))
    assert np.all(np.abs(table) <= 1.0)
    # each (sin, cos) pair lies on the unit circle
    np.testing.assert_allclose(table[:, 0::2] ** 2 + table[:, 1::2] ** 2, 1.0, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    dim=st.integers(1, 32).map(lambda n: 2 * n),
    p=st.integers(0, 5000),
    q=st.integers(0, 5000),
    shift=st.integers(-5000, 5000),
)
def test_row_dot_products_depend_only_on_offset(dim, p, q, shift):
    rows = sinusoidal_table(None, dim, positions=np.array([p, q, p + shift, q + shift])).astype(np.float64)
    dot = rows[0] @ rows[1]
    np.testing.assert_allclose(rows[2] @ rows[3], dot, atol=1e-4)
    freqs = 10000.0 ** (-np.arange(0, dim, 2) / dim)
    np.testing.assert_allclose(dot, np.cos((p - q) * freqs).sum(), atol=1e-4)


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="dim must be even.*got 5"):
        sinusoidal_table(4, 5)
    with pytest.raises(ValueError, match="dim must be >= 2; got 0"):
        sinusoidal_table(4, 0)
    with pytest.raises(TypeError, match="dim must be an integer; got float 4.0"):
        sinusoidal_table(4, 4.0)
    with pytest.raises(ValueError, match="n_positions must be >= 1; got 0"):
        sinusoidal_table(0, 4)
    with pytest.raises(ValueError, match="n_positions must be an integer >= 1 when positions is not given"):
        sinusoidal_table(None, 4)
    with pytest.raises(ValueError, match="positions must have length n_positions = 3; got shape \\(2,\\)"):
        sinusoidal_table(3, 4, positions=np.array([1, 2]))
    with pytest.raises(ValueError, match="positions must contain only finite values"):
        sinusoidal_table(None, 4, positions=np.array([1.0, np.inf]))
    with pytest.raises(ValueError, match="positions must have 1 dimensions; got shape \\(2, 2\\)"):
        sinusoidal_table(None, 4, positions=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="base must be > 0.0; got 0.0"):
        sinusoidal_table(3, 4, base=0.0)

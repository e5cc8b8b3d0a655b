"""Tests of companion.positional.relative: T5 bucketing and RelativePositionBias."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.positional import RelativePositionBias, relative_position_bucket


def _bucket_scalar(rel, bidirectional, num_buckets, max_distance):
    """One offset at a time, straight from the description in the T5 paper."""
    side = 0
    if bidirectional:
        num_buckets //= 2
        side = num_buckets if rel > 0 else 0
        distance = abs(rel)
    else:
        distance = max(-rel, 0)
    exact = num_buckets // 2
    if distance < exact:
        return side + distance
    spread = math.log(distance / exact) / math.log(max_distance / exact)
    return side + min(exact + int(spread * (num_buckets - exact)), num_buckets - 1)


def test_hand_computed_buckets():
    rel = np.array([-3, -1, 0, 1, 3, 200])
    np.testing.assert_array_equal(relative_position_bucket(rel, num_buckets=8, max_distance=16), [2, 1, 0, 5, 6, 7])
    # causal: 8 buckets for the past, 4 exact ones; the future is bucket 0
    rel = np.array([0, -1, -3, -4, -200, 5])
    got = relative_position_bucket(rel, bidirectional=False, num_buckets=8, max_distance=16)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, [0, 1, 3, 4, 7, 0])


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (8, 16), (10, 50), (6, 7)])
def test_matches_scalar_formula(bidirectional, num_buckets, max_distance):
    rel = np.arange(-400, 401)
    got = relative_position_bucket(rel, bidirectional=bidirectional, num_buckets=num_buckets,
                                   max_distance=max_distance)
    expected = [_bucket_scalar(int(r), bidirectional, num_buckets, max_distance) for r in rel]
    np.testing.assert_array_equal(got, expected)


@settings(max_examples=40, deadline=None)
@given(
    bidirectional=st.booleans(),
    num_buckets=st.integers(4, 64),
    extra_distance=st.integers(1, 500),
    rel=st.lists(st.integers(-10_000, 10_000), min_size=1, max_size=50),
)
def test_bucket_properties(bidirectional, num_buckets, extra_distance, rel):
    per_side = num_buckets // 2 if bidirectional else num_buckets
    max_distance = per_side // 2 + extra_distance
    rel = np.array(rel)
    buckets = relative_position_bucket(rel, bidirectional=bidirectional, num_buckets=num_buckets,
                                       max_distance=max_distance)
    assert buckets.shape == rel.shape
    assert np.all((buckets >= 0) & (buckets < num_buckets))
    distance = np.abs(rel) if bidirectional else np.maximum(-rel, 0)
    on_side = buckets - np.where(rel > 0, per_side, 0) if bidirectional else buckets
    # small offsets are exact, far ones share the last bucket, and buckets never shrink with distance
    np.testing.assert_array_equal(on_side[distance < per_side // 2], distance[distance < per_side // 2])
    assert np.all(on_side[distance >= max_distance] == per_side - 1)
    order = np.argsort(distance, kind="stable")
    assert np.all(np.diff(on_side[order]) >= 0)


def test_kinds_and_shapes_are_kept():
    rel = torch.arange(-5, 5).reshape(2, 5)
    got = relative_position_bucket(rel, num_buckets=8, max_distance=16)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.int64 and got.shape == (2, 5)
    np.testing.assert_array_equal(got.numpy(), relative_position_bucket(rel.numpy(), num_buckets=8, max_distance=16))
    np.testing.assert_array_equal(relative_position_bucket([-1, 0, 1]), [1, 0, 17])


def test_bucket_bad_input():
    with pytest.raises(TypeError, match="relative_position must have a signed integer or unsigned integer dtype"):
        relative_position_bucket(np.array([0.5]))
    with pytest.raises(ValueError, match="num_buckets must be >= 4; got 3"):
        relative_position_bucket(np.array([1]), num_buckets=3)
    with pytest.raises(ValueError, match="max_distance must be >= 9; got 8"):
        relative_position_bucket(np.array([1]), num_buckets=32, max_distance=8)
    with pytest.raises(TypeError, match="bidirectional must be a bool; got str"):
        relative_position_bucket(np.array([1]), bidirectional="yes")


# --------------------------------------------------------------------- module
def test_module_is_zero_initialised_and_shaped():
    bias = RelativePositionBias(4, num_buckets=8, max_distance=16)
    out = bias(3, 5)
    assert out.shape == (4, 3, 5) and out.dtype == torch.float32
    assert torch.count_nonzero(out) == 0
    assert "n_heads=4" in repr(bias)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_module_looks_up_the_bucket_of_each_offset(bidirectional):
    n_heads, q_len, k_len = 3, 4, 6
    bias = RelativePositionBias(n_heads, num_buckets=8, max_distance=16, bidirectional=bidirectional)
    with torch.no_grad():
        bias.embedding.weight.copy_(torch.arange(8 * n_heads, dtype=torch.float32).reshape(8, n_heads))
    out = bias(q_len, k_len).detach()
    for i in range(q_len):
        for j in range(k_len):
            rel = j - (i + k_len - q_len)  # queries are the last q_len keys
            b = _bucket_scalar(rel, bidirectional, 8, 16)
            np.testing.assert_array_equal(out[:, i, j].numpy(), bias.embedding.weight[b].detach().numpy())
    # decoding one token equals the last row of the full square
    torch.testing.assert_close(bias(1, k_len), bias(k_len, k_len)[:, -1:, :])


def test_module_gradient_reaches_the_embedding():
    bias = RelativePositionBias(2, num_buckets=8, max_distance=16)
    weights = torch.randn(2, 5, 5)
    (bias(5, 5) * weights).sum().backward()
    grad = bias.embedding.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    # each bucket's gradient is the sum of the weights of the (i, j) pairs that use it
    buckets = bias.buckets(5, 5)
    for b in range(8):
        expected = (weights * (buckets == b)).sum(dim=(1, 2))
        torch.testing.assert_close(grad[b], expected)


def test_module_bad_input():
    with pytest.raises(ValueError, match="n_heads must be >= 1; got 0"):
        RelativePositionBias(0)
    with pytest.raises(TypeError, match="n_heads must be an integer; got float"):
        RelativePositionBias(2.0)
    with pytest.raises(ValueError, match="q_len must be >= 1; got 0"):
        RelativePositionBias(2)(0, 3)

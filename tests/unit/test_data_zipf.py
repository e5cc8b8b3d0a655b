"""Tests of companion.data.zipf: probabilities, sampling, the association task, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from companion.data.zipf import zipf_association_task, zipf_probabilities, zipf_token_stream


def test_probabilities_follow_the_power_law():
    p = zipf_probabilities(1000, 1.5)
    assert p.shape == (1000,) and abs(p.sum() - 1.0) < 1e-12
    np.testing.assert_allclose(p[9] / p[0], 10.0**-1.5, rtol=1e-12)
    np.testing.assert_allclose(zipf_probabilities(5, 0.0), np.full(5, 0.2))


def test_stream_frequencies_match_probabilities_and_are_seeded():
    rng = np.random.default_rng(0)
    x = zipf_token_stream(rng, 200_000, 50, 2.0)
    freq = np.bincount(x, minlength=50) / x.size
    p = zipf_probabilities(50, 2.0)
    assert np.abs(freq - p).max() < 4 * np.sqrt(p[0] * (1 - p[0]) / x.size)
    assert x.dtype == np.int64 and x.min() >= 0 and x.max() < 50
    np.testing.assert_array_equal(zipf_token_stream(np.random.default_rng(3), 100, 50, 2.0),
                                  zipf_token_stream(np.random.default_rng(3), 100, 50, 2.0))
    assert zipf_token_stream(rng, 0, 5, 1.0).shape == (0,)


def test_association_task_is_a_fixed_map():
    rng = np.random.default_rng(1)
    x, y, f = zipf_association_task(rng, 1000, 30, 1.2, 4)
    assert f.shape == (30,) and set(np.unique(f)) <= set(range(4))
    np.testing.assert_array_equal(y, f[x])
    x2, y2, f2 = zipf_association_task(rng, 10, 30, 1.2, 4, targets=f)
    np.testing.assert_array_equal(f2, f)
    np.testing.assert_array_equal(y2, f[x2])


def test_bad_input():
    with pytest.raises(ValueError, match="n_symbols must be >= 1"):
        zipf_probabilities(0, 1.0)
    with pytest.raises(ValueError, match="exponent must be >= 0"):
        zipf_probabilities(10, -1.0)
    with pytest.raises(ValueError, match="exponent must be finite"):
        zipf_probabilities(10, float("nan"))
    with pytest.raises(TypeError, match="Generator"):
        zipf_token_stream(0, 10, 10, 1.0)
    with pytest.raises(ValueError, match="n_samples must be >= 0"):
        zipf_token_stream(np.random.default_rng(0), -1, 10, 1.0)
    with pytest.raises(ValueError, match=r"targets must lie in 0 .. 3"):
        zipf_association_task(np.random.default_rng(0), 5, 3, 1.0, 4, targets=np.array([0, 1, 7]))
    with pytest.raises(ValueError, match="shape"):
        zipf_association_task(np.random.default_rng(0), 5, 3, 1.0, 4, targets=np.array([0, 1]))

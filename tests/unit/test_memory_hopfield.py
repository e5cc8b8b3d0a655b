"""Tests of companion.memory.hopfield: modern retrieval (backends, properties, energy), classical baseline, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from companion import backend
from companion.memory import (
    classical_hopfield_energy,
    classical_hopfield_recall,
    corrupt_patterns,
    hebbian_weights,
    hopfield_energy,
    hopfield_retrieve,
    hopfield_weights,
    nearest_pattern,
)

NO_GPU = "needs CuPy and a CUDA device; none is usable here"
GPU = [pytest.mark.gpu, pytest.mark.skipif(not backend.cupy_available(), reason=NO_GPU)]
BACKENDS = ["numpy", "numba", pytest.param("cupy", marks=GPU)]
ATOL = {np.float32: 5e-5, np.float64: 1e-11}


def _loop_reference(patterns, queries, beta, steps):
    """Independent float64 reference: one query at a time, log-sum-exp by hand."""
    x = np.asarray(patterns, dtype=np.float64)
    out = []
    for q in np.asarray(queries, dtype=np.float64):
        for _ in range(steps):
            s = beta * (x @ q)
            w = np.exp(s - s.max())
            q = (w / w.sum()) @ x
        out.append(q)
    return np.array(out)


@pytest.fixture(autouse=True)
def _small_blocks(monkeypatch):
    """Stream patterns in blocks of 256 so the test sizes below cross several blocks."""
    from companion.memory import hopfield as hopfield_module

    monkeypatch.setattr(hopfield_module, "_BLOCK", 256)


def _data(rng, n=700, q=130, d=24, dtype=np.float64, scale=1.0):
    # N spans several blocks of 256 (last one partial)
    return (scale * rng.standard_normal((n, d))).astype(dtype), (scale * rng.standard_normal((q, d))).astype(dtype)


# ------------------------------------------------------------- modern update
@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("steps", [1, 3])
def test_backends_match_independent_reference(name, dtype, steps):
    rng = np.random.default_rng(0)
    x, q = _data(rng, dtype=dtype, scale=0.4)  # scores of order 1: no near-ties that float32 would flip
    got = hopfield_retrieve(x, q, beta=1.3, steps=steps, backend=name)
    got = backend.to_numpy(got) if name == "cupy" else got
    assert got.shape == q.shape and got.dtype == dtype
    np.testing.assert_allclose(got, _loop_reference(x, q, 1.3, steps), atol=ATOL[dtype], rtol=1e-4)


@pytest.mark.parametrize("name", BACKENDS)
def test_huge_scores_do_not_overflow_the_streaming_softmax(name):
    rng = np.random.default_rng(1)
    x, q = _data(rng, n=600, q=70, d=16, scale=10.0)
    got = hopfield_retrieve(x, q, beta=500.0, backend=name)  # scores of order 1e5: exp would overflow unshifted
    got = backend.to_numpy(got) if name == "cupy" else got
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, _loop_reference(x, q, 500.0, 1), atol=1e-9)


def test_numba_matches_numpy_when_maximum_moves_between_blocks():
    # the best pattern sits in the last block, so the running maximum must be rescaled late
    rng = np.random.default_rng(2)
    x = rng.standard_normal((900, 8))
    x[-1] = 5.0
    q = np.full((3, 8), 1.0)
    np.testing.assert_allclose(hopfield_retrieve(x, q, beta=2.0, backend="numba"),
                               hopfield_retrieve(x, q, beta=2.0, backend="numpy"), atol=1e-12)


@pytest.fixture
def _threaded_tiles(monkeypatch):
    """Small query tiles and no small-work cut-off: the threaded multi-tile path runs at test sizes."""
    from companion.memory import _m1_kernels
    from companion.memory import hopfield as hopfield_module

    monkeypatch.setattr(hopfield_module, "_QUERY_TILE", 48)
    monkeypatch.setattr(_m1_kernels, "_SMALL_WORK", 0)
    monkeypatch.setattr(_m1_kernels, "default_workers", lambda work: 2)


@pytest.mark.usefixtures("_threaded_tiles")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("steps", [1, 2])
def test_numba_threaded_tiles_and_blocks_with_tails_match_reference(dtype, steps):
    # 130 queries: tiles of 48, 48, 34 on two threads; 700 patterns: blocks of 256, 256, 188
    rng = np.random.default_rng(11)
    x, q = _data(rng, n=700, q=130, d=24, dtype=dtype, scale=0.4)
    got = hopfield_retrieve(x, q, beta=1.3, steps=steps, backend="numba")
    assert got.dtype == dtype and got.shape == q.shape
    np.testing.assert_allclose(got, _loop_reference(x, q, 1.3, steps), atol=ATOL[dtype], rtol=1e-4)
    ref = hopfield_retrieve(x, q, beta=1.3, steps=steps, backend="numpy")
    np.testing.assert_allclose(got, ref, atol=ATOL[dtype], rtol=1e-4)


@pytest.mark.usefixtures("_threaded_tiles")
def test_numba_threaded_path_keeps_huge_scores_and_late_maxima_exact():
    rng = np.random.default_rng(12)
    x, q = _data(rng, n=600, q=70, d=16, scale=10.0)
    np.testing.assert_allclose(hopfield_retrieve(x, q, beta=500.0, backend="numba"),
                               _loop_reference(x, q, 500.0, 1), atol=1e-9)
    x32 = rng.standard_normal((900, 8)).astype(np.float32)
    x32[-1] = 5.0  # the best pattern in the last (partial) block
    q32 = np.full((100, 8), 1.0, dtype=np.float32)
    np.testing.assert_allclose(hopfield_retrieve(x32, q32, beta=2.0, backend="numba"),
                               _loop_reference(x32, q32, 2.0, 1), atol=5e-5, rtol=1e-4)


def test_numba_non_contiguous_and_mixed_dtype_input():
    rng = np.random.default_rng(13)
    big = rng.standard_normal((700, 48)) * 0.4
    x = big[:, ::2]  # (700, 24), strided
    q = np.asfortranarray(rng.standard_normal((37, 24)).astype(np.float32) * 0.4)
    got = hopfield_retrieve(x, q, beta=1.3, backend="numba")  # float64 patterns, float32 queries -> float64
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, _loop_reference(x, q, 1.3, 1), atol=1e-11)
    got32 = hopfield_retrieve(x.astype(np.float32), q, beta=1.3, backend="numba")
    np.testing.assert_allclose(got32, _loop_reference(x, q, 1.3, 1), atol=ATOL[np.float32], rtol=1e-4)


def test_numba_one_pattern_one_query_and_single_block():
    rng = np.random.default_rng(14)
    x = rng.standard_normal((1, 5))
    q = rng.standard_normal(5)
    np.testing.assert_allclose(hopfield_retrieve(x, q, beta=0.3, backend="numba"), x[0], atol=1e-12)
    x, q = _data(rng, n=100, q=3, d=4)  # fewer patterns than a block
    np.testing.assert_allclose(hopfield_retrieve(x, q, beta=0.8, steps=3, backend="numba"),
                               _loop_reference(x, q, 0.8, 3), atol=1e-11)


def test_steps_iterate_single_updates():
    rng = np.random.default_rng(3)
    x, q = _data(rng, n=50, q=5, d=6)
    twice = hopfield_retrieve(x, hopfield_retrieve(x, q, beta=0.7), beta=0.7)
    np.testing.assert_allclose(hopfield_retrieve(x, q, beta=0.7, steps=2), twice, atol=1e-12)


def test_retrieves_stored_pattern_at_large_beta_and_averages_at_small_beta():
    rng = np.random.default_rng(4)
    x = np.sign(rng.standard_normal((40, 128))) / np.sqrt(128)
    noisy = corrupt_patterns(x[:10], 0.2, rng)
    np.testing.assert_allclose(hopfield_retrieve(x, noisy, beta=60.0), x[:10], atol=1e-6)
    tiny = hopfield_retrieve(x, noisy, beta=1e-6)
    np.testing.assert_allclose(tiny, np.broadcast_to(x.mean(axis=0), tiny.shape), atol=1e-6)
    assert (nearest_pattern(x, hopfield_retrieve(x, noisy, beta=60.0)) == np.arange(10)).all()


def test_update_equals_softmax_weights_times_patterns_and_sdpa():
    rng = np.random.default_rng(5)
    x, q = _data(rng, n=30, q=4, d=8)
    w = hopfield_weights(x, q, beta=0.9)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(hopfield_retrieve(x, q, beta=0.9), w @ x, atol=1e-12)
    xt, qt = torch.as_tensor(x), torch.as_tensor(q)
    sdpa = torch.nn.functional.scaled_dot_product_attention(qt[None], xt[None], xt[None], scale=0.9)[0]
    np.testing.assert_allclose(hopfield_retrieve(x, q, beta=0.9), sdpa.numpy(), atol=1e-10)


def test_torch_in_torch_out_one_dimensional_query_and_gradients():
    rng = np.random.default_rng(6)
    x, q = _data(rng, n=20, q=3, d=5)
    xt, qt = torch.as_tensor(x), torch.as_tensor(q)
    out = hopfield_retrieve(xt, qt, beta=1.1)
    assert isinstance(out, torch.Tensor) and out.shape == (3, 5)
    np.testing.assert_allclose(out.numpy(), hopfield_retrieve(x, q, beta=1.1), atol=1e-12)
    one = hopfield_retrieve(x, q[0], beta=1.1)
    assert one.shape == (5,)
    np.testing.assert_allclose(one, hopfield_retrieve(x, q, beta=1.1)[0], atol=1e-12)
    qg = qt.clone().requires_grad_(True)
    hopfield_retrieve(xt, qg, beta=1.1, steps=2).sum().backward()
    assert qg.grad is not None and torch.isfinite(qg.grad).all()


@pytest.mark.gpu
@pytest.mark.skipif(not backend.cupy_available(), reason=NO_GPU)
def test_cupy_in_cupy_out():
    import cupy

    rng = np.random.default_rng(7)
    x, q = _data(rng, n=300, q=10, d=8)
    out = hopfield_retrieve(cupy.asarray(x), cupy.asarray(q), beta=1.0)
    assert isinstance(out, cupy.ndarray)
    np.testing.assert_allclose(out.get(), _loop_reference(x, q, 1.0, 1), atol=1e-10)


# ------------------------------------------------------------------ energy
def test_energy_never_increases_and_is_non_negative():
    rng = np.random.default_rng(8)
    x, q = _data(rng, n=60, q=20, d=10)
    e = hopfield_energy(x, q, beta=0.6)
    for _ in range(5):
        q = hopfield_retrieve(x, q, beta=0.6)
        e_next = hopfield_energy(x, q, beta=0.6)
        assert (e_next <= e + 1e-10).all()
        e = e_next
    assert (e >= -1e-10).all()


def test_energy_matches_formula():
    rng = np.random.default_rng(9)
    x, q = _data(rng, n=7, q=2, d=3)
    beta = 0.4
    lse = np.log(np.exp(beta * q @ x.T).sum(axis=1)) / beta
    expected = -lse + 0.5 * (q * q).sum(1) + np.log(7) / beta + 0.5 * (x * x).sum(1).max()
    np.testing.assert_allclose(hopfield_energy(x, q, beta=beta), expected, atol=1e-12)
    assert np.ndim(hopfield_energy(x, q[0], beta=beta)) == 0


def test_corrupt_patterns_damages_exactly_the_fraction():
    x = np.ones((4, 20))
    flipped = corrupt_patterns(x, 0.25, np.random.default_rng(0))
    assert ((flipped < 0).sum(axis=1) == 5).all()
    masked = corrupt_patterns(x, 0.5, np.random.default_rng(0), mode="mask")
    assert ((masked == 0).sum(axis=1) == 10).all()
    assert (corrupt_patterns(x, 0.0, np.random.default_rng(0)) == x).all()


# ---------------------------------------------------------------- bad input
GOOD_X = np.ones((4, 3))
GOOD_Q = np.ones((2, 3))


@pytest.mark.parametrize("beta, error, match", [
    (float("nan"), ValueError, "beta must be finite"),
    (float("inf"), ValueError, "beta must be finite"),
    (0.0, ValueError, "beta must be > 0"),
    (-1.0, ValueError, "beta must be > 0"),
    (True, TypeError, "beta must be a real number"),
    ("1", TypeError, "beta must be a real number"),
])
def test_bad_beta(beta, error, match):
    with pytest.raises(error, match=match):
        hopfield_retrieve(GOOD_X, GOOD_Q, beta=beta)
    with pytest.raises(error, match=match):
        hopfield_energy(GOOD_X, GOOD_Q, beta=beta)


@pytest.mark.parametrize("patterns, queries, error, match", [
    (np.ones((0, 3)), GOOD_Q, ValueError, "patterns must not be empty"),
    (GOOD_X, np.ones((0, 3)), ValueError, "queries must not be empty"),
    (GOOD_X, np.ones((2, 4)), ValueError, "dimension d=3"),
    (np.ones(3), GOOD_Q, ValueError, "patterns must have 2 dimensions"),
    (GOOD_X, np.ones((1, 2, 3)), ValueError, "queries must have 1 or 2 dimensions"),
    (np.array([[1.0, np.nan, 0.0]]), GOOD_Q, ValueError, "patterns must contain only finite"),
    (GOOD_X, np.array([[np.inf, 0.0, 0.0]]), ValueError, "queries must contain only finite"),
    (np.ones((4, 3), dtype=np.int64), GOOD_Q, TypeError, "floating dtype"),
    (torch.ones(4, 3, dtype=torch.float64), GOOD_Q, TypeError, "same kind of array"),
    ([[1.0, 2.0, 3.0]], GOOD_Q, TypeError, "NumPy array, CuPy array or torch tensor"),
])
def test_bad_arrays(patterns, queries, error, match):
    with pytest.raises(error, match=match):
        hopfield_retrieve(patterns, queries, beta=1.0)


@pytest.mark.parametrize("steps, error, match", [
    (0, ValueError, "steps must be >= 1"),
    (-2, ValueError, "steps must be >= 1"),
    (1.5, TypeError, "steps must be an integer"),
])
def test_bad_steps(steps, error, match):
    with pytest.raises(error, match=match):
        hopfield_retrieve(GOOD_X, GOOD_Q, beta=1.0, steps=steps)


def test_bad_backend_and_energy_states_message():
    with pytest.raises(ValueError, match="backend must be one of"):
        hopfield_retrieve(GOOD_X, GOOD_Q, beta=1.0, backend="fortran")
    with pytest.raises(ValueError, match="states must have the patterns' dimension"):
        hopfield_energy(GOOD_X, np.ones((2, 5)), beta=1.0)


@pytest.mark.skipif(backend.cupy_available(), reason="a GPU is present, so backend='cupy' is valid here")
def test_cupy_backend_without_gpu_raises():
    with pytest.raises(ValueError, match="needs CuPy and a CUDA device"):
        hopfield_retrieve(GOOD_X, GOOD_Q, beta=1.0, backend="cupy")


# --------------------------------------------------------- classical network
def test_hebbian_weights_are_symmetric_with_zero_diagonal_and_store_patterns():
    rng = np.random.default_rng(10)
    x = np.sign(rng.standard_normal((5, 200)))
    w = hebbian_weights(x)
    assert np.allclose(w, w.T) and np.allclose(np.diag(w), 0.0)
    np.testing.assert_array_equal(classical_hopfield_recall(w, x, steps=2), x)  # stored patterns are fixed points


@pytest.mark.parametrize("update", ["async", "sync"])
def test_classical_recall_repairs_noise_at_low_load(update):
    rng = np.random.default_rng(11)
    x = np.sign(rng.standard_normal((4, 200)))
    noisy = corrupt_patterns(x, 0.1, rng)
    out = classical_hopfield_recall(hebbian_weights(x), noisy, steps=5, update=update, rng=rng)
    np.testing.assert_array_equal(out, x)


def test_classical_recall_fails_far_above_capacity():
    rng = np.random.default_rng(12)
    x = np.sign(rng.standard_normal((60, 100)))  # load 0.6, far above 0.14
    out = classical_hopfield_recall(hebbian_weights(x), x, steps=5, rng=rng)
    assert (out != x).any(axis=1).mean() > 0.5


def test_async_numba_matches_numpy_and_energy_never_increases():
    rng = np.random.default_rng(13)
    x = np.sign(rng.standard_normal((30, 64)))
    w = hebbian_weights(x)
    start = np.sign(rng.standard_normal((9, 64)))
    a = classical_hopfield_recall(w, start, steps=3, rng=np.random.default_rng(0), backend="numpy")
    b = classical_hopfield_recall(w, start, steps=3, rng=np.random.default_rng(0), backend="numba")
    np.testing.assert_array_equal(a, b)
    s = start
    e = classical_hopfield_energy(w, s)
    for _ in range(3):
        s = classical_hopfield_recall(w, s, steps=1, rng=rng)
        e_next = classical_hopfield_energy(w, s)
        assert (e_next <= e + 1e-12).all()
        e = e_next


def test_classical_bad_input():
    w = hebbian_weights(np.ones((1, 4)))
    with pytest.raises(ValueError, match=r"only \+1 and -1"):
        classical_hopfield_recall(w, np.array([[1.0, 0.0, 1.0, 1.0]]))
    with pytest.raises(ValueError, match="square"):
        classical_hopfield_recall(np.ones((3, 4)), np.ones((1, 4)))
    with pytest.raises(ValueError, match="n=4 units"):
        classical_hopfield_recall(w, np.ones((1, 5)))
    with pytest.raises(ValueError, match="update must be one of"):
        classical_hopfield_recall(w, np.ones((1, 4)), update="random")
    with pytest.raises(ValueError, match=r"only \+1 and -1"):
        hebbian_weights(np.array([[0.5, 1.0]]))
    with pytest.raises(ValueError, match="steps must be >= 1"):
        classical_hopfield_recall(w, np.ones((1, 4)), steps=0)

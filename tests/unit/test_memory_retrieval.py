"""Tests of companion.memory.retrieval: datastore search, kNN distribution, interpolation, memory attention."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from companion import backend
from companion.memory import Datastore, knn_distribution, knn_lm_interpolate, topk_memory_attention, windowed_logits
from companion.nn import TinyTransformer, TransformerConfig

NO_GPU = "needs CuPy and a CUDA device; none is usable here"
GPU = [pytest.mark.gpu, pytest.mark.skipif(not backend.cupy_available(), reason=NO_GPU)]
BACKENDS = ["numpy", "numba", pytest.param("cupy", marks=GPU)]


# ---------------------------------------------------------------- datastore
@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_datastore_search_equals_brute_force(metric):
    rng = np.random.default_rng(0)
    keys, values = rng.standard_normal((700, 12)), rng.integers(0, 50, 700)
    queries = rng.standard_normal((33, 12))
    store = Datastore(keys[:400], values[:400], metric=metric).add(keys[400:], values[400:])
    assert len(store) == 700 and store.dim == 12 and store.nbytes == 700 * 12 * 4 + 700 * 8
    assert store.search_keys.shape == ((700, 13) if metric == "l2" else (700, 12))
    sims, vals, idx = store.search(queries, 9)
    k32, q32 = keys.astype(np.float32).astype(np.float64), queries.astype(np.float32).astype(np.float64)
    if metric == "l2":
        full = -((q32[:, None, :] - k32[None]) ** 2).sum(-1)  # (Q, N)
    else:
        full = q32 @ k32.T
    want = np.argsort(-full, axis=1, kind="stable")[:, :9]
    np.testing.assert_array_equal(idx, want)
    np.testing.assert_array_equal(vals, values[want])
    np.testing.assert_allclose(sims, np.take_along_axis(full, want, 1), rtol=1e-4, atol=1e-3)


def test_datastore_bad_input():
    with pytest.raises(ValueError, match="same count N; got 3 keys and 2 values"):
        Datastore(np.ones((3, 2)), np.array([1, 2]))
    with pytest.raises(ValueError, match="keys must not be empty"):
        Datastore(np.ones((0, 2)), np.zeros(0, dtype=int))
    with pytest.raises(ValueError, match="keys must contain only finite values"):
        Datastore(np.array([[0.0, np.nan]]), np.array([1]))
    with pytest.raises(ValueError, match="values must be token ids >= 0"):
        Datastore(np.ones((2, 2)), np.array([1, -1]))
    with pytest.raises(ValueError, match="metric must be one of"):
        Datastore(np.ones((2, 2)), np.array([1, 1]), metric="cos")
    with pytest.raises(ValueError, match="squared norms overflow"):
        Datastore(np.full((2, 2), 1e30), np.array([1, 1]))
    store = Datastore(np.eye(3), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"k must be <= the number of stored entries \(3\); got k=4"):
        store.search(np.ones((1, 3)), 4)
    with pytest.raises(ValueError, match="queries must have d=3 columns"):
        store.search(np.ones((1, 2)), 1)
    with pytest.raises(ValueError, match="keys must have d=3 columns"):
        store.add(np.ones((1, 2)), np.array([0]))
    with pytest.raises(ValueError, match="queries must contain only finite values"):
        store.search(np.array([[np.inf, 0.0, 0.0]]), 1)


# ------------------------------------------------------------ kNN distribution
@pytest.mark.parametrize("name", BACKENDS)
def test_knn_distribution_matches_reference_and_sums_to_one(name):
    rng = np.random.default_rng(1)
    sims, vals = -rng.random((20, 16)) * 10, rng.integers(0, 30, (20, 16))
    got = knn_distribution(sims, vals, 30, temperature=2.0, backend=name)
    p = np.exp(sims / 2.0)
    p /= p.sum(1, keepdims=True)
    want = np.zeros((20, 30))
    for q in range(20):
        for j in range(16):
            want[q, vals[q, j]] += p[q, j]
    np.testing.assert_allclose(np.exp(got), want, atol=1e-12)
    np.testing.assert_allclose(np.exp(got).sum(1), 1.0, atol=1e-12)
    assert np.isneginf(got[want == 0]).all()


def test_knn_distribution_temperature_flattens_and_bad_input():
    sims, vals = np.array([[0.0, -4.0]]), np.array([[0, 1]])
    sharp = np.exp(knn_distribution(sims, vals, 2, temperature=0.5))[0, 0]
    flat = np.exp(knn_distribution(sims, vals, 2, temperature=50.0))[0, 0]
    assert sharp > 0.99 and 0.5 < flat < 0.55
    with pytest.raises(ValueError, match="neighbour_values must lie in"):
        knn_distribution(sims, np.array([[0, 2]]), 2)
    with pytest.raises(ValueError, match="same \\(Q, k\\) shape"):
        knn_distribution(sims, np.array([[0]]), 2)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        knn_distribution(sims, vals, 2, temperature=0.0)
    with pytest.raises(ValueError, match="similarities must contain only finite values"):
        knn_distribution(np.array([[0.0, np.nan]]), vals, 2)


# --------------------------------------------------------------- interpolate
def test_interpolation_mixes_probabilities_and_keeps_the_ends():
    rng = np.random.default_rng(2)
    lm = np.log(rng.dirichlet(np.ones(7), size=5))
    knn = knn_distribution(-rng.random((5, 3)), rng.integers(0, 7, (5, 3)), 7)
    for lam in (0.0, 0.25, 1.0):
        mix = knn_lm_interpolate(lm, knn, lam)
        np.testing.assert_allclose(np.exp(mix), (1 - lam) * np.exp(lm) + lam * np.exp(knn), atol=1e-12)
        np.testing.assert_allclose(np.exp(mix).sum(1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(knn_lm_interpolate(lm, knn, 0.0), lm)
    t = knn_lm_interpolate(torch.from_numpy(lm), torch.from_numpy(knn), 0.25)
    assert isinstance(t, torch.Tensor)
    np.testing.assert_allclose(t.numpy(), knn_lm_interpolate(lm, knn, 0.25), atol=1e-12)


@pytest.mark.parametrize("lam", [-0.1, 1.5, float("nan")])
def test_interpolation_rejects_lam_outside_unit_interval(lam):
    lm = np.log(np.full((1, 2), 0.5))
    with pytest.raises(ValueError, match="lam must be"):
        knn_lm_interpolate(lm, lm, lam)


def test_interpolation_rejects_bad_log_probs():
    lm = np.log(np.full((1, 2), 0.5))
    with pytest.raises(ValueError, match="knn_log_probs must be log-probabilities \\(no NaN"):
        knn_lm_interpolate(lm, np.array([[np.nan, 0.0]]), 0.5)
    with pytest.raises(ValueError, match="model_log_probs must be log-probabilities \\(<= 0\\)"):
        knn_lm_interpolate(np.array([[1.0, 0.0]]), lm, 0.5)
    with pytest.raises(ValueError, match="same shape"):
        knn_lm_interpolate(lm, np.log(np.full((1, 3), 1 / 3)), 0.5)


# ---------------------------------------------------------- memory attention
def test_topk_memory_attention_equals_dense_attention_over_the_chosen_keys():
    rng = np.random.default_rng(3)
    q, keys, values = rng.standard_normal((6, 8)), rng.standard_normal((200, 8)), rng.standard_normal((200, 5))
    out, w, idx = topk_memory_attention(q, keys, values, 200)  # k = N: plain softmax attention
    s = q @ keys.T / np.sqrt(8)
    p = np.exp(s - s.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(out, p @ values, atol=1e-10)
    out4, w4, idx4 = topk_memory_attention(q, keys, values, 4)
    np.testing.assert_array_equal(idx4, np.argsort(-s, axis=1)[:, :4])
    np.testing.assert_allclose(w4.sum(1), 1.0)
    with pytest.raises(ValueError, match="same count N"):
        topk_memory_attention(q, keys, values[:10], 4)
    with pytest.raises(ValueError, match="k must be <= the number of keys"):
        topk_memory_attention(q, keys[:3], values[:3], 4)


# ---------------------------------------------------------------- windowed
def test_windowed_logits_full_window_equals_model_and_small_window_is_local():
    torch.manual_seed(0)
    model = TinyTransformer(TransformerConfig(vocab_size=11, d_model=16, n_heads=2, positional="rope")).eval()
    x = torch.randint(0, 11, (2, 20))
    torch.testing.assert_close(windowed_logits(model, x, window=20), model(x), atol=1e-5, rtol=1e-5)
    # with a window of 3 and 2 layers, position 19 depends only on tokens 15..19
    y = x.clone()
    y[:, :15] = (y[:, :15] + 1) % 11
    a, b = windowed_logits(model, x, window=3), windowed_logits(model, y, window=3)
    torch.testing.assert_close(a[:, 19], b[:, 19])
    assert not torch.allclose(a[:, 5], b[:, 5])
    # retrieving every evicted key restores full attention
    torch.testing.assert_close(windowed_logits(model, x, window=3, retrieve_k=20), model(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="window must be >= 1"):
        windowed_logits(model, x, window=0)
    with pytest.raises(ValueError, match="retrieve_layers"):
        windowed_logits(model, x, window=3, retrieve_k=1, retrieve_layers=[5])

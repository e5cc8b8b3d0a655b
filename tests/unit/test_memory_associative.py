"""Tests of companion.memory.associative: backends, storage rules, recall properties, SGD, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from companion import backend
from companion.memory import AssociativeMemory, SignEmbeddingTable, power_law_fit, random_embeddings, storage_weights
from companion.memory import _m1_kernels as kernels

NO_GPU = "needs CuPy and a CUDA device; none is usable here"
GPU = [pytest.mark.gpu, pytest.mark.skipif(not backend.cupy_available(), reason=NO_GPU)]
BACKENDS = ["numpy", "numba", pytest.param("cupy", marks=GPU)]


def _task(seed=0, n=50, d=128, m=7, dtype=np.float64):
    rng = np.random.default_rng(seed)
    keys = random_embeddings(rng, n, d, dtype=dtype)
    table = random_embeddings(rng, m, d, dtype=dtype)
    labels = rng.integers(0, m, size=n)
    return rng, keys, table, labels


# ------------------------------------------------------------------ kernels
@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_class_sums_backends_match_reference(name, dtype):
    rng = np.random.default_rng(1)
    keys = rng.standard_normal((300, 17)).astype(dtype)
    labels = rng.integers(0, 9, size=300)
    weights = rng.random(300).astype(dtype)
    weights[::4] = 0.0
    expected = np.zeros((9, 17))
    for k, y, w in zip(keys.astype(np.float64), labels, weights):
        expected[y] += w * k
    got = backend.to_numpy(kernels.CLASS_SUMS[name](backend.for_backend(keys, name), backend.for_backend(labels, name),
                                                    backend.for_backend(weights, name), 9))
    np.testing.assert_allclose(got, expected, atol=1e-4 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("n_queries", [1, 5, 2500])  # 2500 spans several query tiles
def test_reads_match_reference(name, n_queries):
    rng = np.random.default_rng(n_queries)
    queries = rng.standard_normal((n_queries, 24))
    cands = rng.standard_normal((11, 24))
    expected_idx = (queries @ cands.T).argmax(axis=1)
    s = 0.7 * queries @ cands.T
    expected_p = np.exp(s - s.max(1, keepdims=True))
    expected_p /= expected_p.sum(1, keepdims=True)
    q, c = backend.for_backend(queries, name), backend.for_backend(cands, name)
    np.testing.assert_array_equal(backend.to_numpy(kernels.ARGMAX_READ[name](q, c)), expected_idx)
    np.testing.assert_allclose(backend.to_numpy(kernels.SOFTMAX_READ[name](q, c, 0.7)), expected_p, atol=1e-12)


def test_argmax_read_takes_first_index_on_ties():
    q = np.ones((2, 3))
    c = np.array([[0.0, 0, 0], [1, 1, 1], [1, 1, 1]])
    for name in ["numpy", "numba"]:
        assert kernels.ARGMAX_READ[name](q, c).tolist() == [1, 1]


@pytest.fixture
def _threaded_tiles(monkeypatch):
    """Tiles of 16 queries on two threads, whatever the work: the threaded path runs at test sizes."""
    monkeypatch.setattr(kernels, "QUERY_TILE", 16)
    monkeypatch.setattr(kernels, "_MIN_TILE", 1)
    monkeypatch.setattr(kernels, "default_workers", lambda work: 2)


@pytest.mark.usefixtures("_threaded_tiles")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_queries", [1, 16, 203])  # one row, one full tile, 12 full tiles + a tail of 11
def test_threaded_tiled_reads_match_reference(dtype, n_queries):
    rng = np.random.default_rng(100 + n_queries)
    queries = rng.standard_normal((n_queries, 40)).astype(dtype)
    cands = rng.standard_normal((13, 40)).astype(dtype)
    np.testing.assert_array_equal(kernels.argmax_read_numba(queries, cands), kernels.argmax_read_numpy(queries, cands))
    got = kernels.softmax_read_numba(queries, cands, 0.7)
    assert got.dtype == dtype and got.shape == (n_queries, 13)
    np.testing.assert_allclose(got, kernels.softmax_read_numpy(queries, cands, 0.7),
                               atol=1e-6 if dtype == np.float32 else 1e-12, rtol=1e-5 if dtype == np.float32 else 0)


@pytest.mark.usefixtures("_threaded_tiles")
def test_threaded_argmax_ties_non_contiguous_and_many_candidates():
    # ties everywhere: every row must take the first of the equal maxima, in every tile
    q = np.ones((50, 3), dtype=np.float32)
    c = np.array([[0.0, 0, 0], [1, 1, 1], [1, 1, 1], [-1, 0, 0]], dtype=np.float32)
    assert (kernels.argmax_read_numba(q, c) == 1).all()
    rng = np.random.default_rng(7)
    big = rng.standard_normal((90, 64))
    queries = big[:, ::2]  # strided (90, 32)
    cands = np.asfortranarray(rng.standard_normal((300, 32)))  # more candidates than the vector width
    np.testing.assert_array_equal(kernels.argmax_read_numba(queries, cands), (queries @ cands.T).argmax(1))
    s = 2.0 * queries @ cands.T
    p = np.exp(s - s.max(1, keepdims=True))
    np.testing.assert_allclose(kernels.softmax_read_numba(queries, cands, 2.0), p / p.sum(1, keepdims=True), atol=1e-12)


def test_softmax_read_extreme_scores_stay_finite():
    q = np.array([[1.0, 0.0], [0.0, 1.0]])
    c = np.array([[1e3, 0.0], [-1e3, 0.0], [0.0, 5e2]])
    got = kernels.softmax_read_numba(q, c, 10.0)  # scores of order 1e4: exp overflows without the shift
    np.testing.assert_allclose(got, kernels.softmax_read_numpy(q, c, 10.0), atol=1e-12)
    assert np.isfinite(got).all()


def test_parallel_tiles_runs_every_tile_once_and_reraises():
    tiles = [(lo, min(lo + 3, 20)) for lo in range(0, 20, 3)]
    hits = np.zeros(20, dtype=np.int64)
    scratches = []

    def work(lo, hi, scratch):
        hits[lo:hi] += 1
        scratch.append(lo)

    def make():
        scratches.append([])
        return scratches[-1]

    kernels.parallel_tiles(tiles, work, make, workers=3)
    assert (hits == 1).all() and sum(len(s) for s in scratches) == len(tiles) and len(scratches) == 3

    def boom(lo, hi, scratch):
        if lo == 9:
            raise RuntimeError("tile 9 failed")

    with pytest.raises(RuntimeError, match="tile 9 failed"):
        kernels.parallel_tiles(tiles, boom, list, workers=2)
    with pytest.raises(RuntimeError, match="tile 9 failed"):
        kernels.parallel_tiles(tiles, boom, list, workers=1)


# ------------------------------------------------------------------ memory
@pytest.mark.parametrize("name", BACKENDS)
def test_memory_write_read_agree_across_backends(name):
    _, keys, table, labels = _task(2)
    weights = np.linspace(0.5, 2.0, len(labels))
    ref = AssociativeMemory(128, 128, output_embeddings=table, dtype=np.float64)
    ref.write(keys, labels, weights=weights, backend="numpy")
    mem = AssociativeMemory(128, 128, output_embeddings=table, dtype=np.float64)
    mem.write(keys, labels, weights=weights, backend=name)
    np.testing.assert_allclose(backend.to_numpy(mem.matrix), ref.matrix, atol=1e-12)
    np.testing.assert_array_equal(mem.read(keys, backend=name), ref.read(keys, backend="numpy"))
    np.testing.assert_allclose(mem.read(keys, mode="softmax", beta=3.0, backend=name),
                               ref.read(keys, mode="softmax", beta=3.0, backend="numpy"), atol=1e-12)


def test_write_is_a_sum_of_outer_products():
    _, keys, table, labels = _task(3, n=20, d=16, m=4)
    weights = np.arange(1.0, 21.0)
    mem = AssociativeMemory(16, 16, output_embeddings=table, dtype=np.float64)
    mem.write(keys, labels, weights=weights)
    expected = sum(w * np.outer(table[y], k) for k, y, w in zip(keys, labels, weights))
    np.testing.assert_allclose(mem.matrix, expected, atol=1e-12)
    # writing the same pairs as float value vectors gives the same matrix
    vec = AssociativeMemory(16, 16, dtype=np.float64)
    vec.write(keys, table[labels], weights=weights)
    np.testing.assert_allclose(vec.matrix, expected, atol=1e-12)
    # and writing in two halves adds up
    half = AssociativeMemory(16, 16, output_embeddings=table, dtype=np.float64)
    half.write(keys[:10], labels[:10], weights=weights[:10])
    half.write(keys[10:], labels[10:], weights=weights[10:])
    np.testing.assert_allclose(half.matrix, expected, atol=1e-12)
    assert half.n_written == 20


def test_few_pairs_in_high_dimension_are_recalled_exactly():
    _, keys, table, labels = _task(4, n=40, d=512, m=10)
    mem = AssociativeMemory(512, 512, output_embeddings=table)
    mem.write(keys, labels)
    assert (mem.read(keys) == labels).all()
    probs = mem.read(keys, mode="softmax", beta=50.0)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert (probs.argmax(1) == labels).all()


def test_linear_read_is_correlation_matrix_memory_and_crosstalk_grows_with_load():
    rng = np.random.default_rng(5)
    d = 64
    cos = []
    for n in (8, 256):
        keys = random_embeddings(rng, n, d, dtype=np.float64)
        values = random_embeddings(rng, n, d, dtype=np.float64)
        mem = AssociativeMemory(d, d, dtype=np.float64)
        mem.write(keys, values)
        out = mem.read(keys, mode="linear")
        np.testing.assert_allclose(out, keys @ mem.matrix.T, atol=1e-12)
        cos.append(np.mean(np.sum(out * values, 1) / np.linalg.norm(out, axis=1) / np.linalg.norm(values, axis=1)))
    assert cos[0] > 0.85 and cos[1] < 0.6


def test_one_hot_values_without_output_embeddings():
    rng = np.random.default_rng(6)
    keys = random_embeddings(rng, 10, 256, dtype=np.float64)
    labels = rng.integers(0, 5, size=10)
    mem = AssociativeMemory(256, 5, dtype=np.float64)
    mem.write(keys, labels)
    np.testing.assert_allclose(mem.matrix, np.eye(5)[labels].T @ keys, atol=1e-12)
    assert (mem.read(keys) == labels).all()


def test_torch_input_returns_torch():
    _, keys, table, labels = _task(7)
    mem = AssociativeMemory(128, 128, output_embeddings=table)
    mem.write(torch.from_numpy(keys), torch.from_numpy(labels))
    out = mem.read(torch.from_numpy(keys))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.int64
    np.testing.assert_array_equal(out.numpy(), mem.read(keys))


def test_sgd_learns_the_map_and_its_step_is_the_gradient():
    rng, keys, table, labels = _task(8, n=30, d=64, m=5)
    mem = AssociativeMemory(64, 64, output_embeddings=table, dtype=np.float64)
    # the step equals minus lr times the autograd gradient of the mean cross-entropy
    w = torch.zeros(64, 64, dtype=torch.float64, requires_grad=True)
    logits = torch.from_numpy(keys) @ w.T @ torch.from_numpy(table).T
    torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels)).backward()
    loss0 = mem.sgd_step(keys, labels, lr=0.5)
    np.testing.assert_allclose(mem.matrix, -0.5 * w.grad.numpy(), atol=1e-12)
    assert abs(loss0 - np.log(5)) < 1e-12
    for _ in range(300):
        loss = mem.sgd_step(keys, labels, lr=20.0)
    assert loss < 0.2 * loss0 and (mem.read(keys) == labels).all()


# ------------------------------------------------------------ storage rules
def test_storage_rules():
    counts = np.array([10, 0, 4, 4, 1])
    assert storage_weights(counts, "all").tolist() == [1, 0, 1, 1, 1]
    assert storage_weights(counts, "top", capacity=2).tolist() == [1, 0, 1, 0, 0]  # tie: lower id first
    assert storage_weights(counts, "top", capacity=10).tolist() == [1, 0, 1, 1, 1]  # never stores unseen symbols
    np.testing.assert_allclose(storage_weights(counts, "power", rho=0.5), np.sqrt(counts / 19))
    with pytest.raises(ValueError, match="needs capacity"):
        storage_weights(counts, "top")
    with pytest.raises(ValueError, match="non-negative"):
        storage_weights(np.array([1, -1]), "all")
    with pytest.raises(ValueError, match="rule must be one of"):
        storage_weights(counts, "largest")
    with pytest.raises(ValueError, match="rho must be > 0"):
        storage_weights(counts, "power", rho=0.0)


def test_power_law_fit_recovers_exponent_and_rejects_bad_input():
    x = np.geomspace(32, 2048, 7)
    slope, intercept = power_law_fit(x, 0.8 * x ** -0.37)
    assert abs(slope + 0.37) < 1e-10 and abs(intercept - np.log(0.8)) < 1e-10
    with pytest.raises(ValueError, match="positive"):
        power_law_fit(x, np.zeros_like(x))
    with pytest.raises(ValueError, match="same length"):
        power_law_fit(x, x[:3])


# ---------------------------------------------------------------- bad input
def test_bad_input_raises_clear_errors():
    _, keys, table, labels = _task(9, n=6, d=8, m=3)
    mem = AssociativeMemory(8, 8, output_embeddings=table)
    with pytest.raises(ValueError, match="memory is empty"):
        mem.read(keys)
    with pytest.raises(ValueError, match="same number of rows"):
        mem.write(keys, labels[:4])
    with pytest.raises(ValueError, match="d_key=8"):
        mem.write(keys[:, :5], labels)
    with pytest.raises(ValueError, match="d_value=8"):
        mem.write(keys, np.ones((6, 3)))
    bad = keys.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        mem.write(bad, labels)
    with pytest.raises(ValueError, match="finite"):
        mem.write(keys, table[labels] * np.inf)
    with pytest.raises(ValueError, match="class ids must lie in 0 .. 2"):
        mem.write(keys, np.array([0, 1, 2, 3, 0, 1]))
    with pytest.raises(TypeError, match="integer class ids"):
        mem.write(keys, labels.astype(np.float64))
    with pytest.raises(ValueError, match="weights must have shape"):
        mem.write(keys, labels, weights=np.ones(5))
    with pytest.raises(TypeError, match="NumPy array"):
        mem.write(keys.tolist(), labels)
    mem.write(keys, labels)
    with pytest.raises(ValueError, match="mode must be one of"):
        mem.read(keys, mode="max")
    with pytest.raises(ValueError, match="beta must be > 0"):
        mem.read(keys, mode="softmax", beta=0.0)
    with pytest.raises(ValueError, match="d_key=8"):
        mem.read(np.ones((2, 9)))
    with pytest.raises(ValueError, match="finite"):
        mem.read(bad)
    with pytest.raises(ValueError, match="backend must be one of"):
        mem.read(keys, backend="fortran")
    with pytest.raises(ValueError, match=r"shape \(n_classes, d_value=8\)"):
        AssociativeMemory(8, 8, output_embeddings=np.ones((3, 4)))
    with pytest.raises(TypeError, match="float32 or float64"):
        AssociativeMemory(8, 8, dtype=np.int32)
    with pytest.raises(ValueError, match="d_key must be >= 1"):
        AssociativeMemory(0, 8)


# ------------------------------------------------------------ embeddings
def test_sign_embedding_table_decodes_its_bits():
    table = SignEmbeddingTable(np.random.default_rng(12), 50, 20)
    bits = np.unpackbits(table._bits, axis=1, count=20)
    np.testing.assert_allclose(table.rows(0, 50), np.where(bits == 1, 1.0, -1.0) / np.sqrt(20), rtol=1e-6)
    np.testing.assert_array_equal(table.take(np.array([7, 3, 7])), table.rows(0, 50)[[7, 3, 7]])
    assert abs(table.rows(0, 50).mean()) < 0.05  # balanced signs
    with pytest.raises(ValueError, match="ids must lie in 0 .. 49"):
        table.take(np.array([50]))
    with pytest.raises(ValueError, match="stop must be <= 50"):
        table.rows(0, 51)


def test_random_embeddings_kinds_have_unit_scale():
    rng = np.random.default_rng(13)
    for kind in ("gaussian", "sign"):
        e = random_embeddings(rng, 200, 400, kind=kind)
        assert e.dtype == np.float32 and abs(np.mean(np.sum(e * e, 1)) - 1) < 0.02
    with pytest.raises(ValueError, match="kind must be one of"):
        random_embeddings(rng, 2, 2, kind="uniform")

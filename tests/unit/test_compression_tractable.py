"""Tests of companion.compression.tractable: exact probabilities, Chow-Liu structure, real codes, prequential length."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from companion.compression import (
    ChowLiuTree,
    IndependentModel,
    MixtureModel,
    maximum_spanning_tree,
    pairwise_mutual_information,
    prequential_code_length,
)

MODELS = [
    lambda k: IndependentModel(n_values=k),
    lambda k: ChowLiuTree(n_values=k),
    lambda k: MixtureModel(n_components=3, n_values=k, n_iter=10),
]


def _chain(rng, n, d, flip=0.1):
    """Binary Markov chain x_j = x_{j-1} xor noise, columns shuffled: a tree model is exact for it."""
    x = np.empty((n, d), dtype=np.int64)
    x[:, 0] = rng.integers(0, 2, n)
    for j in range(1, d):
        x[:, j] = x[:, j - 1] ^ (rng.random(n) < flip)
    return x


@pytest.mark.parametrize("make", MODELS)
@pytest.mark.parametrize("k", [2, 3])
def test_probabilities_sum_to_one_over_all_inputs(make, k):
    rng = np.random.default_rng(k)
    d = 4
    model = make(k).fit(rng.integers(0, k, (60, d)))
    every = np.array(list(itertools.product(range(k), repeat=d)))
    assert np.isclose(np.exp2(model.log2_prob(every)).sum(), 1.0, atol=1e-9)


@pytest.mark.parametrize("make", MODELS)
@pytest.mark.parametrize("k", [2, 4])
def test_compress_decompress_is_exact_and_costs_the_log_loss(make, k):
    rng = np.random.default_rng(10 + k)
    x = rng.integers(0, k, (300, 12))
    x[:, 5] = x[:, 2]  # some structure
    model = make(k).fit(x[:200])
    for part in (x[200:], x[:1], rng.integers(0, k, (50, 12))):
        code = model.compress(part)
        np.testing.assert_array_equal(model.decompress(code, len(part)), part)
        ideal = model.code_length_bits(part)
        assert 8 * code.size <= ideal * (1 + 1e-3) + part.size * 0.012 + 32
        assert 8 * code.size >= ideal - part.size * 0.001 - 32


def test_chow_liu_recovers_a_chain():
    rng = np.random.default_rng(0)
    d = 7
    perm = rng.permutation(d)
    x = _chain(rng, 4000, d)[:, perm]  # column perm[i] ... chain position i is now column i
    tree = ChowLiuTree(root=0).fit(x)
    edges = {frozenset((int(v), int(p))) for v, p in enumerate(tree.parent_) if p >= 0}
    truth = {frozenset((int(a), int(b))) for a, b in zip(np.argsort(perm)[:-1], np.argsort(perm)[1:])}
    assert edges == truth
    order_pos = {int(v): i for i, v in enumerate(tree.order_)}
    assert all(order_pos[int(p)] < order_pos[v] for v, p in enumerate(tree.parent_) if p >= 0)
    indep = IndependentModel().fit(x)
    assert tree.bits_per_symbol(x) < indep.bits_per_symbol(x) - 0.3


def test_mutual_information_and_spanning_tree():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 2, 2000)
    b = rng.integers(0, 2, 2000)
    x = np.stack([a, b, a ^ b, a], 1)
    mi = pairwise_mutual_information(x, alpha=1e-6)
    assert np.allclose(mi, mi.T) and (np.diag(mi) == 0).all()
    assert abs(mi[0, 3] - 1.0) < 1e-3 and mi[0, 1] < 0.01 and mi[0, 2] < 0.01
    w = rng.random((6, 6))
    w = w + w.T
    order, parent = maximum_spanning_tree(w, root=2)
    assert order[0] == 2 and parent[2] == -1 and sorted(order.tolist()) == list(range(6))
    total = sum(w[v, p] for v, p in enumerate(parent) if p >= 0)
    # brute force over all spanning trees is large; compare to Kruskal instead
    edges = sorted(((w[i, j], i, j) for i in range(6) for j in range(i + 1, 6)), reverse=True)
    comp = list(range(6))

    def find(i):
        while comp[i] != i:
            i = comp[i]
        return i

    best = 0.0
    for wt, i, j in edges:
        if find(i) != find(j):
            comp[find(i)] = find(j)
            best += wt
    assert np.isclose(total, best)


def test_mixture_beats_independent_on_two_prototypes():
    rng = np.random.default_rng(2)
    proto = rng.integers(0, 2, (2, 20))
    x = proto[rng.integers(0, 2, 400)] ^ (rng.random((400, 20)) < 0.05)
    mix = MixtureModel(n_components=2, n_iter=30).fit(x[:300])
    indep = IndependentModel().fit(x[:300])
    assert mix.bits_per_symbol(x[300:]) < indep.bits_per_symbol(x[300:]) - 0.4


def test_prequential_code_length_blocks():
    rng = np.random.default_rng(3)
    x = _chain(rng, 400, 8)
    ends = [10, 50, 150, 400]
    bits = prequential_code_length(IndependentModel, x, ends)
    assert bits.shape == (4,) and bits[0] == 10 * 8
    manual = IndependentModel().fit(x[:150]).code_length_bits(x[150:400])
    assert np.isclose(bits[3], manual)
    tree_bits = prequential_code_length(ChowLiuTree, x, ends)
    assert tree_bits.sum() < bits.sum()


def test_bad_input_raises_clear_errors():
    x = np.array([[0, 1], [1, 1]])
    with pytest.raises(ValueError, match="is not fitted yet"):
        IndependentModel().compress(x)
    with pytest.raises(ValueError, match="values in \\[0, 2\\).*found values in \\[0, 2\\]"):
        ChowLiuTree().fit(np.array([[0, 2]]))
    with pytest.raises(ValueError, match="x must not be empty"):
        IndependentModel().fit(np.zeros((0, 3), dtype=int))
    with pytest.raises(TypeError, match="x must have a signed integer or unsigned integer or boolean dtype"):
        IndependentModel().fit(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="must have 3 columns"):
        IndependentModel().fit(np.zeros((2, 3), dtype=int)).log2_prob(x)
    with pytest.raises(ValueError, match="alpha must be > 0.0"):
        ChowLiuTree(alpha=0.0)
    with pytest.raises(ValueError, match="n_components must be >= 1"):
        MixtureModel(n_components=0)
    with pytest.raises(ValueError, match="root=5 must be a column"):
        ChowLiuTree(root=5).fit(x)
    with pytest.raises(ValueError, match="symmetric square"):
        maximum_spanning_tree(np.arange(6.0).reshape(2, 3))
    with pytest.raises(ValueError, match="block_ends must increase strictly"):
        prequential_code_length(IndependentModel, x, [2, 1])
    with pytest.raises(ValueError, match="block_ends must increase strictly.*<= n = 2"):
        prequential_code_length(IndependentModel, x, [1, 3])
    with pytest.raises(TypeError, match="make_model must be callable"):
        prequential_code_length(IndependentModel(), x, [1, 2])
    model = IndependentModel().fit(x)
    code = model.compress(x)
    with pytest.raises(ValueError, match="left over|truncated"):
        model.decompress(code, 1)
    with pytest.raises(ValueError, match="n_rows must be >= 1"):
        model.decompress(code, 0)
    with pytest.raises(TypeError, match="code must be a 1-d NumPy uint8 array"):
        model.decompress(list(code), 2)

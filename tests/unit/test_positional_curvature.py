"""Tests of companion.positional.curvature and companion.data.graph_families."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from companion import backend
from companion.data.graph_families import (
    balanced_tree_graph,
    clustering_classification_dataset,
    grid_graph,
    random_regular_graph,
    rewire_edges,
    ring_of_cliques_graph,
    watts_strogatz_graph,
)
from companion.positional import curvature_edges, local_curvature_profile, ollivier_ricci_curvature
from companion.positional.curvature import _curvature_sinkhorn_numpy, _edges, _sinkhorn_padded, _to_csr

NO_GPU = "needs CuPy and a CUDA device; none is usable here"
GPU = [pytest.mark.gpu, pytest.mark.skipif(not backend.cupy_available(), reason=NO_GPU)]
SINKHORN_BACKENDS = ["numpy", "numba", pytest.param("cupy", marks=GPU)]


def _complete(n):
    return np.ones((n, n)) - np.eye(n)


def _cycle(n):
    a = np.roll(np.eye(n), 1, axis=1)
    return a + a.T


def _kappa_of(adjacency, edge, **kw):
    edges, kappa = ollivier_ricci_curvature(adjacency, **kw)
    return kappa[[tuple(e) for e in edges.tolist()].index(edge)]


# ------------------------------------------------------------ hand-known values
@pytest.mark.parametrize("n", [3, 4, 7])
@pytest.mark.parametrize("alpha", [0.0, 0.25, 0.5, 1.0])
def test_complete_graph_matches_closed_form(n, alpha):
    # only x and y differ between the measures: W1 = |alpha - (1 - alpha) / (n - 1)|
    _, kappa = ollivier_ricci_curvature(_complete(n), alpha=alpha)
    np.testing.assert_allclose(kappa, 1 - abs(alpha - (1 - alpha) / (n - 1)), atol=1e-9)
    if alpha == 0.0:
        np.testing.assert_allclose(kappa, (n - 2) / (n - 1), atol=1e-9)


@pytest.mark.parametrize("n", [6, 9])
def test_long_cycle_is_flat(n):
    np.testing.assert_allclose(ollivier_ricci_curvature(_cycle(n), alpha=0.0)[1], 0.0, atol=1e-9)


@pytest.mark.parametrize("graph", [_cycle(7), _complete(5), grid_graph(3, 4), balanced_tree_graph(3, 2)])
def test_alpha_one_gives_zero_everywhere(graph):
    # all mass stays put: W1 = d(x, y) = 1
    np.testing.assert_allclose(ollivier_ricci_curvature(graph, alpha=1.0)[1], 0.0, atol=1e-9)


def test_tree_edges_follow_degree_formula():
    # on a tree with alpha = 0: kappa = -2 * max(0, 1 - 1/dx - 1/dy)
    tree = balanced_tree_graph(3, 3)
    edges, kappa = ollivier_ricci_curvature(tree, alpha=0.0)
    deg = np.asarray(tree.sum(axis=1)).ravel()
    dx, dy = deg[edges[:, 0]], deg[edges[:, 1]]
    np.testing.assert_allclose(kappa, -2 * np.maximum(0, 1 - 1 / dx - 1 / dy), atol=1e-9)
    assert (kappa[(dx > 1) & (dy > 1)] < 0).all()


def test_grid_interior_edges_are_flat_and_star_edges_positive_when_lazy():
    assert _kappa_of(grid_graph(5, 5), (12, 13), alpha=0.0) == pytest.approx(0.0, abs=1e-9)
    star = np.zeros((6, 6))
    star[0, 1:] = star[1:, 0] = 1
    # alpha = 1/2, k leaves: W1 = (k - 1) / k, so kappa = 1 / k
    np.testing.assert_allclose(ollivier_ricci_curvature(star, alpha=0.5)[1], 1 / 5, atol=1e-9)


def test_clusters_are_positive_and_rewiring_lowers_curvature():
    roc = ring_of_cliques_graph(5, 5)
    edges, kappa = ollivier_ricci_curvature(roc)
    bridges = (edges[:, 1] // 5) != (edges[:, 0] // 5)
    assert kappa[~bridges].min() > 0 > kappa[bridges].max()
    rewired = rewire_edges(roc, 200, rng=0)
    assert ollivier_ricci_curvature(rewired)[1].mean() < kappa.mean() - 0.2


# ------------------------------------------------------------ backends
@pytest.mark.parametrize("name", SINKHORN_BACKENDS)
def test_sinkhorn_backends_match_exact_reference(name):
    rng = np.random.default_rng(1)
    graph = watts_strogatz_graph(30, 4, 0.3, rng)
    _, exact = ollivier_ricci_curvature(graph, alpha=0.3)
    errors = []
    for eps in (0.2, 0.05, 0.02):
        _, approx = ollivier_ricci_curvature(graph, alpha=0.3, method="sinkhorn", epsilon=eps, backend=name)
        assert approx.shape == exact.shape
        err = np.abs(np.asarray(approx) - exact).max()
        assert err <= eps * np.log(8 * 8) + 1e-6  # entropic bias bound (neighbourhoods <= 8 here)
        assert (np.asarray(approx) <= exact + 1e-4).all()  # the entropic plan costs >= W1 (up to convergence)
        errors.append(err)
    assert errors[-1] < errors[0] and errors[-1] < 1e-3


def test_padded_batch_is_the_cupy_code_path_on_numpy():
    graph = random_regular_graph(12, 3, rng=2)
    a, _ = _to_csr(graph)
    edges = _edges(a)
    padded = _curvature_sinkhorn_numpy(a, edges, 0.5, 0.02, 5000, 1e-9)
    _, numba_k = ollivier_ricci_curvature(graph, method="sinkhorn", epsilon=0.02, backend="numba")
    np.testing.assert_allclose(padded, numba_k, atol=1e-6)
    assert _sinkhorn_padded  # the function the CuPy backend calls with xp=cupy


@pytest.mark.gpu
@pytest.mark.skipif(not backend.cupy_available(), reason=NO_GPU)
def test_cupy_edge_index_returns_cupy():
    import cupy

    graph = sp.coo_matrix(_cycle(8))
    index = cupy.asarray(np.stack([graph.row, graph.col]))
    edges, kappa = ollivier_ricci_curvature(index, method="sinkhorn", alpha=0.0)
    assert isinstance(kappa, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(kappa), 0.0, atol=1e-2)


# ------------------------------------------------------------ inputs and shapes
def test_input_forms_agree_and_torch_comes_back_as_torch():
    dense = _cycle(6)
    coo = sp.coo_matrix(dense)
    index = np.stack([coo.row, coo.col]).astype(np.int64)
    ref_edges, ref = ollivier_ricci_curvature(dense, alpha=0.0)
    for form in (sp.csr_matrix(dense), index):
        edges, kappa = ollivier_ricci_curvature(form, alpha=0.0)
        np.testing.assert_array_equal(edges, ref_edges)
        np.testing.assert_allclose(kappa, ref)
    t_edges, t_kappa = ollivier_ricci_curvature(torch.from_numpy(index), alpha=0.0)
    assert isinstance(t_kappa, torch.Tensor) and t_edges.shape == (6, 2)
    np.testing.assert_array_equal(curvature_edges(index), ref_edges)


def test_self_loops_dropped_isolated_nodes_and_components():
    a = sp.block_diag([_complete(4), _cycle(6), np.zeros((2, 2))]).tolil()
    a[0, 0] = 1.0  # a self-loop: dropped
    edges, kappa = ollivier_ricci_curvature(a.tocsr(), alpha=0.0)
    assert len(edges) == 6 + 6
    np.testing.assert_allclose(kappa[:6], 2 / 3, atol=1e-9)
    np.testing.assert_allclose(kappa[6:], 0.0, atol=1e-9)
    lcp = local_curvature_profile(a.tocsr(), alpha=0.0)
    assert lcp.shape == (12, 5)
    np.testing.assert_array_equal(lcp[-2:], 0.0)  # isolated nodes: zeros
    np.testing.assert_allclose(lcp[:4], [[2 / 3, 2 / 3, 2 / 3, 0.0, 2 / 3]] * 4, atol=1e-9)


def test_lcp_matches_per_node_statistics():
    graph = watts_strogatz_graph(20, 4, 0.4, rng=3)
    edges, kappa = ollivier_ricci_curvature(graph, alpha=0.5)
    lcp = local_curvature_profile(graph, curvature=kappa)
    for v in range(20):
        vals = kappa[(edges == v).any(axis=1)]
        np.testing.assert_allclose(lcp[v], [vals.min(), vals.max(), vals.mean(), vals.std(), np.median(vals)], atol=1e-12)
    np.testing.assert_allclose(local_curvature_profile(graph, alpha=0.5), lcp, atol=1e-12)


def test_bad_inputs_raise_clear_errors():
    directed = np.array([[0, 1], [0, 0]], dtype=float)
    with pytest.raises(ValueError, match="undirected"):
        ollivier_ricci_curvature(directed)
    with pytest.raises(ValueError, match="undirected"):
        ollivier_ricci_curvature(np.array([[0, 1], [1, 2]]))  # (2, E) index, reverses missing
    with pytest.raises(ValueError, match="square"):
        ollivier_ricci_curvature(np.ones((3, 4)))
    with pytest.raises(TypeError, match="SciPy sparse"):
        ollivier_ricci_curvature([[0, 1], [1, 0]])
    with pytest.raises(ValueError, match="finite"):
        ollivier_ricci_curvature(np.array([[0, np.nan], [np.nan, 0]]))
    with pytest.raises(ValueError, match="alpha"):
        ollivier_ricci_curvature(_cycle(5), alpha=1.5)
    with pytest.raises(ValueError, match="method"):
        ollivier_ricci_curvature(_cycle(5), method="greedy")
    with pytest.raises(ValueError, match="epsilon"):
        ollivier_ricci_curvature(_cycle(5), method="sinkhorn", epsilon=1e-4)
    with pytest.raises(ValueError, match="shape"):
        local_curvature_profile(_cycle(5), curvature=np.zeros(3))
    with pytest.raises(ValueError, match="num_nodes"):
        curvature_edges(np.array([[0, 3], [3, 0]]), num_nodes=2)


# ------------------------------------------------------------ graph families
def test_families_keep_degrees_and_are_symmetric():
    roc = ring_of_cliques_graph(4, 5)
    assert set(np.asarray(roc.sum(axis=1)).ravel()) == {4.0}
    rr = random_regular_graph(20, 4, rng=0)
    assert set(np.asarray(rr.sum(axis=1)).ravel()) == {4.0}
    rewired = rewire_edges(roc, 50, rng=1)
    np.testing.assert_array_equal(np.asarray(rewired.sum(axis=1)), np.asarray(roc.sum(axis=1)))
    for g in (roc, rr, rewired, grid_graph(3, 3), watts_strogatz_graph(15, 4, 0.5, rng=2)):
        assert (g != g.T).nnz == 0 and g.diagonal().sum() == 0
    graphs, labels = clustering_classification_dataset(0, 10)
    assert labels.sum() == 5 and all(set(np.asarray(g.sum(axis=1)).ravel()) == {4.0} for g in graphs)
    with pytest.raises(ValueError, match="even"):
        random_regular_graph(5, 3, rng=0)
    with pytest.raises(TypeError, match="rng"):
        random_regular_graph(6, 3, rng="seed")

"""Tests of companion.data.graphs: the generators' structure and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from companion.data import (
    CSL_SKIPS,
    circular_skip_link_graph,
    complete_graph,
    csl_dataset,
    cycle_graph,
    from_edges,
    path_graph,
    permute_graph,
    rook_graph,
    shrikhande_graph,
    star_graph,
)


def _is_simple_undirected(a):
    return sp.issparse(a) and (a != a.T).nnz == 0 and a.diagonal().sum() == 0 and set(np.unique(a.data)) <= {1.0}


def _degrees(a):
    return np.asarray(a.sum(axis=1)).ravel()


@pytest.mark.parametrize(
    "graph, n, edges",
    [
        (cycle_graph(7), 7, 7),
        (path_graph(5), 5, 4),
        (path_graph(1), 1, 0),
        (complete_graph(6), 6, 15),
        (star_graph(4), 5, 4),
        (circular_skip_link_graph(41, 9), 41, 82),
        (shrikhande_graph(), 16, 48),
        (rook_graph(4), 16, 48),
    ],
)
def test_generators_sizes_and_simple(graph, n, edges):
    assert isinstance(graph, sp.csr_matrix)
    assert graph.shape == (n, n)
    assert graph.nnz == 2 * edges
    assert _is_simple_undirected(graph)


@pytest.mark.parametrize("make", [shrikhande_graph, lambda: rook_graph(4)])
def test_strongly_regular_16_6_2_2(make):
    a = make().toarray()
    a2 = a @ a
    assert np.all(a.sum(1) == 6)
    off = ~np.eye(16, dtype=bool)
    assert np.all(a2[(a == 1) & off] == 2)  # lambda: adjacent pairs share 2 neighbours
    assert np.all(a2[(a == 0) & off] == 2)  # mu: non-adjacent pairs share 2 neighbours


def test_neighbourhoods_differ_cycle_vs_two_triangles():
    s, r = shrikhande_graph().toarray(), rook_graph(4).toarray()
    nbr_s = s[np.ix_(s[0] == 1, s[0] == 1)]
    nbr_r = r[np.ix_(r[0] == 1, r[0] == 1)]
    assert nbr_s.sum() / 2 == 6 and nbr_r.sum() / 2 == 6  # 6 edges each ...
    # ... but a 6-cycle is connected, two triangles are not
    from scipy.sparse.csgraph import connected_components

    assert connected_components(nbr_s)[0] == 1 and connected_components(nbr_r)[0] == 2


def test_csl_graphs_are_4_regular_and_pairwise_non_isomorphic_by_triangles():
    for skip in CSL_SKIPS:
        a = circular_skip_link_graph(41, skip)
        assert np.all(_degrees(a) == 4)
    # skip 2 has triangles (i, i+1, i+2); skip 5 has none
    tri = lambda a: np.trace((a @ a @ a).toarray()) / 6
    assert tri(circular_skip_link_graph(41, 2)) == 41 and tri(circular_skip_link_graph(41, 5)) == 0


def test_csl_dataset_labels_and_permutations():
    graphs, labels = csl_dataset(np.random.default_rng(0), 3)
    assert len(graphs) == 30 and labels.tolist() == np.repeat(np.arange(10), 3).tolist()
    base = circular_skip_link_graph(41, CSL_SKIPS[0]).toarray()
    assert not np.array_equal(graphs[0].toarray(), base)  # relabelled
    assert np.all(_degrees(graphs[0]) == 4) and graphs[0].nnz == base.sum()
    again, _ = csl_dataset(np.random.default_rng(0), 3)
    assert all((g != h).nnz == 0 for g, h in zip(graphs, again))


def test_permute_graph_is_relabelling():
    a = path_graph(4)
    b = permute_graph(a, [3, 2, 1, 0])
    assert (a != b).nnz == 0  # a path reversed is itself
    c = permute_graph(a, [1, 0, 2, 3])
    assert c[0].indices.tolist() == [1, 2]


def test_from_edges_drops_loops_and_duplicates():
    a = from_edges(3, [0, 1, 1, 2], [1, 0, 1, 0])
    assert a.toarray().tolist() == [[0, 1, 1], [1, 0, 0], [1, 0, 0]]


def test_bad_inputs():
    with pytest.raises(ValueError, match="n must be >= 3"):
        cycle_graph(2)
    with pytest.raises(ValueError, match="skip must be <= 20"):
        circular_skip_link_graph(41, 21)
    with pytest.raises(TypeError, match="n must be an integer"):
        complete_graph(3.5)
    with pytest.raises(ValueError, match=r"edge endpoints must lie in \[0, 3\)"):
        from_edges(3, [0], [3])
    with pytest.raises(ValueError, match="permutation"):
        permute_graph(path_graph(3), [0, 0, 1])
    with pytest.raises(ValueError, match="distinct"):
        csl_dataset(0, 1, skips=(2, 2))

"""Random and structured graph families for the curvature chapter (P5).

Every generator returns a symmetric SciPy CSR adjacency matrix of ``float64``
ones (no self-loops, no repeated edges). Random generators take ``rng`` (a
``numpy.random.Generator`` or an integer seed), so one seeded generator drives
every draw of an experiment.

* :func:`ring_of_cliques_graph` - cliques joined in a ring, every node keeping
  the same degree (very clustered, positively curved inside the cliques);
* :func:`random_regular_graph` - a uniformly paired random ``d``-regular graph
  (locally tree-like, negatively curved);
* :func:`watts_strogatz_graph` - a ring lattice with a fraction of its edges
  rewired (clustered);
* :func:`grid_graph`, :func:`balanced_tree_graph` - hand-checkable shapes;
* :func:`rewire_edges` - degree-preserving double-edge swaps: the degree of every
  node is kept, clustering is destroyed;
* :func:`clustering_classification_dataset` - the chapter's task: clustered graphs
  against their own rewired copies, so the two classes share degree sequences.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from .._validation import check_float, check_int

__all__ = [
    "ring_of_cliques_graph",
    "random_regular_graph",
    "watts_strogatz_graph",
    "grid_graph",
    "balanced_tree_graph",
    "rewire_edges",
    "clustering_classification_dataset",
]


def _rng(rng: Any) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy.random.Generator or an integer seed; got {type(rng).__name__}")


def _from_edges(n: int, edges: np.ndarray) -> sp.csr_matrix:
    """Symmetric CSR of ones from an (E, 2) array of undirected edges (u != v)."""
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    rows = np.concatenate([edges[:, 0], edges[:, 1]])
    cols = np.concatenate([edges[:, 1], edges[:, 0]])
    a = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    a.data[:] = 1.0  # duplicates summed above: back to ones
    a.sum_duplicates()
    a.data[:] = 1.0
    return a


def _edge_array(adjacency: sp.spmatrix) -> np.ndarray:
    upper = sp.triu(sp.csr_matrix(adjacency), k=1).tocoo()
    return np.stack([upper.row, upper.col], axis=1).astype(np.int64)  # (E, 2), u < v


def ring_of_cliques_graph(n_cliques: int, clique_size: int) -> sp.csr_matrix:
    """Cliques in a ring; one edge per clique is swapped for a link to the next clique.

    Clique ``c`` holds nodes ``c * s .. c * s + s - 1``. Its edge between its
    first and last node is removed, and its last node is linked to the first node
    of clique ``c + 1`` (mod ``n_cliques``), so every node has degree ``s - 1``.

    Parameters
    ----------
    n_cliques : int
        Number of cliques, >= 3.
    clique_size : int
        Nodes per clique ``s``, >= 3.

    Returns
    -------
    scipy.sparse.csr_matrix of shape (n_cliques * clique_size,) * 2

    Example
    -------
    >>> from companion.data.graph_families import ring_of_cliques_graph
    >>> a = ring_of_cliques_graph(4, 5)
    >>> a.shape, set(a.sum(axis=1).A1.tolist())
    ((20, 20), {4.0})
    """
    k = check_int(n_cliques, "n_cliques", minimum=3)
    s = check_int(clique_size, "clique_size", minimum=3)
    edges = []
    for c in range(k):
        base = c * s
        for i in range(s):
            for j in range(i + 1, s):
                if not (i == 0 and j == s - 1):
                    edges.append((base + i, base + j))
        edges.append((base + s - 1, ((c + 1) % k) * s))
    return _from_edges(k * s, np.array(edges))


def random_regular_graph(n: int, degree: int, rng: Any, *, max_tries: int = 1000) -> sp.csr_matrix:
    """A random simple ``degree``-regular graph on ``n`` nodes (pairing model with restarts).

    Parameters
    ----------
    n : int
        Number of nodes, > ``degree``; ``n * degree`` must be even.
    degree : int
        Degree of every node, >= 1.
    rng : numpy.random.Generator or int
    max_tries : int, default 1000
        Restarts allowed before giving up (raises ``RuntimeError``).

    Returns
    -------
    scipy.sparse.csr_matrix of shape (n, n)

    Example
    -------
    >>> from companion.data.graph_families import random_regular_graph
    >>> set(random_regular_graph(10, 3, rng=0).sum(axis=1).A1.tolist())
    {3.0}
    """
    d = check_int(degree, "degree", minimum=1)
    n = check_int(n, "n", minimum=d + 1)
    if (n * d) % 2:
        raise ValueError(f"n * degree must be even for a regular graph; got n={n}, degree={d}")
    gen = _rng(rng)
    for _ in range(check_int(max_tries, "max_tries", minimum=1)):
        stubs = np.repeat(np.arange(n), d)
        gen.shuffle(stubs)
        pairs = np.sort(stubs.reshape(-1, 2), axis=1)
        if np.any(pairs[:, 0] == pairs[:, 1]):
            continue
        if len(np.unique(pairs, axis=0)) < len(pairs):
            continue
        return _from_edges(n, pairs)
    raise RuntimeError(f"no simple {d}-regular graph on {n} nodes found in {max_tries} tries")


def watts_strogatz_graph(n: int, k: int, p: float, rng: Any) -> sp.csr_matrix:
    """A ring lattice (each node linked to its ``k`` nearest neighbours) with rewiring.

    Each lattice edge ``(i, i + j)`` is, with probability ``p``, moved to
    ``(i, w)`` for a uniformly drawn ``w`` that is not ``i`` and not already a
    neighbour. Degrees then vary a little around ``k``.

    Parameters
    ----------
    n : int
        Number of nodes, > ``k``.
    k : int
        Even lattice degree, >= 2.
    p : float
        Rewiring probability in [0, 1].
    rng : numpy.random.Generator or int

    Returns
    -------
    scipy.sparse.csr_matrix of shape (n, n)

    Example
    -------
    >>> from companion.data.graph_families import watts_strogatz_graph
    >>> watts_strogatz_graph(12, 4, 0.0, rng=0).nnz // 2
    24
    """
    k = check_int(k, "k", minimum=2)
    if k % 2:
        raise ValueError(f"k must be even (k/2 neighbours on each side); got {k}")
    n = check_int(n, "n", minimum=k + 1)
    p = check_float(p, "p", minimum=0.0, maximum=1.0)
    gen = _rng(rng)
    nbrs = [set() for _ in range(n)]
    for i in range(n):
        for j in range(1, k // 2 + 1):
            nbrs[i].add((i + j) % n)
            nbrs[(i + j) % n].add(i)
    for j in range(1, k // 2 + 1):
        for i in range(n):
            v = (i + j) % n
            if v in nbrs[i] and gen.random() < p:
                choices = [w for w in range(n) if w != i and w not in nbrs[i]]
                if not choices:
                    continue
                w = choices[int(gen.integers(len(choices)))]
                nbrs[i].discard(v)
                nbrs[v].discard(i)
                nbrs[i].add(w)
                nbrs[w].add(i)
    edges = [(i, v) for i in range(n) for v in nbrs[i] if i < v]
    return _from_edges(n, np.array(edges).reshape(-1, 2))


def grid_graph(rows: int, cols: int) -> sp.csr_matrix:
    """The ``rows x cols`` square grid (4-neighbour lattice); node ``r * cols + c``.

    Example
    -------
    >>> from companion.data.graph_families import grid_graph
    >>> grid_graph(3, 4).nnz // 2
    17
    """
    r = check_int(rows, "rows", minimum=1)
    c = check_int(cols, "cols", minimum=1)
    idx = np.arange(r * c).reshape(r, c)
    edges = np.concatenate([
        np.stack([idx[:, :-1].ravel(), idx[:, 1:].ravel()], axis=1),
        np.stack([idx[:-1, :].ravel(), idx[1:, :].ravel()], axis=1),
    ])
    return _from_edges(r * c, edges)


def balanced_tree_graph(branching: int, depth: int) -> sp.csr_matrix:
    """A rooted tree where every internal node has ``branching`` children; root is node 0.

    Example
    -------
    >>> from companion.data.graph_families import balanced_tree_graph
    >>> balanced_tree_graph(2, 3).shape
    (15, 15)
    """
    b = check_int(branching, "branching", minimum=1)
    depth = check_int(depth, "depth", minimum=1)
    n = sum(b**level for level in range(depth + 1))
    child = np.arange(1, n)
    return _from_edges(n, np.stack([(child - 1) // b, child], axis=1))


def rewire_edges(adjacency: Any, n_swaps: int, rng: Any, *, max_attempts: int | None = None) -> sp.csr_matrix:
    """Degree-preserving double-edge swaps: ``(a, b), (c, d) -> (a, d), (c, b)``.

    A swap is kept only when it creates no self-loop and no repeated edge, so
    every node keeps its degree while triangles and cliques dissolve.

    Parameters
    ----------
    adjacency : scipy.sparse matrix of shape (n, n)
        Symmetric adjacency (as from the generators here).
    n_swaps : int
        Successful swaps to make, >= 0.
    rng : numpy.random.Generator or int
    max_attempts : int, optional
        Attempts allowed (default ``20 * n_swaps + 100``); stops early after that.

    Returns
    -------
    scipy.sparse.csr_matrix of shape (n, n), same degrees as ``adjacency``

    Example
    -------
    >>> from companion.data.graph_families import rewire_edges, ring_of_cliques_graph
    >>> a = ring_of_cliques_graph(4, 5)
    >>> b = rewire_edges(a, 40, rng=0)
    >>> bool((a.sum(axis=1) == b.sum(axis=1)).all())
    True
    """
    if not sp.issparse(adjacency):
        raise TypeError(f"adjacency must be a SciPy sparse matrix; got {type(adjacency).__name__}")
    n_swaps = check_int(n_swaps, "n_swaps", minimum=0)
    gen = _rng(rng)
    n = adjacency.shape[0]
    edges = _edge_array(adjacency)
    if len(edges) < 2 or n_swaps == 0:
        return _from_edges(n, edges)
    present = {(int(u), int(v)) for u, v in edges}
    attempts = max_attempts if max_attempts is not None else 20 * n_swaps + 100
    done = 0
    for _ in range(attempts):
        if done >= n_swaps:
            break
        i, j = gen.choice(len(edges), size=2, replace=False)
        a, b = edges[i]
        c, d = edges[j]
        if gen.random() < 0.5:
            c, d = d, c
        if len({a, b, c, d}) < 4:
            continue
        e1, e2 = (min(a, d), max(a, d)), (min(c, b), max(c, b))
        if e1 in present or e2 in present:
            continue
        present.discard((min(a, b), max(a, b)))
        present.discard((min(c, d), max(c, d)))
        present.add(e1)
        present.add(e2)
        edges[i] = e1
        edges[j] = e2
        done += 1
    return _from_edges(n, edges)


def clustering_classification_dataset(
    rng: Any,
    n_graphs: int,
    *,
    n_cliques: tuple[int, int] = (4, 8),
    clique_size: int = 5,
    swap_fraction: tuple[float, float] = (0.0, 0.3),
    rewired_swaps: float = 2.0,
) -> tuple[list[sp.csr_matrix], np.ndarray]:
    """Graphs whose label is decided by clustering, not by degrees.

    Each graph starts as a :func:`ring_of_cliques_graph` with a random number of
    cliques in ``n_cliques`` (inclusive), gets a random light rewiring
    (``swap_fraction`` of its edge count in double-edge swaps, so class 1 is not a
    single shape), and then, for class 0, a heavy rewiring (``rewired_swaps``
    times its edge count). Every node of every graph has degree
    ``clique_size - 1`` in both classes, so a model that only sees degrees (or
    counts walks on a regular graph) cannot tell the classes apart; neighbourhood
    overlap - curvature - can.

    Parameters
    ----------
    rng : numpy.random.Generator or int
    n_graphs : int
        Number of graphs, >= 2; labels alternate 1, 0, 1, 0, ... before shuffling.
    n_cliques : (int, int), default (4, 8)
    clique_size : int, default 5
    swap_fraction : (float, float), default (0.0, 0.3)
    rewired_swaps : float, default 2.0

    Returns
    -------
    graphs : list of scipy.sparse.csr_matrix
    labels : numpy.ndarray of shape (n_graphs,), int64
        1 for clustered, 0 for rewired.

    Example
    -------
    >>> from companion.data.graph_families import clustering_classification_dataset
    >>> graphs, labels = clustering_classification_dataset(0, 4)
    >>> len(graphs), sorted(labels.tolist())
    (4, [0, 0, 1, 1])
    """
    gen = _rng(rng)
    n_graphs = check_int(n_graphs, "n_graphs", minimum=2)
    lo, hi = (check_int(v, "n_cliques", minimum=3) for v in n_cliques)
    if hi < lo:
        raise ValueError(f"n_cliques must be (low, high) with low <= high; got {n_cliques}")
    f_lo, f_hi = (check_float(v, "swap_fraction", minimum=0.0) for v in swap_fraction)
    rewired_swaps = check_float(rewired_swaps, "rewired_swaps", minimum=0.0)
    labels = np.arange(n_graphs) % 2 == 0
    labels = labels[gen.permutation(n_graphs)].astype(np.int64)
    graphs = []
    for label in labels:
        a = ring_of_cliques_graph(int(gen.integers(lo, hi + 1)), clique_size)
        n_edges = a.nnz // 2
        a = rewire_edges(a, int(round(gen.uniform(f_lo, f_hi) * n_edges)), gen)
        if label == 0:
            a = rewire_edges(a, int(round(rewired_swaps * n_edges)), gen)
        graphs.append(a)
    return graphs, labels

"""Small graphs with known structure, for the graph positional-encoding chapter (P4).

Every generator returns a symmetric SciPy CSR adjacency matrix of ``float64``
ones (no self-loops). The graphs are chosen because their answers are known by
hand (cycles, paths, stars, complete graphs) or because they are hard for
message passing:

* :func:`circular_skip_link_graph` - a cycle plus "skip links"; graphs with
  different skips are all 4-regular, so colour refinement (1-WL) and plain
  message-passing networks see them as identical;
* :func:`shrikhande_graph` and :func:`rook_graph` - two strongly regular graphs
  with the same parameters (16, 6, 2, 2) that 1-WL cannot tell apart.

:func:`csl_dataset` draws a labelled set of randomly relabelled skip-link graphs
(the "CSL" benchmark of Murphy et al. 2019, used by "Benchmarking Graph Neural
Networks" and by "Benchmarking Positional Encodings for GNNs and Graph Transformers").

Example
-------
>>> from companion.data import cycle_graph
>>> a = cycle_graph(5)
>>> a.shape, int(a.nnz)
((5, 5), 10)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from .._validation import check_int

__all__ = [
    "CSL_SKIPS",
    "from_edges",
    "cycle_graph",
    "path_graph",
    "complete_graph",
    "star_graph",
    "circular_skip_link_graph",
    "csl_dataset",
    "shrikhande_graph",
    "rook_graph",
    "permute_graph",
]

#: The skip lengths of the CSL benchmark (41 nodes, one class per skip).
CSL_SKIPS = (2, 3, 4, 5, 6, 9, 11, 12, 13, 16)


def from_edges(n: int, rows: Any, cols: Any) -> sp.csr_matrix:
    """Symmetric 0/1 CSR adjacency of ``n`` nodes from edge endpoint lists.

    Each edge may be listed once or in both directions; duplicates and
    self-loops are dropped.

    Parameters
    ----------
    n : int
        Number of nodes, >= 1.
    rows, cols : array-like of int, shape (E,)
        Edge endpoints in ``[0, n)``.

    Returns
    -------
    scipy.sparse.csr_matrix of shape (n, n), float64
    """
    n = check_int(n, "n", minimum=1)
    r = np.asarray(rows, dtype=np.int64).reshape(-1)
    c = np.asarray(cols, dtype=np.int64).reshape(-1)
    if r.shape != c.shape:
        raise ValueError(f"rows and cols must have the same length; got {r.size} and {c.size}")
    if r.size and (min(r.min(), c.min()) < 0 or max(r.max(), c.max()) >= n):
        raise ValueError(f"edge endpoints must lie in [0, {n}); got values in [{min(r.min(), c.min())}, {max(r.max(), c.max())}]")
    keep = r != c
    r, c = r[keep], c[keep]
    a = sp.coo_matrix((np.ones(2 * r.size), (np.concatenate([r, c]), np.concatenate([c, r]))), shape=(n, n)).tocsr()
    a.data[:] = 1.0  # duplicates were summed
    a.sort_indices()
    return a


def cycle_graph(n: int) -> sp.csr_matrix:
    """The cycle ``0 - 1 - ... - (n-1) - 0`` (n >= 3)."""
    n = check_int(n, "n", minimum=3)
    i = np.arange(n)
    return from_edges(n, i, (i + 1) % n)


def path_graph(n: int) -> sp.csr_matrix:
    """The path ``0 - 1 - ... - (n-1)`` (n >= 1; one node and no edge for n = 1)."""
    n = check_int(n, "n", minimum=1)
    i = np.arange(n - 1)
    return from_edges(n, i, i + 1)


def complete_graph(n: int) -> sp.csr_matrix:
    """Every pair of the ``n`` nodes joined (n >= 1)."""
    n = check_int(n, "n", minimum=1)
    r, c = np.triu_indices(n, k=1)
    return from_edges(n, r, c)


def star_graph(leaves: int) -> sp.csr_matrix:
    """A centre (node 0) joined to ``leaves`` leaves (nodes 1..leaves); ``leaves + 1`` nodes."""
    leaves = check_int(leaves, "leaves", minimum=1)
    return from_edges(leaves + 1, np.zeros(leaves, dtype=np.int64), np.arange(1, leaves + 1))


def circular_skip_link_graph(n: int = 41, skip: int = 2) -> sp.csr_matrix:
    """A cycle of ``n`` nodes plus a skip link from every node ``i`` to ``i + skip (mod n)``.

    Parameters
    ----------
    n : int, default 41
        Number of nodes, >= 5.
    skip : int, default 2
        Skip length, ``2 <= skip <= n // 2``. For ``2 <= skip < n / 2`` the graph is
        4-regular (skip ``n / 2`` for even ``n`` gives 3-regular).

    Returns
    -------
    scipy.sparse.csr_matrix of shape (n, n)

    Example
    -------
    >>> from companion.data import circular_skip_link_graph
    >>> a = circular_skip_link_graph(41, 5)
    >>> set(a.sum(axis=1).A1.tolist())
    {4.0}
    """
    n = check_int(n, "n", minimum=5)
    skip = check_int(skip, "skip", minimum=2, maximum=n // 2)
    i = np.arange(n)
    return from_edges(n, np.concatenate([i, i]), np.concatenate([(i + 1) % n, (i + skip) % n]))


def permute_graph(adjacency: sp.spmatrix, perm: Any) -> sp.csr_matrix:
    """Relabel the nodes: new node ``j`` is old node ``perm[j]`` (``P A P^T``)."""
    perm = np.asarray(perm, dtype=np.int64)
    n = adjacency.shape[0]
    if perm.shape != (n,) or not np.array_equal(np.sort(perm), np.arange(n)):
        raise ValueError(f"perm must be a permutation of 0..{n - 1}; got shape {perm.shape}")
    a = sp.csr_matrix(adjacency)[perm][:, perm]
    a.sort_indices()
    return a.tocsr()


def csl_dataset(
    rng: Any,
    n_per_class: int,
    *,
    n: int = 41,
    skips: tuple[int, ...] = CSL_SKIPS,
) -> tuple[list[sp.csr_matrix], np.ndarray]:
    """A labelled set of circular-skip-link graphs with randomly permuted node labels.

    Class ``c`` holds graphs with skip ``skips[c]``; every graph gets its own random
    node permutation, so a model cannot read the class from the node order.

    Parameters
    ----------
    rng : numpy.random.Generator or int
        Source of the permutations (an int seeds a new generator).
    n_per_class : int
        Graphs per class, >= 1.
    n : int, default 41
        Nodes per graph.
    skips : tuple of int, default CSL_SKIPS
        One class per skip length; distinct, each in ``[2, n // 2]``.

    Returns
    -------
    graphs : list of scipy.sparse.csr_matrix, each (n, n)
        ``len(skips) * n_per_class`` graphs, grouped by class.
    labels : numpy.ndarray of shape (len(skips) * n_per_class,), int64
        Class index of each graph.

    Example
    -------
    >>> from companion.data import csl_dataset
    >>> graphs, labels = csl_dataset(0, 2)
    >>> len(graphs), labels[:4].tolist()
    (20, [0, 0, 1, 1])
    """
    rng = np.random.default_rng(rng)
    n_per_class = check_int(n_per_class, "n_per_class", minimum=1)
    n = check_int(n, "n", minimum=5)
    skips = tuple(int(check_int(s, "skip", minimum=2, maximum=n // 2)) for s in skips)
    if not skips or len(set(skips)) != len(skips):
        raise ValueError(f"skips must be a non-empty tuple of distinct lengths; got {skips}")
    graphs, labels = [], []
    for label, skip in enumerate(skips):
        base = circular_skip_link_graph(n, skip)
        for _ in range(n_per_class):
            graphs.append(permute_graph(base, rng.permutation(n)))
            labels.append(label)
    return graphs, np.asarray(labels, dtype=np.int64)


def shrikhande_graph() -> sp.csr_matrix:
    """The Shrikhande graph: strongly regular with parameters (16, 6, 2, 2).

    Nodes are the pairs ``(x, y)`` of ``Z_4 x Z_4`` (node ``4 x + y``), joined when
    their difference is one of ``(0, +-1), (+-1, 0), +-(1, 1)``. The neighbours of
    every node form a 6-cycle.
    """
    x, y = np.divmod(np.arange(16), 4)
    dx = (x[:, None] - x[None, :]) % 4
    dy = (y[:, None] - y[None, :]) % 4
    steps = {(0, 1), (0, 3), (1, 0), (3, 0), (1, 1), (3, 3)}
    adj = np.zeros((16, 16), dtype=bool)
    for a, b in steps:
        adj |= (dx == a) & (dy == b)
    r, c = np.nonzero(np.triu(adj, k=1))
    return from_edges(16, r, c)


def rook_graph(side: int = 4) -> sp.csr_matrix:
    """The rook's graph of a ``side x side`` board: squares joined when they share a row or column.

    For ``side = 4`` it is strongly regular with parameters (16, 6, 2, 2), like the
    Shrikhande graph, but the neighbours of every node form two disjoint triangles.
    """
    side = check_int(side, "side", minimum=2)
    x, y = np.divmod(np.arange(side * side), side)
    adj = (x[:, None] == x[None, :]) ^ (y[:, None] == y[None, :])  # same row xor same column
    r, c = np.nonzero(np.triu(adj, k=1))
    return from_edges(side * side, r, c)

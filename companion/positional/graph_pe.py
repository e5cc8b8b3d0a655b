"""Node positional encodings for graphs: Laplacian eigenvectors, random-walk returns, random features.

Papers: "Benchmarking Positional Encodings for GNNs and Graph Transformers"
(Grötschla, Xie and Wattenhofer, 2024), "Recipe for a General, Powerful,
Scalable Graph Transformer" (Rampášek et al., NeurIPS 2022), "Graph Positional
Encoding via Random Feature Propagation" (Eliasof et al., ICML 2023).

Graph input, for every function here: ``adjacency`` is a SciPy sparse matrix
(n, n) or an edge index, an integer array of shape (2, E) (NumPy, CuPy or torch).

* The graph is simple and undirected. A sparse matrix must be symmetric
  (``ValueError`` otherwise); an edge index is *symmetrised*: each column
  ``(u, v)`` adds the edge ``{u, v}``, so listing an edge once or in both
  directions gives the same graph.
* Edge weights are ignored (every stored nonzero is an edge); duplicate edges
  count once; self-loops are dropped.
* With an edge index the number of nodes is ``max index + 1`` unless
  ``n_nodes`` is given (needed for isolated nodes at the end).

Three layers for the random-walk encoding, as everywhere in ``companion``:
:func:`random_walk_pe` validates and dispatches; ``_rw_numpy`` is the reference
(one-hot blocks pushed through the sparse transition matrix); ``_rw_numba``
walks each node's t-hop ball only; ``_rw_cupy`` does the reference's block
products with cuSPARSE.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.csgraph as csgraph
import scipy.sparse.linalg as spla

from .._validation import check_array, check_int
from ..backend import dispatch, to_kind, to_numpy

__all__ = [
    "as_adjacency",
    "laplacian",
    "laplacian_pe",
    "random_sign_flip",
    "random_walk_pe",
    "random_feature_propagation",
    "DENSE_EIGH_MAX_NODES",
]

#: Graphs up to this many nodes get a dense eigendecomposition in :func:`laplacian_pe`.
DENSE_EIGH_MAX_NODES = 1024


# ---------------------------------------------------------------- graph input
def as_adjacency(adjacency: Any, *, n_nodes: int | None = None) -> tuple[sp.csr_matrix, str]:
    """Validated simple undirected graph as a 0/1 CSR matrix, plus the input's array kind.

    Parameters
    ----------
    adjacency : scipy.sparse matrix (n, n) or int array (2, E)
        See the module docstring for the rules (symmetry, self-loops, weights).
    n_nodes : int, optional
        Number of nodes for an edge index (default ``max index + 1``); must
        equal ``n`` for a sparse matrix when given.

    Returns
    -------
    adjacency : scipy.sparse.csr_matrix (n, n), float64
        Symmetric, zero diagonal, entries 1, sorted indices.
    kind : str
        ``"numpy"`` for sparse input, else the edge index's kind (``"numpy"``,
        ``"cupy"``, ``"torch"``); results are returned as this kind.

    Example
    -------
    >>> import numpy as np
    >>> from companion.positional import as_adjacency
    >>> a, kind = as_adjacency(np.array([[0, 1, 2], [1, 2, 0]]))
    >>> a.toarray().astype(int).tolist(), kind
    ([[0, 1, 1], [1, 0, 1], [1, 1, 0]], 'numpy')
    """
    if sp.issparse(adjacency):
        if adjacency.ndim != 2 or adjacency.shape[0] != adjacency.shape[1]:
            raise ValueError(f"a sparse adjacency must be square (n, n); got shape {adjacency.shape}")
        n = adjacency.shape[0]
        if n == 0:
            raise ValueError("adjacency must have at least one node; got shape (0, 0)")
        if n_nodes is not None and check_int(n_nodes, "n_nodes", minimum=1) != n:
            raise ValueError(f"n_nodes = {n_nodes} does not match the adjacency's {n} nodes")
        a = sp.csr_matrix(adjacency, dtype=np.float64, copy=True)
        if not np.all(np.isfinite(a.data)):
            raise ValueError("adjacency must contain only finite values; found NaN or infinity")
        a.eliminate_zeros()
        a.data[:] = 1.0
        if (a != a.T).nnz:
            raise ValueError(
                "adjacency must be symmetric (an undirected graph); got a directed one. "
                "Symmetrise it first, e.g. (A + A.T) > 0, or pass an edge index (2, E), which is symmetrised"
            )
        kind = "numpy"
    else:
        kind = check_array(adjacency, "adjacency", ndim=2, dtype_kind="iu", allow_empty=True)
        edges = np.asarray(to_numpy(adjacency), dtype=np.int64)
        if edges.shape[0] != 2:
            raise ValueError(f"an edge index must have shape (2, E); got shape {tuple(edges.shape)}")
        if edges.size and edges.min() < 0:
            raise ValueError(f"edge indices must be >= 0; got {int(edges.min())}")
        n_seen = int(edges.max()) + 1 if edges.size else 0
        if n_nodes is None:
            if n_seen == 0:
                raise ValueError("an empty edge index needs n_nodes (the number of nodes)")
            n = n_seen
        else:
            n = check_int(n_nodes, "n_nodes", minimum=1)
            if n_seen > n:
                raise ValueError(f"edge index refers to node {n_seen - 1} but n_nodes = {n}")
        r, c = edges
        a = sp.coo_matrix((np.ones(2 * r.size), (np.concatenate([r, c]), np.concatenate([c, r]))), shape=(n, n)).tocsr()
        a.data[:] = 1.0
    a.setdiag(0.0)  # self-loops are dropped
    a.eliminate_zeros()
    a.sort_indices()
    return a, kind


def laplacian(adjacency: Any, *, normalized: bool = True, n_nodes: int | None = None) -> sp.csr_matrix:
    """Graph Laplacian ``L = D - A`` or ``L = I - D^{-1/2} A D^{-1/2}`` (sparse CSR).

    For the normalized Laplacian an isolated node gets a zero row and column
    (``0^{-1/2}`` is taken as 0), so that, as for ``D - A``, the multiplicity of
    eigenvalue 0 equals the number of connected components (isolated nodes
    included).
    """
    a, _ = as_adjacency(adjacency, n_nodes=n_nodes)
    deg = np.asarray(a.sum(axis=1)).ravel()  # (n,)
    if not normalized:
        return (sp.diags(deg) - a).tocsr()
    inv_sqrt = np.zeros_like(deg)
    inv_sqrt[deg > 0] = deg[deg > 0] ** -0.5
    d = sp.diags(inv_sqrt)
    return (sp.diags((deg > 0).astype(np.float64)) - d @ a @ d).tocsr()


# ------------------------------------------------------------- Laplacian PE
def _fix_signs(vectors: np.ndarray) -> np.ndarray:
    """Flip each column so that its entry of largest magnitude is positive (first one on ties)."""
    idx = np.argmax(np.abs(np.round(vectors, 10)), axis=0)  # rounding makes near-ties resolve to the first index
    signs = np.sign(vectors[idx, np.arange(vectors.shape[1])])
    signs[signs == 0] = 1.0
    return vectors * signs


def laplacian_pe(
    adjacency: Any,
    k: int,
    *,
    normalized: bool = True,
    n_nodes: int | None = None,
    return_eigenvalues: bool = False,
) -> Any:
    """Laplacian eigenvector positional encoding: the k lowest non-trivial eigenvectors.

    Eigenvalue 0 has one eigenvector per connected component (constant on the
    component); those carry no position and are skipped, and the next ``k``
    eigenvectors, in increasing eigenvalue order, are returned. Graphs with at
    most :data:`DENSE_EIGH_MAX_NODES` nodes use a dense ``eigh``; larger ones a
    sparse shift-invert Lanczos solver (``scipy.sparse.linalg.eigsh``).

    Eigenvectors are defined only up to sign (and, for repeated eigenvalues, up to
    a rotation inside the eigenspace). The sign is fixed so that each column's
    entry of largest magnitude is positive; this makes the output deterministic
    but not invariant to relabelling the nodes, which is why models are trained
    with :func:`random_sign_flip`. Rotations inside repeated eigenspaces are not
    resolved.

    Parameters
    ----------
    adjacency : scipy.sparse matrix (n, n) or int array (2, E)
        Undirected graph (see :func:`as_adjacency`).
    k : int
        Number of eigenvectors, ``1 <= k <= n - (number of components)``.
    normalized : bool, default True
        Use ``I - D^{-1/2} A D^{-1/2}`` (True) or ``D - A`` (False).
    n_nodes : int, optional
        Number of nodes for an edge index.
    return_eigenvalues : bool, default False
        Also return the k eigenvalues.

    Returns
    -------
    pe : array of shape (n, k), float64
        Unit-norm eigenvectors as columns; NumPy for sparse input, else the edge
        index's kind.
    eigenvalues : array of shape (k,), only with ``return_eigenvalues``

    Raises
    ------
    ValueError
        ``k`` larger than the number of non-trivial eigenvectors, a directed graph.

    References
    ----------
    Dwivedi et al., "Benchmarking Graph Neural Networks" (2020); Grötschla et al.,
    "Benchmarking Positional Encodings for GNNs and Graph Transformers" (2024).

    Example
    -------
    >>> from companion.data import path_graph
    >>> from companion.positional import laplacian_pe
    >>> pe, lam = laplacian_pe(path_graph(4), 2, normalized=False, return_eigenvalues=True)
    >>> pe.shape, lam.round(4).tolist()
    ((4, 2), [0.5858, 2.0])
    """
    a, kind = as_adjacency(adjacency, n_nodes=n_nodes)
    n = a.shape[0]
    k = check_int(k, "k", minimum=1)
    n_comp = csgraph.connected_components(a, directed=False)[0]
    if k > n - n_comp:
        raise ValueError(
            f"k must be <= n - components = {n} - {n_comp} = {n - n_comp} "
            f"(eigenvalue 0 has one eigenvector per component); got k = {k}"
        )
    lap = laplacian(a, normalized=normalized)
    m = n_comp + k
    if n <= DENSE_EIGH_MAX_NODES or m >= n - 1:
        vals, vecs = scipy.linalg.eigh(lap.toarray(), subset_by_index=[0, m - 1])
    else:
        v0 = np.random.default_rng(0).standard_normal(n)  # deterministic start vector
        vals, vecs = spla.eigsh(lap.tocsc(), k=m, sigma=-1e-3, which="LM", v0=v0)
        order = np.argsort(vals)
        vals, vecs = vals[order], vecs[:, order]
    vals, vecs = vals[n_comp:], _fix_signs(vecs[:, n_comp:])  # (k,), (n, k)
    pe = to_kind(np.ascontiguousarray(vecs), kind, like=adjacency)
    if return_eigenvalues:
        return pe, to_kind(vals, kind, like=adjacency)
    return pe


def random_sign_flip(pe: Any, rng: Any) -> Any:
    """Multiply each column of ``pe`` by an independent random sign (training augmentation).

    Laplacian eigenvectors have no preferred sign, so a model that reads them
    should not depend on it; flipping signs at random every time a graph is seen
    in training teaches it not to.

    Parameters
    ----------
    pe : array of shape (n, k) or (batch, n, k)
        NumPy array or torch tensor. For a batch, each graph gets its own signs.
    rng : numpy.random.Generator or int

    Returns
    -------
    array of the same shape and kind as ``pe``.

    Example
    -------
    >>> import numpy as np
    >>> from companion.positional import random_sign_flip
    >>> out = random_sign_flip(np.ones((3, 2)), 0)
    >>> bool(np.all(np.abs(out) == 1))
    True
    """
    kind = check_array(pe, "pe", ndim=(2, 3), dtype_kind="f", finite=False)
    rng = np.random.default_rng(rng)
    shape = (pe.shape[0], 1, pe.shape[2]) if pe.ndim == 3 else (1, pe.shape[1])
    signs = rng.choice(np.array([-1.0, 1.0]), size=shape)
    if kind == "numpy":
        return pe * signs.astype(pe.dtype)
    return pe * to_kind(signs, kind, like=pe).to(pe.dtype) if kind == "torch" else pe * to_kind(signs, kind).astype(pe.dtype)


# ------------------------------------------------------------ random-walk PE
def _transition(a: sp.csr_matrix) -> sp.csr_matrix:
    """``P = D^{-1} A`` (rows of isolated nodes stay zero)."""
    deg = np.asarray(a.sum(axis=1)).ravel()
    inv = np.zeros_like(deg)
    inv[deg > 0] = 1.0 / deg[deg > 0]
    p = (sp.diags(inv) @ a).tocsr()
    p.sort_indices()
    return p


def _rw_numpy(p: sp.csr_matrix, k: int, block: int = 256) -> np.ndarray:
    """Reference: walk distributions of ``block`` start nodes at a time, ``X <- P^T X``.

    Column ``j`` of ``X`` starts as the one-hot vector of node ``s_j``; after ``t``
    steps it is the distribution of a walk from ``s_j``, and its entry ``s_j`` is the
    return probability ``(P^t)_{s_j s_j}``. No power of ``P`` is ever formed.
    """
    n = p.shape[0]
    pt = p.T.tocsr()
    out = np.empty((n, k))  # (n, k)
    for start in range(0, n, block):
        nodes = np.arange(start, min(start + block, n))
        x = np.zeros((n, nodes.size))  # (n, block): one-hot columns
        x[nodes, np.arange(nodes.size)] = 1.0
        for t in range(k):
            x = pt @ x
            out[nodes, t] = x[nodes, np.arange(nodes.size)]
    return out


def _rw_ball_python(indptr, indices, data, k, n_chunks, out):  # pragma: no cover - jitted
    """Per start node, push the walk distribution along CSR rows, touching only its t-hop ball."""
    n = indptr.shape[0] - 1
    chunk = (n + n_chunks - 1) // n_chunks
    for c in numba.prange(n_chunks):
        cur = np.zeros(n)
        nxt = np.zeros(n)
        active = np.empty(n, dtype=np.int64)
        new_active = np.empty(n, dtype=np.int64)
        seen = np.zeros(n, dtype=np.bool_)
        for s in range(c * chunk, min((c + 1) * chunk, n)):
            cur[s] = 1.0
            active[0] = s
            n_active = 1
            for t in range(k):
                n_new = 0
                for ia in range(n_active):
                    u = active[ia]
                    mass = cur[u]
                    for e in range(indptr[u], indptr[u + 1]):
                        v = indices[e]
                        if not seen[v]:
                            seen[v] = True
                            new_active[n_new] = v
                            n_new += 1
                        nxt[v] += mass * data[e]
                out[s, t] = nxt[s]
                for ia in range(n_active):
                    cur[active[ia]] = 0.0
                for ib in range(n_new):
                    v = new_active[ib]
                    cur[v] = nxt[v]
                    nxt[v] = 0.0
                    seen[v] = False
                    active[ib] = v
                n_active = n_new
            for ia in range(n_active):
                cur[active[ia]] = 0.0


_rw_ball_serial = numba.njit(cache=True)(_rw_ball_python)
_rw_ball_parallel = numba.njit(cache=True, parallel=True)(_rw_ball_python)

#: Graphs with at least this many nodes use the multi-threaded numba kernel.
#: Smaller ones run serially: numba's OpenMP worker threads keep spinning after a
#: parallel call and slowed single-threaded torch training (in the same process,
#: on 2 cores) about fourfold in our measurements.
RW_PARALLEL_MIN_NODES = 50_000


def _rw_numba(p: sp.csr_matrix, k: int, parallel: bool | None = None) -> np.ndarray:
    n = p.shape[0]
    out = np.zeros((n, k))  # (n, k)
    if parallel is None:
        parallel = n >= RW_PARALLEL_MIN_NODES
    n_chunks = max(1, min(n, 4 * numba.get_num_threads())) if parallel else 1
    kernel = _rw_ball_parallel if parallel else _rw_ball_serial
    kernel(p.indptr.astype(np.int64), p.indices.astype(np.int64), p.data, k, n_chunks, out)
    return out


def _rw_cupy(p: sp.csr_matrix, k: int, block: int = 1024):
    """Same block products as the reference, on the GPU (cuSPARSE CSR times dense)."""
    import cupy
    import cupyx.scipy.sparse as csp

    n = p.shape[0]
    pt = csp.csr_matrix(p.T.tocsr())
    out = cupy.empty((n, k))  # (n, k)
    for start in range(0, n, block):
        nodes = cupy.arange(start, min(start + block, n))
        cols = cupy.arange(nodes.size)
        x = cupy.zeros((n, nodes.size))  # (n, block): one-hot columns
        x[nodes, cols] = 1.0
        for t in range(k):
            x = pt @ x
            out[nodes, t] = x[nodes, cols]
    return out


_RW_KERNELS = {"numpy": _rw_numpy, "numba": _rw_numba, "cupy": _rw_cupy}


def random_walk_pe(adjacency: Any, k: int, *, backend: str = "auto", n_nodes: int | None = None) -> Any:
    """Random-walk structural encoding: return probabilities ``(P^t)_{ii}`` for ``t = 1..k``.

    ``P = D^{-1} A`` is the transition matrix of the simple random walk. Entry
    ``(i, t-1)`` of the result is the probability that a walk started at ``i`` is
    back at ``i`` after ``t`` steps. Unlike Laplacian eigenvectors the encoding has
    no sign or basis ambiguity: relabelling the nodes permutes its rows.
    Isolated nodes have a zero row of ``P`` (the walk stops), so their encoding is 0.

    Parameters
    ----------
    adjacency : scipy.sparse matrix (n, n) or int array (2, E)
        Undirected graph (see :func:`as_adjacency`).
    k : int
        Number of steps, >= 1.
    backend : {"auto", "numpy", "numba", "cupy"}, default "auto"
        ``"numpy"``: one-hot blocks through sparse ``P^T`` products (reference).
        ``"numba"``: per node, the walk distribution restricted to its t-hop ball.
        ``"cupy"``: the block products with cuSPARSE. ``"auto"`` takes CuPy for an
        edge index on the GPU, numba otherwise.
    n_nodes : int, optional
        Number of nodes for an edge index.

    Returns
    -------
    array of shape (n, k), float64
        NumPy for sparse input, else the edge index's kind.

    References
    ----------
    Dwivedi et al., "Graph Neural Networks with Learnable Structural and Positional
    Representations" (ICLR 2022); Rampášek et al., "Recipe for a General, Powerful,
    Scalable Graph Transformer" (NeurIPS 2022).

    Example
    -------
    >>> from companion.data import cycle_graph
    >>> from companion.positional import random_walk_pe
    >>> random_walk_pe(cycle_graph(6), 4)[0].round(4).tolist()
    [0.0, 0.5, 0.0, 0.375]
    """
    a, kind = as_adjacency(adjacency, n_nodes=n_nodes)
    k = check_int(k, "k", minimum=1)
    arrays = () if sp.issparse(adjacency) else (adjacency,)
    name, kernel = dispatch(_RW_KERNELS, backend, *arrays)
    out = kernel(_transition(a), k)
    if name == "cupy" and kind != "cupy":
        out = out.get()
    return to_kind(out, kind, like=adjacency)


# ------------------------------------------------- random feature propagation
def random_feature_propagation(
    adjacency: Any,
    k: int,
    *,
    n_features: int,
    rng: Any,
    normalize: bool = True,
    n_nodes: int | None = None,
) -> Any:
    """Random node features propagated ``k`` steps through the normalized adjacency.

    ``X_0`` has i.i.d. standard normal entries (n, n_features); each step computes
    ``X_t = Â X_{t-1}`` with ``Â = D̃^{-1/2} (A + I) D̃^{-1/2}`` (self-loops added, as in
    GCN, so that bipartite graphs do not oscillate). With ``normalize=True`` the
    columns of ``X_t`` are re-orthonormalised after every step (a QR factorisation
    whose ``R`` has a positive diagonal): this is subspace iteration, so ``X_t`` turns
    towards the leading eigenvectors of ``Â`` (the spectral encoding) while the early
    steps keep local, random-feature information. With ``normalize=False`` the raw
    products are kept. The trajectory ``[X_1, ..., X_k]`` is returned.

    The paper also learns the propagation operator and the normalisation; this
    function is the fixed, training-free variant.

    Parameters
    ----------
    adjacency : scipy.sparse matrix (n, n) or int array (2, E)
        Undirected graph (see :func:`as_adjacency`).
    k : int
        Propagation steps, >= 1.
    n_features : int
        Random channels, ``1 <= n_features <= n`` when ``normalize`` (QR needs it).
    rng : numpy.random.Generator or int
    normalize : bool, default True
    n_nodes : int, optional
        Number of nodes for an edge index.

    Returns
    -------
    array of shape (n, k * n_features), float64
        Columns ``t * n_features : (t + 1) * n_features`` hold ``X_{t+1}``.

    References
    ----------
    Eliasof et al., "Graph Positional Encoding via Random Feature Propagation", ICML 2023.

    Example
    -------
    >>> import numpy as np
    >>> from companion.data import cycle_graph
    >>> from companion.positional import random_feature_propagation
    >>> x = random_feature_propagation(cycle_graph(10), 3, n_features=2, rng=0)
    >>> x.shape, bool(np.allclose(x[:, :2].T @ x[:, :2], np.eye(2)))
    ((10, 6), True)
    """
    a, kind = as_adjacency(adjacency, n_nodes=n_nodes)
    n = a.shape[0]
    k = check_int(k, "k", minimum=1)
    n_features = check_int(n_features, "n_features", minimum=1)
    if normalize and n_features > n:
        raise ValueError(f"n_features must be <= n = {n} with normalize=True (orthonormal columns); got {n_features}")
    rng = np.random.default_rng(rng)
    a_hat = a + sp.identity(n, format="csr")
    deg = np.asarray(a_hat.sum(axis=1)).ravel()
    d = sp.diags(deg ** -0.5)
    a_hat = (d @ a_hat @ d).tocsr()
    x = rng.standard_normal((n, n_features))  # (n, n_features)
    steps = []
    for _ in range(k):
        x = a_hat @ x
        if normalize:
            q, r = np.linalg.qr(x)
            s = np.sign(np.diag(r))
            s[s == 0] = 1.0
            x = q * s
        steps.append(x)
    return to_kind(np.concatenate(steps, axis=1), kind, like=adjacency)  # (n, k * n_features)

"""Ollivier-Ricci curvature of graph edges and local curvature profiles (chapter P5).

Paper: Fesser and Weber, "Effective Structural Encodings via Local Curvature
Profiles" (ICLR 2024); the curvature is Ollivier's (2009), in the graph form of
Lin, Lu and Yau (2011).

Each node ``x`` spreads a unit of mass over itself and its neighbours (the lazy
random-walk measure)::

    m_x(x) = alpha,    m_x(w) = (1 - alpha) / deg(x) for every neighbour w.

The curvature of an edge ``(x, y)`` compares the two measures by optimal
transport with the shortest-path distance as ground cost::

    kappa(x, y) = 1 - W1(m_x, m_y) / d(x, y),    d(x, y) = 1 for an edge.

Both measures live on the one-hop neighbourhoods of ``x`` and ``y``; any two
such nodes are at distance 0, 1, 2 or 3, so every edge is a small transport
problem with integer costs. When the neighbourhoods overlap (triangles, 4-cycles)
mass moves little and ``kappa`` is positive; when the edge is a bridge between
two otherwise separate regions, mass must travel far and ``kappa`` is negative.

Layers: :func:`ollivier_ricci_curvature` validates and dispatches;
``_cost_blocks_numpy`` / ``_curvature_exact_numpy`` are the readable reference
(one ``scipy.optimize.linprog`` per edge); ``_cost_blocks_numba`` builds all
cost matrices and ``_sinkhorn_all_numba`` solves every edge's entropic problem
in parallel; ``_sinkhorn_padded`` is the batched array code that runs on CuPy
(every edge padded to the largest neighbourhood). :func:`local_curvature_profile`
summarises the curvatures at each node (the paper's LCP encoding).
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
import scipy.sparse as sp

from .._validation import check_choice, check_float, check_int
from ..backend import array_kind, resolve_backend, to_kind, to_numpy

__all__ = ["ollivier_ricci_curvature", "local_curvature_profile", "curvature_edges", "METHODS", "LCP_COLUMNS"]

METHODS = ("exact", "sinkhorn")
LCP_COLUMNS = ("min", "max", "mean", "std", "median")


# ------------------------------------------------------------------ input
def _to_csr(adjacency: Any, num_nodes: int | None = None) -> tuple[sp.csr_matrix, str]:
    """A validated undirected graph as a binary CSR matrix (sorted indices), plus the input's array kind.

    Accepts a SciPy sparse matrix or a dense square array (non-zero entry = edge;
    weights are ignored), or an integer edge index of shape ``(2, E)`` listing
    both directions of every edge (the PyTorch Geometric convention). Self-loops
    are dropped. A directed graph (an edge whose reverse is missing) raises
    ``ValueError``.
    """
    kind = "numpy"
    if sp.issparse(adjacency):
        if adjacency.ndim != 2 or adjacency.shape[0] != adjacency.shape[1]:
            raise ValueError(f"adjacency must be square (n, n); got shape {adjacency.shape}")
        a = sp.csr_matrix(adjacency, copy=True)
        if a.dtype.kind in "fc" and not np.all(np.isfinite(a.data)):
            raise ValueError("adjacency must contain only finite values; found NaN or infinity")
        n = a.shape[0]
    else:
        try:
            kind = array_kind(adjacency)
        except TypeError:
            raise TypeError(
                "adjacency must be a SciPy sparse matrix, a dense (n, n) array or a (2, E) integer "
                f"edge index (NumPy, CuPy or torch); got {type(adjacency).__name__}"
            ) from None
        arr = np.asarray(to_numpy(adjacency))
        if arr.ndim == 2 and arr.shape[0] == 2 and arr.dtype.kind in "iu":
            if arr.size and arr.min() < 0:
                raise ValueError("edge index must hold node ids >= 0; found a negative id")
            n = int(arr.max()) + 1 if arr.size else 0
            if num_nodes is not None:
                num_nodes = check_int(num_nodes, "num_nodes", minimum=0)
                if num_nodes < n:
                    raise ValueError(f"edge index names node {n - 1} but num_nodes={num_nodes}")
                n = num_nodes
            a = sp.csr_matrix((np.ones(arr.shape[1]), (arr[0], arr[1])), shape=(n, n))
        elif arr.ndim == 2 and arr.shape[0] == arr.shape[1]:
            if arr.dtype.kind not in "fiub":
                raise TypeError(f"adjacency must be numeric; got dtype {arr.dtype}")
            if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                raise ValueError("adjacency must contain only finite values; found NaN or infinity")
            a = sp.csr_matrix(arr != 0, dtype=np.float64)
            n = arr.shape[0]
        else:
            raise ValueError(
                "adjacency must be a square (n, n) matrix or an integer edge index of shape (2, E); "
                f"got shape {tuple(arr.shape)} with dtype {arr.dtype}"
            )
    if n == 0:
        raise ValueError("adjacency must have at least one node; got an empty graph")
    a = a.astype(np.float64)
    a.setdiag(0.0)  # self-loops dropped
    a.eliminate_zeros()
    a.data[:] = 1.0
    a.sum_duplicates()
    a.data[:] = 1.0
    if (a != a.T).nnz:
        raise ValueError(
            "adjacency must describe an undirected graph (symmetric matrix, or an edge index listing "
            "both (u, v) and (v, u)); found an edge whose reverse is missing"
        )
    a.sort_indices()
    return a, kind


def _edges(a: sp.csr_matrix) -> np.ndarray:
    """Undirected edges ``(u, v)`` with ``u < v`` in row-major order, shape (E, 2)."""
    upper = sp.triu(a, k=1).tocsr()
    upper.sort_indices()
    rows = np.repeat(np.arange(a.shape[0]), np.diff(upper.indptr))
    return np.stack([rows, upper.indices], axis=1).astype(np.int64)  # (E, 2)


def curvature_edges(adjacency: Any, *, num_nodes: int | None = None) -> np.ndarray:
    """The edge list every curvature array of this module is aligned with.

    Parameters
    ----------
    adjacency : SciPy sparse (n, n), dense (n, n) array, or (2, E) integer edge index
        An undirected graph (see :func:`ollivier_ricci_curvature`).
    num_nodes : int, optional
        Number of nodes for an edge index (default: largest id + 1).

    Returns
    -------
    numpy.ndarray of shape (E, 2), int64
        Each undirected edge once, as ``(u, v)`` with ``u < v``, sorted by ``u`` then ``v``.

    Example
    -------
    >>> import numpy as np
    >>> from companion.positional import curvature_edges
    >>> curvature_edges(np.array([[0, 1, 1, 2], [1, 0, 2, 1]])).tolist()
    [[0, 1], [1, 2]]
    """
    return _edges(_to_csr(adjacency, num_nodes)[0])


# ------------------------------------------------------- NumPy reference
def _measure(a: sp.csr_matrix, x: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Support ``[x, neighbours...]`` and masses of the lazy random-walk measure at ``x``."""
    nbrs = a.indices[a.indptr[x]:a.indptr[x + 1]]
    support = np.concatenate([[x], nbrs]).astype(np.int64)
    mass = np.concatenate([[alpha], np.full(len(nbrs), (1.0 - alpha) / len(nbrs))])
    return support, mass


def _cost_block_numpy(a: sp.csr_matrix, sx: np.ndarray, sy: np.ndarray) -> np.ndarray:
    """Shortest-path distances between two one-hop supports, each 0, 1, 2 or 3; shape (len(sx), len(sy))."""
    cost = np.full((len(sx), len(sy)), 3.0)
    for i, u in enumerate(sx):
        nu = set(a.indices[a.indptr[u]:a.indptr[u + 1]].tolist())
        for j, w in enumerate(sy):
            nw = a.indices[a.indptr[w]:a.indptr[w + 1]]
            if u == w:
                cost[i, j] = 0.0
            elif w in nu:
                cost[i, j] = 1.0
            elif nu.intersection(nw.tolist()):
                cost[i, j] = 2.0
    return cost


def _transport_exact(cost: np.ndarray, mx: np.ndarray, my: np.ndarray) -> float:
    """W1 between ``mx`` and ``my`` for ``cost`` (p, q): the transport linear programme, solved exactly."""
    from scipy.optimize import linprog

    p, q = cost.shape
    rows = np.kron(np.eye(p), np.ones((1, q)))  # (p, p*q): sum_j P_ij = mx_i
    cols = np.kron(np.ones((1, p)), np.eye(q))  # (q, p*q): sum_i P_ij = my_j
    res = linprog(cost.ravel(), A_eq=np.vstack([rows, cols]), b_eq=np.concatenate([mx, my]),
                  bounds=(0, None), method="highs")
    if res.status != 0:  # pragma: no cover - a balanced transport problem is always feasible
        raise RuntimeError(f"transport LP failed: {res.message}")
    return float(res.fun)


def _curvature_exact_numpy(a: sp.csr_matrix, edges: np.ndarray, alpha: float) -> np.ndarray:
    """Reference: ``1 - W1(m_x, m_y)`` for every edge, one exact LP each; shape (E,)."""
    kappa = np.empty(len(edges))
    for e, (x, y) in enumerate(edges):
        sx, mx = _measure(a, x, alpha)
        sy, my = _measure(a, y, alpha)
        kappa[e] = 1.0 - _transport_exact(_cost_block_numpy(a, sx, sy), mx, my)
    return kappa


# ------------------------------------------------------------ numba kernels
@numba.njit(cache=True)
def _is_neighbour(indptr, indices, u, w):  # pragma: no cover - jitted
    lo, hi = indptr[u], indptr[u + 1]
    while lo < hi:  # binary search in the sorted neighbour list of u
        mid = (lo + hi) // 2
        if indices[mid] < w:
            lo = mid + 1
        else:
            hi = mid
    return lo < indptr[u + 1] and indices[lo] == w


@numba.njit(cache=True)
def _share_neighbour(indptr, indices, u, w):  # pragma: no cover - jitted
    i, j = indptr[u], indptr[w]
    while i < indptr[u + 1] and j < indptr[w + 1]:  # merge of two sorted lists
        if indices[i] == indices[j]:
            return True
        if indices[i] < indices[j]:
            i += 1
        else:
            j += 1
    return False


@numba.njit(cache=True)
def _support(indptr, indices, x, out):  # pragma: no cover - jitted
    out[0] = x
    k = 1
    for t in range(indptr[x], indptr[x + 1]):
        out[k] = indices[t]
        k += 1
    return k


@numba.njit(cache=True, parallel=True)
def _cost_blocks_numba(indptr, indices, edges, offsets, cost):  # pragma: no cover - jitted
    """Fill ``cost[offsets[e]:offsets[e+1]]`` with edge e's (p, q) distance block, row-major."""
    for e in numba.prange(edges.shape[0]):
        x, y = edges[e, 0], edges[e, 1]
        p = indptr[x + 1] - indptr[x] + 1
        q = indptr[y + 1] - indptr[y] + 1
        sx = np.empty(p, dtype=np.int64)
        sy = np.empty(q, dtype=np.int64)
        _support(indptr, indices, x, sx)
        _support(indptr, indices, y, sy)
        base = offsets[e]
        for i in range(p):
            for j in range(q):
                u, w = sx[i], sy[j]
                if u == w:
                    c = 0.0
                elif _is_neighbour(indptr, indices, u, w):
                    c = 1.0
                elif _share_neighbour(indptr, indices, u, w):
                    c = 2.0
                else:
                    c = 3.0
                cost[base + i * q + j] = c


@numba.njit(cache=True, parallel=True)
def _sinkhorn_all_numba(indptr, edges, offsets, cost, alpha, epsilon, max_iter, tol, out, iters):  # pragma: no cover
    """Entropic transport for every edge: Sinkhorn scalings, then the cost of the plan.

    ``out[e]`` = sum_ij P_ij C_ij with ``P = diag(u) K diag(v)``, ``K = exp(-C / epsilon)``;
    ``iters[e]`` = iterations used (stops when the row marginals are within ``tol``).
    """
    for e in numba.prange(edges.shape[0]):
        x, y = edges[e, 0], edges[e, 1]
        p = indptr[x + 1] - indptr[x] + 1
        q = indptr[y + 1] - indptr[y] + 1
        base = offsets[e]
        a = np.full(p, (1.0 - alpha) / (p - 1))
        a[0] = alpha
        b = np.full(q, (1.0 - alpha) / (q - 1))
        b[0] = alpha
        k = np.empty((p, q))
        for i in range(p):
            for j in range(q):
                k[i, j] = np.exp(-cost[base + i * q + j] / epsilon)
        u = np.ones(p)
        v = np.ones(q)
        it = 0
        while it < max_iter:
            for i in range(p):
                s = 0.0
                for j in range(q):
                    s += k[i, j] * v[j]
                u[i] = a[i] / s
            for j in range(q):
                s = 0.0
                for i in range(p):
                    s += k[i, j] * u[i]
                v[j] = b[j] / s
            it += 1
            if it % 10 == 0:  # columns are exact after the v-step: measure the rows
                err = 0.0
                for i in range(p):
                    s = 0.0
                    for j in range(q):
                        s += k[i, j] * v[j]
                    err += abs(u[i] * s - a[i])
                if err < tol:
                    break
        total = 0.0
        for i in range(p):
            for j in range(q):
                total += u[i] * k[i, j] * v[j] * cost[base + i * q + j]
        out[e] = total
        iters[e] = it


def _blocks(a: sp.csr_matrix, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR arrays, per-edge offsets (E + 1,) and the flat cost array of all (p, q) blocks."""
    indptr = a.indptr.astype(np.int64)
    indices = a.indices.astype(np.int64)
    deg = np.diff(indptr)
    sizes = (deg[edges[:, 0]] + 1) * (deg[edges[:, 1]] + 1)  # (E,) entries per block
    offsets = np.zeros(len(edges) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    cost = np.empty(int(offsets[-1]))
    if len(edges):
        _cost_blocks_numba(indptr, indices, edges, offsets, cost)
    return indptr, offsets, cost


def _curvature_sinkhorn_numba(a, edges, alpha, epsilon, max_iter, tol):
    indptr, offsets, cost = _blocks(a, edges)
    w1 = np.empty(len(edges))
    iters = np.zeros(len(edges), dtype=np.int64)
    if len(edges):
        _sinkhorn_all_numba(indptr, edges, offsets, cost, alpha, epsilon, max_iter, tol, w1, iters)
    return 1.0 - w1


# ------------------------------------------------- padded batch (CuPy path)
def _padded_problems(a: sp.csr_matrix, edges: np.ndarray, alpha: float):
    """Every edge's problem padded to (E, P, Q) costs and (E, P), (E, Q) masses (zero mass on padding)."""
    indptr, offsets, cost = _blocks(a, edges)
    deg = np.diff(indptr)
    p = deg[edges[:, 0]] + 1
    q = deg[edges[:, 1]] + 1
    P, Q = int(p.max()), int(q.max())
    costs = np.full((len(edges), P, Q), 3.0)  # (E, P, Q)
    mx = np.zeros((len(edges), P))  # (E, P)
    my = np.zeros((len(edges), Q))  # (E, Q)
    for e in range(len(edges)):
        costs[e, :p[e], :q[e]] = cost[offsets[e]:offsets[e + 1]].reshape(p[e], q[e])
        mx[e, 0], mx[e, 1:p[e]] = alpha, (1.0 - alpha) / (p[e] - 1)
        my[e, 0], my[e, 1:q[e]] = alpha, (1.0 - alpha) / (q[e] - 1)
    return costs, mx, my


def _sinkhorn_padded(xp, costs, mx, my, epsilon: float, max_iter: int, tol: float):
    """Batched Sinkhorn on padded problems with array module ``xp`` (NumPy or CuPy); W1 estimates (E,)."""
    k = xp.exp(-costs / epsilon)  # (E, P, Q)
    u = xp.ones_like(mx)
    v = xp.ones_like(my)
    for it in range(1, max_iter + 1):
        u = mx / xp.einsum("epq,eq->ep", k, v)
        v = my / xp.einsum("epq,ep->eq", k, u)
        if it % 20 == 0:
            err = xp.abs(u * xp.einsum("epq,eq->ep", k, v) - mx).sum(axis=1).max()
            if float(err) < tol:
                break
    return xp.einsum("ep,epq,eq->e", u, k * costs, v)


def _curvature_sinkhorn_cupy(a, edges, alpha, epsilon, max_iter, tol):
    import cupy

    if not len(edges):
        return np.empty(0)
    costs, mx, my = _padded_problems(a, edges, alpha)
    w1 = _sinkhorn_padded(cupy, cupy.asarray(costs), cupy.asarray(mx), cupy.asarray(my), epsilon, max_iter, tol)
    return 1.0 - cupy.asnumpy(w1)


def _curvature_sinkhorn_numpy(a, edges, alpha, epsilon, max_iter, tol):
    if not len(edges):
        return np.empty(0)
    costs, mx, my = _padded_problems(a, edges, alpha)
    return 1.0 - _sinkhorn_padded(np, costs, mx, my, epsilon, max_iter, tol)


# ------------------------------------------------------------ public entry
def ollivier_ricci_curvature(
    adjacency: Any,
    *,
    alpha: float = 0.5,
    method: str = "exact",
    epsilon: float = 0.02,
    max_iter: int = 5000,
    tol: float = 1e-9,
    num_nodes: int | None = None,
    backend: str = "auto",
) -> tuple[Any, Any]:
    """Ollivier-Ricci curvature of every edge of an undirected graph.

    ``kappa(x, y) = 1 - W1(m_x, m_y)`` where ``m_x`` puts ``alpha`` on ``x`` and
    ``(1 - alpha) / deg(x)`` on each neighbour, and W1 is the optimal-transport
    distance with shortest-path cost (0, 1, 2 or 3 between the two one-hop
    neighbourhoods). ``kappa <= 1``; it is positive where the neighbourhoods of
    ``x`` and ``y`` overlap and negative on bridges between sparse regions.

    Parameters
    ----------
    adjacency : SciPy sparse (n, n), dense (n, n) array, or (2, E) integer edge index
        An undirected graph. Non-zero entries are edges (weights ignored);
        self-loops are dropped; a directed graph (an edge without its reverse)
        raises ``ValueError``. An edge index must list both ``(u, v)`` and
        ``(v, u)`` (PyTorch Geometric's convention). Isolated nodes and several
        components are fine: curvature is defined per edge and only looks one hop
        away.
    alpha : float, default 0.5
        Laziness, mass kept at the node itself, in [0, 1].
    method : {"exact", "sinkhorn"}, default "exact"
        ``"exact"`` solves each transport linear programme with
        ``scipy.optimize.linprog`` (HiGHS) on the host, whatever the backend.
        ``"sinkhorn"`` solves every edge's entropy-regularised problem at once;
        its W1 is the transport cost of the entropic plan, above the exact W1 by
        at most about ``epsilon * log(p * q)`` (p, q: neighbourhood sizes), so the
        curvature is slightly *under*-estimated.
    epsilon : float, default 0.02
        Entropic regularisation for ``"sinkhorn"``, in [0.01, 1]. Smaller is more
        accurate and needs more iterations; below 0.01 plain float64 scalings
        underflow.
    max_iter : int, default 5000
        Sinkhorn iterations at most (per edge on numba, per batch on CuPy).
    tol : float, default 1e-9
        Stop when the L1 error of the row marginals is below ``tol``.
    num_nodes : int, optional
        Number of nodes for an edge index (default: largest id + 1).
    backend : {"auto", "numpy", "numba", "cupy"}, default "auto"
        For ``"sinkhorn"``: ``"numba"`` (a parallel loop over edges; the
        default on CPU), ``"cupy"`` (all edges padded to the largest
        neighbourhood, batched on the GPU; picked by ``"auto"`` for CuPy or
        CUDA-torch edge indices), ``"numpy"`` (the same padded batch on the
        CPU). ``method="exact"`` ignores it except that ``"cupy"`` raises.

    Returns
    -------
    edges : array of shape (E, 2), int64
        Each undirected edge once, ``(u, v)`` with ``u < v``, sorted
        (:func:`curvature_edges`).
    curvature : array of shape (E,), float64
        ``kappa`` of each edge. Both arrays are NumPy, or the input's kind for a
        CuPy / torch edge index (torch on the input's device).

    References
    ----------
    Fesser and Weber, "Effective Structural Encodings via Local Curvature
    Profiles", ICLR 2024. Ollivier, "Ricci curvature of Markov chains on metric
    spaces", 2009. Lin, Lu and Yau, "Ricci curvature of graphs", 2011.

    Example
    -------
    >>> import numpy as np
    >>> from companion.positional import ollivier_ricci_curvature
    >>> triangle = np.ones((3, 3)) - np.eye(3)
    >>> edges, kappa = ollivier_ricci_curvature(triangle, alpha=0.0)
    >>> edges.tolist(), kappa.round(3).tolist()
    ([[0, 1], [0, 2], [1, 2]], [0.5, 0.5, 0.5])
    """
    a, kind = _to_csr(adjacency, num_nodes)
    alpha = check_float(alpha, "alpha", minimum=0.0, maximum=1.0)
    method = check_choice(method, "method", METHODS)
    epsilon = check_float(epsilon, "epsilon", minimum=0.01, maximum=1.0)
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    tol = check_float(tol, "tol", minimum=0.0, strict_min=True)
    name = resolve_backend(backend, adjacency if kind != "numpy" else None)
    edges = _edges(a)
    if method == "exact":
        if name == "cupy":
            raise ValueError("method='exact' runs on the host (one LP per edge); use method='sinkhorn' for the GPU")
        kappa = _curvature_exact_numpy(a, edges, alpha)
    elif name == "numba":
        kappa = _curvature_sinkhorn_numba(a, edges, alpha, epsilon, max_iter, tol)
    elif name == "cupy":
        kappa = _curvature_sinkhorn_cupy(a, edges, alpha, epsilon, max_iter, tol)
    else:
        kappa = _curvature_sinkhorn_numpy(a, edges, alpha, epsilon, max_iter, tol)
    if kind != "numpy":
        return to_kind(edges, kind, like=adjacency), to_kind(np.ascontiguousarray(kappa), kind, like=adjacency)
    return edges, kappa


def local_curvature_profile(
    adjacency: Any,
    *,
    curvature: Any = None,
    alpha: float = 0.5,
    num_nodes: int | None = None,
    **curvature_options: Any,
) -> np.ndarray:
    """Local curvature profile (LCP): summary statistics of the curvature around each node.

    Row ``v`` holds the minimum, maximum, mean, standard deviation and median of
    ``kappa`` over the edges at ``v`` (:data:`LCP_COLUMNS`). It is a structural
    encoding: concatenated to node features, it tells a message-passing network
    whether a node sits inside a dense cluster or on a bottleneck.

    Parameters
    ----------
    adjacency : SciPy sparse (n, n), dense (n, n) array, or (2, E) integer edge index
        An undirected graph (see :func:`ollivier_ricci_curvature`).
    curvature : array of shape (E,), optional
        Precomputed curvatures aligned with :func:`curvature_edges`; computed with
        :func:`ollivier_ricci_curvature` (``alpha`` and ``curvature_options``) if omitted.
    alpha : float, default 0.5
        Laziness used when computing the curvature.
    num_nodes : int, optional
        Number of nodes for an edge index.
    **curvature_options
        ``method``, ``epsilon``, ``max_iter``, ``tol``, ``backend`` for
        :func:`ollivier_ricci_curvature`.

    Returns
    -------
    numpy.ndarray of shape (n, 5), float64
        Isolated nodes (no edges) get a row of zeros; a node with one edge has
        ``std = 0`` and min = max = mean = median.

    References
    ----------
    Fesser and Weber, "Effective Structural Encodings via Local Curvature Profiles", ICLR 2024.

    Example
    -------
    >>> import numpy as np
    >>> from companion.positional import local_curvature_profile
    >>> path = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=float)
    >>> local_curvature_profile(path, alpha=0.0).round(3).tolist()
    [[0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]]
    """
    a, _ = _to_csr(adjacency, num_nodes)
    edges = _edges(a)
    if curvature is None:
        _, kappa = ollivier_ricci_curvature(a, alpha=alpha, **curvature_options)
    else:
        if curvature_options:
            raise TypeError(f"curvature options {sorted(curvature_options)} given with a precomputed curvature")
        try:
            kappa = np.asarray(to_numpy(curvature), dtype=np.float64)
        except TypeError:
            kappa = np.asarray(curvature, dtype=np.float64)
        if kappa.shape != (len(edges),):
            raise ValueError(
                f"curvature must have shape (E,) = ({len(edges)},), one value per edge of curvature_edges; "
                f"got shape {kappa.shape}"
            )
        if not np.all(np.isfinite(kappa)):
            raise ValueError("curvature must contain only finite values; found NaN or infinity")
    n = a.shape[0]
    node = np.concatenate([edges[:, 0], edges[:, 1]])  # each edge counts at both ends
    value = np.concatenate([kappa, kappa])
    order = np.lexsort((value, node))  # by node, then by value within a node
    node, value = node[order], value[order]
    count = np.bincount(node, minlength=n)  # (n,)
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    out = np.zeros((n, 5))
    has = count > 0
    if has.any():
        s, c = start[has], count[has]
        total = np.add.reduceat(value, s) if len(value) else np.zeros(0)
        mean = total / c
        centred = value - np.repeat(mean, c)  # two-pass variance: exact for equal values
        sq = np.add.reduceat(centred**2, s) / c
        out[has, 0] = value[s]  # sorted: first is the minimum
        out[has, 1] = value[s + c - 1]
        out[has, 2] = mean
        out[has, 3] = np.sqrt(sq)
        out[has, 4] = 0.5 * (value[s + (c - 1) // 2] + value[s + c // 2])
    return out

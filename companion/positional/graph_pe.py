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

One random-walk step for many walkers at once, the streaming kernel under
diffusion-style encodings, is :func:`random_walk_step` (``out = P^T X`` for the
operator from :func:`random_walk_operator`): ``_step_numpy`` gathers and sums with
``np.add.reduceat``; ``_step_rows_serial`` / ``_step_rows_parallel`` make one pass
over the CSR rows (each row summed in vector registers by a small LLVM-IR helper,
large outputs written with non-temporal stores); ``_step_cupy`` calls cuSPARSE. :func:`random_walk_pe` does not
use it: pushing ``B`` one-hot columns through whole-graph steps costs
``n k nnz`` multiply-adds against the ball walk's sum of ball sizes (116x more
on a 100 x 100 grid with k = 16).
"""

from __future__ import annotations

import platform
from typing import Any

import numba
import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.csgraph as csgraph
import scipy.sparse.linalg as spla
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from .._validation import check_array, check_int
from ..backend import array_kind, array_module, dispatch, for_backend, is_on_gpu, to_kind, to_numpy

__all__ = [
    "as_adjacency",
    "laplacian",
    "laplacian_pe",
    "random_sign_flip",
    "random_walk_pe",
    "random_walk_operator",
    "random_walk_step",
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


# ------------------------------------------------------------ random-walk step
def random_walk_operator(adjacency: Any, *, n_nodes: int | None = None, dtype: Any = np.float64) -> sp.csr_matrix:
    """The operator that moves walker distributions one step: ``P^T = A D^{-1}`` in CSR.

    ``P = D^{-1} A`` is the transition matrix of the simple random walk (row ``u``
    holds ``1 / deg(u)`` on the neighbours of ``u``). A distribution over the nodes,
    stored as a column ``x`` of length ``n``, moves one step as ``x <- P^T x``: entry
    ``v`` of the result is ``sum_u x[u] / deg(u)`` over the neighbours ``u`` of ``v``.
    Isolated nodes have a zero column (a walker there disappears), as in
    :func:`random_walk_pe`. Build it once and pass it to :func:`random_walk_step`.

    Parameters
    ----------
    adjacency : scipy.sparse matrix (n, n) or int array (2, E)
        Undirected graph (see :func:`as_adjacency`).
    n_nodes : int, optional
        Number of nodes for an edge index.
    dtype : {numpy.float64, numpy.float32}, default float64
        Value type; use the dtype of the ``x`` you will step, so that
        :func:`random_walk_step` needs no per-call conversion.

    Returns
    -------
    scipy.sparse.csr_matrix (n, n)
        Sorted indices; each non-empty column sums to 1.

    Example
    -------
    >>> from companion.data import path_graph
    >>> from companion.positional.graph_pe import random_walk_operator
    >>> random_walk_operator(path_graph(3)).toarray().tolist()
    [[0.0, 0.5, 0.0], [1.0, 0.0, 1.0], [0.0, 0.5, 0.0]]
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64; got {dtype}")
    a, _ = as_adjacency(adjacency, n_nodes=n_nodes)
    deg = np.diff(a.indptr).astype(np.float64)  # (n,): entries of a are 1
    inv = np.zeros_like(deg)
    inv[deg > 0] = 1.0 / deg[deg > 0]
    # A is symmetric, so P^T = A D^{-1} has A's pattern with value 1/deg(column)
    op = sp.csr_matrix((inv[a.indices].astype(dtype), a.indices.copy(), a.indptr.copy()), shape=a.shape)
    op.has_sorted_indices = True
    return op


def _step_numpy(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, x: np.ndarray, out: np.ndarray, block: int = 1 << 16
) -> None:
    """Reference: ``out[v] = sum_e data[e] * x[indices[e]]`` over row ``v``'s entries, in NumPy.

    Rows are taken in blocks of about ``block`` stored entries (one row at least),
    so that the gathered ``x[indices]`` block (entries, B) stays small;
    ``np.add.reduceat`` sums each row.
    """
    n = indptr.shape[0] - 1
    counts = np.diff(indptr)  # (n,)
    lo = 0
    while lo < n:
        hi = int(np.searchsorted(indptr, indptr[lo] + block, side="right"))
        hi = min(max(hi - 1, lo + 1), n)
        e0, e1 = int(indptr[lo]), int(indptr[hi])
        if e1 == e0:
            out[lo:hi] = 0
        else:
            terms = data[e0:e1, None] * x[indices[e0:e1]]  # (entries, B)
            full = counts[lo:hi] > 0  # reduceat cannot express an empty segment
            part = out[lo:hi]  # (rows, B) view
            part[~full] = 0
            part[full] = np.add.reduceat(terms, indptr[lo:hi][full] - e0, axis=0)  # (non-empty rows, B)
        lo = hi


# ---- numba helpers of the step kernel: LLVM vector code that numba does not emit by itself
#: Bytes per cache line (and per vector register of the line helpers: 8 float64 or 16 float32).
_LINE_BYTES = 64
#: Non-temporal stores and ``sfence`` are emitted on x86 only; elsewhere "streaming" stores are ordinary ones.
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")


def _vector_type(context, dtype):
    """LLVM ``(element type, <L x element>)`` for one 64-byte line of ``dtype``."""
    ftype = context.get_value_type(dtype)
    return ftype, ir.VectorType(ftype, _LINE_BYTES // context.get_abi_sizeof(ftype))


def _element_address(context, builder, arytype, ary, index, indextype):
    """Integer address of flat element ``index`` of the C-contiguous array ``ary``."""
    i64 = ir.IntType(64)
    data = context.make_array(arytype)(context, builder, ary).data
    idx = context.cast(builder, index, indextype, types.int64)
    item = context.get_abi_sizeof(context.get_data_type(arytype.dtype))
    return builder.add(builder.ptrtoint(data, i64), builder.mul(idx, ir.Constant(i64, item)))


@intrinsic
def _data_address(typingctx, arr):
    """The address of ``arr``'s first element, as an int64."""
    if not isinstance(arr, types.Array):
        return None

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        return builder.ptrtoint(data, ir.IntType(64))

    return types.int64(arr), codegen


@intrinsic
def _store_fence(typingctx):
    """``sfence``: orders this thread's non-temporal stores before whatever follows (the join of the threads)."""

    def codegen(context, builder, signature, args):
        if _X86:
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse.sfence")
            builder.call(fn, [])
        return context.get_dummy_value()

    return types.void(), codegen


def _make_store_line(nontemporal: bool):
    """Intrinsic ``(dst, di, src, si) -> bool``: copy the 64-byte line at flat element ``si`` of ``src`` to flat
    element ``di`` of ``dst``; True when one of its values is NaN or infinite (``v * 0`` is NaN exactly then).

    ``nontemporal``: the store carries LLVM ``!nontemporal`` metadata and 64-byte alignment, so it becomes
    ``vmovntpd``/``vmovntps``: the line goes to memory without being read first (no read-for-ownership) and
    without evicting cached data. The destination address MUST be 64-byte aligned then.
    Off x86 the store is an ordinary one (no ``sfence`` there to order streaming stores).
    """
    nontemporal = nontemporal and _X86

    @intrinsic
    def store_line(typingctx, dst, di, src, si):
        if not (isinstance(dst, types.Array) and isinstance(src, types.Array) and dst.dtype == src.dtype):
            return None

        def codegen(context, builder, signature, args):
            ftype, vtype = _vector_type(context, signature.args[0].dtype)
            item = context.get_abi_sizeof(ftype)
            tys = signature.args
            d = builder.inttoptr(_element_address(context, builder, tys[0], args[0], args[1], tys[1]), vtype.as_pointer())
            s = builder.inttoptr(_element_address(context, builder, tys[2], args[2], args[3], tys[3]), vtype.as_pointer())
            value = builder.load(s, align=item)
            store = builder.store(value, d, align=_LINE_BYTES if nontemporal else item)
            if nontemporal:
                store.set_metadata("nontemporal", builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)]))
            z = builder.fmul(value, ir.Constant(vtype, None))
            bits = builder.bitcast(builder.fcmp_unordered("uno", z, z), ir.IntType(vtype.count))
            return builder.icmp_unsigned("!=", bits, ir.Constant(ir.IntType(vtype.count), 0))

        return types.boolean(dst, di, src, si), codegen

    return store_line


_store_line = _make_store_line(False)
_stream_line = _make_store_line(True)


def _make_row_sum(k: int):
    """Intrinsic ``(acc, ai, x, col, indices, data, lo, hi, b)``: ``k`` lines (L = 64 / itemsize columns each) of
    one output row, ``acc[ai : ai + k L] = sum_e data[e] * x[indices[e] * b + col : ... + k L]`` over ``e`` in
    ``lo .. hi - 1`` (flat indices into C-contiguous ``acc`` and ``x``).

    The sum runs in entry order with fused multiply-adds, in ``k`` vector registers (a loop with vector phis,
    written in LLVM IR: numba's own loop keeps the accumulator in memory and stays scalar), and is stored once.
    """

    @intrinsic
    def row_sum(typingctx, acc, ai, x, col, indices, data, lo, hi, b):
        if not (isinstance(acc, types.Array) and isinstance(x, types.Array) and isinstance(data, types.Array)
                and acc.dtype == x.dtype == data.dtype and isinstance(indices, types.Array)):
            return None

        def codegen(context, builder, signature, args):
            tys = signature.args
            ftype, vtype = _vector_type(context, tys[0].dtype)
            item = context.get_abi_sizeof(ftype)
            lanes = vtype.count
            i64 = ir.IntType(64)

            def to64(i):
                return context.cast(builder, args[i], tys[i], types.int64)

            ai_, col_, lo_, hi_, b_ = (to64(i) for i in (1, 3, 6, 7, 8))
            x_base = builder.ptrtoint(context.make_array(tys[2])(context, builder, args[2]).data, i64)
            ind_ptr = context.make_array(tys[4])(context, builder, args[4]).data
            dat_ptr = context.make_array(tys[5])(context, builder, args[5]).data
            fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vtype, [vtype] * 3),
                                                 f"llvm.fma.v{lanes}f{8 * item}")
            start = builder.block
            head = builder.append_basic_block("row_sum.head")
            body = builder.append_basic_block("row_sum.body")
            done = builder.append_basic_block("row_sum.done")
            builder.branch(head)
            builder.position_at_end(head)
            e = builder.phi(i64)
            sums = [builder.phi(vtype) for _ in range(k)]
            e.add_incoming(lo_, start)
            for s in sums:
                s.add_incoming(ir.Constant(vtype, None), start)
            builder.cbranch(builder.icmp_signed("<", e, hi_), body, done)
            builder.position_at_end(body)
            u = context.cast(builder, builder.load(builder.gep(ind_ptr, [e])), tys[4].dtype, types.int64)
            w = builder.load(builder.gep(dat_ptr, [e]))
            wv = builder.insert_element(ir.Constant(vtype, ir.Undefined), w, ir.Constant(ir.IntType(32), 0))
            wv = builder.shuffle_vector(wv, ir.Constant(vtype, ir.Undefined),
                                        ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes))
            row = builder.add(x_base, builder.mul(builder.add(builder.mul(u, b_), col_), ir.Constant(i64, item)))
            new = []
            for line, s in enumerate(sums):
                p = builder.inttoptr(builder.add(row, ir.Constant(i64, line * _LINE_BYTES)), vtype.as_pointer())
                new.append(builder.call(fma, [wv, builder.load(p, align=item), s]))
            end = builder.block
            e.add_incoming(builder.add(e, ir.Constant(i64, 1)), end)
            for s, value in zip(sums, new):
                s.add_incoming(value, end)
            builder.branch(head)
            builder.position_at_end(done)
            dst = _element_address(context, builder, tys[0], args[0], ai_, types.int64)
            for line, s in enumerate(sums):
                p = builder.inttoptr(builder.add(dst, ir.Constant(i64, line * _LINE_BYTES)), vtype.as_pointer())
                builder.store(s, p, align=item)
            return context.get_dummy_value()

        return types.void(acc, ai, x, col, indices, data, lo, hi, b), codegen

    return row_sum


_row_sum1, _row_sum2, _row_sum3, _row_sum4 = (_make_row_sum(k) for k in (1, 2, 3, 4))

#: Bytes of output rows the step kernel accumulates (in L1) before writing them out.
_STEP_STAGE_BYTES = 4096


def _step_rows_python(indptr, indices, data, x, out, n_chunks, bad, stream):  # pragma: no cover - jitted
    """Rows of ``out = M @ x`` (CSR times dense), chunk ``c`` of the rows per loop trip.

    Rows are computed a group at a time (``_STEP_STAGE_BYTES`` of output) into a small
    buffer ``stage`` that stays in L1. Row ``v`` is summed four 64-byte lines of
    columns at a time in vector registers (:func:`_make_row_sum`): each stored entry
    ``(v, u)`` adds ``data * x[u, cols]`` with a fused multiply-add, in entry order;
    columns past the last whole line are summed one by one, in the same order. The
    group is then copied to ``out`` line by line; with ``stream`` the aligned whole
    lines go out as non-temporal stores (``vmovntpd``: no read of the old line, no
    cache pollution; ``out``'s address must be a multiple of the itemsize) and the
    partial lines at the group's ends as ordinary stores. ``bad[c]`` is set when a
    value of chunk ``c`` came out NaN or infinite (``z * 0`` is NaN exactly then),
    tested on the lines as they are copied, so checking the inputs costs no extra pass.
    """
    n = out.shape[0]
    b = out.shape[1]
    item = out.itemsize
    line = 64 // item  # columns per 64-byte line
    n_lines = b // line
    b_lines = n_lines * line  # columns summed by the vector helpers
    xf = x.reshape(-1)
    of = out.reshape(-1)
    base = _data_address(out)
    group = max(1, 4096 // max(1, b * item))  # rows per stage (_STEP_STAGE_BYTES)
    chunk = (n + n_chunks - 1) // n_chunks
    for c in numba.prange(n_chunks):
        flag = False
        stage = np.empty(group * b, dtype=out.dtype)
        zero = np.zeros(1, dtype=out.dtype)[0]
        r1 = min((c + 1) * chunk, n)
        g0 = c * chunk
        while g0 < r1:
            g1 = min(g0 + group, r1)
            for v in range(g0, g1):
                so = (v - g0) * b
                lo = indptr[v]
                hi = indptr[v + 1]
                col = 0
                while col + 4 * line <= b_lines:
                    _row_sum4(stage, so + col, xf, col, indices, data, lo, hi, b)
                    col += 4 * line
                rest = (b_lines - col) // line
                if rest == 3:
                    _row_sum3(stage, so + col, xf, col, indices, data, lo, hi, b)
                elif rest == 2:
                    _row_sum2(stage, so + col, xf, col, indices, data, lo, hi, b)
                elif rest == 1:
                    _row_sum1(stage, so + col, xf, col, indices, data, lo, hi, b)
                for j in range(b_lines, b):
                    s = zero
                    for e in range(lo, hi):
                        s += data[e] * xf[indices[e] * b + j]
                    stage[so + j] = s
            m = (g1 - g0) * b  # values of this group
            f0 = g0 * b  # their first flat index in out
            h = 0  # values before the first 64-byte aligned address of out (stream only)
            if stream:
                h = min(m, (line - ((base + f0 * item) % 64) // item) % line)
            for j in range(h):
                z = stage[j]
                of[f0 + j] = z
                z = z * 0
                flag |= z != z
            j = h
            if stream:
                while j + line <= m:
                    flag |= _stream_line(of, f0 + j, stage, j)
                    j += line
            else:
                while j + line <= m:
                    flag |= _store_line(of, f0 + j, stage, j)
                    j += line
            for t in range(j, m):
                z = stage[t]
                of[f0 + t] = z
                z = z * 0
                flag |= z != z
            g0 = g1
        if stream:
            _store_fence()
        bad[c] = flag

# "contract" only (fused multiply-add): the NaN test above needs IEEE comparisons
_step_rows_serial = numba.njit(cache=True, fastmath={"contract"}, boundscheck=False)(_step_rows_python)
_step_rows_parallel = numba.njit(cache=True, fastmath={"contract"}, boundscheck=False, parallel=True)(_step_rows_python)

#: Steps with at least this many multiply-adds (stored entries x columns) use the
#: multi-threaded kernel (see :data:`RW_PARALLEL_MIN_NODES` for why small ones do not).
STEP_PARALLEL_MIN_WORK = 1 << 22

#: Outputs of at least this many bytes are written with non-temporal (streaming) stores.
#: Below it the output is likely to stay in cache for the next step, where streaming
#: stores would push it out to memory.
STEP_STREAM_MIN_BYTES = 1 << 25


def _step_numba(indptr, indices, data, x, out, parallel: bool | None = None, stream: bool | None = None) -> bool:
    """Run the numba kernel; return True when a row came out non-finite.

    ``parallel`` / ``stream`` default to the size rules :data:`STEP_PARALLEL_MIN_WORK`
    and :data:`STEP_STREAM_MIN_BYTES`; ``stream`` is off when ``out``'s address is not
    a multiple of its itemsize (the kernel's alignment arithmetic needs that).
    """
    if parallel is None:
        parallel = indices.shape[0] * x.shape[1] >= STEP_PARALLEL_MIN_WORK
    if stream is None:
        stream = out.nbytes >= STEP_STREAM_MIN_BYTES
    stream = bool(stream) and out.ctypes.data % out.itemsize == 0
    n = out.shape[0]
    n_chunks = max(1, min(n, 16 * numba.get_num_threads())) if parallel else 1
    bad = np.zeros(n_chunks, dtype=np.bool_)
    kernel = _step_rows_parallel if parallel else _step_rows_serial
    kernel(indptr, indices, data, x, out, n_chunks, bad, stream)
    return bool(bad.any())


def _step_cupy(op, x, out):
    """cuSPARSE CSR times dense (``cupyx.scipy.sparse``), written into ``out``."""
    import cupyx.scipy.sparse as csp

    m = op if csp.issparse(op) else csp.csr_matrix(op)
    out[...] = m @ x
    return out


def _check_operator(operator: Any, n: int, dtype: np.dtype, on_gpu: bool):
    """A CSR form of ``operator`` with values of ``dtype`` (no copy when it already is one)."""
    if on_gpu:
        import cupyx.scipy.sparse as csp

        if csp.issparse(operator):
            shape = operator.shape
            if shape[0] != shape[1] or shape[0] != n:
                raise ValueError(f"operator must have shape (n, n) = ({n}, {n}) to match x; got {shape}")
            m = operator.tocsr() if operator.format != "csr" else operator
            return m if m.dtype == dtype else m.astype(dtype)
    if not sp.issparse(operator):
        raise TypeError(
            f"operator must be a scipy.sparse matrix (n, n), e.g. from random_walk_operator; got {type(operator).__name__}"
        )
    if operator.ndim != 2 or operator.shape[0] != operator.shape[1]:
        raise ValueError(f"operator must be square (n, n); got shape {operator.shape}")
    if operator.shape[0] != n:
        raise ValueError(f"operator has {operator.shape[0]} rows but x has {n} (x must have shape (n,) or (n, B))")
    if operator.dtype.kind not in "fiub":
        raise TypeError(f"operator must have real values; got {operator.dtype}")
    m = operator if operator.format == "csr" else operator.tocsr()
    if m.dtype != dtype:
        m = m.astype(dtype)
    if on_gpu:
        import cupyx.scipy.sparse as csp

        return csp.csr_matrix(m)
    return m


_STEP_KERNELS = {"numpy": _step_numpy, "numba": _step_numba, "cupy": _step_cupy}


def random_walk_step(operator: Any, x: Any, *, out: Any = None, backend: str = "auto") -> Any:
    """One step of ``B`` random walks at once: ``out = operator @ x`` (sparse CSR times dense).

    With ``operator = random_walk_operator(adjacency)`` (``P^T``) and the columns of
    ``x`` holding ``B`` distributions over the nodes, the result holds the
    distributions one step later; with ``operator = P`` it is one step of the
    backward (expectation) recursion. Any square sparse matrix is accepted.

    The numba kernel is a streaming pass: the CSR arrays are read once, ``out`` is
    written once row by row, and row ``v`` gathers the rows ``x[u]`` of its
    entries, summing them (fused multiply-adds, in entry order) in AVX vector
    registers. Outputs of at least :data:`STEP_STREAM_MIN_BYTES` are written with
    non-temporal stores (on x86), which skip reading each output line before
    overwriting it and leave the caches to ``x``. When nodes are numbered so that
    neighbours have nearby labels (a mesh, a spatial sort, a reverse Cuthill-McKee
    order) the gathered rows are still in cache from the previous rows and ``x``
    is read from memory about once; a random labelling makes every gathered row a
    cache miss.

    Parameters
    ----------
    operator : scipy.sparse matrix (n, n)
        Converted to CSR with ``x``'s dtype when it is not already that (a copy
        per call: build it in the right form once). For CuPy input a
        ``cupyx.scipy.sparse`` matrix is used as is (a SciPy one is copied to the
        GPU on every call).
    x : array of shape (n,) or (n, B), float32 or float64
        NumPy, CuPy or torch. Non-contiguous input is copied to C order first.
    out : array of shape like ``x``, optional
        Same kind and dtype as ``x``, C-contiguous, not overlapping ``x``; the
        result is written there (no fresh allocation: at large sizes the page
        faults of a new output cost about as much as the step itself).
    backend : {"auto", "numpy", "numba", "cupy"}, default "auto"
        ``"numpy"``: gathered blocks summed with ``np.add.reduceat`` (reference).
        ``"numba"``: one pass over the CSR rows, parallel over row blocks for
        large inputs, streaming stores for large outputs. ``"cupy"``: cuSPARSE through ``cupyx.scipy.sparse``.

    Returns
    -------
    array of the same shape, dtype and kind as ``x`` (``out`` when given).

    Raises
    ------
    ValueError
        Mismatched shapes, overlapping ``out``, or a NaN/infinity in ``x`` or in
        ``operator`` that reaches the result (entries never read are not checked).
    TypeError
        ``x`` not float32/float64, ``operator`` not sparse.

    Example
    -------
    >>> import numpy as np
    >>> from companion.data import cycle_graph
    >>> from companion.positional.graph_pe import random_walk_operator, random_walk_step
    >>> op = random_walk_operator(cycle_graph(4))
    >>> x = np.eye(4)[:, :1]                      # one walker, at node 0
    >>> random_walk_step(op, random_walk_step(op, x)).ravel().tolist()
    [0.5, 0.0, 0.5, 0.0]
    """
    kind = check_array(x, "x", ndim=(1, 2), dtype_kind="f", finite=False)
    dtype = _float_dtype(x)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"x must be float32 or float64; got {x.dtype}")
    name, kernel = dispatch(_STEP_KERNELS, backend, x)
    on_gpu = name == "cupy"
    n = x.shape[0]
    m = _check_operator(operator, n, dtype, on_gpu)
    if out is not None:
        _check_out(out, x, kind)
    xb = for_backend(x, name)
    xp = array_module(xb)
    x2 = xp.ascontiguousarray(xb.reshape(n, -1))  # (n, B)
    # compute straight into out when the backend sees out's own memory
    direct = out is not None and is_on_gpu(out) == on_gpu
    o2 = for_backend(out, name).reshape(n, -1) if direct else xp.empty_like(x2)  # (n, B)
    if on_gpu:
        kernel(m, x2, o2)
        bad = not bool(xp.isfinite(o2).all())
    elif name == "numba":
        bad = kernel(m.indptr, m.indices, m.data, x2, o2)
    else:
        kernel(m.indptr, m.indices, m.data, x2, o2)
        bad = not bool(np.isfinite(o2).all())
    if bad:
        raise ValueError("x and operator must contain only finite values; the result has NaN or infinity")
    if out is None:
        return to_kind(o2.reshape(x.shape), kind, like=x)
    if not direct:  # e.g. NumPy out with backend="cupy"
        result = to_kind(o2.reshape(x.shape), kind, like=out)
        if kind == "torch":
            out.copy_(result)
        else:
            out[...] = result
    return out


def _float_dtype(x: Any) -> np.dtype | None:
    """NumPy dtype of an array or tensor (None for dtypes NumPy lacks, e.g. bfloat16)."""
    try:
        return np.dtype(str(x.dtype).replace("torch.", ""))
    except TypeError:
        return None


def _check_out(out: Any, x: Any, kind: str) -> None:
    """``out`` must match ``x`` (kind, shape, dtype), be C-contiguous and not overlap it."""
    try:
        out_kind = array_kind(out)
    except TypeError:
        raise TypeError(f"out must be an array of the same kind as x ({kind}); got {type(out).__name__}") from None
    if out_kind != kind:
        raise TypeError(f"out must be the same kind of array as x ({kind}); got {out_kind}")
    if tuple(out.shape) != tuple(x.shape) or str(out.dtype) != str(x.dtype):
        raise ValueError(
            f"out must have x's shape {tuple(x.shape)} and dtype {x.dtype}; got {tuple(out.shape)}, {out.dtype}"
        )
    contiguous = out.is_contiguous() if kind == "torch" else out.flags.c_contiguous
    if not contiguous:
        raise ValueError("out must be C-contiguous")
    if is_on_gpu(out) != is_on_gpu(x):
        return  # different devices: no shared memory
    if is_on_gpu(out):
        overlap = _gpu_overlap(for_backend(out, "cupy"), for_backend(x, "cupy"))
    else:
        overlap = np.may_share_memory(to_numpy(out), to_numpy(x))
    if overlap:
        raise ValueError("out must not overlap x (rows of x are read after other rows of out are written)")


def _gpu_overlap(a, b) -> bool:
    """Whether two CuPy arrays' memory ranges intersect (conservative bounds check)."""
    a0, b0 = a.data.ptr, b.data.ptr
    return a0 < b0 + b.nbytes and b0 < a0 + a.nbytes


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

"""Graph and coordinate positional encodings beside their peers (row P3 of shared/BENCHMARKS.md).

``random_walk_pe(adj, k=16)``, return probabilities ``(P^t)_ii`` for t = 1..16, on 2-D grid graphs:

* ``[large graph]``: a 100 x 100 grid (10,000 nodes; 14 x 14 = 196 in tiny mode):
  companion NumPy (one-hot blocks through sparse ``P^T`` products) and companion
  numba (per-node walk restricted to its t-hop ball). No dense peer: P^t is an
  (n, n) dense matrix. The size is below the ~20,000 nodes of the brief because the
  NumPy reference costs ~19 s per call at 141 x 141 on the 2-core machine (its cost
  grows as n^2), which would not fit the module's time budget.
* ``[dense-feasible graph]``: a 45 x 45 grid (2,025 nodes; 8 x 8 in tiny mode), where
  the code a user would write, dense float32 torch matrix powers ``M <- M @ P`` keeping
  ``diag(M)`` (what PyG's ``AddRandomWalkPE`` does for small graphs), is still
  feasible; ``torch_geometric.transforms.AddRandomWalkPE`` itself is added when
  ``torch_geometric`` is installed (it is a row note otherwise).

Both are checked against a float64 reference written from the definition (row
distributions pushed ``x <- x P`` from one-hot starts) on every node in tiny mode
and on 512 evenly spaced start nodes of the large graph.

``fourier_features(coords, frequencies=B)`` with F = 256 Gaussian frequencies (scale
10) on 65,536 float32 2-D coordinates (1,024 in tiny mode): companion NumPy,
companion numba, and the torch code a user would write,
``torch.cat([cos(2 pi x B^T), sin(2 pi x B^T)], -1)`` in float32. All use the same B.
The brief's 262,144 coordinates cost ~10 s per NumPy call here, too slow for the budget.

``ollivier_ricci_curvature(adj, method="sinkhorn")`` with the NumPy (padded batch)
and numba (parallel over edges) backends on a Watts-Strogatz graph with 2,000 edges
(100 in tiny mode), checked against ``method="exact"`` (one HiGHS LP per edge,
~3.5 s for 2,000 edges) at both sizes, tolerance 1e-3.

``random_walk_step(P^T, X)`` (``companion.positional.graph_pe``), one step of B = 32
walker distributions, ``X <- P^T X`` with the CSR operator of
``random_walk_operator``, on a random geometric graph (uniform points in the unit
square, mean degree 10) of 2^20 nodes (2,000 in tiny mode): X and the output are
256 MB each in float64, far beyond the caches. Rows: local node order (strips of the
square, neighbours within ~2 strips of labels) in float64 and float32, and the same
graph under a random relabelling in float64, which turns every gathered row of X
into a cache miss. Companion NumPy (gather + ``np.add.reduceat``), companion numba
into a preallocated output (ours) and into a fresh one, ``scipy.sparse`` CSR @ dense
(one thread) and ``torch.sparse.mm`` on a CSR tensor (user code). All are checked
against a float64 SciPy product (atol 32 eps max|ref|).

``laplacian_pe(adj, k=8)`` on the largest component (1,999 nodes) of a random
geometric graph (2,000 points, seed 1; ~280 nodes in tiny mode), beside
``torch_geometric.transforms.AddLaplacianEigenvectorPE`` (eigsh ``which='SA'``, float32,
random signs). Eigenvectors have no sign, so each output is brought to companion's
sign convention (largest-magnitude entry positive, O(n k)) before the comparison;
the check is against a dense float64 ``eigh`` (1e-8 for ours, 1e-4 for the float32
peer). The graph's smallest eigenvalue gap (1.2e-4) is recorded in the params: a
repeated eigenvalue would make the comparison meaningless. Dense ``torch.linalg.eigh``
(what a user might write) is not a row: it took 2-24 s per call at 2,000 nodes here.

In full mode the slow kernels skip the extra warm-up call: each implementation's
correctness call, made just before timing, already warmed it (and compiled numba).

Accounting (``bytes_min`` / ``flops_min``):

* random walk: bytes = the CSR matrix read once (8-byte value + 4-byte index per
  non-zero, 8 bytes per row pointer) + the (n, k) float64 output written once;
  flops = 2 x the multiply-adds of the exact t-hop-ball propagation (counted exactly
  per graph). That is the work of the best exact method we know, not a bound on every
  algorithm (a Monte-Carlo estimate does less).
* random-walk step: bytes = the CSR arrays read once (row pointers, 4-byte indices,
  values) + X read once + the output written once; flops = 2 nnz B. Gathered rows of
  X read more than once from memory are not counted (the random-order row pays them),
  nor is the read-for-ownership of output lines written with ordinary stores (the
  numba kernel writes large outputs with non-temporal stores, which skip it; SciPy
  and torch pay it, a third more traffic than ``bytes_min`` in float64 local order).
* Laplacian PE: bytes = the graph read + the (n, k) output written; flops = 0 (no
  useful lower bound for an iterative eigensolver): frac_ceiling is meaningless there.
* Fourier: bytes = coords read + B read + the (n, 2F) float32 output written;
  flops = the phase ``2 pi x.B`` (2 d + 1 per entry); cos and sin are not counted.
* curvature: bytes = the CSR graph read + the (E, 2) int64 edges and (E,) float64
  curvatures written; flops = one pass over every edge's p x q cost matrix (2 p q):
  the least any solver must touch; Sinkhorn iterates over it many times.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import scipy.sparse as sp

import harness as H
from bench_positional import EPS32, _torch_call, load_positional, numba_threads

SIZES = {
    "full": {"rw_large": 100, "rw_dense": 45, "rw_sample": 512, "fourier": 65_536, "curv": (1000, 4, 0.1),
             "step": 1 << 20, "lap": 2000},
    "tiny": {"rw_large": 14, "rw_dense": 8, "rw_sample": None, "fourier": 1_024, "curv": (50, 4, 0.1),
             "step": 2000, "lap": 300},
}
STEP_B = 32
STEP_DEGREE = 10.0
LAP_K = 8
K = 16
N_FREQ = 256
SCALE = 10.0
CURV_TOL = 1e-3


# ---------------------------------------------------------------- references


def transition64(a: sp.csr_matrix) -> sp.csr_matrix:
    deg = np.asarray(a.sum(axis=1), dtype=np.float64).ravel()
    inv = np.where(deg > 0, 1.0 / np.where(deg > 0, deg, 1.0), 0.0)
    return sp.csr_matrix(sp.diags(inv) @ a.astype(np.float64))


def rw_reference64(a: sp.csr_matrix, k: int, starts: np.ndarray, block: int = 256) -> np.ndarray:
    """Float64 ``(P^t)_{ss}`` for the start nodes ``s``: rows ``e_s^T P^t`` pushed one step at a time."""
    p = transition64(a)
    pt = sp.csr_matrix(p.T)
    out = np.empty((starts.size, k))
    for lo in range(0, starts.size, block):
        s = starts[lo : lo + block]
        cols = np.arange(s.size)
        x = np.zeros((a.shape[0], s.size))
        x[s, cols] = 1.0
        for t in range(k):
            x = pt @ x  # column j: (e_s^T P^{t+1})^T
            out[lo + cols, t] = x[s, cols]
    return out


def rw_ball_work(a: sp.csr_matrix, k: int) -> int:
    """Multiply-adds of the exact ball propagation: sum over starts s and steps t of the
    degrees of the nodes reachable from s by a walk of exactly t steps."""
    n = a.shape[0]
    pattern = sp.csr_matrix((np.ones(a.nnz, dtype=np.float32), a.indices, a.indptr), shape=a.shape)
    deg = np.diff(a.indptr).astype(np.float64)
    total = 0.0
    block = 1024
    for lo in range(0, n, block):
        s = np.arange(lo, min(lo + block, n))
        x = np.zeros((n, s.size), dtype=np.float32)
        x[s, np.arange(s.size)] = 1.0
        for _ in range(k):
            total += float((deg @ (x > 0)).sum())
            x = (pattern @ x > 0).astype(np.float32)
    return int(total)


def fourier_reference64(x: np.ndarray, B: np.ndarray) -> np.ndarray:
    phase = 2.0 * math.pi * (x.astype(np.float64) @ B.T)
    return np.concatenate([np.cos(phase), np.sin(phase)], axis=1)


def torch_fourier(xt, Bt):
    """The torch code a user would write (float32)."""
    import torch

    phase = 2 * math.pi * (xt @ Bt.T)
    return torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)


def torch_rw_dense(A, k: int):
    """The torch code a user would write: dense P = D^-1 A, then M <- M @ P keeping diag(M)."""
    import torch

    deg = A.sum(dim=1, keepdim=True)
    Pm = A / deg.clamp(min=1)
    M = Pm
    diags = [M.diagonal()]
    for _ in range(k - 1):
        M = M @ Pm
        diags.append(M.diagonal())
    return torch.stack(diags, dim=-1)


def pyg_rwpe():
    """``(fn_factory, note)``: PyG's AddRandomWalkPE when installed, else ``(None, note)``."""
    try:
        import torch_geometric
        from torch_geometric.data import Data
        from torch_geometric.transforms import AddRandomWalkPE
    except ImportError:
        return None, "torch_geometric not installed: no AddRandomWalkPE row"

    def factory(a: sp.csr_matrix, k: int):
        import torch

        coo = a.tocoo()
        ei = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
        transform = AddRandomWalkPE(walk_length=k, attr_name="random_walk_pe")

        def call():
            return transform(Data(edge_index=ei, num_nodes=a.shape[0])).random_walk_pe

        return call

    return factory, f"torch_geometric {torch_geometric.__version__}"


# ------------------------------------------------------------------- benches


def _rw_threads(P, n_nodes: int, n: int) -> str:
    from companion.positional import graph_pe

    if n_nodes >= graph_pe.RW_PARALLEL_MIN_NODES:
        return numba_threads(P, "graph_pe._rw_ball_parallel", n)
    return f"1 (numba serial below {graph_pe.RW_PARALLEL_MIN_NODES} nodes)"


def _heavy(ctx: H.Context) -> H.Context:
    return ctx if ctx.tiny else dataclasses.replace(ctx, warmup=0)


def bench_random_walk(ctx: H.Context, P, source: str) -> list[H.Row]:
    import torch
    from companion.data.graph_families import grid_graph

    sizes = SIZES["tiny" if ctx.tiny else "full"]
    n = ctx.threads
    rows: list[H.Row] = []
    factory, pyg_note = pyg_rwpe()
    tol = {"atol": 1e-9, "rtol": 1e-9}
    peer_tol = {"atol": 64 * EPS32, "rtol": 0.0}  # float32 dense powers: probabilities <= 1
    for label, side in (("large graph", sizes["rw_large"]), ("dense-feasible graph", sizes["rw_dense"])):
        a = sp.csr_matrix(grid_graph(side, side), dtype=np.float64)
        nn = a.shape[0]
        sample = sizes["rw_sample"] if label == "large graph" else None
        starts = np.arange(nn) if sample is None or sample >= nn else np.linspace(0, nn - 1, sample).astype(np.int64)
        ref = rw_reference64(a, K, starts)

        def check64(out, ref=ref, starts=starts):
            o = H._as_numpy(out)
            # float64 outputs (ours) must match to 1e-9; float32 peers to float32 rounding
            t = tol if o.dtype == np.float64 else peer_tol
            return H.compare(o[starts], ref, against="float64 reference", **t)

        impls = [
            H.Impl("companion numpy", "reference", lambda a=a: P.random_walk_pe(a, K, backend="numpy"),
                   threads="1 (scipy sparse products)", source=source,
                   note="one-hot blocks of 256 start nodes through sparse P^T products"),
            H.Impl("companion numba", "companion", lambda a=a: P.random_walk_pe(a, K, backend="numba"),
                   threads=_rw_threads(P, nn, n), source=source,
                   note="per start node, the walk restricted to its t-hop ball"),
        ]
        if label == "dense-feasible graph":
            At = torch.from_numpy(a.toarray().astype(np.float32))
            impls.append(H.Impl(
                "torch dense matrix powers (user code)", "peer", _torch_call(lambda At=At: torch_rw_dense(At, K)),
                threads=f"{torch.get_num_threads()} (torch intra-op)", convention="float32, P = D^-1 A dense",
                source="eager torch", note=f"(k-1) dense n^3 products; only feasible for small n. {pyg_note}"))
            if factory is not None:
                impls.append(H.Impl(
                    "torch_geometric AddRandomWalkPE", "peer", _torch_call(factory(a, K)),
                    threads=f"{torch.get_num_threads()} (torch intra-op)", convention="float32",
                    source=pyg_note, note="transform applied to a fresh Data per call"))
        nnz = a.nnz
        rows += H.bench_kernel(
            _heavy(ctx) if label == "large graph" else ctx,
            kernel=f"random_walk_pe[{label}]",
            params={"graph": f"grid {side}x{side}", "n_nodes": nn, "nnz": nnz, "k": K, "dtype": "float64",
                    "checked_start_nodes": int(starts.size)},
            impls=impls,
            ours="companion numba",
            reference="companion numpy",
            check64=check64,
            peer_tol=peer_tol,
            bytes_min=12 * nnz + 8 * (nn + 1) + 8 * nn * K,
            flops_min=2 * rw_ball_work(a, K),
        )
        del ref
    return rows


# ------------------------------------------------------------ random-walk step


def geometric_graph(n: int, mean_degree: float, *, order: str, seed: int = 0) -> sp.csr_matrix:
    """Random geometric graph: ``n`` uniform points in the unit square, edges between
    points closer than ``r = sqrt(mean_degree / (pi n))``.

    ``order="local"`` numbers the points strip by strip (strips of height ``r``,
    sorted by x inside a strip), so every neighbour of node ``v`` has a label within
    about two strips (``~2 n r`` labels) of ``v``: the order a mesh or a spatial sort
    gives. ``order="random"`` relabels the same graph by a random permutation.
    """
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    pts = rng.random((n, 2))
    r = math.sqrt(mean_degree / (math.pi * n))
    pts = pts[np.argsort(np.floor(pts[:, 1] / r) * 2.0 + pts[:, 0], kind="stable")]
    if order == "random":
        pts = pts[rng.permutation(n)]
    elif order != "local":
        raise ValueError(order)
    pairs = cKDTree(pts).query_pairs(r, output_type="ndarray")
    i, j = pairs[:, 0], pairs[:, 1]
    a = sp.csr_matrix((np.ones(2 * i.size), (np.r_[i, j], np.r_[j, i])), shape=(n, n))
    a.sum_duplicates()
    a.sort_indices()
    return a


def torch_csr(op: sp.csr_matrix):
    """The operator as a torch sparse CSR tensor (shares the SciPy arrays)."""
    import torch

    return torch.sparse_csr_tensor(torch.from_numpy(op.indptr), torch.from_numpy(op.indices),
                                   torch.from_numpy(op.data), size=op.shape)


def bench_random_walk_step(ctx: H.Context, P, source: str) -> list[H.Row]:
    """``random_walk_step(P^T, X)``: B walker distributions moved one step (CSR times dense)."""
    import warnings

    import torch
    from companion.positional import graph_pe

    n_nodes = SIZES["tiny" if ctx.tiny else "full"]["step"]
    nt = ctx.threads
    rows: list[H.Row] = []
    graphs = {}
    for order, dtype in (("local", np.float64), ("local", np.float32), ("random", np.float64)):
        if order not in graphs:
            graphs[order] = geometric_graph(n_nodes, STEP_DEGREE, order=order)
        a = graphs[order]
        op = graph_pe.random_walk_operator(a, dtype=dtype)
        x = np.random.default_rng(1).random((n_nodes, STEP_B)).astype(dtype)  # (n, B)
        buffer = np.empty_like(x)
        buffer[...] = 0  # touched outside the timing
        ref = (graph_pe.random_walk_operator(a) @ x.astype(np.float64))  # float64 reference
        eps = EPS32 if dtype == np.float32 else np.finfo(np.float64).eps
        tol = {"atol": 32 * eps * float(np.abs(ref).max()), "rtol": 0.0}

        def check64(out, ref=ref, tol=tol):
            return H.compare(out, ref, against="float64 scipy product", **tol)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch: "sparse CSR support is in beta"
            opt = torch_csr(op)
        xt = torch.from_numpy(x)
        impls = [
            H.Impl("companion numpy", "reference", lambda op=op, x=x: graph_pe.random_walk_step(op, x, backend="numpy"),
                   threads="1 (NumPy)", source=source, note="blocks of 2^16 entries: gather, multiply, np.add.reduceat"),
            H.Impl("companion numba (out=)", "companion",
                   lambda op=op, x=x, b=buffer: graph_pe.random_walk_step(op, x, backend="numba", out=b),
                   threads=numba_threads(P, "graph_pe._step_rows_parallel", nt), source=source,
                   note="one pass over the CSR rows into a preallocated output; rows summed in AVX registers, "
                        "non-temporal stores for outputs >= 32 MiB"),
            H.Impl("companion numba", "companion", lambda op=op, x=x: graph_pe.random_walk_step(op, x, backend="numba"),
                   threads=numba_threads(P, "graph_pe._step_rows_parallel", nt), source=source,
                   note="fresh output array (its page faults are timed)"),
            H.Impl("scipy.sparse csr @ dense", "peer", lambda op=op, x=x: op @ x,
                   threads="1 (scipy sparsetools)", source="scipy.sparse"),
            H.Impl("torch.sparse.mm (user code)", "peer", _torch_call(lambda opt=opt, xt=xt: torch.sparse.mm(opt, xt)),
                   threads=f"{torch.get_num_threads()} (torch intra-op)", source="eager torch, sparse CSR tensor",
                   convention="int32 CSR indices, same values"),
        ]
        rows += H.bench_kernel(
            _heavy(ctx),
            kernel=f"random_walk_step[{order} order, {np.dtype(dtype).name}, B={STEP_B}]",
            params={"graph": f"random geometric, mean degree {STEP_DEGREE:g}, {order} node order",
                    "n_nodes": n_nodes, "nnz": int(op.nnz), "B": STEP_B, "dtype": np.dtype(dtype).name,
                    "x_bytes": int(x.nbytes), "csr_bytes": int(op.indptr.nbytes + op.indices.nbytes + op.data.nbytes)},
            impls=impls,
            ours="companion numba (out=)",
            reference="companion numpy",
            check64=check64,
            peer_tol=tol,
            bytes_min=int(op.indptr.nbytes + op.indices.nbytes + op.data.nbytes + 2 * x.nbytes),
            flops_min=2 * int(op.nnz) * STEP_B,
        )
        del ref, buffer
    return rows


# ------------------------------------------------------------- Laplacian PE


def _sign_fixed(pe) -> np.ndarray:
    """Columns flipped so that each one's entry of largest magnitude is positive (companion's convention)."""
    from companion.positional.graph_pe import _fix_signs

    return _fix_signs(np.asarray(H._as_numpy(pe), dtype=np.float64))


def bench_laplacian_pe(ctx: H.Context, P, source: str) -> list[H.Row]:
    """``laplacian_pe(adj, k=8)`` beside PyG's AddLaplacianEigenvectorPE (signs compared up to a flip)."""
    import scipy.linalg
    import scipy.sparse.csgraph as csgraph
    import torch

    n0 = SIZES["tiny" if ctx.tiny else "full"]["lap"]
    a = geometric_graph(n0, STEP_DEGREE, order="local", seed=1)
    _, lab = csgraph.connected_components(a, directed=False)
    keep = np.flatnonzero(lab == np.bincount(lab).argmax())  # largest component: one zero eigenvalue
    a = sp.csr_matrix(a[keep][:, keep])
    n = a.shape[0]
    lap = P.laplacian(a).toarray()
    vals, vecs = scipy.linalg.eigh(lap, subset_by_index=[0, LAP_K])
    ref = _sign_fixed(vecs[:, 1:])
    tol = {"atol": 1e-8, "rtol": 0.0}
    peer_tol = {"atol": 1e-4, "rtol": 0.0}  # float32 output of PyG; eigsh 'SA' convergence

    def check64(out):
        o = _sign_fixed(out)
        t = tol if H._as_numpy(out).dtype == np.float64 else peer_tol
        return H.compare(o, ref, against="float64 dense eigh, signs fixed", **t)

    coo = a.tocoo()
    ei = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    impls = [
        H.Impl("companion", "companion", lambda: P.laplacian_pe(a, LAP_K), threads="1 (scipy ARPACK + SuperLU)",
               source=source, note="shift-invert eigsh above 1,024 nodes, dense eigh below; signs fixed"),
    ]
    try:
        import torch_geometric
        from torch_geometric.data import Data
        from torch_geometric.transforms import AddLaplacianEigenvectorPE

        transform = AddLaplacianEigenvectorPE(LAP_K, attr_name="laplacian_pe", is_undirected=True)
        impls.append(H.Impl(
            "torch_geometric AddLaplacianEigenvectorPE", "peer",
            _torch_call(lambda: _sign_fixed(transform(Data(edge_index=ei, num_nodes=n)).laplacian_pe).astype(np.float32)),
            threads="1 (scipy ARPACK)", convention="float32 output, random signs (fixed like ours after the call)",
            source=f"torch_geometric {torch_geometric.__version__}",
            note="eigsh(which='SA') on the sym-normalized Laplacian, fresh Data per call"))
    except ImportError:
        pass
    return H.bench_kernel(
        _heavy(ctx),
        kernel=f"laplacian_pe[k={LAP_K}]",
        params={"graph": "random geometric (mean degree 10, seed 1), largest component", "n_nodes": n,
                "nnz": int(a.nnz), "k": LAP_K, "normalized": True, "min_eigen_gap": float(np.diff(vals).min())},
        impls=impls,
        ours="companion",
        reference=None,
        check64=check64,
        peer_tol=peer_tol,
        bytes_min=12 * int(a.nnz) + 8 * (n + 1) + 8 * n * LAP_K,
        flops_min=0,
    )


def bench_fourier(ctx: H.Context, P, source: str) -> list[H.Row]:
    import torch

    npts = SIZES["tiny" if ctx.tiny else "full"]["fourier"]
    n = ctx.threads
    x = np.random.default_rng(0).random((npts, 2), dtype=np.float32)
    B = P.fourier_frequencies(2, N_FREQ, scale=SCALE, rng=0)
    xt, Bt = torch.from_numpy(x), torch.from_numpy(B.astype(np.float32))
    max_phase = 2 * math.pi * float(np.abs(x.astype(np.float64) @ B.T).max())
    # float32 phases carry a relative error of a few ulps of the largest phase
    tol = {"atol": 16 * EPS32 * max_phase + 4 * EPS32, "rtol": 0.0}

    def check64(out):
        o = H._as_numpy(out)
        step = 8192
        parts = [H.compare(o[lo : lo + step], fourier_reference64(x[lo : lo + step], B), **tol)
                 for lo in range(0, npts, step)]
        return H.merge_checks(parts, "float64 reference")

    impls = [
        H.Impl("companion numpy", "reference", lambda: P.fourier_features(x, frequencies=B, backend="numpy"),
               threads=f"{n} (BLAS matmul), 1 (NumPy elementwise)", source=source, note="float64 phases, cast to float32"),
        H.Impl("companion numba", "companion", lambda: P.fourier_features(x, frequencies=B, backend="numba"),
               threads=numba_threads(P, "fourier._fourier_rows_numba", n), source=source, note="float64 phases"),
        H.Impl("torch cos/sin (user code)", "peer", _torch_call(lambda: torch_fourier(xt, Bt)),
               threads=f"{torch.get_num_threads()} (torch intra-op)", convention="float32 phases",
               source="eager torch: torch.cat([cos(2 pi x B^T), sin(2 pi x B^T)], -1)"),
    ]
    numel = npts * N_FREQ
    return H.bench_kernel(
        _heavy(ctx),
        kernel=f"fourier_features[F={N_FREQ}]",
        params={"coords_shape": [npts, 2], "dtype": "float32", "n_frequencies": N_FREQ, "scale": SCALE},
        impls=impls,
        ours="companion numba",
        reference="companion numpy",
        check64=check64,
        peer_tol=tol,
        bytes_min=4 * npts * 2 + 8 * N_FREQ * 2 + 4 * 2 * numel,
        flops_min=numel * (2 * 2 + 1),
    )


def bench_curvature(ctx: H.Context, P, source: str) -> list[H.Row]:
    from companion.data.graph_families import watts_strogatz_graph

    nodes, kk, p = SIZES["tiny" if ctx.tiny else "full"]["curv"]
    n = ctx.threads
    a = sp.csr_matrix(watts_strogatz_graph(nodes, kk, p, rng=0), dtype=np.float64)
    _, exact = P.ollivier_ricci_curvature(a, method="exact")
    tol = {"atol": CURV_TOL, "rtol": 0.0}

    def check64(out):
        return H.compare(out, exact, against="method='exact' (HiGHS LP per edge)", **tol)

    deg = np.diff(a.indptr)
    coo = sp.triu(a, k=1).tocoo()
    cost_entries = int(((deg[coo.row] + 1) * (deg[coo.col] + 1)).sum())
    n_edges = int(coo.nnz)
    impls = [
        H.Impl("companion numpy", "reference",
               lambda: P.ollivier_ricci_curvature(a, method="sinkhorn", backend="numpy")[1],
               threads="1 (NumPy elementwise)", source=source, note="all edges padded to one batch"),
        H.Impl("companion numba", "companion",
               lambda: P.ollivier_ricci_curvature(a, method="sinkhorn", backend="numba")[1],
               threads=numba_threads(P, "curvature._sinkhorn_all_numba", n), source=source,
               note="parallel loop over edges"),
    ]
    return H.bench_kernel(
        ctx,
        kernel="ollivier_ricci_curvature[sinkhorn]",
        params={"graph": f"watts_strogatz({nodes}, {kk}, {p}, rng=0)", "n_nodes": nodes, "n_edges": n_edges,
                "alpha": 0.5, "epsilon": 0.02, "checked_against": "method='exact'"},
        impls=impls,
        ours="companion numba",
        reference="companion numpy",
        check64=check64,
        peer_tol=tol,
        bytes_min=12 * a.nnz + 8 * (nodes + 1) + 24 * n_edges,
        flops_min=2 * cost_entries,
    )


def run(ctx: H.Context) -> dict:
    """All graph / coordinate PE rows: ``{"rows": [...], "checks": [...], "source": ..., "note": ...}``."""
    P, source = load_positional()
    ctx.log(f"graph kernels from: {source}")
    rows = bench_random_walk(ctx, P, source)
    rows += bench_random_walk_step(ctx, P, source)
    rows += bench_laplacian_pe(ctx, P, source)
    rows += bench_fourier(ctx, P, source)
    rows += bench_curvature(ctx, P, source)
    return {"rows": rows, "checks": [], "source": source, "note": pyg_rwpe()[1]}

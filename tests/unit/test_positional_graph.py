"""Tests of companion.positional.graph*: encodings against closed forms, backends, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.special import comb

from companion import backend
from companion.data import (
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
from companion.positional import (
    SimpleMPNN,
    as_adjacency,
    ego_edge_encoding,
    fit_graph_classifier,
    graph_batch,
    laplacian,
    laplacian_pe,
    random_feature_propagation,
    random_sign_flip,
    random_walk_pe,
    wl_colors,
)
from companion.positional import graph_pe

NO_GPU = "needs CuPy and a CUDA device; none is usable here"
GPU = [pytest.mark.gpu, pytest.mark.skipif(not backend.cupy_available(), reason=NO_GPU)]
BACKENDS = ["numpy", "numba", pytest.param("cupy", marks=GPU)]


def _random_graph(rng, n, p):
    upper = np.triu(rng.random((n, n)) < p, k=1)
    r, c = np.nonzero(upper)
    return from_edges(n, r, c)


def _dense_return_probabilities(a, k):
    """Independent reference: dense matrix powers."""
    a = a.toarray()
    deg = a.sum(1)
    p = np.divide(a, deg[:, None], out=np.zeros_like(a), where=deg[:, None] > 0)
    out, pt = [], np.eye(len(a))
    for _ in range(k):
        pt = pt @ p
        out.append(np.diag(pt).copy())
    return np.stack(out, 1)


# ------------------------------------------------------------- graph input
def test_edge_index_is_symmetrised_and_loops_dropped():
    once = np.array([[0, 1, 2, 2], [1, 2, 0, 2]])  # each edge once, plus a self-loop on 2
    a, kind = as_adjacency(once)
    assert kind == "numpy" and (a != cycle_graph(3)).nnz == 0
    both = np.concatenate([once, once[::-1]], axis=1)
    assert (as_adjacency(both)[0] != a).nnz == 0


def test_sparse_self_loops_and_weights_ignored():
    a = cycle_graph(5).tolil()
    a[0, 0] = 3.0
    a[1, 2] = a[2, 1] = 7.0
    clean, _ = as_adjacency(a.tocsr())
    assert (clean != cycle_graph(5)).nnz == 0


def test_isolated_nodes_with_n_nodes():
    a, _ = as_adjacency(np.array([[0], [1]]), n_nodes=4)
    assert a.shape == (4, 4) and a.nnz == 2
    pe = random_walk_pe(np.array([[0], [1]]), 3, n_nodes=4)
    np.testing.assert_allclose(pe[2:], 0.0)  # an isolated node's walk stops
    np.testing.assert_allclose(pe[0], [0.0, 1.0, 0.0])


def test_bad_graph_inputs():
    directed = sp.csr_matrix(np.array([[0, 1], [0, 0]], dtype=float))
    with pytest.raises(ValueError, match="must be symmetric"):
        laplacian_pe(directed, 1)
    with pytest.raises(ValueError, match="square"):
        random_walk_pe(sp.csr_matrix(np.ones((2, 3))), 1)
    with pytest.raises(ValueError, match=r"shape \(2, E\)"):
        random_walk_pe(np.zeros((3, 4), dtype=np.int64), 1)
    with pytest.raises(TypeError, match="integer"):
        random_walk_pe(np.zeros((2, 4)), 1)
    with pytest.raises(ValueError, match=">= 0"):
        random_walk_pe(np.array([[0, -1], [1, 2]]), 1)
    with pytest.raises(ValueError, match="n_nodes = 2"):
        random_walk_pe(np.array([[0, 5], [1, 2]]), 1, n_nodes=2)
    with pytest.raises(ValueError, match="k must be >= 1"):
        random_walk_pe(cycle_graph(4), 0)
    with pytest.raises(ValueError, match="backend must be one of"):
        random_walk_pe(cycle_graph(4), 2, backend="fortran")


# ------------------------------------------------------------ random walks
@pytest.mark.parametrize("name", BACKENDS)
def test_random_walk_backends_match_dense_reference(name):
    rng = np.random.default_rng(1)
    for n, p in [(30, 0.1), (57, 0.05), (12, 0.5)]:
        a = _random_graph(rng, n, p)  # may hold isolated nodes and several components
        got = random_walk_pe(a, 7, backend=name)
        got = got.get() if hasattr(got, "get") else got
        np.testing.assert_allclose(got, _dense_return_probabilities(a, 7), atol=1e-12)


def test_numba_parallel_kernel_matches_serial():
    a = _random_graph(np.random.default_rng(2), 80, 0.06)
    p = graph_pe._transition(a)
    np.testing.assert_allclose(graph_pe._rw_numba(p, 6, parallel=True), graph_pe._rw_numba(p, 6, parallel=False), atol=1e-14)


@pytest.mark.parametrize("name", ["numpy", "numba"])
def test_random_walk_closed_forms(name):
    # even cycle: odd t -> 0, t = 2 -> 1/2, even t < n -> C(t, t/2) / 2^t
    pe = random_walk_pe(cycle_graph(10), 8, backend=name)
    t = np.arange(1, 9)
    expected = np.where(t % 2 == 0, comb(t, t // 2) / 2.0**t, 0.0)
    np.testing.assert_allclose(pe, np.broadcast_to(expected, pe.shape), atol=1e-12)
    # star with L leaves: centre returns with prob 1 at even t, a leaf with 1/L
    leaves = 5
    pe = random_walk_pe(star_graph(leaves), 4, backend=name)
    np.testing.assert_allclose(pe[0], [0, 1, 0, 1], atol=1e-12)
    np.testing.assert_allclose(pe[1:], np.tile([0, 1 / leaves, 0, 1 / leaves], (leaves, 1)), atol=1e-12)
    # complete graph K_n: 1/n + (n-1)/n * (-1/(n-1))^t
    n = 6
    pe = random_walk_pe(complete_graph(n), 5, backend=name)
    t = np.arange(1, 6)
    np.testing.assert_allclose(pe, np.tile(1 / n + (n - 1) / n * (-1 / (n - 1)) ** t, (n, 1)), atol=1e-12)


def test_random_walk_equivariant_and_kinds():
    a = _random_graph(np.random.default_rng(3), 20, 0.2)
    perm = np.random.default_rng(4).permutation(20)
    np.testing.assert_allclose(random_walk_pe(permute_graph(a, perm), 5), random_walk_pe(a, 5)[perm], atol=1e-12)
    edges = torch.as_tensor(np.stack(sp.triu(a).nonzero()))
    out = random_walk_pe(edges, 5, n_nodes=20)
    assert isinstance(out, torch.Tensor) and out.shape == (20, 5)


def test_csl_classes_have_distinct_random_walk_fingerprints():
    graphs, _ = csl_dataset(0, 1)
    rows = np.array([random_walk_pe(g, 16)[0] for g in graphs])
    assert len(np.unique(rows.round(12), axis=0)) == 10



# ------------------------------------------------------- random-walk step
def _dense_operator(a):
    """P^T = A D^-1 from the definition (isolated nodes: zero column)."""
    d = a.toarray()
    deg = d.sum(0)
    return np.divide(d, deg[None, :], out=np.zeros_like(d), where=deg[None, :] > 0)


def test_random_walk_operator_is_transposed_transition():
    a = _random_graph(np.random.default_rng(5), 40, 0.1)  # isolated nodes likely
    op = graph_pe.random_walk_operator(a)
    assert op.format == "csr" and op.dtype == np.float64 and op.has_sorted_indices
    np.testing.assert_allclose(op.toarray(), _dense_operator(a), atol=1e-15)
    np.testing.assert_allclose(op.toarray(), graph_pe._transition(a).T.toarray(), atol=1e-15)
    assert graph_pe.random_walk_operator(a, dtype=np.float32).dtype == np.float32
    with pytest.raises(TypeError, match="float32 or float64"):
        graph_pe.random_walk_operator(a, dtype=np.float16)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_random_walk_step_matches_dense(name, dtype):
    rng = np.random.default_rng(6)
    a = _random_graph(rng, 70, 0.06)  # empty rows (isolated nodes) included
    op = graph_pe.random_walk_operator(a, dtype=dtype)
    dense = _dense_operator(a)
    tol = 1e-13 if dtype == np.float64 else 1e-5
    for shape in [(70,), (70, 1), (70, 3), (70, 16), (70, 33)]:
        x = rng.random(shape).astype(dtype)
        xin = x
        if name == "cupy":
            import cupy

            xin = cupy.asarray(x)
        got = graph_pe.random_walk_step(op, xin, backend=name)
        got = got.get() if hasattr(got, "get") else got
        assert got.shape == shape and got.dtype == dtype
        np.testing.assert_allclose(got, dense @ x.astype(np.float64), atol=tol, rtol=tol)


def test_random_walk_step_numpy_blocks_and_empty_rows():
    # empty rows at both ends and a run inside; reference blocks smaller than some rows
    rng = np.random.default_rng(7)
    n = 600
    rows = rng.integers(10, n - 10, 20_000)
    rows[(rows >= 300) & (rows < 340)] = 15  # rows 300..339 empty; row 15 gets ~1,300 draws
    cols = rng.integers(0, n, 20_000)
    m = sp.csr_matrix((rng.random(20_000), (rows, cols)), shape=(n, n))
    counts = np.diff(m.indptr)
    assert counts[:10].sum() == counts[-10:].sum() == counts[300:340].sum() == 0 and counts[15] > 300
    for width in (1, 5):
        x = rng.random((n, width))
        want = m.toarray() @ x
        for block in (1, 37, 300, 1 << 16):
            out = np.full((n, width), np.nan)
            graph_pe._step_numpy(m.indptr, m.indices, m.data, x, out, block=block)
            np.testing.assert_allclose(out, want, atol=1e-11)
        for name in ("numpy", "numba"):
            np.testing.assert_allclose(graph_pe.random_walk_step(m, x, backend=name), want, atol=1e-11)


def test_random_walk_step_parallel_kernel_matches_serial():
    a = _random_graph(np.random.default_rng(8), 300, 0.03)
    op = graph_pe.random_walk_operator(a)
    x = np.random.default_rng(9).random((300, 20))
    o1, o2 = np.empty_like(x), np.empty_like(x)
    assert not graph_pe._step_numba(op.indptr, op.indices, op.data, x, o1, parallel=True)
    assert not graph_pe._step_numba(op.indptr, op.indices, op.data, x, o2, parallel=False)
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_allclose(o1, op.toarray() @ x, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_random_walk_step_kernel_widths_streaming_and_threads(dtype):
    # widths below, at and past whole 64-byte lines and 4-line groups; every kernel variant
    # (serial / parallel, ordinary / non-temporal stores) gives bitwise the same result
    rng = np.random.default_rng(13)
    a = _random_graph(rng, 90, 0.05)  # isolated nodes (empty rows) included
    op = graph_pe.random_walk_operator(a, dtype=dtype)
    dense = _dense_operator(a)
    tol = 1e-13 if dtype == np.float64 else 1e-5
    for b in (1, 3, 8, 15, 16, 17, 32, 33, 40, 64, 70, 130):
        x = rng.random((90, b)).astype(dtype)
        want = dense @ x.astype(np.float64)
        first = None
        for parallel in (False, True):
            for stream in (False, True):
                out = np.full_like(x, np.nan)
                assert not graph_pe._step_numba(op.indptr, op.indices, op.data, x, out, parallel=parallel,
                                                stream=stream)
                np.testing.assert_allclose(out, want, atol=tol, rtol=tol)
                if first is None:
                    first = out
                np.testing.assert_array_equal(out, first)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_random_walk_step_streaming_any_alignment(dtype):
    # out starting at every element offset inside a cache line (partial lines at both ends of
    # every stage group), one that is not even itemsize-aligned, and int64 CSR indices
    rng = np.random.default_rng(14)
    a = _random_graph(rng, 300, 0.03)
    op = graph_pe.random_walk_operator(a, dtype=dtype)
    x = rng.random((300, 20)).astype(dtype)
    want = np.empty_like(x)
    graph_pe._step_numba(op.indptr, op.indices, op.data, x, want, parallel=False, stream=False)
    np.testing.assert_allclose(want, _dense_operator(a) @ x.astype(np.float64), atol=1e-5)
    per_line = 64 // x.itemsize
    raw = np.empty(x.size + 2 * per_line, dtype=dtype)
    for shift in range(per_line):
        out = raw[shift:shift + x.size].reshape(x.shape)
        out[...] = np.nan
        assert not graph_pe._step_numba(op.indptr, op.indices, op.data, x, out, parallel=True, stream=True)
        np.testing.assert_array_equal(out, want)
    buf = bytearray(x.nbytes + 1)
    odd = np.frombuffer(buf, dtype=dtype, offset=1).reshape(x.shape)  # address not a multiple of the itemsize
    assert not graph_pe._step_numba(op.indptr, op.indices, op.data, x, odd, parallel=False, stream=True)
    np.testing.assert_array_equal(odd, want)
    out = np.empty_like(x)
    idx64, ptr64 = op.indices.astype(np.int64), op.indptr.astype(np.int64)
    assert not graph_pe._step_numba(ptr64, idx64, op.data, x, out, parallel=False, stream=True)
    np.testing.assert_array_equal(out, want)


def test_random_walk_step_streaming_catches_nonfinite_everywhere():
    # a NaN / inf reaching any row (group ends, partial lines, remainder columns) is reported
    rng = np.random.default_rng(15)
    a = _random_graph(rng, 200, 0.05)
    op = graph_pe.random_walk_operator(a)
    b = 19  # 2 whole lines of float64 + 3 remainder columns; rows do not fill lines evenly
    x = rng.random((200, b))
    raw = np.empty(x.size + 3)
    out = raw[3:].reshape(x.shape)  # not 64-byte aligned
    counts = np.diff(op.indptr)
    group = 4096 // (b * 8)
    nonempty = np.flatnonzero(counts > 0)
    for target in (0, group - 1, group, 2 * group + 1, 199):
        v = int(nonempty[min(np.searchsorted(nonempty, target), nonempty.size - 1)])  # a row with entries
        u = int(op.indices[op.indptr[v]])
        for j in (0, 7, 8, 15, 16, b - 1):
            for bad in (np.nan, np.inf):
                xb = x.copy()
                xb[u, j] = bad
                for parallel in (False, True):
                    for stream in (False, True):
                        assert graph_pe._step_numba(op.indptr, op.indices, op.data, xb, out, parallel=parallel,
                                                    stream=stream), (v, j, bad, parallel, stream)


def test_random_walk_step_repeated_gives_return_probabilities():
    a = _random_graph(np.random.default_rng(10), 25, 0.2)
    op = graph_pe.random_walk_operator(a)
    x = np.eye(25)  # one walker per start node
    got = []
    for _ in range(6):
        x = graph_pe.random_walk_step(op, x)
        got.append(np.diag(x).copy())
    np.testing.assert_allclose(np.stack(got, 1), random_walk_pe(a, 6), atol=1e-13)


def test_random_walk_step_layouts_kinds_and_out():
    rng = np.random.default_rng(11)
    a = _random_graph(rng, 50, 0.1)
    op = graph_pe.random_walk_operator(a)
    base = rng.random((50, 12))
    want = op.toarray() @ base
    for x in (base[:, ::2], np.asfortranarray(base)):  # non-contiguous input
        np.testing.assert_allclose(graph_pe.random_walk_step(op, x), op.toarray() @ x, atol=1e-14)
    # non-CSR operator and another dtype: converted per call
    np.testing.assert_allclose(graph_pe.random_walk_step(op.tocoo().astype(np.float32), base), want, atol=1e-6)
    # torch in, torch out; out= is filled and returned
    t = graph_pe.random_walk_step(op, torch.from_numpy(base))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float64
    np.testing.assert_allclose(t.numpy(), want, atol=1e-14)
    out_t = torch.empty(50, 12, dtype=torch.float64)
    assert graph_pe.random_walk_step(op, torch.from_numpy(base), out=out_t) is out_t
    np.testing.assert_allclose(out_t.numpy(), want, atol=1e-14)
    for name in ("numpy", "numba"):
        out = np.full_like(base, np.nan)
        assert graph_pe.random_walk_step(op, base, out=out, backend=name) is out
        np.testing.assert_allclose(out, want, atol=1e-14)
    with pytest.raises(ValueError, match="overlap"):
        graph_pe.random_walk_step(op, base, out=base)
    with pytest.raises(ValueError, match="shape"):
        graph_pe.random_walk_step(op, base, out=np.empty((50, 11)))
    with pytest.raises(ValueError, match="dtype"):
        graph_pe.random_walk_step(op, base, out=np.empty((50, 12), dtype=np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        graph_pe.random_walk_step(op, base, out=np.empty((12, 50)).T)
    with pytest.raises(TypeError, match="same kind"):
        graph_pe.random_walk_step(op, base, out=torch.empty(50, 12, dtype=torch.float64))


def test_random_walk_step_bad_input():
    a = _random_graph(np.random.default_rng(12), 30, 0.2)
    op = graph_pe.random_walk_operator(a)
    x = np.ones((30, 4))
    with pytest.raises(TypeError, match="scipy.sparse"):
        graph_pe.random_walk_step(op.toarray(), x)
    with pytest.raises(ValueError, match="square"):
        graph_pe.random_walk_step(op[:, :20], x)
    with pytest.raises(ValueError, match="rows but x has"):
        graph_pe.random_walk_step(op, np.ones((29, 4)))
    with pytest.raises(TypeError, match="floating"):
        graph_pe.random_walk_step(op, np.ones((30, 4), dtype=np.int64))
    with pytest.raises(TypeError, match="float32 or float64"):
        graph_pe.random_walk_step(op, np.ones((30, 4), dtype=np.float16))
    with pytest.raises(ValueError, match="dimensions"):
        graph_pe.random_walk_step(op, np.ones((30, 4, 1)))
    with pytest.raises(ValueError, match="backend must be one of"):
        graph_pe.random_walk_step(op, x, backend="fortran")
    for name in ("numpy", "numba"):
        for bad in (np.nan, np.inf):
            xb = x.copy()
            xb[int(op.indices[0]), 2] = bad  # a row that is read
            with pytest.raises(ValueError, match="finite"):
                graph_pe.random_walk_step(op, xb, backend=name)
        opb = op.copy()
        opb.data[0] = np.nan
        with pytest.raises(ValueError, match="finite"):
            graph_pe.random_walk_step(opb, x, backend=name)


# -------------------------------------------------------------- Laplacian
def test_laplacian_eigenvalues_closed_forms():
    n = 9
    _, lam = laplacian_pe(path_graph(n), n - 1, normalized=False, return_eigenvalues=True)
    np.testing.assert_allclose(lam, 2 - 2 * np.cos(np.pi * np.arange(1, n) / n), atol=1e-10)
    _, lam = laplacian_pe(cycle_graph(n), n - 1, normalized=True, return_eigenvalues=True)
    np.testing.assert_allclose(lam, np.sort(1 - np.cos(2 * np.pi * np.arange(1, n) / n)), atol=1e-10)


def test_laplacian_pe_eigenvectors_and_sign_convention():
    a = _random_graph(np.random.default_rng(5), 25, 0.3)
    pe, lam = laplacian_pe(a, 6, return_eigenvalues=True)
    lap = laplacian(a).toarray()
    np.testing.assert_allclose(lap @ pe, pe * lam, atol=1e-9)
    np.testing.assert_allclose(pe.T @ pe, np.eye(6), atol=1e-9)
    assert np.all(pe[np.argmax(np.abs(pe), axis=0), np.arange(6)] > 0)


def test_laplacian_pe_disconnected_skips_one_zero_per_component():
    two_paths = sp.block_diag([path_graph(3), path_graph(4)]).tocsr()
    _, lam = laplacian_pe(two_paths, 5, normalized=False, return_eigenvalues=True)
    assert np.all(lam > 1e-9)
    expected = np.sort(np.concatenate([2 - 2 * np.cos(np.pi * np.arange(1, 3) / 3), 2 - 2 * np.cos(np.pi * np.arange(1, 4) / 4)]))
    np.testing.assert_allclose(lam, expected, atol=1e-10)
    with pytest.raises(ValueError, match=r"k must be <= n - components = 7 - 2 = 5"):
        laplacian_pe(two_paths, 6)
    # an isolated node is a component of its own (zero row of the normalized Laplacian)
    with pytest.raises(ValueError, match="= 4 - 2 = 2"):
        laplacian_pe(np.array([[0, 1], [1, 2]]), 3, n_nodes=4)


def test_laplacian_pe_sparse_solver_matches_dense(monkeypatch):
    a = _random_graph(np.random.default_rng(6), 60, 0.1)
    _, dense = laplacian_pe(a, 4, return_eigenvalues=True)
    monkeypatch.setattr(graph_pe, "DENSE_EIGH_MAX_NODES", 10)
    _, sparse = laplacian_pe(a, 4, return_eigenvalues=True)
    np.testing.assert_allclose(sparse, dense, atol=1e-8)


def test_random_sign_flip():
    pe = np.arange(1.0, 13.0).reshape(2, 3, 2)
    out = random_sign_flip(pe, 0)
    np.testing.assert_allclose(np.abs(out), pe)
    ratio = out / pe
    assert np.all(ratio == ratio[:, :1, :])  # one sign per graph and column
    t = random_sign_flip(torch.ones(4, 3), 1)
    assert isinstance(t, torch.Tensor) and torch.all(t.abs() == 1)


# ---------------------------------------------------- random feature propagation
def test_random_feature_propagation_raw_matches_dense_powers():
    a = cycle_graph(8)
    got = random_feature_propagation(a, 3, n_features=2, rng=0, normalize=False)
    x0 = np.random.default_rng(0).standard_normal((8, 2))
    a_hat = a.toarray() + np.eye(8)
    d = a_hat.sum(1) ** -0.5
    a_hat = d[:, None] * a_hat * d[None, :]
    expected = np.concatenate([np.linalg.matrix_power(a_hat, t) @ x0 for t in (1, 2, 3)], axis=1)
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_random_feature_propagation_normalized_and_bad_input():
    out = random_feature_propagation(path_graph(12), 4, n_features=3, rng=1)
    for t in range(4):
        block = out[:, 3 * t:3 * t + 3]
        np.testing.assert_allclose(block.T @ block, np.eye(3), atol=1e-10)
    np.testing.assert_allclose(out, random_feature_propagation(path_graph(12), 4, n_features=3, rng=1))
    with pytest.raises(ValueError, match="n_features must be <= n = 12"):
        random_feature_propagation(path_graph(12), 2, n_features=13, rng=0)


# ------------------------------------------------------------ ego and 1-WL
def test_shrikhande_and_rook_same_wl_different_ego():
    s, r = shrikhande_graph(), rook_graph(4)
    for it in range(4):
        assert wl_colors(s, it) == wl_colors(r, it)
    _, fs = ego_edge_encoding(s)
    _, fr = ego_edge_encoding(r)
    assert fs.shape == fr.shape == (48, 6)
    # each edge has 2 common neighbours; they are adjacent in the rook's graph (a row or column is a K4)
    assert set(fs[:, 1]) == {0.0} and set(fr[:, 1]) == {1.0}


def test_ego_encoding_closed_forms():
    edges, feats = ego_edge_encoding(complete_graph(5))
    assert edges.shape == (2, 10) and np.all(edges[0] < edges[1])
    np.testing.assert_allclose(feats, np.tile([3, 3, 3, 10, 4, 4], (10, 1)))
    edges, feats = ego_edge_encoding(path_graph(5), hops=2)
    # edge (0, 1): balls {0,1,2} and {0,1,2,3}; common without endpoints {2}; union {2,3}
    assert edges[:, 0].tolist() == [0, 1]
    np.testing.assert_allclose(feats[0], [1, 0, 2, 3, 1, 2])
    _, feats = ego_edge_encoding(np.array([[0], [1]]), n_nodes=3)  # isolated node 2 changes nothing
    np.testing.assert_allclose(feats, [[0, 0, 0, 1, 1, 1]])
    edges, feats = ego_edge_encoding(sp.csr_matrix((3, 3)))
    assert edges.shape == (2, 0) and feats.shape == (0, 6)


def test_ego_encoding_invariant_to_relabelling():
    a = _random_graph(np.random.default_rng(7), 15, 0.3)
    perm = np.random.default_rng(8).permutation(15)
    f1 = ego_edge_encoding(a, hops=2)[1]
    f2 = ego_edge_encoding(permute_graph(a, perm), hops=2)[1]
    assert sorted(map(tuple, f1)) == sorted(map(tuple, f2))


def test_wl_colors_distinguishes_and_is_invariant():
    assert wl_colors(path_graph(6), 3) != wl_colors(cycle_graph(6), 3)
    hist, colors = wl_colors(path_graph(5), 3, return_node_colors=True)
    assert len(hist) == 3 and colors[0] == colors[4] and colors[1] == colors[3]
    a = _random_graph(np.random.default_rng(9), 12, 0.3)
    assert wl_colors(a, 3) == wl_colors(permute_graph(a, np.arange(12)[::-1]), 3)
    with pytest.raises(ValueError, match="initial must be an integer array"):
        wl_colors(path_graph(3), 1, initial=np.zeros(2, dtype=int))
    with pytest.raises(ValueError, match="iterations must be >= 0"):
        wl_colors(path_graph(3), -1)


# ------------------------------------------------------------ the classifier
def test_mpnn_is_permutation_invariant_and_blind_on_regular_graphs():
    torch.manual_seed(0)
    model = SimpleMPNN(1, 10, hidden=8, layers=2)
    a, b = circular_skip_link_graph(41, 2), circular_skip_link_graph(41, 5)
    adj, x, mask = graph_batch([a, b, permute_graph(a, np.random.default_rng(0).permutation(41))])
    with torch.no_grad():
        out = model(adj, x, mask)
    torch.testing.assert_close(out[0], out[1])  # both 4-regular: identical without features
    torch.testing.assert_close(out[0], out[2])


def test_graph_batch_pads_and_checks():
    adj, x, mask = graph_batch([path_graph(3), cycle_graph(5)], [np.ones((3, 2)), np.zeros((5, 2))])
    assert adj.shape == (2, 5, 5) and x.shape == (2, 5, 3) and mask.sum().item() == 8
    assert x[0, 3:].abs().sum() == 0
    with pytest.raises(ValueError, match=r"features\[1\] must have shape \(5, 2\)"):
        graph_batch([path_graph(3), cycle_graph(5)], [np.ones((3, 2)), np.zeros((4, 2))])


def test_fit_graph_classifier_learns_a_trivial_task():
    torch.manual_seed(0)
    graphs = [path_graph(6)] * 4 + [cycle_graph(6)] * 4
    train = graph_batch(graphs)
    model = SimpleMPNN(1, 2, hidden=16, layers=2)
    hist = fit_graph_classifier(model, train, [0] * 4 + [1] * 4, test=train, y_test=[0] * 4 + [1] * 4,
                                steps=60, lr=1e-2, batch_size=8, eval_every=20)
    assert hist.test_accuracy[-1] == 1.0 and hist.loss[-1] < hist.loss[0]

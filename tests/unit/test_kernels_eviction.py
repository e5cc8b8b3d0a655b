"""Tests of companion.kernels.eviction: backends against the reference, selection and merge properties, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from companion import backend
from companion.kernels import accumulate_attention, compress_kv, merge_evicted, select_keep

NO_GPU = "needs CuPy and a CUDA device; none is usable here"
GPU = [pytest.mark.gpu, pytest.mark.skipif(not backend.cupy_available(), reason=NO_GPU)]
BACKENDS = ["numpy", "numba", pytest.param("cupy", marks=GPU)]


def _host(x):
    return x.get() if hasattr(x, "get") else np.asarray(x)


def _on(name, *arrays):
    if name == "cupy":
        import cupy

        return [cupy.asarray(a) for a in arrays]
    return list(arrays)


# ------------------------------------------------------- accumulate_attention
@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("decay", [1.0, 0.5])
def test_accumulate_matches_reference(name, decay):
    rng = np.random.default_rng(0)
    scores = rng.random((2, 3, 17))
    weights = rng.dirichlet(np.ones(17), size=(2, 3, 4))  # (2, 3, 4, 17), rows sum to 1
    s, w = _on(name, scores, weights)
    got = _host(accumulate_attention(s, w, decay=decay, backend=name))
    np.testing.assert_allclose(got, decay * scores + weights.sum(-2), atol=1e-12)


def test_accumulate_adds_one_unit_of_mass_per_query_and_keeps_torch():
    w = torch.softmax(torch.randn(2, 4, 3, 9), dim=-1)
    out = accumulate_attention(torch.zeros(2, 4, 9), w)
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.sum(-1).numpy(), 3.0, atol=1e-5)


# ----------------------------------------------------------------- select_keep
@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("n_keep,n_sinks,n_recent", [(5, 0, 0), (8, 2, 3), (20, 0, 20), (12, 4, 1), (20, 0, 0)])
def test_select_keep_matches_reference_and_sort(name, n_keep, n_sinks, n_recent):
    rng = np.random.default_rng(n_keep * 100 + n_sinks * 10 + n_recent)
    scores = rng.random((3, 2, 20)).astype(np.float32)  # tie-free
    (s,) = _on(name, scores)
    got = _host(select_keep(s, n_keep, n_sinks=n_sinks, n_recent=n_recent, backend=name))
    ref = select_keep(scores, n_keep, n_sinks=n_sinks, n_recent=n_recent, backend="numpy")
    np.testing.assert_array_equal(got, ref)
    assert got.dtype == np.int64 and got.shape == (3, 2, n_keep)
    # independent oracle: protected entries plus the best of the middle by a full sort
    n_top = n_keep - n_sinks - n_recent
    for row, kept in zip(scores.reshape(-1, 20), got.reshape(-1, n_keep)):
        middle = np.arange(n_sinks, 20 - n_recent)
        best = middle[np.argsort(row[middle])[::-1][:n_top]]
        expected = np.sort(np.concatenate([np.arange(n_sinks), best, np.arange(20 - n_recent, 20)]))
        np.testing.assert_array_equal(kept, expected)


def test_select_keep_breaks_ties_towards_older_entries():
    scores = np.zeros((1, 6))
    np.testing.assert_array_equal(select_keep(scores, 3, backend="numba"), [[0, 1, 2]])
    np.testing.assert_array_equal(select_keep(scores, 3, backend="numpy"), [[0, 1, 2]])


@pytest.mark.parametrize("seed", range(5))
def test_select_keep_numba_matches_reference_with_many_ties_and_infinities(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, size=(4, 3, 50)).astype(np.float64)  # heavy ties
    scores[rng.random(scores.shape) < 0.1] = -np.inf
    for n_keep, n_sinks, n_recent in [(10, 0, 0), (25, 3, 5), (49, 1, 1)]:
        np.testing.assert_array_equal(
            select_keep(scores, n_keep, n_sinks=n_sinks, n_recent=n_recent, backend="numba"),
            select_keep(scores, n_keep, n_sinks=n_sinks, n_recent=n_recent, backend="numpy"),
        )


def test_select_keep_window_from_negative_positions():
    scores = -np.arange(10.0)[None, :]
    assert select_keep(scores, 4).tolist() == [[0, 1, 2, 3]]
    assert select_keep(np.arange(10.0)[None, :], 4).tolist() == [[6, 7, 8, 9]]


def test_select_keep_returns_torch_for_torch():
    out = select_keep(torch.rand(2, 7), 3, n_recent=1)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.int64 and tuple(out.shape) == (2, 3)
    assert bool((out[:, -1] == 6).all())


@pytest.mark.parametrize("name", BACKENDS)
def test_compress_kv_gathers_the_selected_rows(name):
    rng = np.random.default_rng(5)
    k = rng.standard_normal((2, 3, 15, 4)).astype(np.float32)
    v = rng.standard_normal((2, 3, 15, 6)).astype(np.float32)
    scores = rng.random((2, 3, 15))
    kk, vv, idx = (_host(a) for a in compress_kv(*_on(name, k, v, scores), 7, n_sinks=1, n_recent=2, backend=name))
    ref_idx = select_keep(scores, 7, n_sinks=1, n_recent=2, backend="numpy")
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(kk, np.take_along_axis(k, ref_idx[..., None], axis=-2))
    np.testing.assert_array_equal(vv, np.take_along_axis(v, ref_idx[..., None], axis=-2))


# --------------------------------------------------------------- merge_evicted
def _merge_case(seed, n=12, m=5, rows=(2, 3)):
    rng = np.random.default_rng(seed)
    k = rng.standard_normal(rows + (n, 4))
    v = rng.standard_normal(rows + (n, 3))
    c = rng.integers(1, 4, size=rows + (n,)).astype(np.float64)
    keep = np.sort(np.argsort(rng.random(rows + (n,)), axis=-1)[..., :m], axis=-1)
    targets = rng.random(rows + (m,)) < 0.7
    return k, v, c, keep, targets


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("threshold", [-1.0, 0.2])
def test_merge_matches_reference(name, threshold):
    k, v, c, keep, targets = _merge_case(1)
    args = _on(name, k, v, c, keep, targets)
    got = [_host(a) for a in merge_evicted(*args[:4], targets=args[4], threshold=threshold, backend=name)]
    ref = merge_evicted(k, v, c, keep, targets=targets, threshold=threshold, backend="numpy")
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, atol=1e-12)


@pytest.mark.parametrize("name", ["numpy", "numba"])
def test_merge_conserves_counts_and_weighted_sums(name):
    k, v, c, keep, _ = _merge_case(2)
    mk, mv, mc = merge_evicted(k, v, c, keep, threshold=-1.0, backend=name)
    np.testing.assert_allclose(mc.sum(-1), c.sum(-1))  # every evicted token joined someone
    np.testing.assert_allclose((mk * mc[..., None]).sum(-2), (k * c[..., None]).sum(-2), atol=1e-12)
    np.testing.assert_allclose((mv * mc[..., None]).sum(-2), (v * c[..., None]).sum(-2), atol=1e-12)


def test_merge_joins_the_most_similar_kept_entry_and_respects_the_threshold():
    k = np.array([[[1.0, 0.0], [0.0, 1.0], [0.1, 1.0], [-1.0, 0.05]]])
    v = np.array([[[1.0], [2.0], [4.0], [8.0]]])
    c = np.ones((1, 4))
    keep = np.array([[0, 1]])
    mk, mv, mc = merge_evicted(k, v, c, keep, threshold=0.5)
    # entry 2 is close to entry 1 (cos ~ 0.995) and joins it; entry 3 is opposite to both and is dropped
    np.testing.assert_allclose(mc, [[1.0, 2.0]])
    np.testing.assert_allclose(mv[0, :, 0], [1.0, 3.0])
    _, _, mc_all = merge_evicted(k, v, c, keep, threshold=-1.0)
    np.testing.assert_allclose(mc_all, [[1.0, 3.0]])  # with no threshold entry 3 joins its best match (cos 0.05 with 1)


def test_merge_without_targets_keeps_entries_unchanged():
    k, v, c, keep, _ = _merge_case(3)
    mk, mv, mc = merge_evicted(k, v, c, keep, targets=np.zeros(keep.shape, dtype=bool))
    np.testing.assert_allclose(mk, np.take_along_axis(k, keep[..., None], -2))
    np.testing.assert_allclose(mc, np.take_along_axis(c, keep, -1))


def test_merge_torch_in_torch_out():
    k, v, c, keep, _ = _merge_case(4)
    out = merge_evicted(torch.from_numpy(k), torch.from_numpy(v), torch.from_numpy(c), torch.from_numpy(keep))
    assert all(isinstance(o, torch.Tensor) for o in out)


# ------------------------------------------------------------------ bad input
def test_bad_inputs_raise_clear_errors():
    s = np.random.default_rng(0).random((2, 10))
    with pytest.raises(ValueError, match="n_keep must be <="):
        select_keep(s, 11)
    with pytest.raises(ValueError, match="n_sinks \\+ n_recent"):
        select_keep(s, 4, n_sinks=3, n_recent=2)
    with pytest.raises(ValueError, match="n_keep must be >= 1"):
        select_keep(s, 0)
    with pytest.raises(ValueError, match="NaN"):
        select_keep(np.array([[0.0, np.nan, 1.0]]), 2)
    with pytest.raises(TypeError, match="floating"):
        select_keep(np.arange(5)[None], 2)
    with pytest.raises(ValueError, match="weights must have shape"):
        accumulate_attention(np.zeros((2, 5)), np.zeros((2, 1, 4)))
    with pytest.raises(ValueError, match="decay must be <= 1"):
        accumulate_attention(np.zeros((2, 5)), np.zeros((2, 1, 5)), decay=2.0)
    k, v, c, keep, _ = _merge_case(0)
    with pytest.raises(ValueError, match="repeat"):
        merge_evicted(k, v, c, np.zeros_like(keep))
    with pytest.raises(ValueError, match="counts must be >= 1"):
        merge_evicted(k, v, np.zeros_like(c), keep)
    with pytest.raises(ValueError, match="indices in"):
        merge_evicted(k, v, c, keep + 100)
    with pytest.raises(ValueError, match="must agree"):
        merge_evicted(k, v[..., :5, :], c, keep)
    with pytest.raises(ValueError, match="threshold"):
        merge_evicted(k, v, c, keep, threshold=1.5)
    with pytest.raises(ValueError, match="must agree"):
        compress_kv(k, v, np.zeros((2, 3, 11)), 4)
    with pytest.raises(ValueError, match="backend must be one of"):
        select_keep(s, 2, backend="fortran")


# ------------------------------------------------ numba parallel paths (forced on small inputs)
@pytest.fixture(params=["serial", "parallel"])
def numba_path(request, monkeypatch):
    """Run the numba kernels on their serial path (small inputs) and, forced, on their parallel path."""
    from companion.kernels import eviction as E

    if request.param == "parallel":
        monkeypatch.setattr(E, "_PARALLEL_MIN_WORK", 0)
    return request.param


@pytest.mark.parametrize("shape,n_keep,n_sinks,n_recent", [
    ((3, 5, 200), 100, 0, 0), ((3, 5, 200), 100, 4, 96), ((2, 300), 150, 2, 20), ((1, 9), 9, 0, 0),
    ((4, 70), 1, 0, 0), ((4, 70), 65, 0, 64), ((2, 3, 129), 64, 0, 64),
])
def test_compress_kv_numba_paths_match_reference(numba_path, shape, n_keep, n_sinks, n_recent):
    rng = np.random.default_rng(sum(shape) + n_keep)
    k = rng.standard_normal(shape + (5,)).astype(np.float32)
    v = rng.standard_normal(shape + (3,))  # another dtype and width than the keys
    scores = rng.integers(0, 6, size=shape).astype(np.float32)  # many ties: older entries win
    kk, vv, idx = compress_kv(k, v, scores, n_keep, n_sinks=n_sinks, n_recent=n_recent, backend="numba")
    ref_idx = select_keep(scores, n_keep, n_sinks=n_sinks, n_recent=n_recent, backend="numpy")
    np.testing.assert_array_equal(idx, ref_idx)
    assert kk.dtype == np.float32 and vv.dtype == np.float64
    np.testing.assert_array_equal(kk, np.take_along_axis(k, ref_idx[..., None], axis=-2))
    np.testing.assert_array_equal(vv, np.take_along_axis(v, ref_idx[..., None], axis=-2))
    np.testing.assert_array_equal(select_keep(scores, n_keep, n_sinks=n_sinks, n_recent=n_recent, backend="numba"),
                                  ref_idx)


def test_compress_kv_numba_paths_accept_non_contiguous_and_torch_input(numba_path):
    rng = np.random.default_rng(11)
    base = rng.standard_normal((2, 4, 8, 300))
    k = base.transpose(0, 1, 3, 2)  # (2, 4, 300, 8), not C-contiguous
    v = base[:, :, :6].transpose(0, 1, 3, 2)
    scores = -np.abs(rng.standard_normal((2, 4, 300)))
    kk, vv, idx = compress_kv(k, v, scores, 120, n_sinks=3, n_recent=30, backend="numba")
    ref = select_keep(scores, 120, n_sinks=3, n_recent=30, backend="numpy")
    np.testing.assert_array_equal(idx, ref)
    np.testing.assert_array_equal(kk, np.take_along_axis(k, ref[..., None], axis=-2))
    np.testing.assert_array_equal(vv, np.take_along_axis(v, ref[..., None], axis=-2))
    tk, tv, ti = compress_kv(torch.from_numpy(k), torch.from_numpy(v), torch.from_numpy(scores), 120,
                             n_sinks=3, n_recent=30, backend="numba")
    assert isinstance(tk, torch.Tensor) and isinstance(ti, torch.Tensor)
    np.testing.assert_array_equal(tk.numpy(), kk)
    np.testing.assert_array_equal(tv.numpy(), vv)

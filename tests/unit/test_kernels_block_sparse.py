"""Tests of the CPU fast path of companion.kernels.block_sparse: chunks, groups, threads, the exp2 polynomial."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from companion.kernels import block_sparse as bs_mod
from companion.kernels import block_mask_to_csr, block_sparse_numba
from companion.memory import (
    block_sparse_attention,
    dense_block_mask,
    strided_block_mask,
    token_mask,
    window_global_block_mask,
)


def _reference(q, k, v, allowed, scale):
    """Float64 softmax over the allowed keys; rows that see nothing give 0."""
    s = np.einsum("bid,bjd->bij", q.astype(np.float64), k.astype(np.float64)) * scale
    s = np.where(allowed, s, -np.inf)
    seen = allowed.any(axis=-1)
    out = np.zeros(q.shape[:-1] + (v.shape[-1],))
    w = np.exp(s[:, seen] - s[:, seen].max(axis=-1, keepdims=True))
    out[:, seen] = (w / w.sum(axis=-1, keepdims=True)) @ v.astype(np.float64)
    return out


def _masks(n_blocks, causal, rng):
    return {
        "dense": dense_block_mask(n_blocks, causal=causal),
        "strided": strided_block_mask(n_blocks, 3, causal=causal),
        "window+global": window_global_block_mask(n_blocks, 2, 1, causal=causal),
        "random": rng.random((n_blocks, n_blocks)) < 0.5,  # may leave rows empty
    }


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of two blocks of 4 keys and groups of one row: every multi-chunk and gather path runs."""
    monkeypatch.setattr(bs_mod, "_CHUNK_KEYS", 8)
    monkeypatch.setattr(bs_mod, "_SCORE_BUDGET", 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("workers", [1, 2])
def test_chunked_groups_and_threads_match_reference(small_chunks, dtype, causal, workers):
    rng = np.random.default_rng(int(causal) * 10 + workers)
    n_blocks, block = 7, 4
    q, k = rng.standard_normal((2, 3, n_blocks * block, 5)).astype(dtype)
    v = rng.standard_normal((3, n_blocks * block, 6)).astype(dtype)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    for name, mask in _masks(n_blocks, causal, rng).items():
        m = np.tril(mask) if causal else mask
        row_ptr, cols = block_mask_to_csr(m)
        got, visits = block_sparse_numba(q, k, v, row_ptr, cols, block, causal, 0.4, return_visits=True,
                                         workers=workers)
        assert got.dtype == dtype and got.shape == (3, n_blocks * block, 6)
        expected = _reference(q, k, v, token_mask(m, block, causal=causal), 0.4)
        np.testing.assert_allclose(got, expected, rtol=0, atol=tol, err_msg=name)
        np.testing.assert_array_equal(visits, np.tile(m.sum(axis=1), (3, 1)), err_msg=name)


def test_default_workers_path_on_a_large_enough_job():
    rng = np.random.default_rng(1)
    q, k, v = rng.standard_normal((3, 2, 512, 64)).astype(np.float32)
    mask = strided_block_mask(16, 4)
    got = block_sparse_attention(q, k, v, mask, block_size=32, backend="numba")  # > _SMALL_WORK: threads
    expected = _reference(q, k, v, token_mask(mask, 32), 64**-0.5)
    np.testing.assert_allclose(got, expected, atol=2e-5)
    one = block_sparse_numba(q, k, v, *block_mask_to_csr(mask), 32, True, 64**-0.5, workers=1)
    np.testing.assert_allclose(got, one, atol=1e-6)


def test_odd_sizes_non_causal_rectangular_and_non_contiguous():
    rng = np.random.default_rng(2)
    block = 3
    q = rng.standard_normal((2, 4 * block, 7)).astype(np.float32)
    k = np.asfortranarray(rng.standard_normal((2, 5 * block, 7)).astype(np.float32))  # not C-contiguous
    v = rng.standard_normal((2, 9, 5 * block)).astype(np.float32).transpose(0, 2, 1)  # a strided view
    mask = rng.random((4, 5)) < 0.6
    got = block_sparse_attention(q, k, v, mask, block_size=block, causal=False, backend="numba")
    expected = _reference(q, k, v, token_mask(mask, block, causal=False), 7**-0.5)
    np.testing.assert_allclose(got, expected, atol=2e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_peaked_scores_across_chunks_rescale_without_overflow(small_chunks, dtype):
    """Scores spanning hundreds of units: the running maximum grows chunk after chunk."""
    rng = np.random.default_rng(3)
    n_blocks, block = 6, 4
    q = rng.standard_normal((1, n_blocks * block, 4)).astype(dtype) * 6
    k = rng.standard_normal((1, n_blocks * block, 4)).astype(dtype) * 6
    k *= np.linspace(0.1, 3.0, n_blocks * block, dtype=dtype)[None, :, None]  # later keys dominate
    v = rng.standard_normal((1, n_blocks * block, 3)).astype(dtype)
    mask = dense_block_mask(n_blocks)
    got = block_sparse_numba(q, k, v, *block_mask_to_csr(mask), block, True, 1.0)
    expected = _reference(q, k, v, token_mask(mask, block), 1.0)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, expected, atol=2e-5 if dtype == np.float32 else 1e-11)


def test_blocks_above_the_diagonal_are_skipped_when_causal():
    rng = np.random.default_rng(4)
    q, k, v = rng.standard_normal((3, 1, 16, 4))
    full = np.ones((4, 4), dtype=bool)
    a, visits = block_sparse_numba(q, k, v, *block_mask_to_csr(full), 4, True, 0.5, return_visits=True)
    b = block_sparse_numba(q, k, v, *block_mask_to_csr(np.tril(full)), 4, True, 0.5)
    np.testing.assert_array_equal(a, b)
    assert visits.tolist() == [[1, 2, 3, 4]]


def test_all_rows_empty_gives_zeros():
    q = np.ones((2, 8, 4), dtype=np.float32)
    out = block_sparse_numba(q, q, q, *block_mask_to_csr(np.zeros((2, 2), dtype=bool)), 4, False, 1.0)
    assert out.dtype == np.float32 and not out.any()


@numba.njit
def _exp2_all(t):
    out = np.empty_like(t)
    for i in range(t.shape[0]):
        out[i] = bs_mod._exp2_softmax_f32(t[i])
    return out


def test_exp2_polynomial_relative_error():
    t = np.concatenate([np.linspace(-125.0, 0.0, 400_001), np.linspace(-1.0, 1e-3, 100_001)]).astype(np.float32)
    got = _exp2_all(t).astype(np.float64)
    exact = np.exp2(t.astype(np.float64))
    assert np.max(np.abs(got / exact - 1)) < 4e-7
    low = _exp2_all(np.array([-126.0, -200.0, -1e30], dtype=np.float32))
    assert np.all((low > 0) & (low <= 2.0**-124))  # clamped at 2**-125: nothing beside the maximum's 1


def test_an_error_in_a_worker_thread_reaches_the_caller(monkeypatch):
    def boom(*args):
        raise RuntimeError("worker failed")

    monkeypatch.setattr(bs_mod, "_attend_query_blocks", boom)
    q = np.ones((1, 16, 4))
    with pytest.raises(RuntimeError, match="worker failed"):
        block_sparse_numba(q, q, q, *block_mask_to_csr(dense_block_mask(4)), 4, True, 1.0, workers=2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("chunk_keys", [16, 64])
def test_super_blocks_of_query_blocks_match_reference(monkeypatch, dtype, causal, chunk_keys):
    """Runs of 4 query blocks share their key blocks: 11 blocks leave a tail of 3, chunks cut the prefix."""
    monkeypatch.setattr(bs_mod, "_SUPER_QUERIES", 16)  # 4 blocks of 4 queries
    monkeypatch.setattr(bs_mod, "_CHUNK_KEYS", chunk_keys)
    monkeypatch.setattr(bs_mod, "_SCORE_BUDGET", 1)
    rng = np.random.default_rng(7 + int(causal))
    n_blocks, block = 11, 4
    q, k = rng.standard_normal((2, 3, n_blocks * block, 5)).astype(dtype)
    v = rng.standard_normal((3, n_blocks * block, 6)).astype(dtype)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    holed = dense_block_mask(n_blocks, causal=causal)
    holed[6, 2] = False  # block 6 breaks the run 4..7; 8..10 still merge
    masks = {"dense": dense_block_mask(n_blocks, causal=causal), "holed": holed,
             "window+global": window_global_block_mask(n_blocks, 2, 1, causal=causal)}
    for name, mask in masks.items():
        m = np.tril(mask) if causal else mask
        row_ptr, cols = block_mask_to_csr(m)
        for workers in (1, 2):
            got, visits = block_sparse_numba(q, k, v, row_ptr, cols, block, causal, 0.4, return_visits=True,
                                             workers=workers)
            assert got.dtype == dtype
            expected = _reference(q, k, v, token_mask(m, block, causal=causal), 0.4)
            np.testing.assert_allclose(got, expected, rtol=0, atol=tol, err_msg=f"{name} {workers}")
            np.testing.assert_array_equal(visits, np.tile(m.sum(axis=1), (3, 1)), err_msg=name)


def test_super_block_runs_are_formed_only_where_key_blocks_agree():
    def runs(mask, causal):
        m = np.tril(mask) if causal else mask
        row_ptr, cols = block_mask_to_csr(m)
        blocks = [cols[row_ptr[i]:row_ptr[i + 1]] for i in range(len(m))]
        nnz = np.array([len(c) for c in blocks])
        return [(i, n) for i, n, _ in bs_mod._super_blocks(blocks, nnz, causal, 4)]

    assert runs(dense_block_mask(11), True) == [(0, 4), (4, 4), (8, 3)]
    assert runs(dense_block_mask(6, causal=False), False) == [(0, 4), (4, 2)]
    holed = dense_block_mask(11)
    holed[6, 2] = False
    assert runs(holed, True) == [(0, 4), (4, 2), (6, 1), (7, 4)]
    no_diag = dense_block_mask(4)
    no_diag[1, 1] = False  # block 1 does not read itself: it starts no run and joins none
    assert runs(no_diag, True) == [(0, 1), (1, 1), (2, 2)]


def test_super_blocks_at_full_size_match_one_block_at_a_time(monkeypatch):
    """Default sizes (256-query runs, 512-key chunks) against runs of one block, dense causal, 2 heads."""
    rng = np.random.default_rng(9)
    q, k, v = rng.standard_normal((3, 2, 1024 + 64, 64)).astype(np.float32)  # 17 blocks: a tail of 1
    row_ptr, cols = block_mask_to_csr(dense_block_mask(17))
    got = block_sparse_numba(q, k, v, row_ptr, cols, 64, True, 0.125)
    monkeypatch.setattr(bs_mod, "_SUPER_QUERIES", 1)
    one = block_sparse_numba(q, k, v, row_ptr, cols, 64, True, 0.125)
    np.testing.assert_allclose(got, one, atol=2e-6)
    expected = _reference(q, k, v, token_mask(dense_block_mask(17), 64), 0.125)
    np.testing.assert_allclose(got, expected, atol=2e-5)

"""Tests of companion.kernels.topk: every backend equals a full sort, ties, kinds, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from companion import backend
from companion.kernels import default_block_size, topk_inner_product
from companion.kernels.topk import _topk_numba_direct

NO_GPU = "needs CuPy and a CUDA device; none is usable here"
GPU = [pytest.mark.gpu, pytest.mark.skipif(not backend.cupy_available(), reason=NO_GPU)]
BACKENDS = ["numpy", "numba", pytest.param("cupy", marks=GPU)]


def _full_sort(queries, keys, k):
    """Oracle: every score in float64, stable sort (ties toward the lower index)."""
    scores = queries.astype(np.float64) @ keys.astype(np.float64).T  # (Q, N)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_queries,n_keys,dim,k,block_size", [
    (1, 1, 1, 1, None), (5, 40, 3, 40, None), (37, 1000, 16, 10, 64), (300, 5000, 32, 32, None),
    (9, 777, 8, 5, 1), (64, 3000, 64, 100, 333),
])
def test_backend_equals_full_sort(name, dtype, n_queries, n_keys, dim, k, block_size):
    rng = np.random.default_rng(n_queries * 7919 + n_keys)
    queries = rng.standard_normal((n_queries, dim)).astype(dtype)
    keys = rng.standard_normal((n_keys, dim)).astype(dtype)
    want_scores, want_index = _full_sort(queries, keys, k)
    scores, index = topk_inner_product(queries, keys, k, block_size=block_size, backend=name)
    assert scores.shape == (n_queries, k) and index.shape == (n_queries, k)
    assert scores.dtype == dtype and index.dtype == np.int64
    np.testing.assert_array_equal(index, want_index)  # tie-free data: identical id lists
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_blas_free_numba_kernel_equals_full_sort():
    rng = np.random.default_rng(3)
    queries, keys = rng.standard_normal((50, 24)), rng.standard_normal((2000, 24))
    _, want = _full_sort(queries, keys, 16)
    _, got = _topk_numba_direct(queries, keys, 16, 0)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("block_size", [1, 2, 5, 100])
def test_ties_go_to_the_lower_index(name, block_size):
    keys = np.repeat(np.eye(3), 4, axis=0)  # rows 0-3, 4-7, 8-11 equal
    queries = np.array([[1.0, 1.0, 1.0], [0.0, 2.0, 1.0], [1.0, 0.0, 1.0]])
    scores, index = topk_inner_product(queries, keys, 6, block_size=block_size, backend=name)
    assert index.tolist() == [[0, 1, 2, 3, 4, 5], [4, 5, 6, 7, 8, 9], [0, 1, 2, 3, 8, 9]]
    assert scores[1].tolist() == [2.0, 2.0, 2.0, 2.0, 1.0, 1.0]


def test_integer_valued_scores_with_many_ties_match_stable_sort():
    rng = np.random.default_rng(4)
    queries = rng.integers(-2, 3, size=(40, 6)).astype(np.float64)
    keys = rng.integers(-2, 3, size=(500, 6)).astype(np.float64)
    _, want = _full_sort(queries, keys, 25)
    for name in ("numpy", "numba"):
        for block_size in (7, 64, 500):
            _, got = topk_inner_product(queries, keys, 25, block_size=block_size, backend=name)
            np.testing.assert_array_equal(got, want)


def test_mixed_precision_computes_in_float64_and_torch_round_trips():
    rng = np.random.default_rng(5)
    queries = rng.standard_normal((4, 8)).astype(np.float32)
    keys = rng.standard_normal((50, 8))
    scores, _ = topk_inner_product(queries, keys, 3)
    assert scores.dtype == np.float64
    ts, ti = topk_inner_product(torch.from_numpy(queries), torch.from_numpy(keys.astype(np.float32)), 3)
    assert isinstance(ts, torch.Tensor) and isinstance(ti, torch.Tensor) and ti.dtype == torch.int64
    _, want = _full_sort(queries, keys.astype(np.float32), 3)
    np.testing.assert_array_equal(ti.numpy(), want)


def test_default_block_size_bounds_memory():
    assert default_block_size(20_000, 300_000) * 2048 <= 1 << 24
    assert default_block_size(3, 100) == 100
    with pytest.raises(ValueError, match="n_keys must be >= 1"):
        default_block_size(3, 0)


# ------------------------------------------------------------------ bad input
def test_k_larger_than_number_of_keys_is_an_error():
    x = np.ones((2, 3))
    with pytest.raises(ValueError, match=r"k must be <= the number of keys \(4\); got k=5"):
        topk_inner_product(x, np.ones((4, 3)), 5)
    with pytest.raises(ValueError, match="k must be >= 1"):
        topk_inner_product(x, np.ones((4, 3)), 0)
    with pytest.raises(TypeError, match="k must be an integer"):
        topk_inner_product(x, np.ones((4, 3)), 2.0)


def test_empty_and_mismatched_inputs_are_errors():
    with pytest.raises(ValueError, match="keys must not be empty"):
        topk_inner_product(np.ones((2, 3)), np.ones((0, 3)), 1)
    with pytest.raises(ValueError, match="queries must not be empty"):
        topk_inner_product(np.ones((0, 3)), np.ones((4, 3)), 1)
    with pytest.raises(ValueError, match="same last dimension"):
        topk_inner_product(np.ones((2, 3)), np.ones((4, 2)), 1)
    with pytest.raises(ValueError, match="keys must have 2 dimensions"):
        topk_inner_product(np.ones((2, 3)), np.ones(3), 1)
    with pytest.raises(TypeError, match="floating"):
        topk_inner_product(np.ones((2, 3), dtype=int), np.ones((4, 3)), 1)
    with pytest.raises(TypeError, match="same kind"):
        topk_inner_product(np.ones((2, 3)), torch.ones(4, 3), 1)
    with pytest.raises(ValueError, match="block_size must be >= 1"):
        topk_inner_product(np.ones((2, 3)), np.ones((4, 3)), 1, block_size=0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_errors(bad):
    keys = np.ones((4, 3))
    keys[2, 1] = bad
    with pytest.raises(ValueError, match="keys must contain only finite values"):
        topk_inner_product(np.ones((2, 3)), keys, 1)
    with pytest.raises(ValueError, match="queries must contain only finite values"):
        topk_inner_product(keys, np.ones((4, 3)), 1)


@pytest.mark.gpu
@pytest.mark.skipif(not backend.cupy_available(), reason=NO_GPU)
def test_cupy_and_cuda_torch_inputs_keep_their_kind():
    import cupy

    rng = np.random.default_rng(6)
    queries, keys = rng.standard_normal((70, 16)).astype(np.float32), rng.standard_normal((3000, 16)).astype(np.float32)
    _, want = _full_sort(queries, keys, 8)
    scores, index = topk_inner_product(cupy.asarray(queries), cupy.asarray(keys), 8, block_size=500)
    assert isinstance(index, cupy.ndarray)
    np.testing.assert_array_equal(index.get(), want)
    ts, ti = topk_inner_product(torch.from_numpy(queries).cuda(), torch.from_numpy(keys).cuda(), 8)
    assert ti.device.type == "cuda"
    np.testing.assert_array_equal(ti.cpu().numpy(), want)


@pytest.mark.parametrize("n_queries", [1, 50])  # BLAS-free path and BLAS-block path of the numba backend
def test_numba_kernels_detect_non_finite_keys_in_their_own_pass(n_queries):
    keys = np.random.default_rng(7).standard_normal((3000, 4))
    keys[2500, 3] = np.nan
    with pytest.raises(ValueError, match="keys must contain only finite values"):
        topk_inner_product(np.ones((n_queries, 4)), keys, 3, backend="numba", block_size=512)
    big = np.full((20, 4), 1e300)
    with pytest.raises(ValueError, match="inner products overflow"):
        topk_inner_product(np.full((n_queries, 4), 1e300), big, 3, backend="numba")


# ------------------------------------------------ BLAS-free kernel, parallel over key ranges
@pytest.fixture
def parallel_direct(monkeypatch):
    """Force the parallel BLAS-free path (several key ranges) even on small inputs."""
    from companion.kernels import topk as T

    monkeypatch.setattr(T, "_PARALLEL_MIN_WORK", 0)
    monkeypatch.setattr(T, "_DIRECT_BLOCK_BYTES", 64)  # tiny blocks: many blocks and ranges, with tails
    return T


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_queries,n_keys,dim,k", [
    (1, 1, 1, 1), (1, 7, 3, 7), (1, 1001, 5, 3), (3, 999, 17, 40), (4, 2050, 64, 32), (2, 300, 8, 250),
])
def test_parallel_blas_free_path_equals_full_sort(parallel_direct, dtype, n_queries, n_keys, dim, k):
    rng = np.random.default_rng(n_keys * 31 + dim)
    queries = rng.standard_normal((n_queries, dim)).astype(dtype)
    keys = rng.standard_normal((n_keys, dim)).astype(dtype)
    want_scores, want_index = _full_sort(queries, keys, k)
    scores, index = parallel_direct._topk_numba_direct(queries, keys, k, 0)
    np.testing.assert_array_equal(index, want_index)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)
    _, serial = _topk_numba_direct(queries, keys, k, 0)  # the default (serial on small inputs) agrees
    np.testing.assert_array_equal(serial, want_index)


def test_parallel_blas_free_path_breaks_ties_across_ranges_toward_the_lower_index(parallel_direct):
    keys = np.tile(np.eye(4), (200, 1))  # 800 keys: every 4th row equal, spread over all ranges and blocks
    queries = np.array([[1.0, 0.5, 0.25, 0.0]])
    scores, index = parallel_direct._topk_numba_direct(queries, keys, 250, 0)
    _, want = _full_sort(queries, keys, 250)
    np.testing.assert_array_equal(index, want)
    assert index[0, :200].tolist() == list(range(0, 800, 4)) and index[0, 200:].tolist() == list(range(1, 201, 4))


def test_parallel_blas_free_path_through_the_public_function(parallel_direct):
    rng = np.random.default_rng(8)
    keys = rng.standard_normal((3000, 24)).astype(np.float32)
    queries = rng.standard_normal((24, 2)).astype(np.float32).T  # non-contiguous (2, 24)
    _, want = _full_sort(np.ascontiguousarray(queries), keys, 10)
    _, got = topk_inner_product(queries, keys[::1], 10, backend="numba")
    np.testing.assert_array_equal(got, want)
    _, got_t = topk_inner_product(torch.from_numpy(np.ascontiguousarray(queries)), torch.from_numpy(keys), 10,
                                  backend="numba")
    np.testing.assert_array_equal(got_t.numpy(), want)


def test_blas_free_and_blas_paths_agree_at_the_query_threshold():
    from companion.kernels import topk as T

    rng = np.random.default_rng(9)
    keys = rng.standard_normal((5000, 16))
    for n_queries in (T._DIRECT_MAX_QUERIES, T._DIRECT_MAX_QUERIES + 1):  # last BLAS-free, first BLAS-block
        queries = rng.standard_normal((n_queries, 16))
        _, want = _full_sort(queries, keys, 12)
        _, got = topk_inner_product(queries, keys, 12, backend="numba")
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_parallel_blas_free_path_detects_non_finite_keys(parallel_direct, bad):
    keys = np.random.default_rng(10).standard_normal((3001, 4))
    keys[2999, 1] = bad  # in the tail of the last range
    with pytest.raises(ValueError, match="keys must contain only finite values"):
        topk_inner_product(np.ones((1, 4)), keys, 3, backend="numba")
    with pytest.raises(ValueError, match="inner products overflow"):
        topk_inner_product(np.full((1, 4), 1e300), np.full((50, 4), 1e300), 3, backend="numba")

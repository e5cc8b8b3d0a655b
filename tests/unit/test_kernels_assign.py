"""Tests of companion.kernels.assign: every backend against the reference, ties, kinds, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from companion import backend
from companion.kernels import nearest_centroid

NO_GPU = "needs CuPy and a CUDA device; none is usable here"
GPU = [pytest.mark.gpu, pytest.mark.skipif(not backend.cupy_available(), reason=NO_GPU)]
BACKENDS = ["numpy", "numba", pytest.param("cupy", marks=GPU)]


def _loop_reference(x, c):
    """Independent reference: Python loop over centroids with the norm of the difference."""
    x = np.asarray(x, dtype=np.float64)
    c = np.asarray(c, dtype=np.float64)
    best = np.full(len(x), np.inf)
    arg = np.zeros(len(x), dtype=np.int64)
    for j in range(len(c)):
        dist = np.einsum("nd,nd->n", x - c[j], x - c[j])
        better = dist < best
        best[better], arg[better] = dist[better], j
    return arg, best


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,k,d", [(1, 1, 1), (7, 3, 2), (300, 17, 8), (513, 256, 4), (64, 5, 130), (200, 33, 48)])
def test_backend_matches_references(name, dtype, n, k, d):
    rng = np.random.default_rng(n * 1000 + k * 10 + d)
    x = rng.standard_normal((n, d)).astype(dtype)
    c = rng.standard_normal((k, d)).astype(dtype)
    labels, sq = nearest_centroid(x, c, backend=name)
    ref_labels, ref_sq = _loop_reference(x, c)
    assert labels.dtype == np.int64 and labels.shape == (n,)
    assert sq.dtype == dtype and sq.shape == (n,)
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_allclose(sq, ref_sq, rtol=1e-6 if dtype == np.float32 else 1e-12, atol=1e-12)
    np.testing.assert_array_equal(labels, nearest_centroid(x, c, backend="numpy")[0])


@pytest.mark.parametrize("name", BACKENDS)
def test_ties_go_to_the_lower_index(name):
    # integer-valued data: every distance is exact, so ties are real ties
    c = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 0.0], [1.0, 1.0]])  # centroid 2 duplicates 0
    x = np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 0.5], [5.0, 5.0]])
    labels, sq = nearest_centroid(x, c, backend=name)
    # x0 is 1 from c0, c1 and c3 -> 0;  x1 sits on c0 and c2 -> 0;  x2: c3 at 0.25;  x3: c3
    assert labels.tolist() == [0, 0, 3, 3]
    assert sq.tolist() == [1.0, 0.0, 0.25, 32.0]


@pytest.mark.parametrize("name", BACKENDS)
def test_every_point_at_a_centroid_has_distance_zero(name):
    rng = np.random.default_rng(3)
    c = rng.standard_normal((20, 6))
    perm = rng.permutation(20)
    labels, sq = nearest_centroid(c[perm], c, backend=name)
    assert labels.tolist() == perm.tolist()
    assert np.all(sq == 0.0)


def test_non_contiguous_and_mixed_dtypes():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((12, 30))[:, ::3]  # (12, 10), strided
    c = rng.standard_normal((4, 10)).astype(np.float32)
    a = nearest_centroid(x, c, backend="numba")
    b = nearest_centroid(x, c, backend="numpy")
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1].dtype == np.float64  # float64 with float32 -> float64


def test_torch_input_keeps_its_kind():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((40, 3)).astype(np.float32)
    c = rng.standard_normal((6, 3)).astype(np.float32)
    labels, sq = nearest_centroid(torch.from_numpy(x), torch.from_numpy(c))
    assert isinstance(labels, torch.Tensor) and labels.dtype == torch.int64
    assert isinstance(sq, torch.Tensor) and sq.dtype == torch.float32
    np.testing.assert_array_equal(labels.numpy(), nearest_centroid(x, c)[0])
    half = nearest_centroid(torch.from_numpy(x).half(), torch.from_numpy(c).half())[0]
    assert half.shape == (40,)


@pytest.mark.gpu
@pytest.mark.skipif(not backend.cupy_available(), reason=NO_GPU)
def test_cupy_and_cuda_torch_inputs_keep_their_kind():
    import cupy

    rng = np.random.default_rng(6)
    x = rng.standard_normal((1000, 16)).astype(np.float32)
    c = rng.standard_normal((64, 16)).astype(np.float32)
    ref = nearest_centroid(x, c, backend="numpy")[0]
    labels, sq = nearest_centroid(cupy.asarray(x), cupy.asarray(c))
    assert isinstance(labels, cupy.ndarray)
    np.testing.assert_array_equal(labels.get(), ref)
    tl, _ = nearest_centroid(torch.from_numpy(x).cuda(), torch.from_numpy(c).cuda())
    assert tl.device.type == "cuda"
    np.testing.assert_array_equal(tl.cpu().numpy(), ref)


# ----------------------------------------------------------------- bad input
@pytest.mark.parametrize("name", ["numpy", "numba"])
def test_non_finite_points_are_refused(name):
    x = np.zeros((5, 2))
    c = np.ones((2, 2))
    for bad in (np.nan, np.inf, -np.inf):
        x[3, 1] = bad
        with pytest.raises(ValueError, match="finite"):
            nearest_centroid(x, c, backend=name)


def test_bad_inputs_raise_clear_errors():
    x = np.zeros((5, 3))
    c = np.ones((2, 3))
    with pytest.raises(ValueError, match="finite"):
        nearest_centroid(x, np.array([[0.0, np.nan, 0.0]]))
    with pytest.raises(ValueError, match="empty"):
        nearest_centroid(np.zeros((0, 3)), c)
    with pytest.raises(ValueError, match="empty"):
        nearest_centroid(x, np.zeros((0, 3)))
    with pytest.raises(ValueError, match="same number of columns"):
        nearest_centroid(x, np.ones((2, 4)))
    with pytest.raises(ValueError, match="2 dimensions"):
        nearest_centroid(np.zeros(3), c)
    with pytest.raises(TypeError, match="floating"):
        nearest_centroid(np.zeros((5, 3), dtype=np.int64), c)
    with pytest.raises(TypeError, match="same kind"):
        nearest_centroid(torch.zeros(5, 3), c)
    with pytest.raises(TypeError, match="NumPy array"):
        nearest_centroid([[0.0, 1.0, 2.0]], c)
    with pytest.raises(ValueError, match="backend must be one of"):
        nearest_centroid(x, c, backend="fortran")


# ------------------------------------------------------- screened numba path
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_screened_path_equals_the_direct_kernel(dtype):
    from companion.kernels import assign as A

    rng = np.random.default_rng(8)
    x = (100.0 + rng.standard_normal((700, 64))).astype(dtype)  # far from the origin: the expansion cancels
    c = (100.0 + rng.standard_normal((300, 64))).astype(dtype)
    c[7] = c[3]  # an exact duplicate codeword: ties must go to index 3
    x[:5] = c[3]
    labels, sq = A._nearest_screened(x, c)
    direct_labels, direct_sq = A._nearest_rows_numba_call(x, c)
    np.testing.assert_array_equal(labels, direct_labels)
    np.testing.assert_array_equal(sq, direct_sq)  # same float64 sums, bit for bit
    assert labels[:5].tolist() == [3] * 5 and np.all(sq[:5] == 0.0)
    np.testing.assert_array_equal(labels, nearest_centroid(x, c, backend="numpy")[0])


def test_screened_path_handles_integer_ties_and_nan():
    from companion.kernels import assign as A

    c = np.zeros((10, 32))
    c[:, 0] = np.arange(10) * 2.0  # codewords 0, 2, 4, ... on the first axis
    x = np.zeros((9, 32))
    x[:, 0] = np.arange(1, 18, 2)  # 1, 3, 5, ...: exactly halfway between two codewords
    labels, sq = A._nearest_screened(x, c)
    assert labels.tolist() == list(range(9)) and sq.tolist() == [1.0] * 9
    x[4, 5] = np.nan
    with pytest.raises(ValueError, match="finite"):
        nearest_centroid(x, c, backend="numba")


# ------------------------------------------------- float32 screens (numba backend)
@pytest.mark.parametrize("n,k,d", [(1, 16, 1), (5, 17, 3), (129, 256, 8), (300, 40, 7), (257, 64, 24), (70, 1030, 33)])
def test_float32_screens_equal_the_direct_kernel(n, k, d):
    from companion.kernels import assign as A

    rng = np.random.default_rng(n + k + d)
    x = rng.standard_normal((n, d)).astype(np.float32)
    c = rng.standard_normal((k, d)).astype(np.float32)
    c[9] = c[2]  # duplicate codeword: ties to index 2
    x[0] = c[2]
    labels, sq = A._nearest_numba(x, c)
    direct_labels, direct_sq = A._nearest_rows_numba_call(x, c)
    np.testing.assert_array_equal(labels, direct_labels)
    np.testing.assert_array_equal(sq, direct_sq)  # same float64 sums, bit for bit
    assert labels[0] == 2 and sq[0] == 0.0
    np.testing.assert_array_equal(labels, nearest_centroid(x, c, backend="numpy")[0])


@pytest.mark.parametrize("d", [6, 64])
def test_float32_screens_recheck_near_ties_far_from_the_origin(d):
    from companion.kernels import assign as A

    rng = np.random.default_rng(d)
    x = (300.0 + rng.standard_normal((500, d))).astype(np.float32)  # the float32 expansion cancels
    c = (300.0 + 1e-3 * rng.standard_normal((64, d))).astype(np.float32)  # near ties everywhere
    xi = np.zeros((19, d), np.float32)
    xi[:, 0] = np.arange(1, 39, 2)  # exactly halfway between two integer codewords
    ci = np.zeros((20, d), np.float32)
    ci[:, 0] = np.arange(20) * 2.0
    for xx, cc in ((x, c), (xi, ci), (x[::3, :], c[::2])):  # non-contiguous views too
        labels, sq = A._nearest_numba(xx, cc)
        direct_labels, direct_sq = A._nearest_rows_numba_call(xx, cc)
        np.testing.assert_array_equal(labels, direct_labels)
        np.testing.assert_array_equal(sq, direct_sq)
    assert A._nearest_numba(xi, ci)[0].tolist() == list(range(19))


@pytest.mark.parametrize("d", [5, 40])
def test_float32_screens_refuse_non_finite_and_handle_huge_values(d):
    rng = np.random.default_rng(1)
    c = rng.standard_normal((32, d)).astype(np.float32)
    x = rng.standard_normal((100, d)).astype(np.float32)
    x[7, d - 1] = np.inf
    with pytest.raises(ValueError, match="finite"):
        nearest_centroid(x, c, backend="numba")
    x[7, d - 1] = 1e16  # finite, but its square is too large for the float32 screen: measured exactly
    labels, sq = nearest_centroid(x, c, backend="numba")
    ref_labels, _ = nearest_centroid(x, c, backend="numpy")
    np.testing.assert_array_equal(labels, ref_labels)
    big = c * np.float32(1e17)  # codewords too large for a float32 screen: fallback path
    np.testing.assert_array_equal(nearest_centroid(x[:7], big, backend="numba")[0],
                                  nearest_centroid(x[:7], big, backend="numpy")[0])


def test_pq_assign_numba_equals_per_slice_assignment():
    from companion.kernels import assign as A

    rng = np.random.default_rng(4)
    for n, m_sub, k, sub in [(1, 1, 16, 1), (300, 3, 256, 6), (1000, 4, 100, 8), (130, 2, 17, 13)]:
        x = rng.standard_normal((n, m_sub * sub)).astype(np.float32)
        books = rng.standard_normal((m_sub, k, sub)).astype(np.float32)
        books[:, 5] = books[:, 1]  # duplicates: ties to the lower index
        out = np.empty((n, m_sub), dtype=np.uint8 if k <= 256 else np.int64)
        assert A.pq_assign_numba(x, books, out)
        for m in range(m_sub):
            ref, _ = nearest_centroid(x[:, m * sub:(m + 1) * sub], books[m], backend="numpy")
            np.testing.assert_array_equal(out[:, m], ref)

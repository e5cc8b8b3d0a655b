"""Tests of companion.compression.codebooks: k-means, PQ (encode/decode/ADC search), RQ, codebook layers, VQ."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from companion import backend
from companion.compression import (
    CodebookLinear,
    ProductQuantizer,
    ResidualQuantizer,
    StraightThroughVQ,
    adc_search,
    bits_per_weight,
    compress_linear_layers,
    kmeans,
)

NO_GPU = "needs CuPy and a CUDA device; none is usable here"
GPU = [pytest.mark.gpu, pytest.mark.skipif(not backend.cupy_available(), reason=NO_GPU)]
BACKENDS = ["numpy", "numba", pytest.param("cupy", marks=GPU)]


def _blobs(rng, n_per=50, centres=((0, 0), (6, 0), (0, 6)), scale=0.3):
    c = np.asarray(centres, dtype=np.float64)
    x = np.concatenate([ci + scale * rng.standard_normal((n_per, c.shape[1])) for ci in c])
    return x, np.repeat(np.arange(len(c)), n_per)


# -------------------------------------------------------------------- kmeans
def test_kmeans_recovers_separated_blobs_and_labels_are_nearest():
    rng = np.random.default_rng(0)
    x, truth = _blobs(rng)
    centroids, labels = kmeans(x, 3, rng=1)
    # the clustering equals the truth up to a relabelling
    mapping = {int(t): int(lab) for t, lab in zip(truth, labels)}
    assert len(set(mapping.values())) == 3
    np.testing.assert_array_equal(labels, [mapping[int(t)] for t in truth])
    # labels are the nearest returned centroid, centroids are the cluster means
    dist = ((x[:, None, :] - centroids[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(labels, dist.argmin(1))
    for j in range(3):
        np.testing.assert_allclose(centroids[j], x[labels == j].mean(0), atol=1e-12)


def test_kmeans_is_deterministic_given_the_seed_and_backend_independent():
    x = np.random.default_rng(2).standard_normal((400, 5)).astype(np.float32)
    a = kmeans(x, 12, rng=7, backend="numpy")
    b = kmeans(x, 12, rng=np.random.default_rng(7), backend="numba")
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[0].dtype == np.float32 and a[1].dtype == np.int64
    c = kmeans(x, 12, rng=8)
    assert not np.array_equal(a[0], c[0])


def test_lloyd_iterations_do_not_increase_the_error():
    x = np.random.default_rng(3).standard_normal((600, 4))
    errors = []
    for iters in (0, 1, 3, 10):
        c, lab = kmeans(x, 20, iters=iters, rng=0)
        errors.append(((x - c[lab]) ** 2).sum())
    assert all(e1 <= e0 + 1e-9 for e0, e1 in zip(errors, errors[1:]))
    assert errors[-1] < errors[0]


def test_kmeans_with_k_equal_n_and_duplicates_reseeds_empty_clusters():
    x = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    c, lab = kmeans(x, 5, rng=0)  # only 3 distinct points: some clusters must be empty/duplicated
    assert c.shape == (5, 2) and np.isfinite(c).all()
    assert ((x - c[lab]) ** 2).sum() == 0.0  # every point sits on a centroid
    x2 = np.random.default_rng(4).standard_normal((6, 3))
    c2, lab2 = kmeans(x2, 6, rng=0)  # k == n: each point its own centroid
    assert sorted(lab2.tolist()) == list(range(6))


def test_kmeans_torch_input_keeps_its_kind():
    x = torch.from_numpy(np.random.default_rng(5).standard_normal((50, 3)).astype(np.float32))
    c, lab = kmeans(x, 4, rng=0)
    assert isinstance(c, torch.Tensor) and c.dtype == torch.float32 and lab.dtype == torch.int64
    np.testing.assert_array_equal(c.numpy(), kmeans(x.numpy(), 4, rng=0)[0])


def test_kmeans_bad_inputs():
    x = np.zeros((5, 2))
    with pytest.raises(ValueError, match="k must be <= the number of points"):
        kmeans(x, 6)
    with pytest.raises(ValueError, match="empty"):
        kmeans(np.zeros((0, 2)), 1)
    with pytest.raises(ValueError, match="finite"):
        kmeans(np.array([[0.0, np.nan], [1.0, 1.0]]), 1)
    with pytest.raises(ValueError, match="k must be >= 1"):
        kmeans(x, 0)
    with pytest.raises(TypeError, match="k must be an integer"):
        kmeans(x, 2.0)
    with pytest.raises(TypeError, match="rng must be"):
        kmeans(x, 2, rng="seed")
    with pytest.raises(ValueError, match="iters must be >= 0"):
        kmeans(x, 2, iters=-1)


# ------------------------------------------------------------------------ PQ
def _data(n=600, d=16, seed=10, dtype=np.float64):
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((d, d)) / np.sqrt(d)
    return (rng.standard_normal((n, d)) @ mix).astype(dtype)


@pytest.mark.parametrize("name", BACKENDS)
def test_pq_encode_decode_round_trip(name):
    x = _data(dtype=np.float32)
    pq = ProductQuantizer(4, 32, backend=name).fit(x, rng=0)
    codes = pq.encode(x)
    assert codes.shape == (600, 4) and codes.dtype == np.uint8
    decoded = pq.decode(codes)
    assert decoded.shape == x.shape and decoded.dtype == np.float32
    np.testing.assert_array_equal(pq.encode(decoded), codes)  # decoded vectors re-encode to themselves
    # each slice's code is the nearest codeword of that slice
    books = backend.to_numpy(pq.codebooks_)  # CuPy codebooks for the cupy backend
    for m in range(4):
        sl = x[:, 4 * m:4 * m + 4].astype(np.float64)
        dist = ((sl[:, None] - books[m][None].astype(np.float64)) ** 2).sum(-1)
        np.testing.assert_array_equal(codes[:, m], dist.argmin(1))
    # quantizing beats the trivial one-codeword quantizer
    assert ((x - decoded) ** 2).mean() < 0.5 * ((x - x.mean(0)) ** 2).mean()


def test_pq_backends_give_identical_codebooks_and_codes():
    x = _data(n=300, d=8)
    a = ProductQuantizer(2, 16, backend="numpy").fit(x, rng=3)
    b = ProductQuantizer(2, 16, backend="numba").fit(x, rng=3)
    np.testing.assert_array_equal(a.codebooks_, b.codebooks_)
    np.testing.assert_array_equal(a.encode(x), b.encode(x))


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pq_search_equals_brute_force_over_decoded_vectors(name, dtype):
    x = _data(n=700, d=12, dtype=dtype)
    queries = _data(n=25, d=12, seed=11, dtype=dtype)
    pq = ProductQuantizer(3, 64, backend=name).fit(x[:500], rng=0).add(x)
    dist, idx = pq.search(queries, 10)
    decoded = backend.to_numpy(pq.decode(pq.codes_)).astype(np.float64)
    brute = ((queries.astype(np.float64)[:, None] - decoded[None]) ** 2).sum(-1)  # (q, n)
    expected = np.argsort(brute, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(idx, expected)
    np.testing.assert_allclose(dist, np.take_along_axis(brute, expected, 1), rtol=1e-5 if dtype == np.float32 else 1e-12)
    assert dist.dtype == dtype and idx.dtype == np.int64


def test_pq_distance_tables_equal_sliced_distances():
    x = _data(n=200, d=6)
    pq = ProductQuantizer(3, 8).fit(x, rng=0)
    q = x[:4]
    tables = pq.distance_tables(q)
    assert tables.shape == (4, 3, 8)
    for m in range(3):
        expected = ((q[:, None, 2 * m:2 * m + 2] - pq.codebooks_[m][None]) ** 2).sum(-1)
        np.testing.assert_allclose(tables[:, m], expected, rtol=1e-14)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("code_type", [np.uint8, np.uint16, np.int64])
def test_adc_kernels_equal_the_reference_bit_for_bit(name, code_type):
    rng = np.random.default_rng(12)
    tables = rng.random((9, 5, 40)).astype(np.float32)
    codes = rng.integers(0, 40, size=(333, 5)).astype(code_type)
    d_ref, i_ref = adc_search(tables, codes, 7, backend="numpy")
    d, i = adc_search(tables, codes, 7, backend=name)
    np.testing.assert_array_equal(i, i_ref)
    np.testing.assert_array_equal(d, d_ref)  # same accumulation order: bit-identical
    full = tables[:, np.arange(5), codes].sum(-1)  # (q, n) independent sum
    np.testing.assert_array_equal(np.sort(full, axis=1)[:, :7].round(5), d.round(5))


@pytest.mark.parametrize("name", BACKENDS)
def test_adc_ties_go_to_the_lower_row_and_k_equal_n(name):
    tables = np.zeros((1, 2, 3))
    tables[0, 0] = [0.0, 1.0, 1.0]
    codes = np.array([[1, 0], [0, 0], [2, 0], [0, 0], [1, 0]])  # rows 1,3 at 0; rows 0,2,4 at 1
    d, i = adc_search(tables, codes, 5, backend=name)
    assert i.tolist() == [[1, 3, 0, 2, 4]] and d.tolist() == [[0.0, 0.0, 1.0, 1.0, 1.0]]


def test_pq_torch_input_keeps_its_kind():
    x = torch.from_numpy(_data(n=300, d=8, dtype=np.float32))
    pq = ProductQuantizer(2, 16).fit(x, rng=0).add(x)
    codes = pq.encode(x)
    assert isinstance(codes, torch.Tensor)
    assert isinstance(pq.decode(codes), torch.Tensor)
    d, i = pq.search(x[:3], 2)
    assert isinstance(i, torch.Tensor) and i[:, 0].tolist() == pq.search(x[:3].numpy(), 2)[1][:, 0].tolist()


def test_pq_bad_inputs():
    x = _data(n=100, d=10)
    with pytest.raises(ValueError, match="not divisible by n_subspaces = 3"):
        ProductQuantizer(3, 8).fit(x)
    pq = ProductQuantizer(2, 8)
    with pytest.raises(ValueError, match="not fitted yet: call fit"):
        pq.encode(x)
    with pytest.raises(ValueError, match="not fitted yet"):
        pq.decode(np.zeros((3, 2), dtype=np.uint8))
    with pytest.raises(ValueError, match="not fitted yet"):
        pq.search(x, 1)
    with pytest.raises(ValueError, match="at least n_centroids = 200"):
        ProductQuantizer(2, 200).fit(x)
    with pytest.raises(ValueError, match="empty"):
        ProductQuantizer(2, 8).fit(np.zeros((0, 10)))
    with pytest.raises(ValueError, match="finite"):
        ProductQuantizer(2, 8).fit(np.where(np.arange(10) == 3, np.inf, x))
    pq.fit(x, rng=0)
    with pytest.raises(ValueError, match="finite"):
        pq.encode(np.full((2, 10), np.nan))
    with pytest.raises(ValueError, match="d = 10 columns"):
        pq.encode(np.zeros((2, 8)))
    with pytest.raises(ValueError, match="database is empty: call add"):
        pq.search(x, 1)
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 8\)"):
        pq.decode(np.array([[0, 8]]))
    with pytest.raises(ValueError, match="codes must have 2 columns"):
        pq.decode(np.zeros((3, 3), dtype=np.uint8))
    pq.add(x)
    with pytest.raises(ValueError, match="k must be <= the number of database rows"):
        pq.search(x[:2], 101)
    with pytest.raises(ValueError, match="n_subspaces must be >= 1"):
        ProductQuantizer(0, 8)
    with pytest.raises(ValueError, match="backend must be one of"):
        ProductQuantizer(2, 8, backend="tpu")


# ------------------------------------------------------------------------ RQ
@pytest.mark.parametrize("name", ["numpy", "numba"])
def test_rq_round_trip_and_error_falls_with_stages(name):
    x = _data(n=500, d=8)
    rq = ResidualQuantizer(4, 16, backend=name).fit(x, rng=0)
    codes = rq.encode(x)
    assert codes.shape == (500, 4) and codes.dtype == np.uint8 and rq.bits_per_vector == 16.0
    err = [((x - rq.decode(codes[:, :s], partial=True)) ** 2).mean() for s in range(1, 5)]
    assert all(b < a for a, b in zip(err, err[1:]))
    np.testing.assert_allclose(rq.decode(codes), rq.decode(codes[:, :4], partial=True))
    # decode is the sum of one codeword per stage
    manual = sum(rq.codebooks_[s][codes[:, s]] for s in range(4))
    np.testing.assert_allclose(rq.decode(codes), manual, atol=1e-12)
    # greedy encoding: stage 1 is the nearest first-stage codeword
    d1 = ((x[:, None] - rq.codebooks_[0][None]) ** 2).sum(-1)
    np.testing.assert_array_equal(codes[:, 0], d1.argmin(1))


def test_rq_bad_inputs():
    rq = ResidualQuantizer(2, 8)
    with pytest.raises(ValueError, match="not fitted yet"):
        rq.encode(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="at least n_centroids"):
        rq.fit(np.zeros((3, 4)))
    rq.fit(_data(n=50, d=4), rng=0)
    with pytest.raises(ValueError, match="codes must have 2 columns"):
        rq.decode(np.zeros((3, 1), dtype=np.uint8))
    with pytest.raises(ValueError, match="1 to 2 columns"):
        rq.decode(np.zeros((3, 3), dtype=np.uint8), partial=True)


# ------------------------------------------------------------ codebook layers
def test_codebook_linear_decodes_to_clustered_weights_and_counts_bits():
    torch.manual_seed(0)
    linear = torch.nn.Linear(12, 5)
    layer = CodebookLinear.from_linear(linear, 8, group_size=3, rng=0)
    w = linear.weight.detach().numpy().reshape(-1, 3)
    centroids, labels = kmeans(w, 8, rng=0)
    np.testing.assert_allclose(layer.weight.detach().numpy(), centroids[labels].reshape(5, 12))
    x = torch.randn(7, 12)
    torch.testing.assert_close(layer(x), x @ layer.weight.T + linear.bias)
    assert layer.bits_per_weight() == pytest.approx((20 * 3 + 8 * 3 * 32) / 60)
    # with K equal to the number of groups the layer is lossless
    exact = CodebookLinear.from_linear(linear, 20, group_size=3, rng=0)
    torch.testing.assert_close(exact.weight, linear.weight)
    # gradients reach the codebook, not the codes
    layer(x).sum().backward()
    assert layer.codebook.grad is not None and layer.codebook.grad.abs().sum() > 0


def test_compress_linear_layers_and_bits_per_weight():
    torch.manual_seed(1)
    mlp = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    assert bits_per_weight(mlp) == 32.0
    small = compress_linear_layers(mlp, 4, rng=0)
    assert isinstance(small[0], CodebookLinear) and isinstance(mlp[0], torch.nn.Linear)
    expected = (128 * 2 + 4 * 32 + 48 * 2 + 4 * 32) / 176
    assert bits_per_weight(small) == pytest.approx(expected)
    with pytest.raises(ValueError, match="group_size = 3 must divide in_features = 8"):
        compress_linear_layers(mlp, 4, group_size=3)
    with pytest.raises(ValueError, match="no linear layers"):
        bits_per_weight(torch.nn.ReLU())
    with pytest.raises(TypeError, match="torch.nn.Linear"):
        CodebookLinear.from_linear(torch.nn.ReLU(), 4)


def test_straight_through_vq_values_gradients_and_losses():
    vq = StraightThroughVQ(6, 3, generator=torch.Generator().manual_seed(0))
    z = torch.randn(10, 3, generator=torch.Generator().manual_seed(1), requires_grad=True)
    zq, codes, loss = vq(z)
    dist = ((z.detach()[:, None] - vq.codebook.detach()[None]) ** 2).sum(-1)
    assert codes.tolist() == dist.argmin(1).tolist()
    torch.testing.assert_close(zq, vq.codebook[codes].detach())
    zq.pow(2).sum().backward(retain_graph=True)
    torch.testing.assert_close(z.grad, 2 * zq.detach())  # straight-through: d(zq)/dz = identity
    assert vq.codebook.grad is None  # the codebook learns only through the loss
    loss.backward()
    assert vq.codebook.grad is not None
    with pytest.raises(ValueError, match="last dimension 3"):
        vq(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="finite"):
        vq(torch.full((2, 3), float("nan")))
    with pytest.raises(ValueError, match="empty"):
        vq(torch.zeros(0, 3))


@pytest.mark.parametrize("q,n,k,tdtype,code_type", [(1, 5, 5, np.float64, np.int64), (16, 20000, 13, np.float32, np.uint16),
                                                   (17, 9000, 30, np.float32, np.uint8), (9, 30000, 100, np.float64, np.int32)])
def test_adc_numba_blocks_chunks_and_ties_equal_the_reference(q, n, k, tdtype, code_type):
    # query blocks of 16 (float32) / 8 (float64) lanes with a tail, several row chunks
    # (one shorter than k), integer tables (many exact ties) and random tables
    rng = np.random.default_rng(q + n)
    codes = rng.integers(0, 40, size=(n, 5)).astype(code_type)
    for tables in (rng.integers(0, 3, (q, 5, 40)).astype(tdtype), rng.random((q, 5, 40)).astype(tdtype)):
        d_ref, i_ref = adc_search(tables, codes, k, backend="numpy")
        d, i = adc_search(tables, codes[:, :], k, backend="numba")
        np.testing.assert_array_equal(i, i_ref)
        np.testing.assert_array_equal(d, d_ref)
    d, i = adc_search(tables, np.asfortranarray(codes), k, backend="numba")  # non-contiguous codes
    np.testing.assert_array_equal(i, i_ref)


def test_adc_numba_chunk_shorter_than_k(monkeypatch):
    from companion.compression import _c3_adc

    monkeypatch.setattr(_c3_adc, "_MIN_CHUNK", 1)
    rng = np.random.default_rng(3)
    tables = rng.integers(0, 2, (3, 2, 4)).astype(np.float32)
    codes = rng.integers(0, 4, size=(23, 2)).astype(np.uint8)
    d_ref, i_ref = adc_search(tables, codes, 20, backend="numpy")
    d, i = adc_search(tables, codes, 20, backend="numba")
    np.testing.assert_array_equal(i, i_ref)
    np.testing.assert_array_equal(d, d_ref)


def test_pq_fused_encode_equals_the_numpy_backend():
    x = _data(n=1000, d=24, dtype=np.float32)
    a = ProductQuantizer(3, 256, iters=3, backend="numba").fit(x, rng=0)
    b = ProductQuantizer(3, 256, iters=3, backend="numpy")
    b.codebooks_, b.dim_ = a.codebooks_, a.dim_
    far = x + np.float32(200.0)  # near ties in float32: rechecked exactly
    for xx in (x, far, x[::2]):
        np.testing.assert_array_equal(a.encode(xx), b.encode(xx))

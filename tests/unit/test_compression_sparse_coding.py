"""Tests of companion.compression.sparse_coding: ISTA backends and optimality, top-k autoencoder, baselines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from companion import backend
from companion.compression import (
    TopKSparseAutoencoder,
    ista,
    nearest_neighbor_accuracy,
    prefix_truncate,
    soft_threshold,
    topk_sparsify,
    train_embedding_encoder,
    train_sparse_autoencoder,
)

NO_GPU = "needs CuPy and a CUDA device; none is usable here"
GPU = [pytest.mark.gpu, pytest.mark.skipif(not backend.cupy_available(), reason=NO_GPU)]
BACKENDS = ["numpy", "numba", pytest.param("cupy", marks=GPU)]


def _problem(seed, n=20, d=10, k=25):
    rng = np.random.default_rng(seed)
    dic = rng.standard_normal((k, d))
    dic /= np.linalg.norm(dic, axis=1, keepdims=True)
    truth = np.where(rng.random((n, k)) < 0.1, rng.standard_normal((n, k)), 0.0)
    return truth @ dic + 0.01 * rng.standard_normal((n, d)), dic


def _lasso(x, dic, z, lam):
    return 0.5 * ((x - z @ dic) ** 2).sum(1) + lam * np.abs(z).sum(1)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("nonnegative", [False, True])
def test_ista_backends_match_reference(name, nonnegative):
    x, dic = _problem(0)
    ref = ista(x, dic, 0.1, n_iter=50, nonnegative=nonnegative, backend="numpy")
    got = ista(x, dic, 0.1, n_iter=50, nonnegative=nonnegative, backend=name)
    got = got.get() if hasattr(got, "get") else got
    np.testing.assert_allclose(got, ref, atol=1e-10)
    if nonnegative:
        assert (ref >= 0).all()


def test_ista_decreases_the_lasso_objective_and_satisfies_optimality():
    x, dic = _problem(1)
    lam = 0.05
    prev = _lasso(x, dic, np.zeros((len(x), len(dic))), lam)
    z = None
    for _ in range(20):
        z = ista(x, dic, lam, n_iter=25, init=z)
        now = _lasso(x, dic, z, lam)
        assert (now <= prev + 1e-12).all()
        prev = now
    z = ista(x, dic, lam, n_iter=5000, init=z)
    grad = (z @ dic - x) @ dic.T  # KKT: |grad| <= lam, = -lam sign(z) on the support
    assert np.abs(grad).max() <= lam + 1e-5
    support = z != 0
    np.testing.assert_allclose(grad[support], -lam * np.sign(z[support]), atol=1e-5)


def test_ista_larger_penalty_gives_sparser_codes():
    x, dic = _problem(2)
    nnz = [np.count_nonzero(ista(x, dic, lam, n_iter=300)) for lam in (0.01, 0.1, 0.5)]
    assert nnz[0] > nnz[1] > nnz[2]


def test_ista_torch_in_torch_out():
    x, dic = _problem(3)
    got = ista(torch.tensor(x), torch.tensor(dic), 0.1, n_iter=20)
    assert isinstance(got, torch.Tensor)
    np.testing.assert_allclose(got.numpy(), ista(x, dic, 0.1, n_iter=20, backend="numpy"), atol=1e-10)


def test_soft_threshold_topk_and_prefix():
    v = np.array([-3.0, -0.2, 0.0, 0.4, 2.0])
    np.testing.assert_allclose(soft_threshold(v, 0.5), [-2.5, 0.0, 0.0, 0.0, 1.5])
    np.testing.assert_allclose(soft_threshold(v, 0.5, nonnegative=True), [0.0, 0.0, 0.0, 0.0, 1.5])
    rng = np.random.default_rng(4)
    z = rng.standard_normal((30, 12))
    for k in (1, 5, 12):
        s = topk_sparsify(z, k)
        assert ((s != 0).sum(1) == k).all()
        kept = np.sort(np.where(s != 0, z, -np.inf), axis=1)[:, -k:]
        np.testing.assert_array_equal(kept, np.sort(z, axis=1)[:, -k:])  # top-k agrees with a sort
    np.testing.assert_array_equal(prefix_truncate(z, 3), z[:, :3])


def test_topk_autoencoder_codes_and_training():
    torch.manual_seed(0)
    sae = TopKSparseAutoencoder(6, 30, k=4)
    x = torch.randn(50, 6)
    x_hat, z = sae(x)
    assert x_hat.shape == (50, 6) and z.shape == (50, 30)
    assert ((z != 0).sum(1) <= 4).all() and (z >= 0).all()
    np.testing.assert_allclose(sae.dictionary.detach().norm(dim=1).numpy(), 1.0, rtol=1e-5)
    rng = np.random.default_rng(5)
    atoms = rng.standard_normal((8, 6))
    data = (np.abs(rng.standard_normal((400, 2))) [:, :, None] * atoms[rng.integers(0, 8, (400, 2))]).sum(1)
    model, losses = train_sparse_autoencoder(data.astype(np.float32), 32, 2, epochs=40, seed=1)
    assert losses[-1] < 0.3 * losses[0]
    # more active latents never fit worse (same seed, same data)
    _, losses_k4 = train_sparse_autoencoder(data.astype(np.float32), 32, 4, epochs=40, seed=1)
    assert losses_k4[-1] <= losses[-1] * 1.05
    again, losses_cpu = train_sparse_autoencoder(data.astype(np.float32), 32, 2, epochs=40, seed=1, device="cpu")
    np.testing.assert_array_equal(losses_cpu, losses)  # same seed, same device: bit-identical training
    assert next(again.parameters()).device.type == "cpu"


def test_matryoshka_encoder_prefixes_are_usable_and_retrieval_accuracy():
    rng = np.random.default_rng(6)
    centres = rng.standard_normal((4, 10)) * 3
    y = rng.integers(0, 4, 300)
    x = (centres[y] + rng.standard_normal((300, 10))).astype(np.float32)
    enc = train_embedding_encoder(x[:200], y[:200], 8, prefixes=[2, 4, 8], epochs=30, seed=0)
    with torch.no_grad():
        e = enc(torch.as_tensor(x)).numpy()
    acc2 = nearest_neighbor_accuracy(e[:200, :2], y[:200], e[200:, :2], y[200:])
    assert acc2 > 0.9
    assert nearest_neighbor_accuracy(x[:200], y[:200], x[200:], y[200:]) > 0.9
    assert nearest_neighbor_accuracy(x[:200], y[:200], x[200:], (y[200:] + 1) % 4) < 0.1


def test_bad_input_raises_clear_errors():
    x, dic = _problem(7)
    with pytest.raises(ValueError, match="dictionary must have shape \\(k, d\\) with d = 10"):
        ista(x, dic[:, :5], 0.1)
    with pytest.raises(ValueError, match="lam must be >= 0.0"):
        ista(x, dic, -0.1)
    with pytest.raises(ValueError, match="n_iter must be >= 1"):
        ista(x, dic, 0.1, n_iter=0)
    with pytest.raises(ValueError, match="dictionary is all zeros"):
        ista(x, np.zeros_like(dic), 0.1)
    with pytest.raises(ValueError, match="init must have shape"):
        ista(x, dic, 0.1, init=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="x must contain only finite values"):
        ista(np.full_like(x, np.nan), dic, 0.1)
    with pytest.raises(ValueError, match="k must be <= 12"):
        topk_sparsify(np.zeros((2, 12)), 13)
    with pytest.raises(ValueError, match="m must be >= 1"):
        prefix_truncate(np.zeros((2, 12)), 0)
    with pytest.raises(ValueError, match="k must be <= 5"):
        TopKSparseAutoencoder(3, 5, 6)
    with pytest.raises(ValueError, match="labels must have one entry per row of x"):
        train_embedding_encoder(np.zeros((4, 3), dtype=np.float32), np.zeros(3, dtype=int), 2, epochs=1)
    with pytest.raises(ValueError, match="queries must have 3 columns"):
        nearest_neighbor_accuracy(np.zeros((2, 3)), np.zeros(2), np.zeros((2, 4)), np.zeros(2))
    with pytest.raises(ValueError, match="labels must have one entry per row"):
        nearest_neighbor_accuracy(np.zeros((2, 3)), np.zeros(3), np.zeros((2, 3)), np.zeros(2))

"""Tests of companion.memory.sdm: backends of the code selection, storage/recall properties, baselines, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from companion import backend
from companion.memory import (
    CompetitiveModuleConfig,
    CompetitiveModuleMemory,
    KanervaSDM,
    WillshawNet,
    code_overlap,
    flip_bits,
)
from companion.memory import _m3_kernels as kernels

NO_GPU = "needs CuPy and a CUDA device; none is usable here"
GPU = [pytest.mark.gpu, pytest.mark.skipif(not backend.cupy_available(), reason=NO_GPU)]
BACKENDS = ["numpy", "numba", pytest.param("cupy", marks=GPU)]


def _patterns(seed=0, n=40, n_bits=48, density=0.25):
    return (np.random.default_rng(seed).random((n, n_bits)) < density).astype(np.uint8)


def _clusters(seed=0, n_protos=4, per=10, n_bits=64, flips=3):
    """Noisy copies of a few prototypes: similar inputs within a cluster, dissimilar across."""
    rng = np.random.default_rng(seed)
    protos = (rng.random((n_protos, n_bits)) < 0.3).astype(np.uint8)
    return flip_bits(rng, np.repeat(protos, per, axis=0), flips)[rng.permutation(n_protos * per)]


# ------------------------------------------------------------------ kernels
@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("learn,deterministic", [(True, False), (False, False), (False, True)])
@pytest.mark.parametrize("beta_max", [0.0, 30.0])
def test_encode_backends_match_reference(name, learn, deterministic, beta_max):
    x = _clusters(1)
    cfg = CompetitiveModuleConfig(n_modules=5, module_size=16, beta_max=beta_max, familiarity_floor=0.3)
    rng = np.random.default_rng(2)
    base = np.zeros((64, 80), dtype=np.uint8)
    kernels.encode_numpy(x[:15], base, 5, 16, rng.random((15, 5)), cfg.params, True, False)  # some stored content
    uniforms = rng.random((len(x), 5))
    w_ref = base.copy()
    codes_ref, fam_ref = kernels.encode_numpy(x, w_ref, 5, 16, uniforms, cfg.params, learn, deterministic)
    w = backend.for_backend(base.copy(), name)
    codes, fam = kernels.ENCODE[name](backend.for_backend(x, name), w, 5, 16, backend.for_backend(uniforms, name),
                                      cfg.params, learn, deterministic)
    np.testing.assert_array_equal(backend.to_numpy(codes), codes_ref)
    np.testing.assert_allclose(backend.to_numpy(fam), fam_ref, atol=1e-12)
    np.testing.assert_array_equal(backend.to_numpy(w), w_ref)


# ---------------------------------------------------------- competitive memory
def test_store_is_single_trial_hebbian_and_recall_finds_stored_patterns():
    x = _patterns(3, n=25)
    mem = CompetitiveModuleMemory(48, CompetitiveModuleConfig(n_modules=6, module_size=64))
    codes = mem.store(x, np.random.default_rng(0))
    assert codes.shape == (25, 6) and codes.min() >= 0 and codes.max() < 64
    units = codes + np.arange(6) * 64
    expected = np.zeros_like(mem.weights)
    for row, u in zip(x, units):
        expected[np.ix_(np.flatnonzero(row), u)] = 1
    np.testing.assert_array_equal(mem.weights, expected)  # exactly the active-bit -> winner connections
    recalled, familiarity = mem.recall(x, np.random.default_rng(1))
    assert (code_overlap(recalled, codes).argmax(1) == np.arange(25)).all()  # every episode found
    _, novel_familiarity = mem.encode(_patterns(30, n=25), np.random.default_rng(2))
    assert (recalled == codes).mean() > 0.85 and familiarity.mean() > novel_familiarity.mean() + 0.2
    assert (mem.decode(recalled) == x).mean() > 0.97


def test_novel_inputs_get_random_codes_and_familiarity_is_low():
    mem = CompetitiveModuleMemory(48, CompetitiveModuleConfig(n_modules=8, module_size=32))
    codes, fam = mem.encode(_patterns(4, n=3), np.random.default_rng(0))
    assert (fam == 0).all()  # nothing stored: nothing matches
    assert mem.n_stored == 0 and not mem.weights.any()  # encode does not learn


def test_familiarity_makes_similar_inputs_share_units_and_random_codes_do_not():
    x = _clusters(5, n_protos=4, per=12, flips=2)
    sim = (x @ x.T.astype(float)) / np.sqrt(np.outer(x.sum(1), x.sum(1)))
    iu = np.triu_indices(len(x), 1)
    corr = {}
    for beta in (30.0, 0.0):
        mem = CompetitiveModuleMemory(64, CompetitiveModuleConfig(n_modules=8, module_size=64, beta_max=beta,
                                                                  familiarity_floor=0.5))
        codes = mem.store(x, np.random.default_rng(6))
        corr[beta] = np.corrcoef(sim[iu], code_overlap(codes)[iu])[0, 1]
    assert corr[30.0] > 0.5 and abs(corr[0.0]) < 0.2


def test_noisy_cues_recall_their_episode():
    x = _patterns(7, n=30, n_bits=64, density=0.3)
    mem = CompetitiveModuleMemory(64, CompetitiveModuleConfig(n_modules=10, module_size=128))
    codes = mem.store(x, np.random.default_rng(0))
    cues = flip_bits(np.random.default_rng(1), x, 4)
    recalled, _ = mem.recall(cues, np.random.default_rng(2))
    overlap = code_overlap(recalled, codes)
    assert np.mean(overlap.argmax(1) == np.arange(30)) > 0.9


def test_torch_input_and_code_overlap():
    x = torch.from_numpy(_patterns(8, n=5))
    mem = CompetitiveModuleMemory(48, CompetitiveModuleConfig(n_modules=4, module_size=8))
    codes = mem.store(x, np.random.default_rng(0))
    assert isinstance(codes, torch.Tensor) and codes.shape == (5, 4)
    ov = code_overlap(codes.numpy())
    np.testing.assert_allclose(np.diag(ov), 1.0)
    assert ((ov >= 0) & (ov <= 1)).all() and np.allclose(ov, ov.T)


def test_flip_bits_flips_exactly_n():
    x = _patterns(9, n=20)
    y = flip_bits(np.random.default_rng(0), x, 5)
    assert ((x != y).sum(1) == 5).all()


# ------------------------------------------------------------------ baselines
def test_kanerva_stores_few_random_patterns_and_cleans_noise():
    rng = np.random.default_rng(10)
    x = (rng.random((8, 64)) < 0.5).astype(np.uint8)
    sdm = KanervaSDM(64, 3000, 150, rng)
    sdm.store(x)
    assert (sdm.recall(flip_bits(rng, x, 5), iterations=2) == x).all()


def test_willshaw_recalls_sparse_patterns_and_saturates_on_dense_ones():
    sparse = np.zeros((6, 60), dtype=np.uint8)
    for i in range(6):
        sparse[i, 10 * i: 10 * i + 5] = 1
    net = WillshawNet(60)
    net.store(sparse)
    cue = sparse.copy()
    cue[:, [0, 10, 20, 30, 40, 50]] = 0  # one bit of each pattern deleted
    assert (net.recall(cue, k=5) == sparse).all()
    dense = WillshawNet(60)
    dense.store(_patterns(11, n=100, n_bits=60, density=0.4))
    assert dense.load > 0.95


# ---------------------------------------------------------------- bad input
def test_bad_input_raises_clear_errors():
    mem = CompetitiveModuleMemory(8, CompetitiveModuleConfig(n_modules=2, module_size=4))
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="memory is empty"):
        mem.recall(np.zeros((1, 8), dtype=np.uint8), rng)
    with pytest.raises(ValueError, match="n_bits=8"):
        mem.store(np.zeros((2, 9), dtype=np.uint8), rng)
    with pytest.raises(ValueError, match="binary"):
        mem.store(np.full((2, 8), 0.5), rng)
    with pytest.raises(ValueError, match="finite"):
        mem.store(np.full((2, 8), np.nan), rng)
    with pytest.raises(TypeError, match="Generator"):
        mem.store(np.zeros((2, 8), dtype=np.uint8), 0)
    with pytest.raises(ValueError, match="backend must be one of"):
        mem.store(np.zeros((2, 8), dtype=np.uint8), rng, backend="gpu")
    with pytest.raises(ValueError, match="n_modules=2"):
        mem.decode(np.zeros((1, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="familiarity_ceiling must be > familiarity_floor"):
        CompetitiveModuleConfig(familiarity_floor=0.9, familiarity_ceiling=0.5)
    with pytest.raises(ValueError, match="module_size must be >= 2"):
        CompetitiveModuleConfig(module_size=1)
    with pytest.raises(TypeError, match="CompetitiveModuleConfig"):
        CompetitiveModuleMemory(8, {"n_modules": 2})
    with pytest.raises(ValueError, match="same number of modules"):
        code_overlap(np.zeros((2, 3), dtype=np.int64), np.zeros((2, 4), dtype=np.int64))
    with pytest.raises(ValueError, match="n_active must be <= 10"):
        KanervaSDM(8, 10, 11, rng)
    with pytest.raises(ValueError, match="memory is empty"):
        KanervaSDM(8, 10, 2, rng).recall(np.zeros((1, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match="memory is empty"):
        WillshawNet(8).recall(np.zeros((1, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match="n_bits=8"):
        WillshawNet(8).store(np.zeros((1, 7), dtype=np.uint8))
    with pytest.raises(ValueError, match="n_flips must be <= 8"):
        flip_bits(rng, np.zeros((1, 8), dtype=np.uint8), 9)

"""Tests of companion.memory.sparse_attention and companion.kernels.block_sparse."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

from companion import backend
from companion.kernels import block_mask_to_csr, block_sparse_numba
from companion.memory import (
    BlockMaskedTransformer,
    bigbird_block_mask,
    block_sparse_attention,
    dense_block_mask,
    fixed_block_mask,
    needle_task,
    sliding_window_block_mask,
    strided_block_mask,
    token_mask,
    window_global_block_mask,
)
from companion.nn import TransformerConfig

NO_GPU = "needs CuPy and a CUDA device; none is usable here"
GPU = [pytest.mark.gpu, pytest.mark.skipif(not backend.cupy_available(), reason=NO_GPU)]
BACKENDS = ["numpy", "numba", pytest.param("cupy", marks=GPU)]
ATOL = {np.float32: 2e-5, np.float64: 1e-12}


def _masks(n_blocks, causal, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "dense": dense_block_mask(n_blocks, causal=causal),
        "window": sliding_window_block_mask(n_blocks, 2, causal=causal),
        "strided": strided_block_mask(n_blocks, 3, causal=causal),
        "fixed": fixed_block_mask(n_blocks, 3, causal=causal),
        "window+global": window_global_block_mask(n_blocks, 2, 1, causal=causal),
        "bigbird": bigbird_block_mask(n_blocks, 1, 1, 2, rng, causal=causal),
        "random": rng.random((n_blocks, n_blocks)) < 0.4,  # arbitrary, may leave rows empty
    }


def _dense_softmax(q, k, v, allowed, scale):
    """Independent reference: full softmax over the allowed keys, in float64."""
    s = np.einsum("...id,...jd->...ij", q.astype(np.float64), k.astype(np.float64)) * scale
    s = np.where(allowed, s, -np.inf)
    out = np.zeros(q.shape[:-1] + (v.shape[-1],))
    seen = allowed.any(axis=-1)
    w = np.exp(s[..., seen, :] - s[..., seen, :].max(axis=-1, keepdims=True))
    out[..., seen, :] = (w / w.sum(axis=-1, keepdims=True)) @ v.astype(np.float64)
    return out


# ------------------------------------------------------------------ backends
@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("pattern", list(_masks(6, True)))
def test_backends_match_independent_reference(name, dtype, causal, pattern):
    rng = np.random.default_rng(zlib.crc32(f"{pattern}{causal}".encode()))
    block_size, n_blocks = 4, 6
    q, k = rng.standard_normal((2, 2, 3, 24, 8)).astype(dtype)
    v = rng.standard_normal((2, 3, 24, 5)).astype(dtype)
    mask = _masks(n_blocks, causal)[pattern]
    got = block_sparse_attention(q, k, v, mask, block_size=block_size, causal=causal, backend=name)
    expected = _dense_softmax(q, k, v, token_mask(mask, block_size, causal=causal), 8**-0.5)
    assert isinstance(got, np.ndarray) and got.dtype == dtype and got.shape == (2, 3, 24, 5)
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL[dtype] * 5)


@pytest.mark.parametrize("name", ["numpy", "numba"])
def test_all_ones_mask_equals_dense_causal_attention(name):
    rng = np.random.default_rng(1)
    q, k, v = rng.standard_normal((3, 2, 64, 16))
    got = block_sparse_attention(q, k, v, np.ones((8, 8), dtype=bool), block_size=8, backend=name)
    expected = torch.nn.functional.scaled_dot_product_attention(
        *(torch.from_numpy(a) for a in (q, k, v)), is_causal=True
    ).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-12)
    full = block_sparse_attention(q, k, v, np.ones((8, 8)), block_size=8, causal=False, backend=name)
    expected_full = torch.nn.functional.scaled_dot_product_attention(*(torch.from_numpy(a) for a in (q, k, v))).numpy()
    np.testing.assert_allclose(full, expected_full, atol=1e-12)


def test_numba_kernel_skips_masked_blocks():
    rng = np.random.default_rng(2)
    n_blocks, block_size = 12, 4
    mask = strided_block_mask(n_blocks, 4)
    q, k, v = rng.standard_normal((3, 2, n_blocks * block_size, 8))
    row_ptr, cols = block_mask_to_csr(mask)
    out, visits = block_sparse_numba(q, k, v, row_ptr, cols, block_size, True, 0.3, return_visits=True)
    # every row of heads visits exactly the listed blocks of each query block, never the others
    np.testing.assert_array_equal(visits, np.tile(mask.sum(axis=1), (2, 1)))
    assert visits.sum() < 2 * n_blocks * (n_blocks + 1) // 2
    # zeroing the keys and values of a skipped block changes nothing
    skipped = np.flatnonzero(~mask[-1])[0]
    k2, v2 = k.copy(), v.copy()
    k2[:, skipped * block_size:(skipped + 1) * block_size] = 1e3
    v2[:, skipped * block_size:(skipped + 1) * block_size] = 1e3
    out2 = block_sparse_numba(q, k2, v2, row_ptr, cols, block_size, True, 0.3)
    np.testing.assert_array_equal(out2[:, -block_size:], out[:, -block_size:])


def test_rows_that_see_no_key_give_zeros():
    rng = np.random.default_rng(3)
    q, k, v = rng.standard_normal((3, 16, 4))
    mask = np.array([[0, 0], [1, 1]], dtype=bool)
    for name in ("numpy", "numba"):
        out = block_sparse_attention(q, k, v, mask, block_size=8, backend=name)
        np.testing.assert_array_equal(out[:8], 0.0)
        assert np.abs(out[8:]).sum() > 0


def test_causal_ignores_mask_entries_above_the_diagonal():
    rng = np.random.default_rng(4)
    q, k, v = rng.standard_normal((3, 1, 32, 4))
    a = block_sparse_attention(q, k, v, np.ones((4, 4)), block_size=8)
    b = block_sparse_attention(q, k, v, np.tril(np.ones((4, 4))), block_size=8)
    np.testing.assert_array_equal(a, b)


def test_torch_input_returns_torch_and_scale_is_used():
    rng = np.random.default_rng(5)
    q, k, v = rng.standard_normal((3, 2, 16, 4)).astype(np.float32)
    mask = sliding_window_block_mask(4, 2)
    got = block_sparse_attention(torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v), mask,
                                 block_size=4, scale=0.7)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), block_sparse_attention(q, k, v, mask, block_size=4, scale=0.7,
                                                                   backend="numpy"), atol=2e-6)
    half = block_sparse_attention(torch.from_numpy(q).half(), torch.from_numpy(k).half(),
                                  torch.from_numpy(v).half(), mask, block_size=4)
    assert half.dtype == torch.float16


@pytest.mark.gpu
@pytest.mark.skipif(not backend.cupy_available(), reason=NO_GPU)
def test_cupy_input_keeps_its_kind():
    import cupy

    rng = np.random.default_rng(6)
    q, k, v = rng.standard_normal((3, 2, 4, 128, 64)).astype(np.float32)
    mask = strided_block_mask(4, 2)
    got = block_sparse_attention(cupy.asarray(q), cupy.asarray(k), cupy.asarray(v), mask, block_size=32)
    assert isinstance(got, cupy.ndarray)
    np.testing.assert_allclose(got.get(), block_sparse_attention(q, k, v, mask, block_size=32, backend="numpy"),
                               atol=1e-5)


# ------------------------------------------------------------- mask builders
@pytest.mark.parametrize("causal", [True, False])
def test_builders_shapes_symmetry_and_causality(causal):
    for name, mask in _masks(9, causal).items():
        assert mask.shape == (9, 9) and mask.dtype == bool
        if name == "random":
            continue
        if causal:
            assert not np.triu(mask, 1).any(), name
            assert mask.diagonal().all(), name
        elif name not in ("bigbird", "fixed"):  # summary columns make "fixed" one-sided
            np.testing.assert_array_equal(mask, mask.T, err_msg=name)


def test_block_counts_grow_as_claimed():
    def nnz(builder, n):
        return int(builder(n).sum())

    ns = np.array([64, 256, 1024])
    dense = [nnz(lambda n: dense_block_mask(n), n) for n in ns]
    strided = [nnz(lambda n: strided_block_mask(n, int(np.ceil(np.sqrt(n)))), n) for n in ns]
    window = [nnz(lambda n: sliding_window_block_mask(n, 3), n) for n in ns]
    slope = lambda y: np.polyfit(np.log(ns), np.log(y), 1)[0]  # noqa: E731
    assert abs(slope(dense) - 2) < 0.05
    assert abs(slope(strided) - 1.5) < 0.1
    assert abs(slope(window) - 1) < 0.05


def test_specific_patterns():
    np.testing.assert_array_equal(strided_block_mask(7, 3)[6], [1, 0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(fixed_block_mask(7, 3)[6], [0, 0, 1, 0, 0, 1, 1])
    wg = window_global_block_mask(6, 1, 2, causal=False)
    assert wg[:2].all() and wg[:, :2].all() and wg[2:, 2:].sum() == 4
    rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
    a = bigbird_block_mask(20, 2, 1, 3, rng_a, causal=False)
    np.testing.assert_array_equal(a, bigbird_block_mask(20, 2, 1, 3, rng_b, causal=False))
    base = window_global_block_mask(20, 2, 1, causal=False)
    assert (a & ~base).sum(axis=1)[1:].tolist() == [3] * 19  # exactly n_random extra blocks per row
    np.testing.assert_array_equal(a & base, base)


def test_token_mask_and_csr():
    mask = np.array([[1, 0], [1, 1]], dtype=bool)
    t = token_mask(mask, 3, causal=False)
    assert t.shape == (6, 6) and t[:3, :3].all() and not t[:3, 3:].any()
    assert token_mask(mask, 3).sum() == 6 + 9 + 6
    row_ptr, cols = block_mask_to_csr(strided_block_mask(5, 2))
    assert row_ptr.tolist() == [0, 1, 3, 6, 9, 13] and cols[-4:].tolist() == [0, 2, 3, 4]


# ------------------------------------------------------------- model and task
def test_needle_task_places_one_needle_far_from_the_query():
    x, y, m = needle_task(np.random.default_rng(8), 200, 40, n_noise=5, n_needles=3, n_global=4, min_distance=20)
    needle = (x >= 5) & (x < 8)
    assert (needle.sum(axis=1) == 1).all() and (x[:, :4] == 8).all() and (x[:, -1] == 9).all()
    pos = needle.argmax(axis=1)
    assert pos.min() >= 4 and (39 - pos).min() >= 20
    np.testing.assert_array_equal(y[:, -1], x[np.arange(200), pos])
    assert m[:, -1].all() and m.sum() == 200
    with pytest.raises(ValueError, match="no room for the needle"):
        needle_task(np.random.default_rng(0), 1, 10, n_noise=2, n_needles=2, n_global=5, min_distance=5)


def test_masked_model_cannot_see_outside_its_reach():
    torch.manual_seed(0)
    cfg = TransformerConfig(vocab_size=6, d_model=16, n_heads=2, n_layers=2, positional="none", causal=False)
    window = BlockMaskedTransformer(cfg, token_mask(sliding_window_block_mask(6, 2, causal=False), 4, causal=False))
    glob = BlockMaskedTransformer(cfg, token_mask(window_global_block_mask(6, 2, 1, causal=False), 4, causal=False))
    with torch.no_grad():
        for p in window.parameters():
            p.normal_(0.0, 0.5)  # sharp, non-uniform attention, so a change that arrives is visible
    glob.load_state_dict(window.state_dict())
    tokens = torch.zeros(1, 24, dtype=torch.long)
    changed = tokens.clone()
    changed[0, 5] = 3  # block 1: three blocks before the last one, out of a 2-layer window's reach
    with torch.no_grad():
        np.testing.assert_array_equal(window(tokens)[0, -1].numpy(), window(changed)[0, -1].numpy())
        assert (glob(tokens)[0, -1] - glob(changed)[0, -1]).abs().max() > 1e-5  # reached through block 0


# ------------------------------------------------------------------ bad input
def test_bad_input_raises_clear_errors():
    q = np.zeros((2, 16, 4))
    mask = np.ones((4, 4), dtype=bool)
    with pytest.raises(ValueError, match=r"block_mask must have shape .* = \(4, 4\); got \(3, 4\)"):
        block_sparse_attention(q, q, q, np.ones((3, 4)), block_size=4)
    with pytest.raises(ValueError, match="n_q = 15 is not a multiple of block_size = 4; pad the sequence"):
        block_sparse_attention(q[:, :15], q[:, :15], q[:, :15], mask, block_size=4)
    bad = q.copy()
    bad[1, 3, 2] = np.inf
    with pytest.raises(ValueError, match="k must contain only finite values"):
        block_sparse_attention(q, bad, q, mask, block_size=4)
    with pytest.raises(ValueError, match="q must contain only finite values"):
        block_sparse_attention(np.full_like(q, np.nan), q, q, mask, block_size=4)
    with pytest.raises(ValueError, match="q, k, v must have shapes"):
        block_sparse_attention(q, q, np.zeros((2, 12, 4)), mask, block_size=4)
    with pytest.raises(ValueError, match="q, k, v must have shapes"):
        block_sparse_attention(q, np.zeros((2, 16, 5)), q, mask, block_size=4)
    with pytest.raises(ValueError, match="q, k, v must have shapes"):
        block_sparse_attention(q, np.zeros((3, 16, 4)), np.zeros((3, 16, 4)), mask, block_size=4)
    with pytest.raises(ValueError, match="q must not be empty"):
        block_sparse_attention(np.zeros((2, 0, 4)), q, q, mask, block_size=4)
    with pytest.raises(ValueError, match="block_mask must hold only 0/1"):
        block_sparse_attention(q, q, q, np.full((4, 4), 2), block_size=4)
    with pytest.raises(ValueError, match="causal attention needs n_q == n_k"):
        block_sparse_attention(q[:, :8], q, q, np.ones((2, 4)), block_size=4)
    with pytest.raises(TypeError, match="q must have a floating dtype"):
        block_sparse_attention(q.astype(int), q, q, mask, block_size=4)
    with pytest.raises(TypeError, match="block_size must be an integer"):
        block_sparse_attention(q, q, q, mask, block_size=4.0)
    with pytest.raises(ValueError, match="block_size must be >= 1"):
        block_sparse_attention(q, q, q, mask, block_size=0)
    with pytest.raises(ValueError, match="backend must be one of"):
        block_sparse_attention(q, q, q, mask, block_size=4, backend="jax")
    with pytest.raises(ValueError, match="stride must be >= 1"):
        strided_block_mask(4, 0)
    with pytest.raises(ValueError, match="summary must be <= 2"):
        fixed_block_mask(4, 2, summary=3)
    with pytest.raises(ValueError, match="n_global must be <= 4"):
        window_global_block_mask(4, 1, 5)
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator"):
        bigbird_block_mask(4, 1, 1, 1, 0)
    with pytest.raises(TypeError, match="causal must be a bool"):
        dense_block_mask(4, causal=1)


@pytest.mark.skipif(backend.cupy_available(), reason="a GPU is present, so backend='cupy' is valid here")
def test_cupy_backend_without_gpu_raises():
    with pytest.raises(ValueError, match="backend 'cupy' needs CuPy and a CUDA device"):
        block_sparse_attention(np.zeros((8, 4)), np.zeros((8, 4)), np.zeros((8, 4)), np.ones((2, 2)),
                               block_size=4, backend="cupy")

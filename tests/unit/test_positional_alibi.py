"""Tests of companion.positional.alibi: slopes, bias, score kernels, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from companion import backend
from companion.positional import alibi_attention_scores, alibi_bias, alibi_slopes

NO_GPU = "needs CuPy and a CUDA device; none is usable here"
GPU = [pytest.mark.gpu, pytest.mark.skipif(not backend.cupy_available(), reason=NO_GPU)]
BACKENDS = ["numpy", "numba", pytest.param("cupy", marks=GPU)]
ATOL = {np.float32: 5e-5, np.float64: 1e-11}


# -------------------------------------------------------------------- slopes
@pytest.mark.parametrize(
    "n,expected",
    [
        (1, [2.0**-8]),
        (8, [1 / 2, 1 / 4, 1 / 8, 1 / 16, 1 / 32, 1 / 64, 1 / 128, 1 / 256]),
        (16, [2.0 ** (-0.5 * h) for h in range(1, 17)]),
        # 12 = 8 + 4: the 8-head slopes, then every other slope of the 16-head sequence
        (12, [2.0**-h for h in range(1, 9)] + [2**-0.5, 2**-1.5, 2**-2.5, 2**-3.5]),
        (6, [2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3]),
    ],
)
def test_slopes_hand_computed(n, expected):
    slopes = alibi_slopes(n)
    assert slopes.dtype == np.float64 and slopes.shape == (n,)
    np.testing.assert_allclose(slopes, expected, rtol=1e-15, atol=0)


def test_slopes_for_eight_heads_are_exact_powers_of_two():
    np.testing.assert_array_equal(alibi_slopes(8), 1.0 / 2.0 ** np.arange(1, 9))


# ---------------------------------------------------------------------- bias
def test_bias_decays_linearly_with_distance():
    n_heads, length = 8, 6
    bias = alibi_bias(n_heads, length, length)
    slopes = alibi_slopes(n_heads)
    assert bias.shape == (n_heads, length, length) and bias.dtype == np.float32
    for h in range(n_heads):
        np.testing.assert_array_equal(np.diag(bias[h]), 0.0)
        for i in range(length):
            # moving one key closer to the query raises the bias by exactly the head's slope
            np.testing.assert_array_equal(np.diff(bias[h, i, : i + 1]), np.float32(slopes[h]))
            np.testing.assert_array_equal(np.diff(bias[h, i, i:]), -np.float32(slopes[h]))
            np.testing.assert_array_equal(bias[h, i], -np.float32(slopes[h]) * np.abs(i - np.arange(length)))


def test_bias_aligns_queries_to_the_end_of_the_keys():
    bias = alibi_bias(2, 2, 5, slopes=np.array([1.0, 0.5]))
    np.testing.assert_array_equal(bias[0], [[-3, -2, -1, 0, -1], [-4, -3, -2, -1, 0]])
    np.testing.assert_array_equal(bias[1], 0.5 * bias[0])


# -------------------------------------------------------------------- scores
def _expected_scores(q, k, slopes, causal, scale):
    q64, k64 = q.astype(np.float64), k.astype(np.float64)
    q_len, k_len = q.shape[2], k.shape[2]
    scores = np.einsum("bhid,bhjd->bhij", q64, k64) * scale
    i = np.arange(q_len)[:, None] + k_len - q_len
    j = np.arange(k_len)[None, :]
    scores = scores - slopes[None, :, None, None] * np.abs(i - j)
    if causal:
        scores = np.where(j > i, -np.inf, scores)
    return scores


CASES = [
    # (batch, heads, q_len, k_len, d, causal)
    (2, 3, 5, 5, 8, True),
    (2, 3, 5, 5, 8, False),
    (1, 2, 4, 9, 16, True),  # decoding a chunk against a longer cache
    (2, 4, 1, 7, 8, True),  # one query: sees every key
    (1, 1, 1, 1, 4, True),
    (1, 2, 6, 3, 5, False),  # more queries than keys is fine without a mask
    (2, 2, 33, 40, 20, True),  # not a multiple of the GPU tile
]


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_scores_match_formula(name, dtype, case):
    b, h, q_len, k_len, d, causal = case
    rng = np.random.default_rng(q_len * 100 + k_len)
    q = rng.standard_normal((b, h, q_len, d)).astype(dtype)
    k = rng.standard_normal((b, h, k_len, d)).astype(dtype)
    got = alibi_attention_scores(q, k, causal=causal, backend=name)
    assert isinstance(got, np.ndarray) and got.dtype == dtype and got.shape == (b, h, q_len, k_len)
    expected = _expected_scores(q, k, alibi_slopes(h), causal, 1.0 / np.sqrt(d))
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(expected))
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL[dtype])
    if name != "numpy":
        reference = alibi_attention_scores(q, k, causal=causal, backend="numpy")
        np.testing.assert_allclose(got, reference, rtol=0, atol=ATOL[dtype])


@pytest.mark.parametrize("name", ["numpy", "numba"])
def test_custom_scale_and_slopes(name):
    rng = np.random.default_rng(7)
    q = rng.standard_normal((1, 3, 4, 6))
    k = rng.standard_normal((1, 3, 4, 6))
    slopes = np.array([0.0, 1.0, -0.25])
    got = alibi_attention_scores(q, k, slopes=slopes, scale=2.0, causal=False, backend=name)
    np.testing.assert_allclose(got, _expected_scores(q, k, slopes, False, 2.0), atol=1e-12)
    # slope 0: plain scaled dot products
    np.testing.assert_allclose(got[0, 0], 2.0 * q[0, 0] @ k[0, 0].T, atol=1e-12)


@pytest.mark.parametrize("name", ["numpy", "numba"])
def test_torch_round_trip(name):
    q = torch.randn(2, 2, 3, 8)
    k = torch.randn(2, 2, 6, 8)
    got = alibi_attention_scores(q, k, backend=name)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32 and got.shape == (2, 2, 3, 6)
    expected = alibi_attention_scores(q.numpy(), k.numpy(), backend="numpy")
    np.testing.assert_allclose(got.numpy(), expected, atol=5e-5)


def test_torch_bfloat16_stays_bfloat16():
    q, k = torch.randn(1, 2, 3, 8), torch.randn(1, 2, 3, 8)
    got = alibi_attention_scores(q.to(torch.bfloat16), k.to(torch.bfloat16), backend="numba")
    assert got.dtype == torch.bfloat16
    expected = alibi_attention_scores(q.to(torch.bfloat16).float(), k.to(torch.bfloat16).float(), backend="numpy")
    np.testing.assert_allclose(got.float().numpy(), expected.numpy(), atol=5e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not backend.cupy_available(), reason=NO_GPU)
def test_cupy_and_cuda_torch_inputs_keep_their_kind():
    import cupy

    rng = np.random.default_rng(8)
    q = rng.standard_normal((2, 3, 17, 64)).astype(np.float32)
    k = rng.standard_normal((2, 3, 50, 64)).astype(np.float32)
    expected = alibi_attention_scores(q, k, backend="numpy")
    got = alibi_attention_scores(cupy.asarray(q), cupy.asarray(k))
    assert isinstance(got, cupy.ndarray)
    np.testing.assert_allclose(got.get(), expected, atol=1e-4)
    got_t = alibi_attention_scores(torch.from_numpy(q).cuda(), torch.from_numpy(k).cuda())
    assert isinstance(got_t, torch.Tensor) and got_t.device.type == "cuda"
    np.testing.assert_allclose(got_t.cpu().numpy(), expected, atol=1e-4)


# ------------------------------------------------------------------ bad input
def test_bad_input_raises_clear_errors():
    q = np.zeros((1, 2, 3, 4), dtype=np.float32)
    k = np.zeros((1, 2, 5, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="n_heads must be >= 1; got 0"):
        alibi_slopes(0)
    with pytest.raises(ValueError, match="n_heads must be >= 1; got -3"):
        alibi_bias(-3, 2, 2)
    with pytest.raises(TypeError, match="n_heads must be an integer; got float 2.5"):
        alibi_slopes(2.5)
    with pytest.raises(TypeError, match="n_heads must be an integer; got bool"):
        alibi_slopes(True)
    with pytest.raises(ValueError, match="slopes must have shape \\(n_heads,\\) = \\(2,\\); got shape \\(3,\\)"):
        alibi_bias(2, 3, 3, slopes=np.ones(3))
    with pytest.raises(ValueError, match="q must have 4 dimensions; got shape \\(2, 3, 4\\)"):
        alibi_attention_scores(q[0], k)
    with pytest.raises(TypeError, match="q must have a floating dtype; got int32"):
        alibi_attention_scores(q.astype(np.int32), k)
    with pytest.raises(TypeError, match="k must have the same dtype as q \\(float32\\); got float64"):
        alibi_attention_scores(q, k.astype(np.float64))
    with pytest.raises(ValueError, match="k must have shape \\(batch, heads, k_len, d\\) = \\(1, 2, k_len, 4\\)"):
        alibi_attention_scores(q, np.zeros((1, 3, 5, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="causal scores need q_len <= k_len.*q_len=5, k_len=3"):
        alibi_attention_scores(k, q)
    bad = q.copy()
    bad[0, 1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="q must contain only finite values"):
        alibi_attention_scores(bad, k)
    with pytest.raises(TypeError, match="causal must be a bool; got int"):
        alibi_attention_scores(q, k, causal=1)
    with pytest.raises(ValueError, match="scale must be finite; got nan"):
        alibi_attention_scores(q, k, scale=float("nan"))
    with pytest.raises(ValueError, match="backend must be one of .*got 'torch'"):
        alibi_attention_scores(q, k, backend="torch")


@pytest.mark.skipif(backend.cupy_available(), reason="a GPU is present, so backend='cupy' is valid here")
def test_cupy_backend_without_gpu_raises():
    q = np.zeros((1, 1, 2, 4))
    with pytest.raises(ValueError, match="backend 'cupy' needs CuPy and a CUDA device"):
        alibi_attention_scores(q, q, backend="cupy")

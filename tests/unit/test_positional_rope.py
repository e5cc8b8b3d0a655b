"""Tests of companion.positional.rope: backends, rotation properties, torch path, bad input."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from companion import backend
from companion.positional import rope_angles, rope_apply, rope_apply_torch

NO_GPU = "needs CuPy and a CUDA device; none is usable here"
GPU = [pytest.mark.gpu, pytest.mark.skipif(not backend.cupy_available(), reason=NO_GPU)]
BACKENDS = ["numpy", "numba", pytest.param("cupy", marks=GPU)]
ATOL = {np.float32: 2e-5, np.float64: 1e-12}


def _complex_rope(x, positions, layout, base=10000.0):
    """Independent reference: each pair as a complex number times exp(i * angle)."""
    x = np.asarray(x, dtype=np.float64)
    half = x.shape[-1] // 2
    if layout == "half":
        z = x[..., :half] + 1j * x[..., half:]
    else:
        z = x[..., 0::2] + 1j * x[..., 1::2]
    theta = base ** (-2.0 * np.arange(half) / x.shape[-1])
    z = z * np.exp(1j * np.asarray(positions, dtype=np.float64)[..., None] * theta)
    out = np.empty(z.shape[:-1] + (2 * half,))
    if layout == "half":
        out[..., :half], out[..., half:] = z.real, z.imag
    else:
        out[..., 0::2], out[..., 1::2] = z.real, z.imag
    return out


def _pair_norms(x, layout):
    half = x.shape[-1] // 2
    if layout == "half":
        return np.hypot(x[..., :half], x[..., half:])
    return np.hypot(x[..., 0::2], x[..., 1::2])


# ----------------------------------------------------------------- reference
@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_numpy_reference_matches_complex_rotation(layout):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 7, 16))
    positions = rng.uniform(-50, 500, size=(2, 1, 7))
    got = rope_apply(x, positions, layout=layout, backend="numpy")
    np.testing.assert_allclose(got, _complex_rope(x, positions, layout), atol=1e-10)


def test_rope_angles_values_and_kinds():
    angles = rope_angles(np.array([0, 1, 5]), 8, base=100.0)
    expected = np.array([0, 1, 5])[:, None] * 100.0 ** (-np.arange(0, 8, 2) / 8)
    assert angles.dtype == np.float64 and angles.shape == (3, 4)
    np.testing.assert_allclose(angles, expected, rtol=1e-15)
    t = rope_angles(torch.tensor([0, 1, 5]), 8, base=100.0)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float64
    np.testing.assert_allclose(t.numpy(), expected, rtol=1e-15)


# ------------------------------------------------------------------ backends
SHAPES_AND_POSITIONS = [
    ((1, 8), None),
    ((5, 16), None),
    ((2, 3, 7, 32), None),
    ((2, 1, 1, 4), None),
    ((4, 6, 64), "seq_int"),
    ((3, 9, 8), "seq_float"),
    ((2, 3, 5, 16), "batch_1_seq"),
    ((2, 3, 5, 16), "batch_heads_seq"),
]


def _positions(kind, shape, rng):
    seq = shape[-2]
    if kind is None:
        return None
    if kind == "seq_int":
        return rng.integers(0, 4096, size=seq)
    if kind == "seq_float":
        return rng.uniform(-100.0, 100.0, size=seq)
    if kind == "batch_1_seq":
        return rng.integers(0, 1000, size=(shape[0], 1, seq))
    return rng.uniform(0.0, 1000.0, size=shape[:-1])


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["half", "interleaved"])
@pytest.mark.parametrize("shape,pos_kind", SHAPES_AND_POSITIONS)
def test_backend_matches_reference(name, dtype, layout, shape, pos_kind):
    rng = np.random.default_rng(zlib.crc32(repr((shape, pos_kind)).encode()))
    x = rng.standard_normal(shape).astype(dtype)
    positions = _positions(pos_kind, shape, rng)
    expected = rope_apply(x, positions, layout=layout, backend="numpy")
    got = rope_apply(x, positions, layout=layout, backend=name)
    assert isinstance(got, np.ndarray) and got.dtype == dtype and got.shape == shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL[dtype])


def test_numba_handles_non_contiguous_input():
    x = np.random.default_rng(1).standard_normal((6, 4, 10)).transpose(1, 0, 2)  # (4, 6, 10), strided
    np.testing.assert_allclose(rope_apply(x, backend="numba"), rope_apply(x, backend="numpy"), atol=1e-12)


def test_positions_accept_lists():
    x = np.random.default_rng(2).standard_normal((3, 4))
    np.testing.assert_allclose(rope_apply(x, [4, 5, 6]), rope_apply(x, np.array([4, 5, 6])), atol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not backend.cupy_available(), reason=NO_GPU)
@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_cupy_and_cuda_torch_inputs_keep_their_kind(layout):
    import cupy

    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 33, 64)).astype(np.float32)
    positions = rng.integers(0, 2048, size=(2, 1, 33))
    expected = rope_apply(x, positions, layout=layout, backend="numpy")
    got = rope_apply(cupy.asarray(x), cupy.asarray(positions), layout=layout)
    assert isinstance(got, cupy.ndarray)
    np.testing.assert_allclose(got.get(), expected, atol=2e-5)
    t = torch.from_numpy(x).cuda()
    got_t = rope_apply(t, torch.from_numpy(positions).cuda(), layout=layout)
    assert isinstance(got_t, torch.Tensor) and got_t.device.type == "cuda"
    np.testing.assert_allclose(got_t.cpu().numpy(), expected, atol=2e-5)


# ---------------------------------------------------------------- properties
_setup = st.tuples(
    st.integers(0, 2**31 - 1),  # seed
    st.integers(1, 8),  # pairs
    st.integers(1, 6),  # seq
    st.sampled_from(["half", "interleaved"]),
    st.sampled_from(["numpy", "numba"]),
)


@settings(max_examples=40, deadline=None)
@given(_setup)
def test_rope_preserves_pair_norms(setup):
    seed, pairs, seq, layout, name = setup
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, seq, 2 * pairs))
    positions = rng.uniform(-1e4, 1e4, size=seq)
    y = rope_apply(x, positions, layout=layout, backend=name)
    np.testing.assert_allclose(_pair_norms(y, layout), _pair_norms(x, layout), rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-12)


@settings(max_examples=40, deadline=None)
@given(_setup, st.integers(0, 2000), st.integers(0, 2000), st.integers(-3000, 3000))
def test_scores_depend_only_on_offset(setup, m, n, shift):
    seed, pairs, _, layout, name = setup
    rng = np.random.default_rng(seed)
    q, k = rng.standard_normal((2, 1, 2 * pairs))
    score = rope_apply(q, [m], layout=layout, backend=name) @ rope_apply(k, [n], layout=layout, backend=name).T
    shifted = (
        rope_apply(q, [m + shift], layout=layout, backend=name)
        @ rope_apply(k, [n + shift], layout=layout, backend=name).T
    )
    np.testing.assert_allclose(shifted, score, rtol=1e-9, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(_setup)
def test_layouts_are_the_same_rotation_up_to_a_permutation(setup):
    seed, pairs, seq, _, name = setup
    rng = np.random.default_rng(seed)
    dim = 2 * pairs
    x = rng.standard_normal((3, seq, dim))
    positions = rng.integers(0, 500, size=seq)
    perm = np.concatenate([np.arange(0, dim, 2), np.arange(1, dim, 2)])  # interleaved order -> half order
    via_half = rope_apply(x[..., perm], positions, layout="half", backend=name)
    via_interleaved = rope_apply(x, positions, layout="interleaved", backend=name)[..., perm]
    np.testing.assert_allclose(via_half, via_interleaved, rtol=0, atol=1e-13)


@settings(max_examples=30, deadline=None)
@given(_setup, st.sampled_from([np.float32, np.float64]))
def test_zero_positions_is_identity(setup, dtype):
    seed, pairs, seq, layout, name = setup
    x = np.random.default_rng(seed).standard_normal((2, seq, 2 * pairs)).astype(dtype)
    y = rope_apply(x, np.zeros(seq, dtype=np.int64), layout=layout, backend=name)
    np.testing.assert_array_equal(y, x)
    assert y.dtype == dtype


# ----------------------------------------------------------------- torch path
@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_torch_gradient_is_the_inverse_rotation(layout):
    rng = np.random.default_rng(4)
    x_np = rng.standard_normal((2, 3, 5, 8))
    w_np = rng.standard_normal((2, 3, 5, 8))
    positions = np.arange(5) + 7
    x = torch.tensor(x_np, requires_grad=True)
    y = rope_apply(x, positions, layout=layout)
    assert isinstance(y, torch.Tensor) and y.requires_grad
    np.testing.assert_allclose(y.detach().numpy(), rope_apply(x_np, positions, layout=layout, backend="numpy"),
                               atol=1e-12)
    (y * torch.tensor(w_np)).sum().backward()
    assert torch.isfinite(x.grad).all()
    # y = R(p) x, so d(w . y)/dx = R(p)^T w = R(-p) w
    np.testing.assert_allclose(x.grad.numpy(), rope_apply(w_np, -positions, layout=layout, backend="numpy"),
                               atol=1e-12)


def test_torch_gradcheck_with_broadcast_positions():
    x = torch.randn(2, 2, 3, 6, dtype=torch.float64, requires_grad=True)
    positions = torch.tensor([[[0.5, 3.0, 9.0]], [[1.0, 2.0, 100.0]]])  # (batch, 1, seq)
    assert torch.autograd.gradcheck(lambda t: rope_apply_torch(t, positions, layout="interleaved"), (x,))


@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_rope_apply_torch_matches_reference(layout):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 4, 6, 16)).astype(np.float32)
    positions = rng.integers(0, 300, size=(2, 4, 6))
    got = rope_apply_torch(torch.from_numpy(x), torch.from_numpy(positions), base=500.0, layout=layout)
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), rope_apply(x, positions, base=500.0, layout=layout, backend="numpy"),
                               atol=2e-5)


@pytest.mark.parametrize("name", ["numpy", "numba"])
def test_torch_without_grad_round_trip(name):
    x = torch.randn(3, 7, 8)
    y = rope_apply(x, backend=name)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32 and y.device == x.device
    np.testing.assert_allclose(y.numpy(), rope_apply(x.numpy(), backend="numpy"), atol=2e-5)
    x.requires_grad_()
    with torch.no_grad():  # grad mode off: the kernel path runs, no graph is built
        z = rope_apply(x, backend=name)
    assert isinstance(z, torch.Tensor) and not z.requires_grad
    np.testing.assert_allclose(z.numpy(), y.numpy(), atol=0)


def test_torch_bfloat16_stays_bfloat16():
    x = torch.randn(2, 5, 8)
    y = rope_apply(x.to(torch.bfloat16), backend="numba")
    assert isinstance(y, torch.Tensor) and y.dtype == torch.bfloat16
    np.testing.assert_allclose(y.float().numpy(), rope_apply(x.numpy(), backend="numpy"), atol=5e-2)


# ------------------------------------------------------------------ bad input
def test_bad_input_raises_clear_errors():
    x = np.zeros((2, 4, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="even last dimension.*got shape \\(2, 4, 7\\)"):
        rope_apply(np.zeros((2, 4, 7), dtype=np.float32))
    with pytest.raises(ValueError, match="x must have at least 2 dimensions; got shape \\(8,\\)"):
        rope_apply(np.zeros(8))
    with pytest.raises(TypeError, match="x must have a floating dtype; got int64"):
        rope_apply(np.zeros((4, 8), dtype=np.int64))
    with pytest.raises(TypeError, match="x must be a NumPy array"):
        rope_apply([[0.0, 1.0]])
    bad = x.copy()
    bad[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="x must contain only finite values"):
        rope_apply(bad)
    with pytest.raises(ValueError, match="positions must contain only finite values"):
        rope_apply(x, np.array([0.0, np.nan, 2.0, 3.0]))
    with pytest.raises(ValueError, match="positions must have shape \\(seq,\\) = \\(4,\\).*got shape \\(5,\\)"):
        rope_apply(x, np.arange(5))
    with pytest.raises(ValueError, match="broadcastable to x.shape\\[:-1\\] = \\(2, 4\\); got shape \\(3, 4\\)"):
        rope_apply(x, np.zeros((3, 4)))
    with pytest.raises(TypeError, match="positions must have a signed integer or unsigned integer or floating"):
        rope_apply(x, np.array(["a", "b", "c", "d"]))
    with pytest.raises(ValueError, match="layout must be one of \\('half', 'interleaved'\\); got 'neox'"):
        rope_apply(x, layout="neox")
    with pytest.raises(ValueError, match="backend must be one of .*got 'jax'"):
        rope_apply(x, backend="jax")
    with pytest.raises(ValueError, match="base must be > 0.0; got -1.0"):
        rope_apply(x, base=-1.0)
    with pytest.raises(TypeError, match="rope_apply_torch.*got a numpy array"):
        rope_apply_torch(x)
    with pytest.raises(ValueError, match="dim must be even.*got 5"):
        rope_angles(np.arange(3), 5)
    with pytest.raises(ValueError, match="positions must have 1 dimensions; got shape \\(1, 3\\)"):
        rope_angles(np.zeros((1, 3)), 4)


@pytest.mark.skipif(backend.cupy_available(), reason="a GPU is present, so backend='cupy' is valid here")
def test_cupy_backend_without_gpu_raises():
    with pytest.raises(ValueError, match="backend 'cupy' needs CuPy and a CUDA device"):
        rope_apply(np.zeros((4, 8)), backend="cupy")


@pytest.mark.parametrize("backend_name", ["numpy", "numba"])
@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_rope_out_buffer_and_in_place(backend_name, layout):
    from companion.positional import rope_apply

    x = np.random.default_rng(3).standard_normal((2, 3, 7, 8)).astype(np.float32)
    expected = rope_apply(x, layout=layout, backend=backend_name)
    buf = np.empty_like(x)
    assert rope_apply(x, layout=layout, backend=backend_name, out=buf) is buf
    np.testing.assert_allclose(buf, expected, atol=1e-6)
    y = x.copy()
    assert rope_apply(y, layout=layout, backend=backend_name, out=y) is y  # in place
    np.testing.assert_allclose(y, expected, atol=1e-6)


def test_rope_out_bad_input():
    import torch

    from companion.positional import rope_apply

    x = np.ones((2, 4, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="out must be"):
        rope_apply(x, out=np.empty((2, 4, 8), dtype=np.float64), backend="numba")
    with pytest.raises(ValueError, match="out must be"):
        rope_apply(x, out=np.empty((2, 8, 4), dtype=np.float32).transpose(0, 2, 1), backend="numba")
    with pytest.raises(TypeError, match="NumPy input"):
        rope_apply(torch.ones(2, 4, 8), out=np.empty((2, 4, 8), dtype=np.float32))
    with pytest.raises(TypeError, match="numpy.ndarray"):
        rope_apply(x, out=[0.0], backend="numpy")

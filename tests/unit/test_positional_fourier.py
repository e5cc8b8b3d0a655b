"""Tests of companion.positional.fourier: feature-map backends, properties, modules, training, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from companion import backend
from companion.positional import (
    CoordinateMLP,
    FitHistory,
    FourierFeatures,
    fit_coordinates,
    fourier_features,
    fourier_frequencies,
    gaussian_basis_centers,
    gaussian_basis_features,
    predict_coordinates,
    spder_activation,
)
from companion.positional.fourier import GAUSS_CUTOFF

NO_GPU = "needs CuPy and a CUDA device; none is usable here"
GPU = [pytest.mark.gpu, pytest.mark.skipif(not backend.cupy_available(), reason=NO_GPU)]
BACKENDS = ["numpy", "numba", pytest.param("cupy", marks=GPU)]
ATOL = {np.float32: 2e-6, np.float64: 1e-12}


def _independent_fourier(x, B):
    """Independent reference: exp(2 pi i B x) split into real and imaginary parts."""
    z = np.exp(2j * np.pi * (np.asarray(x, dtype=np.float64) @ B.T))
    return np.concatenate([z.real, z.imag], axis=1)


# ------------------------------------------------------------- frequencies
def test_frequencies_are_reproducible_from_rng():
    a = fourier_frequencies(3, 16, scale=5.0, rng=7)
    b = fourier_frequencies(3, 16, scale=5.0, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (16, 3) and a.dtype == np.float64
    np.testing.assert_array_equal(fourier_frequencies(2, 4, scale=1.0), fourier_frequencies(2, 4, scale=1.0, rng=0))
    assert not np.array_equal(a, fourier_frequencies(3, 16, scale=5.0, rng=8))
    # the generator advances: two draws from one generator differ
    g = np.random.default_rng(1)
    assert not np.array_equal(fourier_frequencies(2, 8, scale=1.0, rng=g), fourier_frequencies(2, 8, scale=1.0, rng=g))


def test_gaussian_frequencies_have_the_requested_scale():
    B = fourier_frequencies(2, 20000, scale=6.0, rng=0)
    assert abs(B.std() - 6.0) < 0.1 and abs(B.mean()) < 0.1


def test_axis_frequencies_are_log_spaced_on_each_axis():
    B = fourier_frequencies(2, 8, scale=16.0, kind="axis")
    np.testing.assert_allclose(B[:4, 0], [1.0, 2.0, 4.0, 8.0])
    np.testing.assert_allclose(B[4:, 1], [1.0, 2.0, 4.0, 8.0])
    assert (B[:4, 1] == 0).all() and (B[4:, 0] == 0).all()


# ------------------------------------------------------------- backends
@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,d,n_freq,kind", [(1, 1, 1, "gaussian"), (37, 2, 16, "gaussian"),
                                             (100, 3, 9, "axis"), (5, 4, 64, "gaussian")])
def test_fourier_backend_matches_reference(name, dtype, n, d, n_freq, kind):
    rng = np.random.default_rng(n * 100 + d)
    x = rng.uniform(-1.0, 2.0, size=(n, d)).astype(dtype)
    got = fourier_features(x, n_frequencies=n_freq, scale=7.0, kind=kind, rng=3, backend=name)
    expected = fourier_features(x, n_frequencies=n_freq, scale=7.0, kind=kind, rng=3, backend="numpy")
    assert isinstance(got, np.ndarray) and got.dtype == dtype and got.shape == (n, 2 * n_freq)
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL[dtype])
    B = fourier_frequencies(d, n_freq, scale=7.0, kind=kind, rng=3)
    np.testing.assert_allclose(expected, _independent_fourier(x, B), rtol=0, atol=ATOL[dtype])


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gaussian_basis_backend_matches_reference(name, dtype):
    rng = np.random.default_rng(11)
    x = rng.uniform(-0.2, 1.2, size=(53, 3)).astype(dtype)
    got = gaussian_basis_features(x, n_centers=17, sigma=0.03, backend=name)
    expected = gaussian_basis_features(x, n_centers=17, sigma=0.03, backend="numpy")
    assert got.dtype == dtype and got.shape == (53, 3 * 17)
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL[dtype])
    centers = gaussian_basis_centers(17)
    direct = np.exp(-0.5 * ((x.astype(np.float64)[:, :, None] - centers) / 0.03) ** 2).reshape(53, -1)
    direct[direct < math.exp(-GAUSS_CUTOFF)] = 0.0
    np.testing.assert_allclose(expected, direct, rtol=0, atol=ATOL[dtype])


def test_numba_handles_non_contiguous_input():
    x = np.random.default_rng(2).random((3, 40)).T  # (40, 3), Fortran order
    np.testing.assert_allclose(fourier_features(x, n_frequencies=8, scale=3.0, backend="numba"),
                               fourier_features(x, n_frequencies=8, scale=3.0, backend="numpy"), atol=1e-12)
    np.testing.assert_allclose(gaussian_basis_features(x, n_centers=5, sigma=0.1, backend="numba"),
                               gaussian_basis_features(x, n_centers=5, sigma=0.1, backend="numpy"), atol=1e-12)


@pytest.mark.gpu
@pytest.mark.skipif(not backend.cupy_available(), reason=NO_GPU)
def test_cupy_and_cuda_torch_inputs_keep_their_kind():
    import cupy

    x = np.random.default_rng(3).random((300, 2)).astype(np.float32)
    expected = fourier_features(x, n_frequencies=32, scale=10.0, backend="numpy")
    got = fourier_features(cupy.asarray(x), n_frequencies=32, scale=10.0)
    assert isinstance(got, cupy.ndarray)
    np.testing.assert_allclose(got.get(), expected, atol=2e-6)
    got_t = fourier_features(torch.from_numpy(x).cuda(), n_frequencies=32, scale=10.0)
    assert isinstance(got_t, torch.Tensor) and got_t.device.type == "cuda"
    np.testing.assert_allclose(got_t.cpu().numpy(), expected, atol=2e-6)
    gb = gaussian_basis_features(cupy.asarray(x), n_centers=16, sigma=0.05)
    np.testing.assert_allclose(gb.get(), gaussian_basis_features(x, n_centers=16, sigma=0.05, backend="numpy"),
                               atol=2e-6)


@pytest.mark.skipif(backend.cupy_available(), reason="a GPU is present, so backend='cupy' is valid here")
def test_cupy_backend_without_gpu_raises():
    with pytest.raises(ValueError, match="backend 'cupy' needs CuPy and a CUDA device"):
        fourier_features(np.zeros((4, 2)), n_frequencies=2, scale=1.0, backend="cupy")


# ----------------------------------------------------------- properties
@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 4), st.integers(1, 12), st.sampled_from(["numpy", "numba"]))
def test_each_cos_sin_pair_has_unit_norm(seed, d, n_freq, name):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-5, 5, size=(7, d))
    z = fourier_features(x, n_frequencies=n_freq, scale=float(rng.uniform(0.1, 50)), rng=seed, backend=name)
    np.testing.assert_allclose(z[:, :n_freq] ** 2 + z[:, n_freq:] ** 2, 1.0, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), math.sqrt(n_freq), rtol=1e-12)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(-3, 3))
def test_feature_inner_products_depend_only_on_the_offset(seed, shift):
    rng = np.random.default_rng(seed)
    x, y = rng.random((2, 5, 2))
    B = fourier_frequencies(2, 32, scale=4.0, rng=seed)
    gram = np.sum(fourier_features(x, frequencies=B) * fourier_features(y, frequencies=B), axis=1)
    shifted = np.sum(fourier_features(x + shift, frequencies=B) * fourier_features(y + shift, frequencies=B), axis=1)
    np.testing.assert_allclose(shifted, gram, atol=1e-9)
    np.testing.assert_allclose(gram, np.cos(2 * np.pi * (x - y) @ B.T).sum(axis=1), atol=1e-9)


def test_gaussian_basis_peaks_at_centres_and_has_no_subnormals():
    centers = gaussian_basis_centers(8, low=-1.0, high=1.0)
    np.testing.assert_allclose(centers, -1.0 + (np.arange(8) + 0.5) / 4)
    x = np.stack([centers, centers[::-1]], axis=1).astype(np.float32)  # (8, 2)
    z = gaussian_basis_features(x, n_centers=8, sigma=0.01, low=-1.0, high=1.0)
    np.testing.assert_allclose(np.diag(z[:, :8]), 1.0)
    np.testing.assert_allclose(np.diag(z[:, 8:][:, ::-1]), 1.0)
    nonzero = np.abs(z[z != 0])
    assert nonzero.min() >= np.finfo(np.float32).tiny  # nothing subnormal
    assert (z == 0).sum() > 0


# ---------------------------------------------------------------- torch
def test_torch_input_round_trip_and_gradients():
    x = torch.rand(6, 2, dtype=torch.float64)
    expected = fourier_features(x.numpy(), n_frequencies=5, scale=3.0, rng=4)
    y = fourier_features(x, n_frequencies=5, scale=3.0, rng=4)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float64 and not y.requires_grad
    np.testing.assert_allclose(y.numpy(), expected, atol=1e-12)
    x.requires_grad_()
    B = torch.tensor(fourier_frequencies(2, 5, scale=3.0, rng=4))
    assert torch.autograd.gradcheck(lambda t: fourier_features(t, frequencies=B), (x,))
    assert torch.autograd.gradcheck(lambda t: gaussian_basis_features(t, n_centers=4, sigma=0.3), (x,))
    y_bf = fourier_features(x.detach().to(torch.bfloat16), n_frequencies=5, scale=3.0, rng=4)
    assert y_bf.dtype == torch.bfloat16


def test_learnable_returns_a_module_whose_frequencies_train():
    x = np.random.default_rng(5).random((10, 2)).astype(np.float32)
    module = fourier_features(x, n_frequencies=8, scale=6.0, rng=2, learnable=True)
    assert isinstance(module, FourierFeatures) and isinstance(module.frequencies, torch.nn.Parameter)
    out = module(torch.from_numpy(x))
    np.testing.assert_allclose(out.detach().numpy(), fourier_features(x, n_frequencies=8, scale=6.0, rng=2),
                               atol=2e-4)
    (out ** 2 * torch.arange(16.0)).sum().backward()
    assert module.frequencies.grad is not None and torch.isfinite(module.frequencies.grad).all()
    assert module.frequencies.grad.abs().sum() > 0


def test_fourier_features_module_with_mlp_and_fixed_buffer():
    ff = FourierFeatures(3, 4, scale=2.0, rng=0, mlp_hidden=16, out_features=5)
    assert ff.out_features == 5 and ff(torch.rand(7, 3)).shape == (7, 5)
    same = FourierFeatures(3, 4, scale=2.0, rng=0, mlp_hidden=16, out_features=5)
    for a, b in zip(ff.parameters(), same.parameters()):
        assert torch.equal(a, b)
    fixed = FourierFeatures(3, 4, scale=2.0, rng=0, learnable=False)
    assert "frequencies" in dict(fixed.named_buffers()) and not list(fixed.parameters())
    x = torch.rand(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fixed, (x,))


def test_spder_activation_values_and_gradient_at_zero():
    z = np.array([-2.0, 0.0, 0.5, 9.0])
    np.testing.assert_allclose(spder_activation(z), np.sin(z) * np.sqrt(np.abs(z)))
    t = torch.tensor([0.0, 1.0, -3.0], requires_grad=True)
    spder_activation(t).sum().backward()
    assert torch.isfinite(t.grad).all()
    d = lambda u: math.cos(u) * math.sqrt(abs(u)) + math.sin(u) * math.copysign(1, u) / (2 * math.sqrt(abs(u)))
    np.testing.assert_allclose(t.grad[1:].numpy(), [d(1.0), d(-3.0)], rtol=1e-5)


# ------------------------------------------------------------ the network
@pytest.mark.parametrize("activation", ["relu", "sine", "spder"])
def test_coordinate_mlp_shapes_seeds_and_init(activation):
    net = CoordinateMLP(2, 32, 3, 3, activation=activation, seed=4)
    same = CoordinateMLP(2, 32, 3, 3, activation=activation, seed=4)
    other = CoordinateMLP(2, 32, 3, 3, activation=activation, seed=5)
    x = torch.rand(9, 2)
    assert net(x).shape == (9, 3)
    assert torch.equal(net(x), same(x)) and not torch.equal(net(x), other(x))
    linears = [m for m in net.net if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 4
    if activation != "relu":  # SIREN initialisation
        assert linears[0].weight.abs().max() <= 1 / 2
        assert linears[1].weight.abs().max() <= math.sqrt(6 / 32) / 30.0


def test_coordinate_mlp_with_embedding_learns_through_it():
    emb = FourierFeatures(2, 8, scale=3.0, rng=1)
    net = CoordinateMLP(2, 16, 2, 1, embedding=emb)
    net(torch.rand(5, 2)).sum().backward()
    assert emb.frequencies.grad is not None and emb.frequencies.grad.abs().sum() > 0
    assert net.n_parameters() == sum(p.numel() for p in net.parameters())


def test_fit_coordinates_learns_and_is_reproducible():
    x = np.linspace(0, 1, 64, dtype=np.float32)[:, None]
    y = np.sin(2 * np.pi * 3 * x)
    feats = fourier_features(x, n_frequencies=16, scale=4.0, rng=0)
    calls = []
    histories = []
    for _ in range(2):
        net = CoordinateMLP(32, 32, 2, 1, seed=1)
        histories.append(fit_coordinates(net, feats, y, steps=60, lr=1e-2, eval_coords=feats[:8], eval_targets=y[:8],
                                         eval_every=20, callback=lambda s, m: calls.append(s)))
    h = histories[0]
    assert h.losses == histories[1].losses
    assert h.steps == list(range(1, 61)) and h.eval_steps == [20, 40, 60]
    assert h.losses[-1] < 0.05 * h.losses[0]
    assert calls == [0, 20, 40, 60] * 2
    assert FitHistory.to_psnr(h.losses)[-1] > FitHistory.to_psnr(h.losses)[0]
    pred = predict_coordinates(net, feats, batch_size=10)
    assert pred.shape == (64, 1) and np.mean((pred - y) ** 2) < 0.05


def test_fit_coordinates_minibatches():
    x = np.random.default_rng(0).random((50, 2)).astype(np.float32)
    y = x.sum(axis=1)
    runs = [fit_coordinates(CoordinateMLP(2, 8, 1, 1), x, y, steps=12, batch_size=16, seed=3).losses for _ in range(2)]
    assert runs[0] == runs[1] and len(runs[0]) == 12


# ------------------------------------------------------------- bad input
def test_bad_input_raises_clear_errors():
    x = np.zeros((4, 2), dtype=np.float32)
    bad = x.copy()
    bad[1, 1] = np.inf
    with pytest.raises(ValueError, match="coords must contain only finite values"):
        fourier_features(bad, n_frequencies=4, scale=1.0)
    with pytest.raises(ValueError, match="coords must contain only finite values"):
        gaussian_basis_features(bad, n_centers=4, sigma=0.1)
    with pytest.raises(ValueError, match="coords must have 2 dimensions; got shape \\(4,\\)"):
        fourier_features(np.zeros(4), n_frequencies=4, scale=1.0)
    with pytest.raises(TypeError, match="coords must have a floating dtype; got int64"):
        fourier_features(np.zeros((4, 2), dtype=np.int64), n_frequencies=4, scale=1.0)
    with pytest.raises(ValueError, match="scale must be > 0.0; got -2.0"):
        fourier_features(x, n_frequencies=4, scale=-2.0)
    with pytest.raises(ValueError, match="scale must be >= 1.0; got 0.5"):
        fourier_features(x, n_frequencies=4, scale=0.5, kind="axis")
    with pytest.raises(ValueError, match="scale must be finite"):
        fourier_features(x, n_frequencies=4, scale=float("nan"))
    with pytest.raises(ValueError, match="n_frequencies must be >= 1; got 0"):
        fourier_features(x, n_frequencies=0, scale=1.0)
    with pytest.raises(ValueError, match="needs n_frequencies and scale"):
        fourier_features(x, n_frequencies=4)
    with pytest.raises(ValueError, match="kind must be one of \\('gaussian', 'axis'\\); got 'nerf'"):
        fourier_features(x, n_frequencies=4, scale=1.0, kind="nerf")
    with pytest.raises(ValueError, match="multiple of in_features = 2; got 5"):
        fourier_features(x, n_frequencies=5, scale=4.0, kind="axis")
    with pytest.raises(ValueError, match="frequencies must have shape \\(F, d\\) with d = coords.shape\\[1\\] = 2"):
        fourier_features(x, frequencies=np.zeros((3, 3)))
    with pytest.raises(TypeError, match="rng must be None, an int seed or a numpy.random.Generator; got float"):
        fourier_features(x, n_frequencies=4, scale=1.0, rng=0.5)
    with pytest.raises(TypeError, match="learnable must be a bool"):
        fourier_features(x, n_frequencies=4, scale=1.0, learnable="yes")
    with pytest.raises(ValueError, match="backend must be one of .*got 'jax'"):
        fourier_features(x, n_frequencies=4, scale=1.0, backend="jax")
    with pytest.raises(ValueError, match="sigma must be > 0.0; got 0.0"):
        gaussian_basis_features(x, n_centers=4, sigma=0.0)
    with pytest.raises(ValueError, match="n_centers must be >= 1; got 0"):
        gaussian_basis_features(x, n_centers=0, sigma=0.1)
    with pytest.raises(ValueError, match="high must be > low"):
        gaussian_basis_features(x, n_centers=4, sigma=0.1, low=1.0, high=1.0)


def test_bad_module_and_training_arguments():
    with pytest.raises(ValueError, match="activation must be one of \\('relu', 'sine', 'spder'\\); got 'tanh'"):
        CoordinateMLP(2, 8, 2, 1, activation="tanh")
    with pytest.raises(ValueError, match="n_layers must be >= 1; got 0"):
        CoordinateMLP(2, 8, 0, 1)
    with pytest.raises(TypeError, match="embedding must have an integer attribute out_features"):
        CoordinateMLP(2, 8, 2, 1, embedding=torch.nn.Identity())
    with pytest.raises(ValueError, match="embedding.in_features = 3 but in_features = 2"):
        CoordinateMLP(2, 8, 2, 1, embedding=FourierFeatures(3, 4, scale=1.0))
    with pytest.raises(ValueError, match="out_features needs mlp_hidden"):
        FourierFeatures(2, 4, scale=1.0, out_features=3)
    with pytest.raises(ValueError, match="needs scale"):
        FourierFeatures(2, 4)
    with pytest.raises(ValueError, match="coords must have 2 columns; got shape \\(5, 3\\)"):
        FourierFeatures(2, 4, scale=1.0)(torch.zeros(5, 3))
    net = CoordinateMLP(2, 8, 1, 1)
    x = np.zeros((5, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="must have the same n; got \\(5, 2\\) and \\(4, 1\\)"):
        fit_coordinates(net, x, np.zeros(4, dtype=np.float32), steps=1)
    with pytest.raises(ValueError, match="steps must be >= 1; got 0"):
        fit_coordinates(net, x, np.zeros(5, dtype=np.float32), steps=0)
    with pytest.raises(ValueError, match="lr must be > 0.0"):
        fit_coordinates(net, x, np.zeros(5, dtype=np.float32), steps=1, lr=0.0)
    with pytest.raises(ValueError, match="give both eval_coords and eval_targets"):
        fit_coordinates(net, x, np.zeros(5, dtype=np.float32), steps=1, eval_coords=x)
    with pytest.raises(TypeError, match="callback must be callable"):
        fit_coordinates(net, x, np.zeros(5, dtype=np.float32), steps=1, callback=3)
    with pytest.raises(ValueError, match="targets must contain only finite values"):
        fit_coordinates(net, x, np.full(5, np.nan, dtype=np.float32), steps=1)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        fit_coordinates("net", x, np.zeros(5, dtype=np.float32), steps=1)


@pytest.mark.parametrize("scale", [1.0, 10.0, 1000.0])
def test_numba_float32_polynomial_path_is_float32_accurate(scale):
    """The float32 kernel reduces phases exactly in float64 and uses short polynomials:
    every output within 1e-6 of the float64 reference, even at phases of thousands of turns."""
    rng = np.random.default_rng(7)
    x = rng.random((300, 3)).astype(np.float32)
    B = rng.standard_normal((64, 3)) * scale
    out = fourier_features(x, frequencies=B, backend="numba")
    phase = 2 * np.pi * (x.astype(np.float64) @ B.T)
    ref = np.concatenate([np.cos(phase), np.sin(phase)], axis=1)
    assert out.dtype == np.float32
    assert np.abs(out - ref).max() < 1e-6
    # quarter-turn boundaries: phases of exactly k/4 turns hit each quadrant
    xq = (np.arange(16, dtype=np.float32) / 8)[:, None]  # 0, 1/8, ... turns
    outq = fourier_features(xq, frequencies=np.ones((1, 1)), backend="numba")
    np.testing.assert_allclose(outq[:, 0], np.cos(2 * np.pi * xq[:, 0].astype(np.float64)), atol=1e-6)
    np.testing.assert_allclose(outq[:, 1], np.sin(2 * np.pi * xq[:, 0].astype(np.float64)), atol=1e-6)

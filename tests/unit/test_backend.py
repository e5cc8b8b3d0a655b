import numpy as np
import pytest
import torch

from companion import backend


def test_available_backends_lists_numpy_and_numba():
    names = backend.available_backends()
    assert names[0] == "numpy"
    assert "numba" in names
    assert ("cupy" in names) == backend.cupy_available()


def test_use_backend_restores_previous_default():
    assert backend.get_backend() == "auto"
    with backend.use_backend("numpy"):
        assert backend.get_backend() == "numpy"
        assert backend.resolve_backend("auto", np.zeros(2)) == "numpy"
        with backend.use_backend("numba"):
            assert backend.get_backend() == "numba"
        assert backend.get_backend() == "numpy"
    assert backend.get_backend() == "auto"


def test_use_backend_restores_after_exception():
    with pytest.raises(RuntimeError):
        with backend.use_backend("numpy"):
            raise RuntimeError("boom")
    assert backend.get_backend() == "auto"


def test_set_backend_round_trip():
    backend.set_backend("numpy")
    try:
        assert backend.get_backend() == "numpy"
    finally:
        backend.set_backend("auto")
    assert backend.get_backend() == "auto"


def test_auto_picks_numba_for_host_arrays():
    assert backend.resolve_backend("auto", np.zeros(3)) == "numba"
    assert backend.resolve_backend("auto", torch.zeros(3)) == "numba"
    assert backend.resolve_backend("numpy", np.zeros(3)) == "numpy"


@pytest.mark.parametrize("bad", ["gpu", "NUMPY", ""])
def test_unknown_backend_name_is_refused(bad):
    with pytest.raises(ValueError, match="backend must be one of"):
        backend.resolve_backend(bad)
    with pytest.raises(ValueError, match="backend must be one of"):
        with backend.use_backend(bad):
            pass


def test_backend_name_must_be_string():
    with pytest.raises(TypeError, match="backend must be a string"):
        backend.set_backend(3)


@pytest.mark.skipif(backend.cupy_available(), reason="checks the error raised where no GPU is usable")
def test_cupy_refused_without_gpu():
    with pytest.raises(ValueError, match="needs CuPy and a CUDA device"):
        backend.resolve_backend("cupy")


def test_array_kind_and_type_error():
    assert backend.array_kind(np.zeros(1)) == "numpy"
    assert backend.array_kind(torch.zeros(1)) == "torch"
    with pytest.raises(TypeError, match="expected a NumPy array"):
        backend.array_kind([1.0, 2.0])


def test_torch_to_numpy_is_zero_copy():
    t = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    a = backend.to_numpy(t)
    a[0, 0] = 42.0
    assert t[0, 0].item() == 42.0


def test_numpy_to_torch_is_zero_copy_when_contiguous():
    a = np.arange(6, dtype=np.float64)
    t = backend.to_torch(a)
    t[1] = -1.0
    assert a[1] == -1.0


def test_numpy_to_torch_copies_read_only_and_strided_arrays():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]
    t = backend.to_torch(a)
    np.testing.assert_array_equal(t.numpy(), a)
    ro = np.arange(4.0)
    ro.setflags(write=False)
    np.testing.assert_array_equal(backend.to_torch(ro).numpy(), ro)


def test_to_numpy_detaches_grad_tensors():
    t = torch.ones(3, requires_grad=True)
    np.testing.assert_array_equal(backend.to_numpy(t), np.ones(3))


def test_to_kind_round_trip_keeps_values():
    x = np.random.default_rng(0).standard_normal((4, 5))
    t = backend.to_kind(x, "torch")
    assert isinstance(t, torch.Tensor)
    np.testing.assert_array_equal(backend.to_kind(t, "numpy"), x)
    with pytest.raises(ValueError, match="unknown array kind"):
        backend.to_kind(x, "jax")


def test_torch_device_is_cpu_here_and_validates():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert backend.torch_device().type == expected
    assert backend.torch_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="prefer must be"):
        backend.torch_device("tpu")


def test_dispatch_refuses_missing_kernel():
    name, fn = backend.dispatch({"numpy": len, "numba": len}, "numpy")
    assert name == "numpy" and fn is len
    with pytest.raises(ValueError, match="no 'numba' kernel"):
        backend.dispatch({"numpy": len}, "numba")


@pytest.mark.gpu
@pytest.mark.skipif(not backend.cupy_available(), reason="needs CuPy and a CUDA device")
def test_cupy_round_trips_zero_copy():  # pragma: no cover - runs on the GPU machine
    import cupy

    t = torch.arange(4, dtype=torch.float32, device="cuda")
    c = backend.to_cupy(t)
    c[0] = 7
    assert t[0].item() == 7
    assert backend.resolve_backend("auto", t) == "cupy"
    back = backend.to_torch(cupy.arange(3, dtype=cupy.float32))
    assert back.device.type == "cuda"

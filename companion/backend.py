"""Array backends: which kernel runs, and moving arrays between NumPy, CuPy and torch.

Every hot loop in ``companion`` exists three times: a readable NumPy reference
(``"numpy"``), a numba CPU kernel (``"numba"``) and a CuPy GPU kernel
(``"cupy"``). Public functions take ``backend="auto"`` by default, which means:

* CuPy when the input lives on a GPU (a CuPy array or a CUDA torch tensor) and
  CuPy is usable;
* numba otherwise.

The process-wide default can be changed with :func:`use_backend` (a context
manager) or :func:`set_backend`. Arrays are converted zero-copy through DLPack
where the memory allows it, and every public function returns the same kind of
array it was given (NumPy in, NumPy out; torch CUDA in, torch CUDA out).

Example
-------
>>> import numpy as np
>>> from companion import backend
>>> "numpy" in backend.available_backends()
True
>>> with backend.use_backend("numpy"):
...     backend.get_backend()
'numpy'
"""

from __future__ import annotations

import contextlib
import sys
import functools
from typing import Any, Callable, Iterator

import numpy as np

BACKENDS = ("numpy", "numba", "cupy")
_CHOICES = ("auto",) + BACKENDS
_default_backend = "auto"


# ----------------------------------------------------------------- availability
@functools.lru_cache(maxsize=None)
def numba_available() -> bool:
    """Whether numba imports."""
    try:
        import numba  # noqa: F401
    except Exception:  # pragma: no cover - numba is a hard dependency
        return False
    return True


@functools.lru_cache(maxsize=None)
def cupy_available() -> bool:
    """Whether CuPy imports *and* sees a CUDA device.

    CuPy imports fine on a machine without a GPU; only
    ``cupy.cuda.is_available()`` tells whether a device call can succeed.
    """
    try:
        import cupy
    except Exception:
        return False
    try:
        return bool(cupy.cuda.is_available())
    except Exception:  # pragma: no cover - broken driver
        return False


def available_backends() -> list[str]:
    """Names of the backends usable in this process, NumPy first.

    Returns
    -------
    list of str
        A subset of ``["numpy", "numba", "cupy"]``.
    """
    names = ["numpy"]
    if numba_available():
        names.append("numba")
    if cupy_available():
        names.append("cupy")
    return names


# -------------------------------------------------------------- default choice
def get_backend() -> str:
    """The process-wide default backend name (``"auto"`` unless changed)."""
    return _default_backend


def _check_name(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"backend must be a string, one of {_CHOICES}; got {type(name).__name__}")
    if name not in _CHOICES:
        raise ValueError(f"backend must be one of {_CHOICES}; got {name!r}")
    if name == "cupy" and not cupy_available():
        raise ValueError("backend 'cupy' needs CuPy and a CUDA device; none is usable here")
    if name == "numba" and not numba_available():  # pragma: no cover
        raise ValueError("backend 'numba' needs numba, which does not import here")
    return name


def set_backend(name: str) -> None:
    """Set the process-wide default backend (``"auto"``, ``"numpy"``, ``"numba"`` or ``"cupy"``)."""
    global _default_backend
    _default_backend = _check_name(name)


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[str]:
    """Temporarily make ``name`` the default backend.

    Example
    -------
    >>> from companion.backend import use_backend, get_backend
    >>> with use_backend("numba"):
    ...     get_backend()
    'numba'
    >>> get_backend()
    'auto'
    """
    global _default_backend
    previous = _default_backend
    _default_backend = _check_name(name)
    try:
        yield _default_backend
    finally:
        _default_backend = previous


# ----------------------------------------------------------------- array kinds
def _is_torch(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _is_cupy(x: Any) -> bool:
    return type(x).__module__.startswith("cupy")


def array_kind(x: Any) -> str:
    """``"numpy"``, ``"cupy"`` or ``"torch"`` for an array; ``TypeError`` otherwise."""
    if isinstance(x, np.ndarray):
        return "numpy"
    if _is_cupy(x):
        return "cupy"
    if _is_torch(x):
        return "torch"
    raise TypeError(
        "expected a NumPy array, a CuPy array or a torch tensor; "
        f"got {type(x).__module__}.{type(x).__name__}"
    )


def is_on_gpu(x: Any) -> bool:
    """True for CuPy arrays and CUDA torch tensors."""
    kind = array_kind(x)
    if kind == "cupy":
        return True
    if kind == "torch":
        return x.device.type == "cuda"
    return False


def resolve_backend(requested: str | None, *arrays: Any) -> str:
    """Turn ``requested`` (or the default, for ``None``/``"auto"``) into a concrete backend.

    ``"auto"`` gives ``"cupy"`` when any of ``arrays`` is on a GPU and CuPy is usable,
    else ``"numba"`` (``"numpy"`` if numba is missing).
    """
    name = "auto" if requested is None else _check_name(requested)
    if name == "auto":
        name = _default_backend
    if name != "auto":
        return name
    if cupy_available() and any(is_on_gpu(a) for a in arrays if a is not None):
        return "cupy"
    return "numba" if numba_available() else "numpy"


# ------------------------------------------------------------------ conversion
def to_numpy(x: Any) -> np.ndarray:
    """A NumPy view of ``x`` (zero-copy for NumPy and CPU torch; device->host copy for GPU)."""
    kind = array_kind(x)
    if kind == "numpy":
        return x
    if kind == "cupy":
        return x.get()
    t = x.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if t.is_conj():
        t = t.resolve_conj()
    try:
        return np.from_dlpack(t)
    except (RuntimeError, TypeError, BufferError):  # e.g. bfloat16 has no NumPy dtype
        return t.numpy()


def to_cupy(x: Any):
    """A CuPy view of ``x`` (zero-copy for CuPy and CUDA torch; host->device copy otherwise)."""
    import cupy

    kind = array_kind(x)
    if kind == "cupy":
        return x
    if kind == "torch":
        t = x.detach()
        if t.device.type == "cuda":
            return cupy.from_dlpack(t)
        return cupy.asarray(to_numpy(t))
    return cupy.asarray(x)


def to_torch(x: Any, device: Any = None):
    """A torch tensor sharing memory with ``x`` where possible (DLPack), optionally moved to ``device``."""
    import torch

    kind = array_kind(x)
    if kind == "torch":
        t = x
    elif kind == "numpy":
        # torch refuses read-only buffers and some strides: copy only then.
        arr = x if x.flags.writeable and x.flags.c_contiguous else np.ascontiguousarray(x).copy()
        t = torch.from_dlpack(arr)
    else:
        t = torch.from_dlpack(x)
    if device is not None:
        t = t.to(device)
    return t


def to_kind(x: Any, kind: str, like: Any = None):
    """Convert ``x`` to the array kind ``kind`` (``"numpy"``, ``"cupy"``, ``"torch"``).

    For ``"torch"``, ``like`` (a tensor) gives the target device.
    """
    if kind == "numpy":
        return to_numpy(x)
    if kind == "cupy":
        return to_cupy(x)
    if kind == "torch":
        device = like.device if like is not None and _is_torch(like) else None
        return to_torch(x, device=device)
    raise ValueError(f"unknown array kind {kind!r}; expected 'numpy', 'cupy' or 'torch'")


def for_backend(x: Any, backend: str):
    """``x`` as the array type the given backend computes on (NumPy for numpy/numba, CuPy for cupy)."""
    if backend == "cupy":
        return to_cupy(x)
    return to_numpy(x)


def array_module(x: Any):
    """``numpy`` or ``cupy``, whichever ``x`` belongs to."""
    if _is_cupy(x):
        import cupy

        return cupy
    return np


# --------------------------------------------------------------------- torch
def torch_device(prefer: str | None = None):
    """The torch device a chapter should use: CUDA when present, else CPU.

    Parameters
    ----------
    prefer : {"cuda", "cpu"}, optional
        Force a device; ``"cuda"`` without a GPU raises ``ValueError``.
    """
    import torch

    if prefer is not None:
        if prefer not in ("cuda", "cpu"):
            raise ValueError(f"prefer must be 'cuda', 'cpu' or None; got {prefer!r}")
        if prefer == "cuda" and not torch.cuda.is_available():
            raise ValueError("prefer='cuda' but torch sees no CUDA device")
        return torch.device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def dispatch(kernels: dict[str, Callable[..., Any]], backend: str | None, *arrays: Any) -> tuple[str, Callable[..., Any]]:
    """Pick ``(name, kernel)`` from ``kernels`` for the resolved backend.

    A missing GPU kernel is an error, never a silent fallback.
    """
    name = resolve_backend(backend, *arrays)
    if name not in kernels:
        raise ValueError(f"no {name!r} kernel for this function; available: {sorted(kernels)}")
    return name, kernels[name]

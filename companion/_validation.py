"""Input checks shared by every public function.

Each helper raises ``TypeError`` (wrong kind of object) or ``ValueError`` (right
kind, wrong content) with a message naming the argument, what was expected and
what arrived.
"""

from __future__ import annotations

import numbers
from typing import Any, Iterable

import numpy as np

from .backend import array_kind, array_module, to_numpy


def check_array(
    x: Any,
    name: str,
    *,
    ndim: int | Iterable[int] | None = None,
    min_ndim: int | None = None,
    dtype_kind: str = "f",
    finite: bool = True,
    allow_empty: bool = False,
) -> str:
    """Validate an array argument and return its kind (``"numpy"``/``"cupy"``/``"torch"``).

    ``dtype_kind`` is a string of NumPy kind letters that are accepted
    (``"f"`` floating, ``"i"`` signed int, ``"u"`` unsigned, ``"b"`` bool).
    """
    try:
        kind = array_kind(x)
    except TypeError:
        raise TypeError(
            f"{name} must be a NumPy array, CuPy array or torch tensor; got {type(x).__name__}"
        ) from None
    shape = tuple(x.shape)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if len(shape) not in allowed:
            raise ValueError(f"{name} must have {' or '.join(map(str, allowed))} dimensions; got shape {shape}")
    if min_ndim is not None and len(shape) < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimensions; got shape {shape}")
    if not allow_empty and int(np.prod(shape)) == 0:
        raise ValueError(f"{name} must not be empty; got shape {shape}")
    got_kind = _dtype_kind(x, kind)
    if got_kind not in dtype_kind:
        names = {"f": "floating", "i": "signed integer", "u": "unsigned integer", "b": "boolean", "c": "complex"}
        want = " or ".join(names.get(k, k) for k in dtype_kind)
        raise TypeError(f"{name} must have a {want} dtype; got {x.dtype}")
    if finite and got_kind in "fc" and int(np.prod(shape)) > 0:
        if kind == "torch":
            import torch

            ok = bool(torch.isfinite(x.detach()).all())
        else:
            ok = bool(array_module(x).isfinite(x).all())
        if not ok:
            raise ValueError(f"{name} must contain only finite values; found NaN or infinity")
    return kind


def _dtype_kind(x: Any, kind: str) -> str:
    if kind == "torch":
        import torch

        if x.dtype.is_floating_point:
            return "f"
        if x.dtype.is_complex:
            return "c"
        if x.dtype == torch.bool:
            return "b"
        if x.dtype == torch.uint8:
            return "u"
        return "i"
    return np.dtype(x.dtype).kind


def check_int(value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer (bools refused) inside ``[minimum, maximum]``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer; got {type(value).__name__} {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}; got {value}")
    return value


def check_float(
    value: Any,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    strict_min: bool = False,
) -> float:
    """A finite real number inside the given range (``strict_min`` excludes ``minimum``)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__} {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value}")
    if minimum is not None:
        if strict_min and value <= minimum:
            raise ValueError(f"{name} must be > {minimum}; got {value}")
        if not strict_min and value < minimum:
            raise ValueError(f"{name} must be >= {minimum}; got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}; got {value}")
    return value


def check_choice(value: Any, name: str, choices: Iterable[str]) -> str:
    """One of a fixed set of strings."""
    choices = tuple(choices)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {choices}; got {type(value).__name__}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}; got {value!r}")
    return value


def host_copy(x: Any) -> np.ndarray:
    """Validated array as NumPy (used by references that always run on the host)."""
    return to_numpy(x)

"""The classical binary Hopfield network (1982): Hebbian storage, sign updates, quadratic energy.

Paper: J. J. Hopfield, "Neural networks and physical systems with emergent
collective computational abilities", PNAS 1982.

``P`` patterns of ``+-1`` values over ``n`` units are stored in the symmetric
weight matrix ``W = X^T X / n`` with a zero diagonal (Hebb's rule: units that
are on together get a positive coupling). Recall sets one unit at a time to the
sign of its input field ``h_u = sum_v W_uv s_v`` (asynchronous update). Each
such change lowers, or keeps, the energy ``E(s) = -s^T W s / 2``, so recall
ends in a local minimum. With random patterns it works while ``P`` stays below
about ``0.14 n``; beyond that, spurious minima take over.

Public names are re-exported by :mod:`companion.memory.hopfield`. Layers:
validated public functions; ``_async_numpy`` (reference: one unit at a time,
every state at once); ``_async_numba`` (parallel over states); the CuPy path
runs the reference's array code on the GPU.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from .._validation import check_array, check_choice, check_int
from ..backend import array_kind, array_module, dispatch, for_backend, to_kind

__all__ = ["hebbian_weights", "classical_hopfield_recall", "classical_hopfield_energy"]

UPDATES = ("async", "sync")


def _check_spins(x: Any, name: str, ndim) -> str:
    kind = check_array(x, name, ndim=ndim, dtype_kind="fiu")
    xp = array_module(for_backend(x, "cupy" if kind == "cupy" else "numpy"))
    values = for_backend(x, "cupy" if kind == "cupy" else "numpy")
    if not bool(xp.all((values == 1) | (values == -1))):
        raise ValueError(f"{name} must contain only +1 and -1 (binary Hopfield units)")
    return kind


def _native(x: Any):
    """NumPy for host input, CuPy for CuPy input (torch goes through NumPy or CuPy by device)."""
    kind = array_kind(x)
    if kind == "cupy" or (kind == "torch" and x.device.type == "cuda"):
        return for_backend(x, "cupy")
    return for_backend(x, "numpy")


def hebbian_weights(patterns: Any) -> Any:
    """Hebbian weight matrix ``W = X^T X / n`` with zero diagonal (classical Hopfield storage).

    Parameters
    ----------
    patterns : array of shape (P, n)
        ``P`` patterns of ``+1``/``-1`` values over ``n`` units (any numeric dtype).

    Returns
    -------
    array of shape (n, n), float64
        Symmetric, zero diagonal; same kind as ``patterns``.

    References
    ----------
    Hopfield, "Neural networks and physical systems with emergent collective
    computational abilities", PNAS 1982.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.memory import hebbian_weights
    >>> hebbian_weights(np.array([[1, -1, 1]])).tolist()
    [[0.0, -0.3333333333333333, 0.3333333333333333], [-0.3333333333333333, 0.0, -0.3333333333333333], [0.3333333333333333, -0.3333333333333333, 0.0]]
    """
    kind = _check_spins(patterns, "patterns", 2)
    x = _native(patterns)
    xp = array_module(x)
    x = x.astype(xp.float64)
    n = x.shape[1]
    w = x.T @ x / n  # (n, n)
    xp.fill_diagonal(w, 0.0)
    return to_kind(w, kind, like=patterns)


def _check_weights(weights: Any, n: int | None = None) -> str:
    kind = check_array(weights, "weights", ndim=2, dtype_kind="f")
    rows, cols = weights.shape
    if rows != cols:
        raise ValueError(f"weights must be a square (n, n) matrix; got shape {tuple(weights.shape)}")
    if n is not None and rows != n:
        raise ValueError(f"weights of shape {tuple(weights.shape)} do not match states with n={n} units")
    return kind


# ------------------------------------------------------------ NumPy reference
def _async_numpy(weights, states, steps: int, order):
    """Reference (NumPy or CuPy arrays): ``steps`` sweeps; each visits the units in ``order``.

    A unit takes the sign of its field; a zero field leaves it unchanged. All
    states are processed together, one unit at a time.
    """
    xp = array_module(states)
    s = states.copy()  # (Q, n)
    for sweep in range(steps):
        for u in order[sweep]:
            field = s @ weights[u]  # (Q,)
            s[:, u] = xp.where(field > 0, 1.0, xp.where(field < 0, -1.0, s[:, u]))
    return s


def _sync(weights, states, steps: int):
    """All units at once: ``s <- sign(W s)`` (zero field keeps the old value). May oscillate."""
    xp = array_module(states)
    s = states.copy()
    for _ in range(steps):
        field = s @ weights.T  # (Q, n)
        s = xp.where(field > 0, 1.0, xp.where(field < 0, -1.0, s))
    return s


# --------------------------------------------------------------- numba kernel
@numba.njit(cache=True, parallel=True)
def _async_kernel(weights, states, order):  # pragma: no cover - jitted
    """In place: for each state (in parallel), sweep the units in ``order[sweep]``."""
    n_states, n = states.shape
    sweeps = order.shape[0]
    for q in numba.prange(n_states):
        for sweep in range(sweeps):
            for t in range(n):
                u = order[sweep, t]
                field = 0.0
                for v in range(n):
                    field += weights[u, v] * states[q, v]
                if field > 0:
                    states[q, u] = 1.0
                elif field < 0:
                    states[q, u] = -1.0


def _async_numba(weights, states, steps: int, order):
    s = np.array(states, dtype=np.float64, order="C")
    _async_kernel(np.ascontiguousarray(weights, dtype=np.float64), s, np.ascontiguousarray(order))
    return s


_ASYNC_KERNELS = {"numpy": _async_numpy, "numba": _async_numba, "cupy": _async_numpy}


def classical_hopfield_recall(
    weights: Any,
    states: Any,
    *,
    steps: int = 5,
    update: str = "async",
    rng: np.random.Generator | None = None,
    backend: str | None = None,
) -> Any:
    """Run the classical Hopfield dynamics from each state.

    Parameters
    ----------
    weights : array of shape (n, n)
        Coupling matrix, e.g. from :func:`hebbian_weights`; floating, finite.
    states : array of shape (Q, n) or (n,)
        Initial ``+1``/``-1`` states, same kind as ``weights``.
    steps : int, default 5
        Sweeps (``"async"``: every unit updated once per sweep) or synchronous
        updates (``"sync"``); >= 1.
    update : {"async", "sync"}, default "async"
        ``"async"`` is Hopfield's rule: one unit at a time, never raises the
        energy. ``"sync"`` updates all units at once and can cycle.
    rng : numpy.random.Generator, optional
        Random visiting order of each sweep (the same order for every state);
        default: units ``0 .. n-1`` in order.
    backend : {None, "auto", "numpy", "numba", "cupy"}, optional
        Kernel for ``"async"`` (``"sync"`` is array code on the input's device).

    Returns
    -------
    array of shape (Q, n) or (n,), float64
        Final states of ``+1``/``-1``; same kind as ``states``.

    References
    ----------
    Hopfield, "Neural networks and physical systems with emergent collective
    computational abilities", PNAS 1982.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.memory import classical_hopfield_recall, hebbian_weights
    >>> X = np.sign(np.random.default_rng(0).standard_normal((3, 100)))
    >>> noisy = X.copy(); noisy[:, :10] *= -1
    >>> out = classical_hopfield_recall(hebbian_weights(X), noisy)
    >>> bool((out == X).all())
    True
    """
    kind = _check_weights(weights)
    skind = _check_spins(states, "states", (1, 2))
    if skind != kind:
        raise TypeError(f"weights and states must be the same kind of array; got {kind} and {skind}")
    n = weights.shape[0]
    if states.shape[-1] != n:
        raise ValueError(f"states must have n={n} units in their last axis; got shape {tuple(states.shape)}")
    steps = check_int(steps, "steps", minimum=1)
    update = check_choice(update, "update", UPDATES)
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator or None; got {type(rng).__name__}")
    one_d = len(states.shape) == 1
    if update == "sync":
        w, s = _native(weights), _native(states)
        xp = array_module(w)
        s = s[None, :] if one_d else s
        out = _sync(w.astype(xp.float64), s.astype(xp.float64), steps)
    else:
        if rng is None:
            order = np.tile(np.arange(n, dtype=np.int64), (steps, 1))  # (steps, n)
        else:
            order = np.stack([rng.permutation(n) for _ in range(steps)]).astype(np.int64)
        name, kernel = dispatch(_ASYNC_KERNELS, backend, weights, states)
        w, s = for_backend(weights, name), for_backend(states, name)
        xp = array_module(w)
        s = s[None, :] if one_d else s
        out = kernel(w.astype(xp.float64), s.astype(xp.float64), steps, order)
    return to_kind(out[0] if one_d else out, kind, like=states)


def classical_hopfield_energy(weights: Any, states: Any) -> Any:
    """Energy ``E(s) = -s^T W s / 2`` of each state (lower is more stable).

    Parameters
    ----------
    weights : array of shape (n, n)
        Coupling matrix, floating, finite.
    states : array of shape (Q, n) or (n,)
        States (any finite values; usually +-1), same kind as ``weights``.

    Returns
    -------
    array of shape (Q,) or 0-d, float64
        Same kind as ``states``.

    References
    ----------
    Hopfield, "Neural networks and physical systems with emergent collective
    computational abilities", PNAS 1982.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.memory import classical_hopfield_energy, hebbian_weights
    >>> x = np.array([[1.0, -1.0, 1.0, 1.0]])
    >>> float(classical_hopfield_energy(hebbian_weights(x), x[0]))
    -1.5
    """
    kind = _check_weights(weights)
    skind = check_array(states, "states", ndim=(1, 2), dtype_kind="fiu")
    if skind != kind:
        raise TypeError(f"weights and states must be the same kind of array; got {kind} and {skind}")
    n = weights.shape[0]
    if states.shape[-1] != n:
        raise ValueError(f"states must have n={n} units in their last axis; got shape {tuple(states.shape)}")
    w, s = _native(weights), _native(states)
    xp = array_module(w)
    s = s.astype(xp.float64)
    energy = -0.5 * ((s @ w.astype(xp.float64).T) * s).sum(axis=-1)
    return to_kind(xp.asarray(energy), kind, like=states)

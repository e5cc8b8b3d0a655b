"""Fixed sinusoidal position encodings.

Paper: Vaswani et al., "Attention Is All You Need" (NeurIPS 2017), section 3.5.

Position ``p`` is written as ``dim / 2`` (sin, cos) pairs, pair ``i`` turning at
the frequency ``w_i = base ** (-2 i / dim)``. Because every pair is a point on a
circle, the dot product of two rows depends only on their offset:
``row(p) . row(q) = sum_i cos((p - q) w_i)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import check_array, check_float, check_int
from ..backend import to_numpy

__all__ = ["sinusoidal_table"]


def sinusoidal_table(
    n_positions: int | None,
    dim: int,
    *,
    base: float = 10000.0,
    positions: Any = None,
) -> np.ndarray:
    """Table of sinusoidal position encodings, one row per position.

    ``table[p, 2i] = sin(p * w_i)`` and ``table[p, 2i + 1] = cos(p * w_i)`` with
    ``w_i = base ** (-2 i / dim)``. Angles are computed in float64 and the table
    is cast to float32 at the end.

    Parameters
    ----------
    n_positions : int or None
        Number of rows, positions ``0 .. n_positions - 1``. May be ``None`` when
        ``positions`` is given; when both are given they must agree in length.
    dim : int
        Width of each encoding; even and at least 2.
    base : float, default 10000.0
        Wavelength scale, > 0 (the paper's 10000).
    positions : array of shape (n_positions,), optional
        Integer or floating positions (NumPy, CuPy or torch; finite) at which to
        evaluate the rows instead of ``0 .. n_positions - 1`` (randomised or
        shifted positions).

    Returns
    -------
    numpy.ndarray of shape (n_positions, dim), float32
        Always a NumPy array: it is a constant table, not a transform of the input.

    Raises
    ------
    TypeError
        ``n_positions`` or ``dim`` is not an integer, or ``positions`` is not a
        numeric array.
    ValueError
        ``dim`` is odd or < 2, ``n_positions`` < 1, ``positions`` is not 1-D,
        holds NaN/inf, or disagrees with ``n_positions``.

    References
    ----------
    Vaswani et al., "Attention Is All You Need", NeurIPS 2017.

    Example
    -------
    >>> import numpy as np
    >>> from companion.positional import sinusoidal_table
    >>> table = sinusoidal_table(4, 6)
    >>> table.shape, table.dtype
    ((4, 6), dtype('float32'))
    >>> bool(np.allclose(table[0], [0, 1, 0, 1, 0, 1]))
    True
    """
    dim = check_int(dim, "dim", minimum=2)
    if dim % 2:
        raise ValueError(f"dim must be even (sin/cos pairs); got {dim}")
    base = check_float(base, "base", minimum=0.0, strict_min=True)
    if positions is None:
        if n_positions is None:
            raise ValueError("n_positions must be an integer >= 1 when positions is not given; got None")
        n_positions = check_int(n_positions, "n_positions", minimum=1)
        pos = np.arange(n_positions, dtype=np.float64)
    else:
        check_array(positions, "positions", ndim=1, dtype_kind="iuf")
        pos = np.asarray(to_numpy(positions), dtype=np.float64)
        if n_positions is not None:
            n_positions = check_int(n_positions, "n_positions", minimum=1)
            if n_positions != pos.shape[0]:
                raise ValueError(
                    f"positions must have length n_positions = {n_positions}; got shape {pos.shape}"
                )
    freqs = base ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)  # (dim/2,)
    angles = pos[:, None] * freqs[None, :]  # (n_positions, dim/2)
    table = np.empty((pos.shape[0], dim), dtype=np.float64)  # (n_positions, dim)
    table[:, 0::2] = np.sin(angles)
    table[:, 1::2] = np.cos(angles)
    return table.astype(np.float32)

"""Zipf-distributed token streams (chapter M1).

Natural text is heavy-tailed: a few tokens are very frequent and most are rare.
The simplest model of that is Zipf's law, ``p(k) ∝ k ** (-exponent)`` for the
symbol of frequency rank ``k = 1 .. n_symbols``. Chapter M1 stores input-output
associations drawn from such a stream in a matrix memory and measures how the
recall error falls with the memory's size and the number of samples seen.

* :func:`zipf_probabilities` - the normalised probabilities of the ranks;
* :func:`zipf_token_stream` - i.i.d. draws of symbol ids ``0 .. n_symbols - 1``
  (id ``k - 1`` has rank ``k``: id 0 is the most frequent);
* :func:`zipf_association_task` - a stream of ``(input, output)`` pairs where the
  output is a fixed random function of the input (the task of chapter M1).

Example
-------
>>> import numpy as np
>>> from companion.data.zipf import zipf_probabilities, zipf_token_stream
>>> p = zipf_probabilities(4, 1.0)
>>> p.round(3).tolist()
[0.48, 0.24, 0.16, 0.12]
>>> zipf_token_stream(np.random.default_rng(0), 6, 4, 1.0).tolist()
[1, 0, 0, 0, 2, 3]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import check_float, check_int

__all__ = ["zipf_probabilities", "zipf_token_stream", "zipf_association_task"]


def _check_rng(rng: Any) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)); got {type(rng).__name__}")
    return rng


def zipf_probabilities(n_symbols: int, exponent: float) -> np.ndarray:
    """Probabilities ``p(k) = k ** (-exponent) / sum_j j ** (-exponent)`` of ranks ``1 .. n_symbols``.

    Parameters
    ----------
    n_symbols : int
        Number of distinct symbols, >= 1.
    exponent : float
        Zipf exponent, >= 0 (0 gives the uniform distribution). Chapter M1 uses
        values above 1, where the tail mass beyond rank ``k`` falls like
        ``k ** (1 - exponent)``.

    Returns
    -------
    numpy.ndarray of shape (n_symbols,), float64
        Non-increasing probabilities summing to 1; entry ``i`` is symbol id ``i``
        (rank ``i + 1``).

    References
    ----------
    Cabannes, Dohmatob and Bietti, "Scaling Laws for Associative Memories", 2024.

    Example
    -------
    >>> from companion.data.zipf import zipf_probabilities
    >>> p = zipf_probabilities(1000, 2.0)
    >>> round(float(p.sum()), 12), bool(p[0] > p[1] > p[-1])
    (1.0, True)
    """
    n_symbols = check_int(n_symbols, "n_symbols", minimum=1)
    exponent = check_float(exponent, "exponent", minimum=0.0)
    ranks = np.arange(1, n_symbols + 1, dtype=np.float64)  # (n_symbols,)
    weights = ranks ** (-exponent)
    return weights / weights.sum()


def zipf_token_stream(rng: np.random.Generator, n_samples: int, n_symbols: int, exponent: float) -> np.ndarray:
    """Draw ``n_samples`` i.i.d. symbol ids from the Zipf law of :func:`zipf_probabilities`.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness (the chapter's one seeded generator).
    n_samples : int
        Number of tokens, >= 0.
    n_symbols : int
        Alphabet size, >= 1; ids run over ``0 .. n_symbols - 1``, id 0 the most frequent.
    exponent : float
        Zipf exponent, >= 0.

    Returns
    -------
    numpy.ndarray of shape (n_samples,), int64

    Example
    -------
    >>> import numpy as np
    >>> from companion.data.zipf import zipf_token_stream
    >>> x = zipf_token_stream(np.random.default_rng(1), 10_000, 100, 1.5)
    >>> bool(x.min() >= 0), bool(x.max() < 100), bool((x == 0).mean() > (x == 1).mean())
    (True, True, True)
    """
    rng = _check_rng(rng)
    n_samples = check_int(n_samples, "n_samples", minimum=0)
    p = zipf_probabilities(n_symbols, exponent)
    # inverse-CDF sampling: one uniform per token, a binary search in the cumulative sum
    cdf = np.cumsum(p)
    cdf[-1] = 1.0
    ids = np.searchsorted(cdf, rng.random(n_samples), side="right")  # (n_samples,)
    return np.minimum(ids, n_symbols - 1).astype(np.int64)


def zipf_association_task(
    rng: np.random.Generator,
    n_samples: int,
    n_symbols: int,
    exponent: float,
    n_classes: int,
    *,
    targets: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A stream of input-output pairs ``(x_t, f(x_t))`` with Zipf inputs and a random map ``f``.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    n_samples : int
        Stream length ``T``, >= 0.
    n_symbols : int
        Number of input symbols ``N``, >= 1.
    exponent : float
        Zipf exponent of the inputs, >= 0.
    n_classes : int
        Number of output classes ``M``, >= 1.
    targets : numpy.ndarray of shape (n_symbols,), optional
        The map ``f`` as integer classes in ``0 .. n_classes - 1``; drawn
        uniformly at random when omitted (pass it to draw more samples of the
        same task).

    Returns
    -------
    inputs : numpy.ndarray of shape (n_samples,), int64
    outputs : numpy.ndarray of shape (n_samples,), int64
        ``targets[inputs]``.
    targets : numpy.ndarray of shape (n_symbols,), int64
        The map ``f``.

    Example
    -------
    >>> import numpy as np
    >>> from companion.data.zipf import zipf_association_task
    >>> x, y, f = zipf_association_task(np.random.default_rng(0), 5, 50, 1.5, 4)
    >>> bool((f[x] == y).all()), f.shape
    (True, (50,))
    """
    rng = _check_rng(rng)
    n_symbols = check_int(n_symbols, "n_symbols", minimum=1)
    n_classes = check_int(n_classes, "n_classes", minimum=1)
    if targets is None:
        targets = rng.integers(0, n_classes, size=n_symbols)
    else:
        targets = np.asarray(targets)
        if targets.shape != (n_symbols,) or targets.dtype.kind not in "iu":
            raise ValueError(f"targets must be an integer array of shape ({n_symbols},); got {targets.dtype} {targets.shape}")
        if targets.size and (targets.min() < 0 or targets.max() >= n_classes):
            raise ValueError(f"targets must lie in 0 .. {n_classes - 1}; got range {targets.min()} .. {targets.max()}")
    targets = targets.astype(np.int64)
    inputs = zipf_token_stream(rng, n_samples, n_symbols, exponent)
    return inputs, targets[inputs], targets

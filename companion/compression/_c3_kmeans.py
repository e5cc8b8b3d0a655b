"""k-means with k-means++ seeding and Lloyd iterations (private to chapter C3; see ``codebooks``)."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from .._validation import check_array, check_int
from ..backend import array_module, for_backend, resolve_backend, to_kind
from ..kernels.assign import nearest_centroid

__all__ = ["kmeans", "as_generator"]


def as_generator(rng: Any, name: str = "rng") -> np.random.Generator:
    """A NumPy Generator from a Generator, an int seed, or None (seed 0, so results repeat)."""
    if rng is None:
        return np.random.default_rng(0)
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, numbers.Integral) and not isinstance(rng, (bool, np.bool_)):
        if int(rng) < 0:
            raise ValueError(f"{name} seed must be >= 0; got {rng}")
        return np.random.default_rng(int(rng))
    raise TypeError(f"{name} must be a numpy.random.Generator, an int seed or None; got {type(rng).__name__}")


def _kmeanspp(x64: np.ndarray, k: int, gen: np.random.Generator) -> np.ndarray:
    """k-means++ seeding: each new centre drawn with probability proportional to D(x)^2."""
    n = x64.shape[0]
    chosen = np.empty(k, dtype=np.int64)
    chosen[0] = gen.integers(n)
    closest = ((x64 - x64[chosen[0]]) ** 2).sum(axis=1)  # (n,) squared distance to the nearest centre so far
    for j in range(1, k):
        total = closest.sum()
        if total > 0.0:
            u = gen.random() * total
            idx = int(np.searchsorted(np.cumsum(closest), u, side="right"))
            if idx >= n or closest[idx] == 0.0:  # rounding at the top end: take the farthest point
                idx = int(np.argmax(closest))
        else:  # every point coincides with a centre (fewer distinct points than k)
            idx = int(gen.integers(n))
        chosen[j] = idx
        closest = np.minimum(closest, ((x64 - x64[idx]) ** 2).sum(axis=1))
    return x64[chosen].copy()  # (k, d)


def _update(xp, x64, labels, sq, centroids):
    """New centroids as cluster means; an empty cluster takes the farthest remaining point.

    The farthest points (largest squared distance to their centroid, ties to the
    lower index) re-seed empty clusters in order, each point used once: the rule is
    deterministic and moves a centroid to where the error is largest.
    """
    k, d = centroids.shape
    counts = xp.bincount(labels, minlength=k)  # (k,)
    sums = xp.zeros((k, d), dtype=xp.float64)
    if xp is np:
        np.add.at(sums, labels, x64)
    else:  # pragma: no cover - GPU
        import cupyx

        cupyx.scatter_add(sums, labels, x64)
    new = centroids.copy()
    full = counts > 0
    new[full] = sums[full] / counts[full][:, None]
    empty = xp.flatnonzero(counts == 0)
    if len(empty):
        order = xp.argsort(-sq, kind="stable") if xp is np else xp.argsort(-sq)
        donors = order[: len(empty)]
        new[empty] = x64[donors]
    return new, int(len(empty))


def kmeans(x: Any, k: int, *, iters: int = 25, rng: Any = None, backend: str | None = None) -> tuple[Any, Any]:
    """Cluster points into ``k`` groups: k-means++ seeding, then Lloyd iterations.

    Each Lloyd iteration assigns every point to its nearest centroid
    (:func:`companion.kernels.nearest_centroid`) and moves each centroid to the
    mean of its points; it stops early when no assignment changes. A cluster
    left empty is re-seeded with the point farthest from its centroid (the
    farthest first, ties to the lower index), so the result depends only on
    ``rng``.

    Parameters
    ----------
    x : array of shape (n, d)
        Floating NumPy array, CuPy array or torch tensor; finite; ``n >= k``.
    k : int
        Number of clusters, ``1 <= k <= n``.
    iters : int, default 25
        Maximum number of Lloyd iterations (0 returns the k-means++ seeds).
    rng : numpy.random.Generator or int, optional
        Source of the seeding draws; an int is a seed; ``None`` means seed 0.
    backend : {None, "auto", "numpy", "numba", "cupy"}, optional
        Kernel for the assignment step (see :func:`companion.kernels.nearest_centroid`).

    Returns
    -------
    centroids : array of shape (k, d)
        Same kind as ``x``, dtype of ``x`` (float32 stays float32).
    labels : array of shape (n,), int64
        Index of the nearest returned centroid for every point.

    Raises
    ------
    TypeError
        ``x`` is not a floating array, ``k``/``iters`` not integers, bad ``rng``.
    ValueError
        Empty ``x``, NaN or infinity, ``k < 1`` or ``k > n``, ``iters < 0``.

    References
    ----------
    Arthur and Vassilvitskii, "k-means++: The Advantages of Careful Seeding", 2007;
    Lloyd, "Least squares quantization in PCM", 1982.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.compression import kmeans
    >>> x = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    >>> centroids, labels = kmeans(x, 2, rng=0)
    >>> sorted(centroids.round(2).tolist())
    [[0.05, 0.0], [5.05, 5.0]]
    >>> bool(labels[0] == labels[1] != labels[2] == labels[3])
    True
    """
    kind = check_array(x, "x", ndim=2, dtype_kind="f")
    n = x.shape[0]
    k = check_int(k, "k", minimum=1)
    if k > n:
        raise ValueError(f"k must be <= the number of points n = {n}; got k = {k}")
    iters = check_int(iters, "iters", minimum=0)
    gen = as_generator(rng)
    name = resolve_backend(backend, x)
    xb = for_backend(x.detach() if kind == "torch" else x, name)
    xp = array_module(xb)
    out_dtype = xb.dtype if xb.dtype in (xp.float32, xp.float64) else xp.float32
    x64 = xb.astype(xp.float64)  # (n, d)
    if xp is np:
        centroids = _kmeanspp(x64, k, gen)
    else:  # pragma: no cover - GPU: seed on the host (k passes), iterate on the device
        centroids = xp.asarray(_kmeanspp(xp.asnumpy(x64), k, gen))
    labels, sq = nearest_centroid(x64, centroids, backend=name)
    for _ in range(iters):
        centroids, _n_empty = _update(xp, x64, labels, sq, centroids)
        new_labels, sq = nearest_centroid(x64, centroids, backend=name)
        if bool((new_labels == labels).all()) and _n_empty == 0:
            labels = new_labels
            break
        labels = new_labels
    if out_dtype != xp.float64:  # labels must be exact for the centroids actually returned
        centroids = centroids.astype(out_dtype)
        labels, _ = nearest_centroid(xb.astype(out_dtype, copy=False), centroids, backend=name)
    return to_kind(centroids, kind, like=x), to_kind(labels, kind, like=x)

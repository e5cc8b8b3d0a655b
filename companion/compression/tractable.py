"""Tractable probability models of discrete vectors, and the compressors they give.

A model that returns the *exact* probability of each symbol given the ones
before it can drive an entropy coder (:mod:`companion.compression.entropy_coding`):
the code length is then the model's log-loss, so a better model is a better
compressor and bits per pixel measure modelling quality in hard currency.

Three models of vectors ``x`` in ``{0, ..., K-1}^D`` (e.g. binarized images):

* :class:`IndependentModel` - each coordinate on its own, ``p(x) = prod_j p_j(x_j)``;
* :class:`ChowLiuTree` - the best tree-shaped model, ``p(x) = prod_j p(x_j | x_pa(j))``,
  whose tree is the maximum spanning tree of pairwise mutual information
  (Chow and Liu, 1968);
* :class:`MixtureModel` - ``C`` independent models mixed,
  ``p(x) = sum_c w_c prod_j p_c(x_j)``: the smallest *probabilistic circuit*
  (one sum node over product nodes), fitted by EM. Its coding conditionals
  ``p(x_j | x_<j)`` come from the posterior over components, updated pixel by
  pixel, as in "Lossless Compression with Probabilistic Circuits".

Each has ``fit``, ``log2_prob`` (exact, per row), ``code_length_bits`` (the
ideal code length), ``compress`` / ``decompress`` (real rANS codes, numba) and
:func:`prequential_code_length` measures a model *class* by the bits it needs
to transmit a data set block by block, each block coded by the model fitted
on the blocks before it ("In-context learning and Occam's razor").

The counting steps are one-hot matrix products (BLAS); the coding loops are the
numba kernels of ``_c5_rans``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from .._validation import check_array, check_float, check_int
from ..backend import to_numpy
from . import _c5_rans as _k
from .entropy_coding import _raise_status

__all__ = [
    "IndependentModel",
    "ChowLiuTree",
    "MixtureModel",
    "pairwise_mutual_information",
    "maximum_spanning_tree",
    "prequential_code_length",
]


# ----------------------------------------------------------------- helpers
def _check_data(x: Any, n_values: int, n_features: int | None = None, name: str = "x") -> np.ndarray:
    if isinstance(x, (list, tuple)):
        x = np.asarray(x)
    check_array(x, name, ndim=2, dtype_kind="iub")
    a = np.asarray(to_numpy(x), dtype=np.int64)
    if a.min() < 0 or a.max() >= n_values:
        raise ValueError(f"{name} must hold values in [0, {n_values}) (n_values={n_values}); "
                         f"found values in [{a.min()}, {a.max()}]")
    if n_features is not None and a.shape[1] != n_features:
        raise ValueError(f"{name} must have {n_features} columns (the fitted model's); got shape {a.shape}")
    return np.ascontiguousarray(a)


def _one_hot(x: np.ndarray, k: int) -> np.ndarray:
    """(n, D) integers -> (n, D * K) float one-hot, column ``j * K + v``."""
    n, d = x.shape
    out = np.zeros((n, d * k))
    out[np.arange(n)[:, None], np.arange(d)[None, :] * k + x] = 1.0
    return out


def _quantized(p: np.ndarray, precision: int) -> np.ndarray:
    return _k._quantize_rows_numba(np.ascontiguousarray(p.reshape(-1, p.shape[-1]), dtype=np.float64),
                                   precision).reshape(p.shape)


class _Model:
    """Shared checks; subclasses set ``n_values`` and fill ``n_features_`` in ``fit``."""

    n_values: int
    precision: int = 16

    def _fitted(self) -> int:
        if getattr(self, "n_features_", None) is None:
            raise ValueError(f"{type(self).__name__} is not fitted yet; call fit(x) first")
        return self.n_features_

    def code_length_bits(self, x: Any) -> float:
        """Ideal code length of all rows, ``-sum log2 p(x_i)``, in bits."""
        return float(-self.log2_prob(x).sum())

    def bits_per_symbol(self, x: Any) -> float:
        """``code_length_bits(x) / x.size`` (bits per pixel for images)."""
        x = _check_data(x, self.n_values, self._fitted())
        return self.code_length_bits(x) / x.size


# ------------------------------------------------------------ independent
@dataclasses.dataclass
class IndependentModel(_Model):
    """Each coordinate independent: ``p(x) = prod_j theta[j, x_j]`` with Laplace-smoothed counts.

    Parameters
    ----------
    n_values : int, default 2
        Alphabet size ``K``.
    alpha : float, default 1.0
        Pseudo-count added to every cell (> 0), so no probability is 0.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.compression import IndependentModel
    >>> x = np.array([[0, 1], [0, 1], [1, 1]])
    >>> m = IndependentModel().fit(x)
    >>> m.theta_.round(2).tolist()
    [[0.6, 0.4], [0.2, 0.8]]
    >>> bool((m.decompress(m.compress(x), 3) == x).all())
    True
    """

    n_values: int = 2
    alpha: float = 1.0
    n_features_: int | None = dataclasses.field(default=None, init=False, repr=False)

    def __post_init__(self):
        self.n_values = check_int(self.n_values, "n_values", minimum=1)
        self.alpha = check_float(self.alpha, "alpha", minimum=0.0, strict_min=True)

    def fit(self, x: Any) -> "IndependentModel":
        x = _check_data(x, self.n_values)
        n, d = x.shape
        counts = _one_hot(x, self.n_values).sum(0).reshape(d, self.n_values)  # (D, K)
        self.theta_ = (counts + self.alpha) / (n + self.n_values * self.alpha)
        self.n_features_ = d
        return self

    def log2_prob(self, x: Any) -> np.ndarray:
        """``log2 p(x_i)`` for every row, shape (n,)."""
        x = _check_data(x, self.n_values, self._fitted())
        return np.log2(self.theta_)[np.arange(x.shape[1]), x].sum(1)

    def _context_tables(self):
        d = self._fitted()
        order = np.arange(d, dtype=np.int64)
        parent = np.full(d, -1, dtype=np.int64)
        return order, parent, _quantized(self.theta_[:, None, :], self.precision)  # (D, 1, K)

    def compress(self, x: Any) -> np.ndarray:
        """rANS code (uint8) of all rows of ``x``."""
        x = _check_data(x, self.n_values, self._fitted())
        order, parent, freq = self._context_tables()
        return _k._encode_context_numba(x, order, parent, freq, self.precision)

    def decompress(self, code: np.ndarray, n_rows: int) -> np.ndarray:
        """Inverse of :meth:`compress`: ``n_rows`` rows, int64 (n_rows, D)."""
        order, parent, freq = self._context_tables()
        code, n_rows = _check_code(code, n_rows)
        out, status = _k._decode_context_numba(code, n_rows, self.n_features_, order, parent, freq, self.precision)
        _raise_status(status)
        return out


def _check_code(code: Any, n_rows: Any) -> tuple[np.ndarray, int]:
    if not isinstance(code, np.ndarray) or code.dtype != np.uint8 or code.ndim != 1:
        raise TypeError(f"code must be a 1-d NumPy uint8 array (the output of compress); got {type(code).__name__}")
    if code.shape[0] < 4:
        raise ValueError(f"code must hold at least the 4 bytes of the final state; got {code.shape[0]} bytes")
    return np.ascontiguousarray(code), check_int(n_rows, "n_rows", minimum=1)


# ----------------------------------------------------------------- Chow-Liu
def pairwise_mutual_information(x: Any, n_values: int = 2, *, alpha: float = 1.0) -> np.ndarray:
    """Mutual information (bits) between every pair of columns of ``x``, from smoothed counts.

    Parameters
    ----------
    x : integer array of shape (n, D)
        Values in ``[0, n_values)``.
    n_values : int, default 2
        Alphabet size ``K``.
    alpha : float, default 1.0
        Pseudo-count per cell of each ``K x K`` pair table.

    Returns
    -------
    numpy.ndarray of shape (D, D)
        Symmetric, zero diagonal, non-negative.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.compression import pairwise_mutual_information
    >>> a = np.random.default_rng(0).integers(0, 2, 500)
    >>> mi = pairwise_mutual_information(np.stack([a, a, 1 - a, np.zeros_like(a)], 1), alpha=1e-9)
    >>> mi.round(1).tolist()[0]                          # a copy and a negation: 1 bit each
    [0.0, 1.0, 1.0, 0.0]
    """
    k = check_int(n_values, "n_values", minimum=1)
    alpha = check_float(alpha, "alpha", minimum=0.0, strict_min=True)
    x = _check_data(x, k)
    n, d = x.shape
    oh = _one_hot(x, k)
    joint = (oh.T @ oh).reshape(d, k, d, k).transpose(0, 2, 1, 3) + alpha  # (D, D, K, K) counts
    joint /= joint.sum((2, 3), keepdims=True)
    pa = joint.sum(3, keepdims=True)  # (D, D, K, 1)
    pb = joint.sum(2, keepdims=True)  # (D, D, 1, K)
    mi = (joint * np.log2(joint / (pa * pb))).sum((2, 3))
    np.fill_diagonal(mi, 0.0)
    return np.maximum(mi, 0.0)


def maximum_spanning_tree(weights: Any, root: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Maximum spanning tree of a complete graph (Prim's algorithm), as a visiting order and parents.

    Parameters
    ----------
    weights : array of shape (D, D)
        Symmetric edge weights (e.g. mutual information).
    root : int, default 0
        Node the tree hangs from.

    Returns
    -------
    order : numpy.ndarray of int64, shape (D,)
        Nodes in the order Prim adds them (every node after its parent).
    parent : numpy.ndarray of int64, shape (D,)
        ``parent[v]`` is the node ``v`` hangs from; ``-1`` for the root.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.compression import maximum_spanning_tree
    >>> w = np.array([[0, 5, 1], [5, 0, 4], [1, 4, 0]], dtype=float)
    >>> order, parent = maximum_spanning_tree(w)
    >>> order.tolist(), parent.tolist()
    ([0, 1, 2], [-1, 0, 1])
    """
    check_array(weights, "weights", ndim=2, dtype_kind="fiu")
    w = np.asarray(to_numpy(weights), dtype=np.float64)
    d = w.shape[0]
    if w.shape != (d, d) or not np.allclose(w, w.T):
        raise ValueError(f"weights must be a symmetric square matrix; got shape {w.shape}")
    root = check_int(root, "root", minimum=0, maximum=d - 1)
    in_tree = np.zeros(d, dtype=bool)
    best = np.full(d, -np.inf)
    link = np.full(d, -1, dtype=np.int64)
    best[root] = np.inf
    order = []
    for _ in range(d):
        v = int(np.argmax(np.where(in_tree, -np.inf, best)))
        in_tree[v] = True
        order.append(v)
        better = ~in_tree & (w[v] > best)
        best[better] = w[v][better]
        link[better] = v
    link[root] = -1
    return np.asarray(order, dtype=np.int64), link


@dataclasses.dataclass
class ChowLiuTree(_Model):
    """Tree-structured model ``p(x) = p(x_root) prod_j p(x_j | x_parent(j))`` (Chow and Liu, 1968).

    Among all tree-shaped distributions, the one whose edges form the maximum
    spanning tree of pairwise mutual information has the highest likelihood;
    its conditional tables are the smoothed empirical ones.

    Parameters
    ----------
    n_values : int, default 2
        Alphabet size ``K``.
    alpha : float, default 1.0
        Pseudo-count per cell of every table (> 0).
    root : int, default 0
        Root coordinate.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.compression import ChowLiuTree, IndependentModel
    >>> a = np.random.default_rng(0).integers(0, 2, (300, 1))
    >>> x = np.hstack([a, a, 1 - a])                   # three perfectly dependent pixels
    >>> bool(ChowLiuTree().fit(x).bits_per_symbol(x) < IndependentModel().fit(x).bits_per_symbol(x))
    True
    """

    n_values: int = 2
    alpha: float = 1.0
    root: int = 0
    n_features_: int | None = dataclasses.field(default=None, init=False, repr=False)

    def __post_init__(self):
        self.n_values = check_int(self.n_values, "n_values", minimum=1)
        self.alpha = check_float(self.alpha, "alpha", minimum=0.0, strict_min=True)
        self.root = check_int(self.root, "root", minimum=0)

    def fit(self, x: Any) -> "ChowLiuTree":
        k = self.n_values
        x = _check_data(x, k)
        n, d = x.shape
        if self.root >= d:
            raise ValueError(f"root={self.root} must be a column of x (D = {d})")
        self.mutual_information_ = pairwise_mutual_information(x, k, alpha=self.alpha)
        self.order_, self.parent_ = maximum_spanning_tree(self.mutual_information_, self.root)
        oh = _one_hot(x, k)
        pair = (oh.T @ oh).reshape(d, k, d, k)  # pair[a_col, a, b_col, b] counts
        single = oh.sum(0).reshape(d, k)
        cond = np.empty((d, k, k))  # cond[j, a, b] = p(x_j = b | x_parent = a)
        for j in range(d):
            p = self.parent_[j]
            if p < 0:
                cond[j] = (single[j] + self.alpha) / (n + k * self.alpha)
            else:
                counts = pair[p, :, j, :]  # (K parent values, K child values)
                cond[j] = (counts + self.alpha) / (counts.sum(1, keepdims=True) + k * self.alpha)
        self.conditional_ = cond
        self.n_features_ = d
        return self

    def log2_prob(self, x: Any) -> np.ndarray:
        """``log2 p(x_i)`` for every row, shape (n,)."""
        x = _check_data(x, self.n_values, self._fitted())
        d = x.shape[1]
        ctx = np.where(self.parent_ >= 0, x[:, np.maximum(self.parent_, 0)], 0)  # (n, D) parent values
        return np.log2(self.conditional_[np.arange(d), ctx, x]).sum(1)

    def _context_tables(self):
        self._fitted()
        order = self.order_
        parent_in_order = self.parent_[order]
        freq = _quantized(self.conditional_[order], self.precision)  # (D, K, K), row t for column order[t]
        return order, parent_in_order, freq

    def compress(self, x: Any) -> np.ndarray:
        """rANS code (uint8) of all rows of ``x``: each pixel coded given its parent."""
        x = _check_data(x, self.n_values, self._fitted())
        order, parent, freq = self._context_tables()
        return _k._encode_context_numba(x, order, parent, freq, self.precision)

    def decompress(self, code: np.ndarray, n_rows: int) -> np.ndarray:
        """Inverse of :meth:`compress`; pixels are decoded root first, so every parent is known in time."""
        order, parent, freq = self._context_tables()
        code, n_rows = _check_code(code, n_rows)
        out, status = _k._decode_context_numba(code, n_rows, self.n_features_, order, parent, freq, self.precision)
        _raise_status(status)
        return out


# ----------------------------------------------------------------- mixture
@dataclasses.dataclass
class MixtureModel(_Model):
    """Mixture of ``C`` independent models, fitted by EM: a one-sum-node probabilistic circuit.

    ``p(x) = sum_c w_c prod_j theta[c, j, x_j]``. Coding uses the exact
    conditionals ``p(x_j | x_<j) = sum_c post_c(x_<j) theta[c, j, x_j]`` where
    ``post_c`` is the posterior over components given the pixels coded so far.

    Parameters
    ----------
    n_components : int, default 10
        ``C``.
    n_values : int, default 2
        Alphabet size ``K``.
    n_iter : int, default 50
        EM iterations.
    alpha : float, default 1.0
        Pseudo-count per cell of each component's tables (> 0).
    seed : int, default 0
        Seed of the random initial responsibilities.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.compression import MixtureModel
    >>> x = np.repeat(np.array([[0, 0, 0, 0], [1, 1, 1, 1]]), 50, axis=0)
    >>> m = MixtureModel(n_components=2, n_iter=20).fit(x)
    >>> round(m.bits_per_symbol(x), 2)                  # ~1 bit per row (which pattern) + smoothing
    0.28
    >>> bool((m.decompress(m.compress(x), len(x)) == x).all())
    True
    """

    n_components: int = 10
    n_values: int = 2
    n_iter: int = 50
    alpha: float = 1.0
    seed: int = 0
    n_features_: int | None = dataclasses.field(default=None, init=False, repr=False)

    def __post_init__(self):
        self.n_components = check_int(self.n_components, "n_components", minimum=1)
        self.n_values = check_int(self.n_values, "n_values", minimum=1)
        self.n_iter = check_int(self.n_iter, "n_iter", minimum=1)
        self.alpha = check_float(self.alpha, "alpha", minimum=0.0, strict_min=True)
        self.seed = check_int(self.seed, "seed", minimum=0)

    def _joint_log(self, oh: np.ndarray) -> np.ndarray:
        """``log w_c + sum_j log theta[c, j, x_j]`` (natural log), shape (n, C)."""
        c_n = self.n_components
        return oh @ self.log_theta_.reshape(c_n, -1).T + self.log_weights_

    def fit(self, x: Any) -> "MixtureModel":
        k, c_n = self.n_values, self.n_components
        x = _check_data(x, k)
        n, d = x.shape
        oh = _one_hot(x, k)  # (n, D * K)
        resp = np.random.default_rng(self.seed).dirichlet(np.ones(c_n), size=n)  # (n, C)
        for _ in range(self.n_iter):
            mass = resp.sum(0)  # (C,)
            counts = (resp.T @ oh).reshape(c_n, d, k)  # (C, D, K)
            self.log_theta_ = np.log((counts + self.alpha) / (mass[:, None, None] + k * self.alpha))
            self.log_weights_ = np.log((mass + 1.0) / (n + c_n))
            joint = self._joint_log(oh)
            resp = np.exp(joint - joint.max(1, keepdims=True))
            resp /= resp.sum(1, keepdims=True)
        self.n_features_ = d
        return self

    def log2_prob(self, x: Any) -> np.ndarray:
        """``log2 p(x_i)`` for every row, shape (n,) (log-sum-exp over components)."""
        x = _check_data(x, self.n_values, self._fitted())
        joint = self._joint_log(_one_hot(x, self.n_values))
        top = joint.max(1)
        return (top + np.log(np.exp(joint - top[:, None]).sum(1))) / np.log(2.0)

    def compress(self, x: Any) -> np.ndarray:
        """rANS code (uint8) of all rows of ``x`` under the exact conditionals ``p(x_j | x_<j)``."""
        x = _check_data(x, self.n_values, self._fitted())
        return _k._encode_mixture_numba(x, self.log_weights_, np.ascontiguousarray(self.log_theta_), self.precision)

    def decompress(self, code: np.ndarray, n_rows: int) -> np.ndarray:
        """Inverse of :meth:`compress` (the posterior is rebuilt from the pixels decoded so far)."""
        self._fitted()
        code, n_rows = _check_code(code, n_rows)
        out, status = _k._decode_mixture_numba(code, n_rows, self.n_features_, self.log_weights_,
                                               np.ascontiguousarray(self.log_theta_), self.precision)
        _raise_status(status)
        return out


# -------------------------------------------------------------- prequential
def prequential_code_length(make_model: Callable[[], Any], x: Any, block_ends: Any, *, n_values: int = 2) -> np.ndarray:
    """Bits to send the rows of ``x`` block by block, each block coded by a model fitted on everything before it.

    Block 0 (rows ``0 .. block_ends[0]``) is sent with the uniform code,
    ``log2 K`` bits per symbol; block ``b`` with a fresh ``make_model()``
    fitted on rows ``0 .. block_ends[b-1]``. The total is the prequential
    code length of the model *class*: it charges a class for how fast it
    learns, so a flexible class that overfits small prefixes pays for it.

    Parameters
    ----------
    make_model : callable
        Returns an unfitted model with ``fit(x)`` and ``code_length_bits(x)``.
    x : integer array of shape (n, D)
        Rows in the order they are transmitted.
    block_ends : sequence of int
        Strictly increasing ends of the blocks, the last one ``<= n``.
    n_values : int, default 2
        Alphabet size ``K`` (for the uniform first block and the checks).

    Returns
    -------
    numpy.ndarray of shape (len(block_ends),)
        Bits spent on each block; their sum is the prequential code length.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.compression import IndependentModel, prequential_code_length
    >>> x = (np.random.default_rng(0).random((200, 4)) < 0.1).astype(int)
    >>> bits = prequential_code_length(IndependentModel, x, [10, 50, 200])
    >>> float(bits[0]), bool(bits[2] / 150 < 4.0)
    (40.0, True)
    """
    if not callable(make_model):
        raise TypeError(f"make_model must be callable (returning an unfitted model); got {type(make_model).__name__}")
    k = check_int(n_values, "n_values", minimum=1)
    x = _check_data(x, k)
    ends = np.asarray(block_ends)
    if ends.ndim != 1 or ends.size == 0 or ends.dtype.kind not in "iu":
        raise ValueError(f"block_ends must be a non-empty 1-d sequence of integers; got {block_ends!r}")
    if ends[0] < 1 or np.any(np.diff(ends) <= 0) or ends[-1] > x.shape[0]:
        raise ValueError(f"block_ends must increase strictly from >= 1 to <= n = {x.shape[0]}; got {ends.tolist()}")
    bits = np.empty(len(ends))
    bits[0] = ends[0] * x.shape[1] * np.log2(k)
    for b in range(1, len(ends)):
        model = make_model().fit(x[: ends[b - 1]])
        bits[b] = model.code_length_bits(x[ends[b - 1]: ends[b]])
    return bits

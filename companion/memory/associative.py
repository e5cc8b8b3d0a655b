"""Outer-product associative memory: a weight matrix that stores key-value pairs.

A matrix ``W`` of shape (d_value, d_key) stores the pairs ``(k_i, v_i)`` as a
weighted sum of outer products,

    W = sum_i q_i v_i k_i^T,

and a query ``k`` reads ``W k = sum_i q_i v_i (k_i . k)``: every stored value,
weighted by how much its key resembles the query. With nearly orthogonal keys
(random vectors in high dimension) the stored value dominates and the rest is
crosstalk. When the values are embeddings ``u_y`` of ``n_classes`` outputs, the
memory answers with the class whose embedding best matches the read-out,
``argmax_y u_y^T W k`` (or a softmax over those scores). This is the model of
"Scaling Laws for Associative Memories" (Cabannes, Dohmatob and Bietti), and
the view of transformer weight matrices taken in "Birth of a Transformer: A
Memory Viewpoint" (Bietti et al.). A linear read ``W k`` with equal weights is
the classic correlation-matrix memory (Kohonen; Anderson), the baseline.

The weights ``q_i`` are the *storage rule* (:func:`storage_weights`): store
every seen input once, only the most frequent ones, or in proportion to a power
of their frequency; :meth:`AssociativeMemory.sgd_step` learns ``W`` instead by
gradient descent on the cross-entropy of the softmax read, which is again a
sum of outer-product writes whose values are prediction errors.

Where the time goes: an outer-product write with free values is one matrix
product (BLAS); when the values are class embeddings the write is a scatter-add
of keys per class followed by a small matrix product, and the read is a matrix
product followed by an argmax or softmax per row. The numba and CuPy kernels
(in ``_m1_kernels``) cover the loops that are not BLAS: the class scatter-add,
and the tiled score + argmax/softmax read that never holds the whole
(n_queries, n_classes) score matrix.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import check_array, check_choice, check_float, check_int
from ..backend import array_kind, array_module, dispatch, for_backend, to_kind, to_numpy
from . import _m1_kernels as _k

__all__ = [
    "AssociativeMemory",
    "READ_MODES",
    "STORAGE_RULES",
    "storage_weights",
    "random_embeddings",
    "SignEmbeddingTable",
    "power_law_fit",
]

READ_MODES = ("argmax", "softmax", "linear")
STORAGE_RULES = ("all", "top", "power")
_FLOAT_DTYPES = (np.float32, np.float64)


def _dtype_of(x: Any) -> np.dtype:
    """NumPy dtype of a NumPy/CuPy array or torch tensor."""
    if array_kind(x) == "torch":
        import torch

        return np.dtype(str(x.dtype).replace("torch.", "")) if x.dtype != torch.bfloat16 else np.dtype(np.float32)
    return np.dtype(x.dtype)


class AssociativeMemory:
    """A (d_value, d_key) matrix memory written with outer products and read by argmax or softmax.

    Parameters
    ----------
    d_key : int
        Dimension of keys and queries, >= 1.
    d_value : int
        Dimension of values, >= 1.
    output_embeddings : array of shape (n_classes, d_value), optional
        Embeddings ``u_y`` of the possible outputs. When given, :meth:`write`
        also accepts integer class ids as values and :meth:`read` scores the
        classes (``u_y^T W q``). Without it the candidates are the ``d_value``
        coordinates of ``W q`` (one-hot values).
    dtype : {numpy.float32, numpy.float64}, default numpy.float32
        Precision of the stored matrix.

    Attributes
    ----------
    matrix : array of shape (d_value, d_key)
        The stored ``W`` (NumPy, or CuPy after a CuPy-backend call).
    n_written : int
        Number of pairs written so far (``sgd_step`` counts its samples).

    References
    ----------
    Cabannes, Dohmatob and Bietti, "Scaling Laws for Associative Memories", ICLR 2024.
    Bietti, Cabannes, Bouchacourt, Jegou and Bottou, "Birth of a Transformer: A Memory Viewpoint", NeurIPS 2023.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.memory import AssociativeMemory, random_embeddings
    >>> rng = np.random.default_rng(0)
    >>> keys = random_embeddings(rng, 20, 256)          # 20 inputs
    >>> classes = random_embeddings(rng, 5, 256)        # 5 outputs
    >>> labels = rng.integers(0, 5, size=20)
    >>> mem = AssociativeMemory(256, 256, output_embeddings=classes)
    >>> mem.write(keys, labels)
    >>> bool((mem.read(keys) == labels).all())
    True
    >>> mem.read(keys[:2], mode="softmax", beta=10.0).shape
    (2, 5)
    """

    def __init__(self, d_key: int, d_value: int, *, output_embeddings: Any = None, dtype: Any = np.float32):
        self.d_key = check_int(d_key, "d_key", minimum=1)
        self.d_value = check_int(d_value, "d_value", minimum=1)
        dtype = np.dtype(dtype)
        if dtype not in _FLOAT_DTYPES:
            raise TypeError(f"dtype must be float32 or float64; got {dtype}")
        self.dtype = dtype
        self.output_embeddings = None
        if output_embeddings is not None:
            check_array(output_embeddings, "output_embeddings", ndim=2, dtype_kind="f")
            if output_embeddings.shape[1] != self.d_value:
                raise ValueError(
                    f"output_embeddings must have shape (n_classes, d_value={self.d_value}); "
                    f"got shape {tuple(output_embeddings.shape)}"
                )
            self.output_embeddings = np.asarray(to_numpy(output_embeddings), dtype=dtype)  # (n_classes, d_value)
        self.matrix = np.zeros((self.d_value, self.d_key), dtype=dtype)  # (d_value, d_key)
        self.n_written = 0
        self._candidates = None  # cached (n_candidates, d_key) = U @ W, cleared by every write

    # ------------------------------------------------------------ helpers
    @property
    def n_classes(self) -> int:
        """Number of candidates a read scores: classes, or the ``d_value`` coordinates."""
        return self.d_value if self.output_embeddings is None else self.output_embeddings.shape[0]

    def _on(self, name: str):
        """``W`` on the device of backend ``name`` (moved there once, then kept)."""
        xp_is_cupy = array_module(self.matrix) is not np
        if (name == "cupy") != xp_is_cupy:
            self.matrix = for_backend(self.matrix, name)
            self._candidates = None
        return self.matrix

    def _table(self, xp):
        if self.output_embeddings is None:
            return None
        return xp.asarray(self.output_embeddings)

    def _check_keys(self, keys: Any, name: str) -> str:
        kind = check_array(keys, name, ndim=2, dtype_kind="f")
        if keys.shape[1] != self.d_key:
            raise ValueError(f"{name} must have shape (n, d_key={self.d_key}); got shape {tuple(keys.shape)}")
        return kind

    def _as_float(self, x, name_backend):
        xp_x = for_backend(x, name_backend)
        return array_module(xp_x).asarray(xp_x, dtype=self.dtype)

    # -------------------------------------------------------------- write
    def write(self, keys: Any, values: Any, *, weights: Any = None, backend: str | None = None) -> None:
        """Add ``sum_i weights[i] * value_i key_i^T`` to the memory.

        Parameters
        ----------
        keys : array of shape (n, d_key)
            Floating, finite.
        values : array of shape (n, d_value) or (n,)
            Floating value vectors, or integer class ids ``0 .. n_classes - 1``
            (then ``value_i`` is row ``values[i]`` of ``output_embeddings``, or
            the one-hot vector of that coordinate when there are none).
        weights : array of shape (n,), optional
            Storage weights ``q_i`` (finite); default all ones. See :func:`storage_weights`.
        backend : {"auto", "numpy", "numba", "cupy"}, optional
            Kernel of the class scatter-add (integer values). Float values are
            one matrix product in every backend.

        Raises
        ------
        TypeError
            Non-array input or wrong dtypes.
        ValueError
            Wrong dimensions, different numbers of keys and values, NaN/inf,
            class ids out of range.
        """
        kind = self._check_keys(keys, "keys")
        n = keys.shape[0]
        vkind = check_array(values, "values", ndim=(1, 2), dtype_kind="fiu")
        if values.shape[0] != n:
            raise ValueError(f"keys and values must have the same number of rows; got {n} keys and {values.shape[0]} values")
        labels = values.ndim == 1
        if labels:
            if _dtype_of(values).kind not in "iu":
                raise TypeError(f"1-D values must be integer class ids; got dtype {values.dtype}")
            ids = np.asarray(to_numpy(values))
            if ids.min() < 0 or ids.max() >= self.n_classes:
                raise ValueError(f"class ids must lie in 0 .. {self.n_classes - 1}; got range {ids.min()} .. {ids.max()}")
        else:
            if _dtype_of(values).kind != "f":
                raise TypeError(f"2-D values must be floating vectors; got dtype {values.dtype}")
            if values.shape[1] != self.d_value:
                raise ValueError(f"values must have shape (n, d_value={self.d_value}); got shape {tuple(values.shape)}")
        if weights is not None:
            check_array(weights, "weights", ndim=1, dtype_kind="fiu")
            if weights.shape[0] != n:
                raise ValueError(f"weights must have shape (n,) = ({n},); got shape {tuple(weights.shape)}")
        name, sums_kernel = dispatch(_k.CLASS_SUMS, backend, keys, values)
        W = self._on(name)
        xp = array_module(W)
        k = self._as_float(keys, name)  # (n, d_key)
        w = xp.ones(n, dtype=self.dtype) if weights is None else self._as_float(weights, name)  # (n,)
        if labels:
            sums = sums_kernel(k, xp.asarray(for_backend(values, name), dtype=xp.int64), w, self.n_classes)  # (n_classes, d_key)
            table = self._table(xp)
            W += sums if table is None else table.T @ sums  # (d_value, d_key)
        else:
            v = self._as_float(values, name)  # (n, d_value)
            W += (v * w[:, None]).T @ k  # BLAS: (d_value, n) @ (n, d_key)
        self.n_written += n
        self._candidates = None

    # --------------------------------------------------------------- read
    def candidates(self, backend: str | None = None):
        """Rows scored by a read: ``U @ W`` (n_classes, d_key), or ``W`` without output embeddings."""
        name = backend or ("cupy" if array_module(self.matrix) is not np else "numpy")
        W = self._on(name)
        if self._candidates is None:
            table = self._table(array_module(W))
            self._candidates = W if table is None else table @ W  # (n_candidates, d_key)
        return self._candidates

    def read(self, queries: Any, *, mode: str = "argmax", beta: float = 1.0, backend: str | None = None) -> Any:
        """Recall from the memory.

        Parameters
        ----------
        queries : array of shape (n, d_key)
            Floating, finite.
        mode : {"argmax", "softmax", "linear"}, default "argmax"
            ``"argmax"``: the best-scoring class ``argmax_y u_y^T W q`` (int64, shape (n,));
            ``"softmax"``: probabilities ``softmax(beta * U W q)``, shape (n, n_classes);
            ``"linear"``: the raw read-out ``W q``, shape (n, d_value) (correlation-matrix memory).
        beta : float, default 1.0
            Inverse temperature of the softmax, > 0.
        backend : {"auto", "numpy", "numba", "cupy"}, optional
            Kernel for the argmax/softmax read.

        Returns
        -------
        array
            Same kind as ``queries`` (NumPy, CuPy or torch).

        Raises
        ------
        ValueError
            Reading an empty memory (nothing written yet), wrong ``d_key``,
            NaN/inf, unknown ``mode``, ``beta <= 0``.
        """
        mode = check_choice(mode, "mode", READ_MODES)
        beta = check_float(beta, "beta", minimum=0.0, strict_min=True)
        kind = self._check_keys(queries, "queries")
        if self.n_written == 0:
            raise ValueError("the memory is empty: write(keys, values) before read(queries)")
        name, argmax_kernel = dispatch(_k.ARGMAX_READ, backend, queries)
        out = self._read(self._as_float(queries, name), mode, beta, name)
        return to_kind(out, kind, like=queries)

    def _read(self, q, mode: str, beta: float, name: str):
        if mode == "linear":
            return q @ self._on(name).T  # (n, d_value)
        cands = self.candidates(name)
        if mode == "argmax":
            return _k.ARGMAX_READ[name](q, cands)
        return _k.SOFTMAX_READ[name](q, cands, beta)

    # ---------------------------------------------------------------- SGD
    def sgd_step(self, keys: Any, labels: Any, *, lr: float, backend: str | None = None) -> float:
        """One gradient step on the mean cross-entropy of ``softmax(U W k)`` against ``labels``.

        The gradient of ``-log softmax(U W k)_y`` with respect to ``W`` is
        ``-(u_y - U^T p) k^T`` (``p`` the predicted probabilities), so a step is
        an outer-product write of the prediction errors:
        ``W += lr / n * sum_i (u_{y_i} - U^T p_i) k_i^T``.

        Parameters
        ----------
        keys : array of shape (n, d_key)
            Input embeddings of the batch.
        labels : array of shape (n,)
            Integer target classes.
        lr : float
            Step size, > 0.
        backend : {"auto", "numpy", "numba", "cupy"}, optional
            Kernel of the softmax read.

        Returns
        -------
        float
            The batch's mean cross-entropy before the step (nats).
        """
        lr = check_float(lr, "lr", minimum=0.0, strict_min=True)
        self._check_keys(keys, "keys")
        check_array(labels, "labels", ndim=1, dtype_kind="iu")
        if labels.shape[0] != keys.shape[0]:
            raise ValueError(f"keys and labels must have the same number of rows; got {keys.shape[0]} and {labels.shape[0]}")
        name, _ = dispatch(_k.SOFTMAX_READ, backend, keys)
        W = self._on(name)
        xp = array_module(W)
        k = self._as_float(keys, name)
        y = xp.asarray(for_backend(labels, name), dtype=xp.int64)
        if int(y.min()) < 0 or int(y.max()) >= self.n_classes:
            raise ValueError(f"labels must lie in 0 .. {self.n_classes - 1}")
        probs = _k.SOFTMAX_READ[name](k, self.candidates(name), 1.0)  # (n, n_classes)
        rows = xp.arange(len(y))
        loss = float(-xp.log(xp.maximum(probs[rows, y], 1e-30)).mean())
        residual = -probs
        residual[rows, y] += 1.0  # onehot(y) - p, (n, n_classes)
        err_by_class = residual.T @ k  # (n_classes, d_key)
        table = self._table(xp)
        W += (lr / len(y)) * (err_by_class if table is None else table.T @ err_by_class)
        self.n_written += len(y)
        self._candidates = None
        return loss


# --------------------------------------------------------------- storage rules
def storage_weights(counts: Any, rule: str, *, capacity: int | None = None, rho: float = 1.0) -> np.ndarray:
    """Storage weights ``q(x)`` of a rule, from the counts (or probabilities) of each input.

    Parameters
    ----------
    counts : array of shape (n_symbols,)
        Non-negative counts or probabilities of each input symbol.
    rule : {"all", "top", "power"}
        ``"all"``: ``q = 1`` for every symbol with a positive count (store
        everything seen once); ``"top"``: ``q = 1`` for the ``capacity`` symbols
        with the largest counts (ties: lower id first), 0 elsewhere;
        ``"power"``: ``q = f ** rho`` with ``f`` the normalised frequency
        (``rho = 1`` stores in proportion to frequency, ``rho = 0.5`` its square root).
    capacity : int, optional
        Number of symbols kept by ``"top"`` (required there), >= 1.
    rho : float, default 1.0
        Exponent of ``"power"``, > 0.

    Returns
    -------
    numpy.ndarray of shape (n_symbols,), float64

    References
    ----------
    Cabannes, Dohmatob and Bietti, "Scaling Laws for Associative Memories", ICLR 2024.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.memory import storage_weights
    >>> counts = np.array([5, 0, 3, 1])
    >>> storage_weights(counts, "all").tolist()
    [1.0, 0.0, 1.0, 1.0]
    >>> storage_weights(counts, "top", capacity=2).tolist()
    [1.0, 0.0, 1.0, 0.0]
    >>> storage_weights(counts, "power", rho=1.0).tolist()
    [0.5555555555555556, 0.0, 0.3333333333333333, 0.1111111111111111]
    """
    rule = check_choice(rule, "rule", STORAGE_RULES)
    check_array(counts, "counts", ndim=1, dtype_kind="fiu")
    c = np.asarray(to_numpy(counts), dtype=np.float64)  # (n_symbols,)
    if (c < 0).any():
        raise ValueError("counts must be non-negative")
    if rule == "all":
        return (c > 0).astype(np.float64)
    if rule == "top":
        if capacity is None:
            raise ValueError("rule 'top' needs capacity= (how many symbols to keep)")
        capacity = check_int(capacity, "capacity", minimum=1)
        order = np.argsort(-c, kind="stable")[:capacity]
        q = np.zeros_like(c)
        q[order] = 1.0
        q[c == 0] = 0.0
        return q
    rho = check_float(rho, "rho", minimum=0.0, strict_min=True)
    total = c.sum()
    if total <= 0:
        raise ValueError("counts must not all be zero for rule 'power'")
    return np.where(c > 0, (c / total) ** rho, 0.0)


def random_embeddings(
    rng: np.random.Generator, n: int, d: int, *, kind: str = "gaussian", dtype: Any = np.float32
) -> np.ndarray:
    """``n`` random vectors in dimension ``d`` with independent entries of variance ``1/d`` (norm about 1).

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    n, d : int
        Number and dimension of the vectors, >= 1.
    kind : {"gaussian", "sign"}, default "gaussian"
        Entries ``N(0, 1/d)``, or ``+-1/sqrt(d)`` with equal odds (exactly unit
        norm, and several times faster to draw: 1 random bit per entry).
    dtype : {numpy.float32, numpy.float64}, default numpy.float32

    Returns
    -------
    numpy.ndarray of shape (n, d)

    Examples
    --------
    >>> import numpy as np
    >>> from companion.memory import random_embeddings
    >>> e = random_embeddings(np.random.default_rng(0), 3, 4096)
    >>> np.round(np.linalg.norm(e, axis=1), 1).tolist()
    [1.0, 1.0, 1.0]
    >>> s = random_embeddings(np.random.default_rng(0), 2, 4, kind="sign")
    >>> (s * 2).tolist()
    [[-1.0, 1.0, -1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator; got {type(rng).__name__}")
    n = check_int(n, "n", minimum=1)
    d = check_int(d, "d", minimum=1)
    kind = check_choice(kind, "kind", ("gaussian", "sign"))
    dtype = np.dtype(dtype)
    if dtype not in _FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64; got {dtype}")
    scale = np.asarray(1.0 / np.sqrt(d), dtype=dtype)
    if kind == "gaussian":
        out = rng.standard_normal((n, d), dtype=dtype)  # (n, d)
        out *= scale
        return out
    bits = np.unpackbits(np.frombuffer(rng.bytes((n * d + 7) // 8), dtype=np.uint8), count=n * d)  # (n * d,) of 0/1
    out = bits.reshape(n, d).astype(dtype)  # (n, d)
    out *= 2 * scale
    out -= scale
    return out


class SignEmbeddingTable:
    """``n`` random ``+-1/sqrt(d)`` embeddings kept as packed bits, decoded a block of rows at a time.

    A scaling experiment embeds every one of ``n`` symbols (``n = 65536`` in
    chapter M1) in up to ``d = 2048`` dimensions: 512 MB as float32, but only
    ``n * d / 8`` bytes (16 MB) as bits. Rows are decoded on demand, so a
    memory can be written and read block by block with the same embeddings.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the bits (``n * ceil(d / 8)`` random bytes).
    n, d : int
        Number and dimension of the embeddings, >= 1.
    dtype : {numpy.float32, numpy.float64}, default numpy.float32

    Examples
    --------
    >>> import numpy as np
    >>> from companion.memory import SignEmbeddingTable
    >>> table = SignEmbeddingTable(np.random.default_rng(0), 1000, 64)
    >>> block = table.rows(10, 20)
    >>> block.shape, float(np.abs(block).max() * 8)
    ((10, 64), 1.0)
    >>> bool(np.array_equal(table.rows(15, 16), block[5:6]))
    True
    """

    def __init__(self, rng: np.random.Generator, n: int, d: int, *, dtype: Any = np.float32):
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator; got {type(rng).__name__}")
        self.n = check_int(n, "n", minimum=1)
        self.d = check_int(d, "d", minimum=1)
        self.dtype = np.dtype(dtype)
        if self.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"dtype must be float32 or float64; got {self.dtype}")
        row_bytes = (self.d + 7) // 8
        self._bits = np.frombuffer(rng.bytes(self.n * row_bytes), dtype=np.uint8).reshape(self.n, row_bytes)
        scale = 1.0 / np.sqrt(self.d)
        self._levels = np.array([-scale, scale], dtype=self.dtype)

    def __len__(self) -> int:
        return self.n

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Embeddings of symbols ``start .. stop - 1``, shape (stop - start, d)."""
        start = check_int(start, "start", minimum=0, maximum=self.n)
        stop = check_int(stop, "stop", minimum=start, maximum=self.n)
        return self._decode(self._bits[start:stop])

    def _decode(self, bits: np.ndarray) -> np.ndarray:
        out = np.empty((bits.shape[0], self.d), dtype=self.dtype)  # (rows, d)
        _k.decode_sign_rows(np.ascontiguousarray(bits), self.d, self._levels[0], self._levels[1], out)
        return out

    def take(self, ids: Any) -> np.ndarray:
        """Embeddings of the symbols ``ids`` (integer array of shape (k,)), shape (k, d)."""
        ids = np.asarray(ids)
        if ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise ValueError(f"ids must be a 1-D integer array; got {ids.dtype} of shape {ids.shape}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.n):
            raise ValueError(f"ids must lie in 0 .. {self.n - 1}")
        return self._decode(self._bits[ids])


def power_law_fit(x: Any, y: Any) -> tuple[float, float]:
    """Least-squares fit of ``log y = slope * log x + intercept``.

    Parameters
    ----------
    x, y : array of shape (n,)
        Positive, finite; ``n >= 2`` with at least two distinct ``x``.

    Returns
    -------
    slope, intercept : float
        ``y ≈ exp(intercept) * x ** slope``.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.memory import power_law_fit
    >>> x = np.array([1.0, 10.0, 100.0])
    >>> [round(v, 6) for v in power_law_fit(x, 3.0 * x ** -0.5)]
    [-0.5, 1.098612]
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or x.size < 2:
        raise ValueError(f"x and y must be 1-D of the same length >= 2; got shapes {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()) or (x <= 0).any() or (y <= 0).any():
        raise ValueError("x and y must be positive and finite for a power-law fit (log scale)")
    if np.unique(x).size < 2:
        raise ValueError("x must take at least two distinct values")
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
    return float(slope), float(intercept)

"""Product and residual quantizers (private to chapter C3; exported by ``codebooks``)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._validation import check_array, check_int
from ..backend import array_kind, array_module, for_backend, resolve_backend, to_kind
from ..kernels.assign import nearest_centroid, pq_assign_numba
from ._c3_adc import adc_search
from ._c3_kmeans import as_generator, kmeans

__all__ = ["ProductQuantizer", "ResidualQuantizer"]


def code_dtype(n_centroids: int) -> np.dtype:
    """Smallest unsigned integer type holding ``0 .. n_centroids - 1``."""
    if n_centroids <= 256:
        return np.dtype(np.uint8)
    if n_centroids <= 65536:
        return np.dtype(np.uint16)
    return np.dtype(np.int64)


def _host_or_device(x: Any, backend_name: str):
    """``x`` (validated) as the array type of the backend, torch tensors detached."""
    if array_kind(x) == "torch":
        x = x.detach()
    return for_backend(x, backend_name)


class _CodebookQuantizer:
    """Shared plumbing: validation, fit state, codes <-> kinds."""

    _what = "quantizer"

    def __init__(self, n_parts: int, n_centroids: int, *, iters: int, backend: str | None, part_name: str):
        self._n_parts = check_int(n_parts, part_name, minimum=1)
        self.n_centroids = check_int(n_centroids, "n_centroids", minimum=1)
        self.iters = check_int(iters, "iters", minimum=0)
        resolve_backend(backend)  # validates the name now rather than at fit time
        self.backend = backend
        self.codebooks_ = None

    @property
    def bits_per_vector(self) -> float:
        """Bits of one code: ``parts * log2(n_centroids)`` (codebooks not counted)."""
        return self._n_parts * math.log2(self.n_centroids)

    def _check_fitted(self, what: str) -> None:
        if self.codebooks_ is None:
            raise ValueError(f"this {type(self).__name__} is not fitted yet: call fit(x) before {what}")

    def _check_x(self, x: Any, name: str = "x") -> str:
        kind = check_array(x, name, ndim=2, dtype_kind="f")
        if self.codebooks_ is not None and x.shape[1] != self.dim_:
            raise ValueError(f"{name} must have d = {self.dim_} columns like the training data; got shape {tuple(x.shape)}")
        return kind

    def _check_codes(self, codes: Any) -> tuple[str, Any]:
        kind = check_array(codes, "codes", ndim=2, dtype_kind="iu", finite=False)
        if codes.shape[1] != self._n_parts:
            raise ValueError(f"codes must have {self._n_parts} columns; got shape {tuple(codes.shape)}")
        name = resolve_backend(self.backend, codes)
        cb = _host_or_device(codes, name)
        low, high = int(cb.min()), int(cb.max())
        if low < 0 or high >= self.n_centroids:
            raise ValueError(f"codes must lie in [0, {self.n_centroids}); got values in [{low}, {high}]")
        return kind, cb, name

    def _books(self, name: str):
        """The codebooks as the array type of backend ``name`` (a no-op when they already are)."""
        return for_backend(self.codebooks_, name)

    def _fit_checks(self, x: Any) -> str:
        kind = check_array(x, "x", ndim=2, dtype_kind="f")
        if x.shape[0] < self.n_centroids:
            raise ValueError(
                f"need at least n_centroids = {self.n_centroids} training vectors; got n = {x.shape[0]}"
            )
        return kind


class ProductQuantizer(_CodebookQuantizer):
    """Product quantization: one k-means codebook per slice of the coordinates.

    The ``d`` coordinates are cut into ``M = n_subspaces`` consecutive slices of
    ``d / M`` coordinates; slice ``m`` of a vector is replaced by the index of
    its nearest codeword in codebook ``m``. A vector costs ``M log2(K)`` bits
    and the ``M`` codebooks together describe ``K**M`` distinct vectors.
    :meth:`search` ranks an encoded database by asymmetric distances (the query
    stays exact; one ``(M, K)`` table per query, then lookups).

    Parameters
    ----------
    n_subspaces : int
        Number of slices ``M``; must divide the data dimension.
    n_centroids : int
        Codewords per slice ``K`` (256 gives one byte per slice).
    iters : int, default 25
        Lloyd iterations of each k-means.
    backend : {None, "auto", "numpy", "numba", "cupy"}, optional
        Kernels for assignment and search, resolved at every call (the
        ``backend`` attribute may be changed after fitting).

    Attributes
    ----------
    codebooks_ : array of shape (M, K, d / M)
        Set by :meth:`fit` (NumPy, or CuPy for the cupy backend).
    codes_ : array of shape (n, M)
        The database added with :meth:`add`.

    References
    ----------
    Jegou, Douze and Schmid, "Product Quantization for Nearest Neighbor Search", 2011.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.compression import ProductQuantizer
    >>> x = np.random.default_rng(0).standard_normal((500, 8)).astype(np.float32)
    >>> pq = ProductQuantizer(4, 16).fit(x, rng=0)
    >>> codes = pq.encode(x)
    >>> codes.shape, codes.dtype, pq.bits_per_vector
    ((500, 4), dtype('uint8'), 16.0)
    >>> bool(np.array_equal(pq.encode(pq.decode(codes)), codes))
    True
    """

    _what = "product quantizer"

    def __init__(self, n_subspaces: int, n_centroids: int, *, iters: int = 25, backend: str | None = None):
        super().__init__(n_subspaces, n_centroids, iters=iters, backend=backend, part_name="n_subspaces")
        self.n_subspaces = self._n_parts
        self.codes_ = None

    def _check_divisible(self, d: int) -> None:
        if d % self.n_subspaces:
            raise ValueError(
                f"the dimension d = {d} is not divisible by n_subspaces = {self.n_subspaces}; "
                "choose n_subspaces among the divisors of d (or pad the vectors)"
            )

    def fit(self, x: Any, *, rng: Any = None) -> "ProductQuantizer":
        """Learn one codebook per slice with :func:`kmeans` (seeded from ``rng``).

        Parameters
        ----------
        x : array of shape (n, d)
            Training vectors, finite, ``n >= n_centroids``, ``d`` divisible by ``n_subspaces``.
        rng : numpy.random.Generator or int, optional
            Seeding draws (``None`` means seed 0).

        Returns
        -------
        ProductQuantizer
            ``self``, fitted.
        """
        self._fit_checks(x)
        self._check_divisible(x.shape[1])
        gen = as_generator(rng)
        name = resolve_backend(self.backend, x)
        xb = _host_or_device(x, name)
        xp = array_module(xb)
        sub = xb.shape[1] // self.n_subspaces
        books = [
            kmeans(xb[:, m * sub:(m + 1) * sub], self.n_centroids, iters=self.iters, rng=gen, backend=name)[0]
            for m in range(self.n_subspaces)
        ]
        self.codebooks_ = xp.stack(books)  # (M, K, d/M)
        self.dim_ = int(xb.shape[1])
        self.codes_ = None
        return self

    def encode(self, x: Any) -> Any:
        """Codes ``(n, M)`` (uint8 for K <= 256): nearest codeword of each slice.

        The numba backend encodes float32 vectors with float32 codebooks in one
        fused kernel over all subspaces (a float32 screen with an exact float64
        recheck of near ties, ``companion.kernels.assign.pq_assign_numba``); the
        codes are those of :func:`companion.kernels.nearest_centroid` on every slice.

        Parameters
        ----------
        x : array of shape (n, d)
            Vectors to encode, finite.

        Returns
        -------
        array of shape (n, M)
            Same kind as ``x``.
        """
        self._check_fitted("encode")
        kind = self._check_x(x)
        name = resolve_backend(self.backend, x)
        xb = _host_or_device(x, name)
        books = self._books(name)
        xp = array_module(xb)
        sub = self.dim_ // self.n_subspaces
        codes = xp.empty((xb.shape[0], self.n_subspaces), dtype=code_dtype(self.n_centroids))  # (n, M)
        if name == "numba" and xb.dtype == np.float32 and books.dtype == np.float32:
            # all subspaces in one fused kernel (float32 screen, exact recheck): same codes
            if pq_assign_numba(xb, books, codes):
                return to_kind(codes, kind, like=x)
        for m in range(self.n_subspaces):
            labels, _ = nearest_centroid(xb[:, m * sub:(m + 1) * sub], books[m], backend=name)
            codes[:, m] = labels
        return to_kind(codes, kind, like=x)

    def decode(self, codes: Any) -> Any:
        """Vectors ``(n, d)`` rebuilt from codes by concatenating the chosen codewords.

        Parameters
        ----------
        codes : array of shape (n, M)
            Integer codes in ``[0, K)``.

        Returns
        -------
        array of shape (n, d)
            Codebook dtype; same kind as ``codes``.
        """
        self._check_fitted("decode")
        kind, cb, name = self._check_codes(codes)
        books = self._books(name)
        xp = array_module(books)
        parts = [books[m][cb[:, m].astype(xp.int64)] for m in range(self.n_subspaces)]  # M x (n, d/M)
        return to_kind(xp.concatenate(parts, axis=1), kind, like=codes)

    def distance_tables(self, queries: Any) -> Any:
        """Squared distances from each query slice to each codeword: ``(q, M, K)``.

        Computed from coordinate differences in float64, returned in the
        common dtype of queries and codebooks.

        Parameters
        ----------
        queries : array of shape (q, d)
            Query vectors, finite.

        Returns
        -------
        array of shape (q, M, K)
            Same kind as ``queries``.
        """
        self._check_fitted("distance_tables")
        kind = self._check_x(queries, "queries")
        name = resolve_backend(self.backend, queries)
        qb = _host_or_device(queries, name)
        xp = array_module(qb)
        q64 = qb.astype(xp.float64).reshape(qb.shape[0], self.n_subspaces, 1, -1)  # (q, M, 1, d/M)
        books = self._books(name).astype(xp.float64)[None]  # (1, M, K, d/M)
        tables = ((q64 - books) ** 2).sum(axis=-1)  # (q, M, K)
        dtype = np.result_type(qb.dtype, self.codebooks_.dtype)
        return to_kind(tables.astype(dtype), kind, like=queries)

    def add(self, x: Any) -> "ProductQuantizer":
        """Encode ``x`` and append its codes to the searchable database :attr:`codes_`."""
        name = resolve_backend(self.backend, x)
        codes = _host_or_device(self.encode(x), name)
        xp = array_module(codes)
        self.codes_ = codes if self.codes_ is None else xp.concatenate([for_backend(self.codes_, name), codes])
        return self

    def search(self, queries: Any, k: int) -> tuple[Any, Any]:
        """The ``k`` database vectors nearest to each query by asymmetric distance.

        The distance from a query to database row ``i`` is
        ``|query - decode(codes_[i])|^2``, summed from the query's distance
        tables (:func:`adc_search`); ties go to the lower row.

        Parameters
        ----------
        queries : array of shape (q, d)
            Query vectors, finite.
        k : int
            Neighbours per query, ``1 <= k <=`` database size.

        Returns
        -------
        distances : array of shape (q, k)
            Ascending squared distances.
        indices : array of shape (q, k), int64
            Rows of the database (order of :meth:`add`). Same kind as ``queries``.
        """
        self._check_fitted("search")
        if self.codes_ is None:
            raise ValueError("the database is empty: call add(x) before search(queries, k)")
        kind = self._check_x(queries, "queries")
        name = resolve_backend(self.backend, queries)
        tables = self.distance_tables(_host_or_device(queries, name))
        dist, idx = adc_search(tables, for_backend(self.codes_, name), k, backend=name)
        return to_kind(dist, kind, like=queries), to_kind(idx, kind, like=queries)


class ResidualQuantizer(_CodebookQuantizer):
    """Residual quantization: each stage quantizes what the previous stages missed.

    Stage 1 is a k-means codebook on the vectors; stage ``s`` is a k-means
    codebook on the residuals ``x - (c_1 + ... + c_{s-1})``. Encoding is greedy,
    stage by stage; decoding sums one codeword per stage. A vector costs
    ``S log2(K)`` bits, like a product quantizer with ``M = S`` slices, but every
    codeword spans all ``d`` coordinates.

    Parameters
    ----------
    n_stages : int
        Number of stages ``S``.
    n_centroids : int
        Codewords per stage ``K``.
    iters : int, default 25
        Lloyd iterations of each k-means.
    backend : {None, "auto", "numpy", "numba", "cupy"}, optional
        Kernel for the assignment step, resolved at every call.

    Attributes
    ----------
    codebooks_ : array of shape (S, K, d)
        Set by :meth:`fit`.

    References
    ----------
    Juang and Gray, "Multiple stage vector quantization for speech coding", 1982;
    Hosking et al., "Hierarchical Sketch Induction for Paraphrase Generation", 2022
    (a learned, hierarchical residual quantizer).

    Examples
    --------
    >>> import numpy as np
    >>> from companion.compression import ResidualQuantizer
    >>> x = np.random.default_rng(0).standard_normal((500, 8))
    >>> rq = ResidualQuantizer(3, 16).fit(x, rng=0)
    >>> codes = rq.encode(x)
    >>> codes.shape, rq.bits_per_vector
    ((500, 3), 12.0)
    >>> err = [float(((x - rq.decode(codes[:, :s + 1], partial=True)) ** 2).mean()) for s in range(3)]
    >>> err[0] > err[1] > err[2]
    True
    """

    _what = "residual quantizer"

    def __init__(self, n_stages: int, n_centroids: int, *, iters: int = 25, backend: str | None = None):
        super().__init__(n_stages, n_centroids, iters=iters, backend=backend, part_name="n_stages")
        self.n_stages = self._n_parts

    def fit(self, x: Any, *, rng: Any = None) -> "ResidualQuantizer":
        """Learn the stage codebooks one after the other on the running residuals.

        Parameters
        ----------
        x : array of shape (n, d)
            Training vectors, finite, ``n >= n_centroids``.
        rng : numpy.random.Generator or int, optional
            Seeding draws (``None`` means seed 0).

        Returns
        -------
        ResidualQuantizer
            ``self``, fitted.
        """
        self._fit_checks(x)
        gen = as_generator(rng)
        name = resolve_backend(self.backend, x)
        xb = _host_or_device(x, name)
        xp = array_module(xb)
        residual = xb.astype(xp.float64)  # (n, d), kept in float64 so late stages see small residuals exactly
        books = []
        for _ in range(self.n_stages):
            book, labels = kmeans(residual, self.n_centroids, iters=self.iters, rng=gen, backend=name)
            residual = residual - book[labels]
            books.append(book)
        self.codebooks_ = xp.stack(books).astype(xb.dtype)  # (S, K, d)
        self.dim_ = int(xb.shape[1])
        return self

    def encode(self, x: Any) -> Any:
        """Greedy codes ``(n, S)``: at each stage the codeword nearest to the current residual.

        Parameters
        ----------
        x : array of shape (n, d)
            Vectors to encode, finite.

        Returns
        -------
        array of shape (n, S)
            Same kind as ``x``.
        """
        self._check_fitted("encode")
        kind = self._check_x(x)
        name = resolve_backend(self.backend, x)
        xb = _host_or_device(x, name)
        books = self._books(name)
        xp = array_module(xb)
        residual = xb.astype(xp.float64)
        codes = xp.empty((xb.shape[0], self.n_stages), dtype=code_dtype(self.n_centroids))  # (n, S)
        for s in range(self.n_stages):
            book = books[s].astype(xp.float64)
            labels, _ = nearest_centroid(residual, book, backend=name)
            codes[:, s] = labels
            residual = residual - book[labels]
        return to_kind(codes, kind, like=x)

    def decode(self, codes: Any, *, partial: bool = False) -> Any:
        """Sum of the chosen codeword of every stage.

        Parameters
        ----------
        codes : array of shape (n, S)
            Integer codes in ``[0, K)``; with ``partial=True`` the first ``s <= S``
            stages only, shape ``(n, s)`` (a coarser reconstruction).
        partial : bool, default False
            Accept fewer columns than stages.

        Returns
        -------
        array of shape (n, d)
            Codebook dtype; same kind as ``codes``.
        """
        self._check_fitted("decode")
        if partial:
            kind = check_array(codes, "codes", ndim=2, dtype_kind="iu", finite=False)
            if not 1 <= codes.shape[1] <= self.n_stages:
                raise ValueError(f"codes must have 1 to {self.n_stages} columns; got shape {tuple(codes.shape)}")
            name = resolve_backend(self.backend, codes)
            cb = _host_or_device(codes, name)
            if int(cb.min()) < 0 or int(cb.max()) >= self.n_centroids:
                raise ValueError(f"codes must lie in [0, {self.n_centroids}); got values in [{int(cb.min())}, {int(cb.max())}]")
        else:
            kind, cb, name = self._check_codes(codes)
        books = self._books(name)
        xp = array_module(books)
        out = xp.zeros((cb.shape[0], self.dim_), dtype=xp.float64)  # (n, d)
        for s in range(cb.shape[1]):
            out += books[s][cb[:, s].astype(xp.int64)]
        return to_kind(out.astype(books.dtype), kind, like=codes)

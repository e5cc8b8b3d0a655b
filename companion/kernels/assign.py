"""Nearest-codeword assignment: the inner loop of k-means, vector and product quantization.

Given points ``x`` of shape ``(n, d)`` and codewords (centroids) of shape
``(k, d)``, :func:`nearest_centroid` returns for every point the index of the
closest codeword under squared Euclidean distance and that distance,

.. math:: \\ell_i = \\arg\\min_j \\lVert x_i - c_j \\rVert^2 .

The distance is summed coordinate by coordinate from the differences (in
float64), not expanded as ``|x|^2 - 2 x.c + |c|^2``: the expansion is faster
with a matrix product but cancels catastrophically for nearby points, and can
then pick the wrong codeword. Ties go to the lower index, in every backend.

Three layers: :func:`nearest_centroid` validates and dispatches;
``_nearest_numpy`` is the readable reference (row blocks, broadcasting);
``_nearest_rows_numba`` (one row per iteration, distances to all codewords
vectorized across codewords) and the CuPy ``nearest_centroid`` kernel (one
thread per row) are the fast paths. For ``d >= 24`` the numba backend first
screens codewords with a float64 matrix product and then measures exactly every
codeword the product's rounding could not rule out (``_nearest_screened``): the
speed of a matrix product, the answer of the exact kernel.
"""

from __future__ import annotations

import functools
from typing import Any

import numba
import numpy as np

from .._validation import check_array
from ..backend import dispatch, for_backend, to_kind

__all__ = ["nearest_centroid"]

_BLOCK_BYTES = 1 << 24  # the NumPy reference builds (rows, k, d) float64 blocks of at most 16 MB


# --------------------------------------------------------- NumPy reference
def _nearest_numpy(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference: float64 differences, summed over coordinates, first minimum wins."""
    n, d = x.shape
    k = centroids.shape[0]
    c = centroids.astype(np.float64)  # (k, d)
    labels = np.empty(n, dtype=np.int64)
    sq = np.empty(n, dtype=np.float64)
    rows = max(1, _BLOCK_BYTES // (8 * k * max(d, 1)))
    for start in range(0, n, rows):
        block = x[start:start + rows].astype(np.float64)  # (rows, d)
        dist = ((block[:, None, :] - c[None, :, :]) ** 2).sum(axis=-1)  # (rows, k)
        lab = dist.argmin(axis=1)  # argmin returns the first minimum: ties -> lower index
        labels[start:start + rows] = lab
        sq[start:start + rows] = dist[np.arange(len(lab)), lab]
    return labels, sq


# ------------------------------------------------------------ numba kernel
@numba.njit(cache=True, parallel=True)
def _nearest_rows_numba(x, c_t, labels, sq, bad):  # pragma: no cover - jitted
    """For every row of ``x`` (n, d) the nearest column of ``c_t`` (d, k), float64.

    Rows are processed in blocks (one scratch vector of ``k`` distances per
    block); the inner loop runs over codewords, so it vectorizes even when
    ``d`` is as small as a product-quantization subspace. ``bad[i]`` flags a
    row holding NaN or infinity (checked during the same pass).
    """
    n, d = x.shape
    k = c_t.shape[1]
    block = 256
    n_blocks = (n + block - 1) // block
    for b in numba.prange(n_blocks):
        dist = np.empty(k, dtype=np.float64)
        for i in range(b * block, min(n, (b + 1) * block)):
            for m in range(k):
                dist[m] = 0.0
            flag = False
            for j in range(d):
                xv = np.float64(x[i, j])
                z = xv * 0.0
                flag |= z != z
                for m in range(k):
                    t = xv - c_t[j, m]
                    dist[m] += t * t
            best = dist[0]
            arg = 0
            for m in range(1, k):
                if dist[m] < best:  # strict: the lower index keeps a tie
                    best = dist[m]
                    arg = m
            labels[i] = arg
            sq[i] = best
            bad[i] = flag


@numba.njit(cache=True, parallel=True)
def _refine_candidates_numba(x64, c64, approx, limit, labels, sq):  # pragma: no cover - jitted
    """Exact float64 distances for the codewords whose screened distance is within ``limit``.

    ``approx[i, j]`` is ``|c_j|^2 - 2 x_i.c_j`` from a matrix product; every codeword
    with ``approx[i, j] <= limit[i]`` may be the nearest and is measured exactly, with
    the same coordinate-by-coordinate sum as :func:`_nearest_rows_numba`, so the
    result is the one that kernel would return.
    """
    n, d = x64.shape
    k = c64.shape[0]
    for i in numba.prange(n):
        best = np.inf
        arg = -1
        for j in range(k):
            if approx[i, j] <= limit[i]:
                acc = 0.0
                for t in range(d):
                    diff = x64[i, t] - c64[j, t]
                    acc += diff * diff
                if acc < best or arg < 0:  # strict: the lower index keeps a tie
                    best = acc
                    arg = j
        labels[i] = arg
        sq[i] = best


def _nearest_screened(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact nearest codeword via a float64 matrix-product screen, then exact refinement.

    ``|x - c|^2 = |x|^2 + |c|^2 - 2 x.c`` computed with a matrix product is off by at
    most about ``(d + 2) u (|x|^2 + |c|^2)`` (``u`` the float64 unit roundoff); every
    codeword within four times that bound of the screened minimum is then measured
    exactly. Usually one codeword survives, so the cost is the matrix product.
    """
    n, d = x.shape
    c64 = np.ascontiguousarray(centroids, dtype=np.float64)  # (k, d)
    c_sq = np.einsum("kd,kd->k", c64, c64)  # (k,)
    c_sq_max = float(c_sq.max())
    labels = np.empty(n, dtype=np.int64)
    sq = np.empty(n, dtype=np.float64)
    rows = max(1, _BLOCK_BYTES // (8 * c64.shape[0]))
    unit = np.finfo(np.float64).eps / 2
    for start in range(0, n, rows):
        xb = np.ascontiguousarray(x[start:start + rows], dtype=np.float64)  # (rows, d)
        if not np.isfinite(xb).all():
            raise ValueError("x must contain only finite values; found NaN or infinity")
        approx = c_sq[None, :] - 2.0 * (xb @ c64.T)  # (rows, k), without the constant |x|^2
        x_sq = np.einsum("nd,nd->n", xb, xb)
        slack = 4.0 * (d + 4) * unit * (x_sq + c_sq_max) + 1e-300
        limit = approx.min(axis=1) + 2.0 * slack  # (rows,)
        _refine_candidates_numba(xb, c64, approx, limit, labels[start:start + rows], sq[start:start + rows])
    return labels, sq



# ------------------------------------------------ float32 screens (float32 input only)
#
# For float32 points and codewords the numba backend screens in float32 and keeps
# the exact answer: the screened score ``a_j = |c_j|^2 - 2 x.c_j`` is computed in
# float32 (no fastmath: the exact float64 sums inlined in the same kernels must
# not be contracted to FMAs; the lane-wise loops vectorize anyway), which is off from the exact value by
# at most about ``(2 d + 4) u (|x|^2 + max_j |c_j|^2)`` (``u = 2^-24``). ``_SLACK32``
# doubles that, and a point whose best two screened scores are within two slacks
# (or whose norm is too large for float32) is measured again exactly, every
# codeword in float64 like the direct kernel. Otherwise the screened winner is the
# exact winner (lowest index among exact ties included: a tie has a zero gap and is
# always re-measured), and its float64 distance is summed in the direct kernel's order.

_U32 = 2.0**-24
_SLACK_ABS = 1e-35  # absolute slack: underflow of float32 products of tiny values
_BIG32 = 1e30  # |x|^2 or |c|^2 above this: float32 could overflow, measure exactly


@numba.njit(cache=True)
def _exact_sq(x, i, off, c64, m, j, sub):  # pragma: no cover - jitted
    """float64 ``sum_t (x[i, off + t] - c64[m, j, t])^2``, t ascending (the direct kernel's order)."""
    acc = 0.0
    for t in range(sub):
        diff = np.float64(x[i, off + t]) - c64[m, j, t]
        acc += diff * diff
    return acc


@numba.njit(cache=True)
def _exact_argmin(x, i, off, c64, m, sub):  # pragma: no cover - jitted
    """Exact nearest codeword of codebook ``m`` for the slice ``x[i, off:off+sub]`` (ties: lower index)."""
    best = np.inf
    arg = 0
    for j in range(c64.shape[1]):
        acc = _exact_sq(x, i, off, c64, m, j, sub)
        if acc < best or j == 0:  # strict: the lower index keeps a tie
            best = acc
            arg = j
    return arg, best


@numba.njit(cache=True, parallel=True, fastmath={"contract"})
def _screen_fused_numba(x, c4, csq, cmax, rows, labels, need):  # pragma: no cover - jitted
    """Nearest codeword of every slice: float32 screen fused with the argmin, exact recheck.

    ``x`` (n, M*sub) float32; codebook ``m`` holds ``c4[m]`` (K, sub4) float32 zero-padded
    to a multiple of 4 columns, ``csq[m]`` (K,) its float32 squared norms and ``cmax[m]``
    the largest float64 squared norm.
    Rows go in blocks of ``rows`` (one task each); inside a block the scores of one
    codeword for all rows of the block form one vectorized loop (the rows are the
    lanes), and each lane keeps its best score, its index and its second-best score.
    ``labels`` (n, M) receives the screened codes and ``need`` (n, M) flags the slices
    that :func:`_fused_finish_numba` must measure again exactly. Only FMA contraction
    is allowed (``fastmath={"contract"}``), within the screen's error bound.
    """
    n = x.shape[0]
    n_sub, k, sub4 = c4.shape
    sub = x.shape[1] // n_sub
    nch = sub4 // 4
    last = sub4 - 4
    n_blocks = (n + rows - 1) // rows
    for blk in numba.prange(n_blocks):
        xt = np.zeros((sub4, rows), dtype=np.float32)  # -2 x, transposed: one row per coordinate
        xs = np.zeros(rows, dtype=np.float64)  # |x slice|^2
        v = np.empty(rows, dtype=np.float32)
        b1 = np.empty(rows, dtype=np.float32)
        b2 = np.empty(rows, dtype=np.float32)
        arg = np.empty(rows, dtype=np.int64)
        i0 = blk * rows
        nr = min(rows, n - i0)
        for m in range(n_sub):
            off = m * sub
            for r in range(rows):
                xs[r] = 0.0
            for t in range(sub):
                xrow = xt[t]
                for r in range(nr):
                    xv = x[i0 + r, off + t]
                    xrow[r] = xv * np.float32(-2.0)
                    xs[r] += np.float64(xv) * np.float64(xv)
            for r in range(rows):
                b1[r] = np.inf
                b2[r] = np.inf
                arg[r] = 0
            xl0 = xt[last]
            xl1 = xt[last + 1]
            xl2 = xt[last + 2]
            xl3 = xt[last + 3]
            for j in range(k):
                cj = c4[m, j]
                if nch > 1:
                    x0 = xt[0]
                    x1 = xt[1]
                    x2 = xt[2]
                    x3 = xt[3]
                    p0 = cj[0]
                    p1 = cj[1]
                    p2 = cj[2]
                    p3 = cj[3]
                    cs = csq[m, j]
                    for r in range(rows):
                        v[r] = cs + x0[r] * p0 + x1[r] * p1 + x2[r] * p2 + x3[r] * p3
                    for ch in range(1, nch - 1):
                        t = 4 * ch
                        x0 = xt[t]
                        x1 = xt[t + 1]
                        x2 = xt[t + 2]
                        x3 = xt[t + 3]
                        p0 = cj[t]
                        p1 = cj[t + 1]
                        p2 = cj[t + 2]
                        p3 = cj[t + 3]
                        for r in range(rows):
                            v[r] += x0[r] * p0 + x1[r] * p1 + x2[r] * p2 + x3[r] * p3
                else:
                    cs = csq[m, j]
                    for r in range(rows):
                        v[r] = cs
                p0 = cj[last]
                p1 = cj[last + 1]
                p2 = cj[last + 2]
                p3 = cj[last + 3]
                for r in range(rows):  # the last 4 coordinates, fused with the running argmin
                    vr = v[r] + xl0[r] * p0 + xl1[r] * p1 + xl2[r] * p2 + xl3[r] * p3
                    old = b1[r]
                    hi = old if old > vr else vr
                    b2r = b2[r]
                    b2[r] = b2r if b2r < hi else hi
                    lt = vr < old
                    b1[r] = vr if lt else old
                    arg[r] = j if lt else arg[r]
            for r in range(nr):
                s = xs[r]
                slack = _SLACK32 * (sub4 + 4) * (s + cmax[m]) + _SLACK_ABS
                labels[i0 + r, m] = arg[r]
                # a near tie, or a norm too large (or NaN) for float32: measured again exactly
                need[i0 + r, m] = not (s <= _BIG32 and np.float64(b2[r]) - np.float64(b1[r]) > 2.0 * slack)


@numba.njit(cache=True, parallel=True)
def _fused_finish_numba(x, c64, labels, need, sq, want_sq, bad):  # pragma: no cover - jitted
    """After :func:`_screen_fused_numba` (no fastmath here: exact float64 sums in the
    direct kernel's order): rows flagged in ``need`` measure every codeword exactly;
    with ``want_sq`` the others get the float64 distance of their codeword."""
    n = x.shape[0]
    n_sub, k, sub = c64.shape
    for i in numba.prange(n):
        for m in range(n_sub):
            off = m * sub
            if need[i, m]:
                for t in range(sub):
                    z = np.float64(x[i, off + t]) * 0.0
                    if z != z:
                        bad[i] = True
                a, best = _exact_argmin(x, i, off, c64, m, sub)
                labels[i, m] = a
                if want_sq:
                    sq[i, m] = best
            elif want_sq:
                sq[i, m] = _exact_sq(x, i, off, c64, m, labels[i, m], sub)


_SLACK32 = 4.0 * _U32  # times (d + 4) (|x|^2 + max |c|^2): twice the worst-case float32 error
_FUSED_ROWS = 128  # rows per task of the fused screen (lanes of its vectorized loops)


def _prepare_books32(books: np.ndarray):
    """``(c4, csq, cmax, c64)`` of float32 codebooks ``(M, K, sub)`` for :func:`_screen_fused_numba`,
    or ``None`` when a codeword is too large for a float32 screen."""
    c64 = np.ascontiguousarray(books, dtype=np.float64)
    sq64 = np.einsum("mkd,mkd->mk", c64, c64)  # (M, K)
    cmax = sq64.max(axis=1)  # (M,)
    if not np.all(cmax <= _BIG32):
        return None
    n_sub, k, sub = books.shape
    sub4 = (sub + 3) // 4 * 4
    c4 = np.zeros((n_sub, k, sub4), dtype=np.float32)
    c4[:, :, :sub] = books
    return c4, sq64.astype(np.float32), cmax, c64


def _fused_call(x: np.ndarray, books: np.ndarray, labels: np.ndarray, want_sq: bool):
    """Run :func:`_screen_fused_numba` on float32 ``x`` (n, M*sub) and ``books`` (M, K, sub).

    Returns the squared distances (n, M) (or ``None`` without ``want_sq``), or
    ``False`` when the codebooks are too large for the float32 screen.
    """
    prep = _prepare_books32(books)
    if prep is None:
        return False
    c4, csq, cmax, c64 = prep
    n = x.shape[0]
    sq = np.empty((n, books.shape[0]) if want_sq else (1, 1), dtype=np.float64)
    bad = np.zeros(n, dtype=np.bool_)
    need = np.empty((n, books.shape[0]), dtype=np.bool_)
    x = np.ascontiguousarray(x)
    _screen_fused_numba(x, c4, csq, cmax, _FUSED_ROWS, labels, need)
    if want_sq or need.any():
        _fused_finish_numba(x, c64, labels, need, sq, want_sq, bad)
    if bad.any():
        raise ValueError("x must contain only finite values; found NaN or infinity")
    return sq if want_sq else None


def pq_assign_numba(x: np.ndarray, books: np.ndarray, out: np.ndarray) -> bool:
    """Product-quantization codes of float32 ``x`` (n, M*sub) with float32 ``books`` (M, K, sub)
    written into ``out`` (n, M) (any integer dtype holding ``K - 1``).

    One fused kernel over all subspaces (:func:`_screen_fused_numba`); the codes are
    those of :func:`nearest_centroid` on every slice. Returns ``False`` (and writes
    nothing) when the codebooks are too large for the float32 screen.
    """
    return _fused_call(x, books, out, False) is not False


@numba.njit(cache=True)
def _argmin_cols(g, csq, r0, nr, b1, b2, a):  # pragma: no cover - jitted
    """Columns ``r0 .. r0+nr`` of ``g`` (K, R) (``g[j, r] = c_j . x_r``): the least
    ``csq[j] - 2 g[j, r]`` in ``b1`` (first index on ties in ``a``), the second least in ``b2``.

    One vectorized loop over the columns per codeword (the columns are the lanes).
    """
    for r in range(nr):
        b1[r] = np.inf
        b2[r] = np.inf
        a[r] = 0
    for j in range(g.shape[0]):
        gj = g[j]
        cs = csq[j]
        for r in range(nr):
            vr = cs - np.float32(2.0) * gj[r0 + r]
            old = b1[r]
            hi = old if old > vr else vr
            b2r = b2[r]
            b2[r] = b2r if b2r < hi else hi
            lt = vr < old
            b1[r] = vr if lt else old
            a[r] = j if lt else a[r]


@numba.njit(cache=True, parallel=True)
def _screened32_block_numba(x, g, c64, csq, cmax, slack_coef, lanes, labels, sq, bad):  # pragma: no cover - jitted
    """Nearest codeword of every row of ``x`` (R, d) from the sgemm scores ``g`` (K, R).

    Columns go in groups of ``lanes`` (one task each): :func:`_argmin_cols` gives each
    column's screened winner and the gap to the runner-up; the winner's float64 distance
    is then summed exactly. A column whose gap is within two slacks (or whose norm is
    too large for float32) measures exactly every codeword whose screened score is
    within two slacks of the best (all of them when the norm is too large), like
    :func:`_refine_candidates_numba`; ``bad[r]`` flags a row holding NaN or infinity.
    """
    n, d = x.shape
    k = c64.shape[0]
    n_groups = (n + lanes - 1) // lanes
    for grp in numba.prange(n_groups):
        r0 = grp * lanes
        nr = min(lanes, n - r0)
        b1 = np.empty(lanes, dtype=np.float32)
        b2 = np.empty(lanes, dtype=np.float32)
        a = np.empty(lanes, dtype=np.int64)
        _argmin_cols(g, csq, r0, nr, b1, b2, a)
        for rr in range(nr):
            r = r0 + rr
            s = 0.0
            for t in range(d):
                xv = np.float64(x[r, t])
                s += xv * xv
            slack = slack_coef * (s + cmax) + _SLACK_ABS
            if s <= _BIG32 and np.float64(b2[rr]) - np.float64(b1[rr]) > 2.0 * slack:
                best_j = a[rr]
                acc = 0.0
                for t in range(d):
                    diff = np.float64(x[r, t]) - c64[best_j, t]
                    acc += diff * diff
                labels[r] = best_j
                sq[r] = acc
                continue
            exact_all = not s <= _BIG32
            if exact_all:
                for t in range(d):
                    z = np.float64(x[r, t]) * 0.0
                    if z != z:
                        bad[r] = True
            lim = np.float64(b1[rr]) + 2.0 * slack
            best = np.inf
            arg_best = -1
            for j in range(k):
                if exact_all or np.float64(csq[j] - np.float32(2.0) * g[j, r]) <= lim:
                    acc = 0.0
                    for t in range(d):
                        diff = np.float64(x[r, t]) - c64[j, t]
                        acc += diff * diff
                    if acc < best or arg_best < 0:  # strict: the lower index keeps a tie
                        best = acc
                        arg_best = j
            labels[r] = arg_best
            sq[r] = best


_GEMM_BLOCK_BYTES = 1 << 24  # float32 score block (K, rows) of the sgemm screen: at most 16 MB (few BLAS <-> numba hand-offs)
_GEMM_LANES = 64  # columns (points) per task of the argmin after the sgemm


def _nearest_screened32(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Exact nearest codeword of float32 points: float32 sgemm screen, fused argmin, exact finish.

    ``g = C @ x_block^T`` (K, rows) through NumPy's BLAS (the only non-numba step),
    then :func:`_screened32_block_numba` (argmin, gap test, exact float64 distances).
    Returns ``None`` when a codeword is too large for float32 (the caller falls back).
    """
    n, d = x.shape
    c32 = np.ascontiguousarray(centroids, dtype=np.float32)  # (k, d)
    c64 = c32.astype(np.float64)
    sq64 = np.einsum("kd,kd->k", c64, c64)
    cmax = float(sq64.max())
    if not cmax <= _BIG32:
        return None
    csq = sq64.astype(np.float32)
    k = c32.shape[0]
    x = np.ascontiguousarray(x)
    labels = np.empty(n, dtype=np.int64)
    sq = np.empty(n, dtype=np.float64)
    bad = np.zeros(n, dtype=np.bool_)
    rows = min(n, max(_GEMM_LANES, _GEMM_BLOCK_BYTES // (4 * k) // _GEMM_LANES * _GEMM_LANES))
    g_buf = np.empty(k * rows, dtype=np.float32)
    slack_coef = _SLACK32 * (d + 4)
    for start in range(0, n, rows):
        xb = x[start:start + rows]
        g = g_buf[:k * xb.shape[0]].reshape(k, xb.shape[0])
        np.matmul(c32, xb.T, out=g)  # (k, rows) sgemm
        sl = slice(start, start + xb.shape[0])
        _screened32_block_numba(xb, g, c64, csq, cmax, slack_coef, _GEMM_LANES, labels[sl], sq[sl], bad[sl])
    if bad.any():
        raise ValueError("x must contain only finite values; found NaN or infinity")
    return labels, sq


_SCREEN_MIN_D = 24  # below this a matrix product over d is not worth its setup; the direct kernel wins


_FLOAT32_SCREEN_MIN_K = 16  # below this many codewords the direct kernel is as fast


def _nearest_numba(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if x.dtype == np.float32 and centroids.dtype == np.float32 and centroids.shape[0] >= _FLOAT32_SCREEN_MIN_K:
        if x.shape[1] >= _SCREEN_MIN_D:
            out = _nearest_screened32(x, centroids)
        else:
            labels = np.empty((x.shape[0], 1), dtype=np.int64)
            sq = _fused_call(x, centroids[None], labels, True)
            out = None if sq is False else (labels[:, 0], sq[:, 0])
        if out is not None:
            return out
    if x.shape[1] >= _SCREEN_MIN_D and centroids.shape[0] >= 8:
        return _nearest_screened(x, centroids)
    return _nearest_rows_numba_call(x, centroids)


def _nearest_rows_numba_call(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The direct numba kernel (every codeword measured exactly), with its buffers."""
    n = x.shape[0]
    x = np.ascontiguousarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float32)
    c_t = np.ascontiguousarray(centroids.astype(np.float64).T)  # (d, k)
    labels = np.empty(n, dtype=np.int64)
    sq = np.empty(n, dtype=np.float64)
    bad = np.zeros(n, dtype=np.bool_)
    _nearest_rows_numba(x, c_t, labels, sq, bad)
    if bad.any():
        raise ValueError("x must contain only finite values; found NaN or infinity")
    return labels, sq


# ------------------------------------------------------------- CuPy kernel
_NEAREST_CUDA = r"""
extern "C" __global__ void nearest_centroid(
    const T* __restrict__ x, const double* __restrict__ c, const long long n,
    const int k, const int d, long long* __restrict__ labels, double* __restrict__ sq)
{
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        const T* row = x + i * (long long)d;
        double best = 0.0;
        long long arg = 0;
        for (int m = 0; m < k; ++m) {
            const double* cm = c + (long long)m * d;
            double acc = 0.0;
            for (int j = 0; j < d; ++j) {
                const double t = (double)row[j] - cm[j];
                acc = __dadd_rn(acc, __dmul_rn(t, t));  /* no FMA: same rounding as the CPU paths */
            }
            if (m == 0 || acc < best) {  /* strict: the lower index keeps a tie */
                best = acc;
                arg = m;
            }
        }
        labels[i] = arg;
        sq[i] = best;
    }
}
"""


@functools.lru_cache(maxsize=None)
def _cupy_nearest_kernel(ctype: str):
    import cupy

    return cupy.RawKernel(f"typedef {ctype} T;\n" + _NEAREST_CUDA, "nearest_centroid")


def _nearest_cupy(x, centroids):
    import cupy

    if x.dtype not in (cupy.float32, cupy.float64):
        x = x.astype(cupy.float32)
    x = cupy.ascontiguousarray(x)
    c = cupy.ascontiguousarray(centroids, dtype=cupy.float64)  # (k, d)
    n, d = x.shape
    labels = cupy.empty(n, dtype=cupy.int64)
    sq = cupy.empty(n, dtype=cupy.float64)
    threads = 128
    blocks = max(1, min((n + threads - 1) // threads, 1 << 16))
    kernel = _cupy_nearest_kernel("float" if x.dtype == cupy.float32 else "double")
    kernel((blocks,), (threads,), (x, c, np.int64(n), np.int32(c.shape[0]), np.int32(d), labels, sq))
    return labels, sq


_KERNELS = {"numpy": _nearest_numpy, "numba": _nearest_numba, "cupy": _nearest_cupy}


# ----------------------------------------------------------- public entry
def _torch_to_float(x: Any) -> Any:
    """torch float16/bfloat16 -> float32 (NumPy has no bfloat16)."""
    import torch

    if x.dtype not in (torch.float32, torch.float64):
        return x.detach().to(torch.float32)
    return x.detach()


def nearest_centroid(x: Any, centroids: Any, *, backend: str | None = None) -> tuple[Any, Any]:
    """Index of, and squared distance to, the nearest centroid of every point.

    Distances are computed exactly as sums of squared coordinate differences
    in float64; among equally near centroids the lower index wins (every
    backend gives the same labels).

    Parameters
    ----------
    x : array of shape (n, d)
        Points: floating NumPy array, CuPy array or torch tensor; finite, n >= 1.
    centroids : array of shape (k, d)
        Codewords, same kind as ``x``; finite, k >= 1.
    backend : {None, "auto", "numpy", "numba", "cupy"}, optional
        Kernel to run; ``None``/``"auto"`` picks CuPy for GPU input, numba otherwise.

    Returns
    -------
    labels : array of shape (n,), int64
        ``labels[i]`` is the index of the centroid nearest to ``x[i]``.
    sq_distances : array of shape (n,)
        ``|x[i] - centroids[labels[i]]|^2`` in the floating dtype common to
        ``x`` and ``centroids`` (float32 for two float32 inputs, float64 otherwise).
        Both outputs are the same kind of array as ``x``.

    Raises
    ------
    TypeError
        Not an array, or not floating.
    ValueError
        Wrong number of dimensions, empty input, mismatched ``d``, NaN or
        infinity, unknown backend.

    References
    ----------
    Lloyd, "Least squares quantization in PCM", 1982 (the assignment step of k-means).

    Examples
    --------
    >>> import numpy as np
    >>> from companion.kernels import nearest_centroid
    >>> x = np.array([[0.0, 0.1], [2.0, 1.9], [1.0, 1.0]])
    >>> c = np.array([[0.0, 0.0], [2.0, 2.0]])
    >>> labels, sq = nearest_centroid(x, c)
    >>> labels.tolist(), sq.round(3).tolist()
    ([0, 1, 0], [0.01, 0.01, 2.0])
    """
    kind = check_array(x, "x", ndim=2, dtype_kind="f", finite=False)
    c_kind = check_array(centroids, "centroids", ndim=2, dtype_kind="f")
    if x.shape[1] != centroids.shape[1]:
        raise ValueError(
            f"x and centroids must have the same number of columns d; got x {tuple(x.shape)} "
            f"and centroids {tuple(centroids.shape)}"
        )
    if kind != c_kind:
        raise TypeError(f"x and centroids must be the same kind of array; got {kind} and {c_kind}")
    if kind == "torch":
        x_in, c_in = _torch_to_float(x), _torch_to_float(centroids)
    else:
        x_in, c_in = x, centroids
    name, kernel = dispatch(_KERNELS, backend, x_in, c_in)
    if name != "numba":  # the numba kernel checks finiteness during its single pass
        check_array(x, "x", ndim=2, dtype_kind="f")
    labels, sq = kernel(for_backend(x_in, name), for_backend(c_in, name))
    out_dtype = np.result_type(_np_dtype(x_in), _np_dtype(c_in))
    sq = sq.astype(out_dtype, copy=False)
    return to_kind(labels, kind, like=x), to_kind(sq, kind, like=x)


def _np_dtype(a: Any) -> np.dtype:
    """NumPy dtype of a NumPy/CuPy array or a float32/float64 torch tensor."""
    dt = a.dtype
    if hasattr(dt, "is_floating_point"):  # torch dtype
        import torch

        return np.dtype(np.float64) if dt == torch.float64 else np.dtype(np.float32)
    return np.dtype(dt)

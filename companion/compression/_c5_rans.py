"""numba kernels of the byte-wise rANS coder (chapter C5); see :mod:`companion.compression.entropy_coding`.

The coder follows the byte-oriented range variant of asymmetric numeral systems:
a 32-bit state ``x`` kept in ``[L, 256 L)`` with ``L = 2**23``, probabilities
quantized to integer frequencies summing to ``M = 2**precision``
(``precision <= 16``), one byte written each time the state would overflow.

Every function here is ``@njit(cache=True)`` and works on plain integer arrays;
validation happens in the public module. The probability quantization used by
the model-specific decoders (``_quantize_row``) is the same code the public
:func:`~companion.compression.entropy_coding.quantize_probabilities` runs, so an
encoder and a decoder that compute the same float probabilities always agree on
the integer frequencies.
"""

from __future__ import annotations

import numba
import numpy as np

RANS_L = 1 << 23  # lower end of the normalized state interval [L, 256 L)


# --------------------------------------------------------------- quantization
@numba.njit(cache=True)
def _quantize_row(p, precision, out):  # pragma: no cover - jitted
    """Integer frequencies ``out`` (K,) summing to ``2**precision``, each >= 1, from probabilities ``p`` (K,).

    ``f_k = 1 + floor(p_k (M - K))`` plus one more for the ``r`` symbols with the
    largest fractional parts (ties to the lower index), ``r = M - sum f``. Only
    elementwise float operations and integer sums: bit-identical everywhere.
    """
    k = p.shape[0]
    m = np.int64(1) << precision
    spare = m - k
    total = np.int64(0)
    frac = np.empty(k, dtype=np.float64)
    for i in range(k):
        scaled = p[i] * spare
        fl = np.floor(scaled)
        out[i] = np.int64(1) + np.int64(fl)
        frac[i] = scaled - fl
        total += out[i]
    rem = m - total
    whole = rem // k
    part = rem - whole * k
    for i in range(k):
        out[i] += whole
    if part > 0:
        for i in range(k):
            rank = 0
            for j in range(k):
                if frac[j] > frac[i] or (frac[j] == frac[i] and j < i):
                    rank += 1
            if rank < part:
                out[i] += 1


@numba.njit(cache=True)
def _quantize_rows_numba(p, precision):  # pragma: no cover - jitted
    """``_quantize_row`` over every row of ``p`` (rows, K) -> int64 (rows, K)."""
    rows, k = p.shape
    out = np.empty((rows, k), dtype=np.int64)
    for r in range(rows):
        _quantize_row(p[r], precision, out[r])
    return out


# ---------------------------------------------------------------- coder steps
@numba.njit(cache=True, inline="always")
def _put(x, start, freq, precision, buf, pos):  # pragma: no cover - jitted
    """Encode one symbol (``start``, ``freq``) into state ``x``; bytes go to ``buf[pos:]``. Returns (x, pos)."""
    x_max = ((RANS_L >> precision) << 8) * freq
    while x >= x_max:
        buf[pos] = x & 0xFF
        pos += 1
        x >>= 8
    x = ((x // freq) << precision) + (x % freq) + start
    return x, pos


@numba.njit(cache=True)
def _find_symbol(cum, slot):  # pragma: no cover - jitted
    """Largest ``s`` with ``cum[s] <= slot`` (binary search over the cumulative table, K + 1 entries)."""
    lo = 0
    hi = cum.shape[0] - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if cum[mid] <= slot:
            lo = mid
        else:
            hi = mid
    return lo


@numba.njit(cache=True)
def _get(x, cum, precision, data, pos):  # pragma: no cover - jitted
    """Decode one symbol from state ``x`` with cumulative table ``cum`` (K + 1,).

    Returns ``(symbol, x, pos, ok)``; ``ok`` is False when the code ran out of bytes.
    """
    mask = (np.int64(1) << precision) - 1
    slot = x & mask
    s = _find_symbol(cum, slot)
    x = (cum[s + 1] - cum[s]) * (x >> precision) + slot - cum[s]
    ok = True
    while x < RANS_L:
        if pos >= data.shape[0]:
            ok = False
            break
        x = (x << 8) | np.int64(data[pos])
        pos += 1
    return s, x, pos, ok


@numba.njit(cache=True)
def _finish(x, buf, pos):  # pragma: no cover - jitted
    """Flush the 4 state bytes and return the code (reversed buffer, first bytes = state little-endian)."""
    for shift in (24, 16, 8, 0):
        buf[pos] = (x >> shift) & 0xFF
        pos += 1
    out = np.empty(pos, dtype=np.uint8)
    for i in range(pos):
        out[i] = buf[pos - 1 - i]
    return out


@numba.njit(cache=True)
def _start(data):  # pragma: no cover - jitted
    """Initial decoder state from the first 4 bytes (little-endian)."""
    x = np.int64(0)
    for i in range(4):
        x |= np.int64(data[i]) << (8 * i)
    return x, 4


# ------------------------------------------------------ table coder (generic)
@numba.njit(cache=True)
def _cumulative(freq):  # pragma: no cover - jitted
    rows, k = freq.shape
    cum = np.zeros((rows, k + 1), dtype=np.int64)
    for r in range(rows):
        for s in range(k):
            cum[r, s + 1] = cum[r, s] + freq[r, s]
    return cum


@numba.njit(cache=True)
def _encode_tables_numba(symbols, freq, precision):  # pragma: no cover - jitted
    """Encode ``symbols`` (n,) with per-symbol frequency rows ``freq`` (n or 1, K) -> uint8 code."""
    n = symbols.shape[0]
    cum = _cumulative(freq)
    shared = freq.shape[0] == 1
    buf = np.empty(2 * n + 8, dtype=np.uint8)
    pos = 0
    x = np.int64(RANS_L)
    for i in range(n - 1, -1, -1):
        r = 0 if shared else i
        s = symbols[i]
        x, pos = _put(x, cum[r, s], cum[r, s + 1] - cum[r, s], precision, buf, pos)
    return _finish(x, buf, pos)


@numba.njit(cache=True)
def _decode_tables_numba(data, freq, n, precision):  # pragma: no cover - jitted
    """Inverse of ``_encode_tables_numba``. Returns ``(symbols, status)``; status 0 ok, 1 truncated, 2 leftover."""
    cum = _cumulative(freq)
    shared = freq.shape[0] == 1
    out = np.empty(n, dtype=np.int64)
    x, pos = _start(data)
    for i in range(n):
        r = 0 if shared else i
        s, x, pos, ok = _get(x, cum[r], precision, data, pos)
        if not ok:
            return out, 1
        out[i] = s
    if x != RANS_L or pos != data.shape[0]:
        return out, 2
    return out, 0


# ---------------------------------------------- context (tree) coder, models
@numba.njit(cache=True)
def _encode_context_numba(x, order, parent, freq, precision):  # pragma: no cover - jitted
    """Encode rows of ``x`` (n, D): column ``order[t]`` uses table ``freq[t, x[row, parent[t]]]`` (or row 0 for roots).

    ``freq`` is (D, contexts, K). All rows go into one stream; the decoder reads
    rows in order and columns in ``order``, so each parent is known before its child.
    """
    n, d = x.shape
    t_n = order.shape[0]
    k = freq.shape[2]
    cum = np.zeros((t_n, freq.shape[1], k + 1), dtype=np.int64)
    for t in range(t_n):
        for c in range(freq.shape[1]):
            for s in range(k):
                cum[t, c, s + 1] = cum[t, c, s] + freq[t, c, s]
    buf = np.empty(2 * n * t_n + 8, dtype=np.uint8)
    pos = 0
    state = np.int64(RANS_L)
    for i in range(n - 1, -1, -1):
        for t in range(t_n - 1, -1, -1):
            col = order[t]
            ctx = 0 if parent[t] < 0 else x[i, parent[t]]
            s = x[i, col]
            state, pos = _put(state, cum[t, ctx, s], cum[t, ctx, s + 1] - cum[t, ctx, s], precision, buf, pos)
    return _finish(state, buf, pos)


@numba.njit(cache=True)
def _decode_context_numba(data, n, d, order, parent, freq, precision):  # pragma: no cover - jitted
    t_n = order.shape[0]
    k = freq.shape[2]
    cum = np.zeros((t_n, freq.shape[1], k + 1), dtype=np.int64)
    for t in range(t_n):
        for c in range(freq.shape[1]):
            for s in range(k):
                cum[t, c, s + 1] = cum[t, c, s] + freq[t, c, s]
    out = np.zeros((n, d), dtype=np.int64)
    state, pos = _start(data)
    for i in range(n):
        for t in range(t_n):
            ctx = 0 if parent[t] < 0 else out[i, parent[t]]
            s, state, pos, ok = _get(state, cum[t, ctx], precision, data, pos)
            if not ok:
                return out, 1
            out[i, order[t]] = s
    if state != RANS_L or pos != data.shape[0]:
        return out, 2
    return out, 0


@numba.njit(cache=True)
def _mixture_probs(log_post, log_theta_j, p):  # pragma: no cover - jitted
    """``p[v] = sum_c post_c theta[c, j, v]`` with ``post = softmax(log_post)``; ``log_theta_j`` is (C, K)."""
    c_n, k = log_theta_j.shape
    top = log_post[0]
    for c in range(1, c_n):
        if log_post[c] > top:
            top = log_post[c]
    z = 0.0
    for c in range(c_n):
        z += np.exp(log_post[c] - top)
    for v in range(k):
        acc = 0.0
        for c in range(c_n):
            acc += np.exp(log_post[c] - top + log_theta_j[c, v])
        p[v] = acc / z


@numba.njit(cache=True)
def _mixture_update(log_post, log_theta_j, v):  # pragma: no cover - jitted
    for c in range(log_post.shape[0]):
        log_post[c] += log_theta_j[c, v]


@numba.njit(cache=True)
def _encode_mixture_numba(x, log_weights, log_theta, precision):  # pragma: no cover - jitted
    """Encode rows of ``x`` (n, D) with the mixture's exact conditionals ``p(x_j | x_<j)``."""
    n, d = x.shape
    c_n, _, k = log_theta.shape
    freq = np.empty((n * d, k), dtype=np.int64)
    p = np.empty(k, dtype=np.float64)
    log_post = np.empty(c_n, dtype=np.float64)
    for i in range(n):
        log_post[:] = log_weights
        for j in range(d):
            _mixture_probs(log_post, log_theta[:, j, :], p)
            _quantize_row(p, precision, freq[i * d + j])
            _mixture_update(log_post, log_theta[:, j, :], x[i, j])
    return _encode_tables_numba(x.reshape(-1), freq, precision)


@numba.njit(cache=True)
def _decode_mixture_numba(data, n, d, log_weights, log_theta, precision):  # pragma: no cover - jitted
    c_n, _, k = log_theta.shape
    out = np.zeros((n, d), dtype=np.int64)
    freq = np.empty(k, dtype=np.int64)
    cum = np.zeros(k + 1, dtype=np.int64)
    p = np.empty(k, dtype=np.float64)
    log_post = np.empty(c_n, dtype=np.float64)
    state, pos = _start(data)
    for i in range(n):
        log_post[:] = log_weights
        for j in range(d):
            _mixture_probs(log_post, log_theta[:, j, :], p)
            _quantize_row(p, precision, freq)
            for s in range(k):
                cum[s + 1] = cum[s] + freq[s]
            s, state, pos, ok = _get(state, cum, precision, data, pos)
            if not ok:
                return out, 1
            out[i, j] = s
            _mixture_update(log_post, log_theta[:, j, :], s)
    if state != RANS_L or pos != data.shape[0]:
        return out, 2
    return out, 0

"""Entropy coding with range asymmetric numeral systems (rANS).

A probability model turns into a compressor through an entropy coder: given the
probability ``p_i`` the model gave to each symbol that actually occurred, the
coder writes about ``sum_i -log2 p_i`` bits, the model's cross-entropy, and the
decoder, given the same probabilities, gets every symbol back exactly.

rANS keeps the whole message in one integer state ``x``. Encoding symbol ``s``
with integer frequency ``f_s`` and cumulative start ``c_s`` (frequencies sum to
``M = 2**precision``) maps

``x -> floor(x / f_s) * M + (x mod f_s) + c_s``,

which multiplies ``x`` by about ``M / f_s``, i.e. adds ``log2(M / f_s)`` bits.
The decoder reads ``slot = x mod M``, finds the symbol whose interval
``[c_s, c_s + f_s)`` holds it and undoes the map. The state is kept in
``[2**23, 2**31)`` by moving bytes out (encoder) and in (decoder). The coder is
last-in first-out, so the encoder walks the message backwards and the decoder
reads it forwards.

Conventions of this module:

* ``probabilities`` is ``(K,)`` (one table for all symbols) or ``(n, K)`` (one
  table per symbol: an adaptive or conditional model); rows must be
  non-negative, finite and sum to 1 within ``1e-6``.
* :func:`quantize_probabilities` turns each row into integer frequencies that
  sum to ``2**precision`` and are all >= 1, so a symbol that occurs can always
  be coded, even when the model gave it probability 0.
* A code is a NumPy ``uint8`` array: 4 bytes of final state, then the bytes the
  encoder moved out. Its length in bits is the real cost, flush included.

Backends: ``"numpy"`` is a readable pure-Python loop with Python integers (the
reference), ``"numba"`` the compiled coder. There is no CuPy coder: rANS is a
sequential recurrence, each step needs the state the previous one left, so a
GPU gains nothing from one stream. (GPU codecs run thousands of independent
streams, one per block of data, each still sequential.) The quantization of
probability tables is elementwise and has a CuPy path.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import check_array, check_int
from ..backend import array_kind, array_module, dispatch, for_backend, to_kind, to_numpy
from . import _c5_rans as _k

__all__ = [
    "quantize_probabilities",
    "rans_encode",
    "rans_decode",
    "cross_entropy_bits",
    "quantized_code_length_bits",
    "rans_overhead_bound_bits",
]

MAX_PRECISION = 16
SUM_TOLERANCE = 1e-6
RANS_L = _k.RANS_L


# ----------------------------------------------------------------- validation
def _check_precision(precision: Any, n_symbols: int | None = None) -> int:
    precision = check_int(precision, "precision", minimum=1, maximum=MAX_PRECISION)
    if n_symbols is not None and n_symbols > (1 << precision):
        raise ValueError(
            f"precision={precision} gives 2**{precision} = {1 << precision} frequency slots, fewer than the "
            f"{n_symbols} symbols of the alphabet; raise precision"
        )
    return precision


def _check_probabilities(probabilities: Any, name: str = "probabilities") -> str:
    """Validate a (K,) or (n, K) table of probabilities; return its array kind."""
    if isinstance(probabilities, (list, tuple)):
        raise TypeError(f"{name} must be a NumPy array, CuPy array or torch tensor; got {type(probabilities).__name__}")
    kind = check_array(probabilities, name, ndim=(1, 2), dtype_kind="f")
    xp = array_module(probabilities) if kind != "torch" else None
    p = probabilities if kind != "torch" else probabilities.detach()
    lib = xp if xp is not None else __import__("torch")
    if bool((p < 0).any()):
        raise ValueError(f"{name} must be non-negative; found a negative entry")
    sums = p.sum(-1)
    worst = float(lib.abs(sums - 1.0).max())
    if worst > SUM_TOLERANCE:
        raise ValueError(
            f"each row of {name} must sum to 1 (within {SUM_TOLERANCE:g}); found a row summing to "
            f"{float(sums.reshape(-1)[int(lib.argmax(lib.abs(sums - 1.0).reshape(-1)))]):.9g}"
        )
    return kind


def _check_symbols(symbols: Any, n_symbols: int, n_rows: int | None) -> np.ndarray:
    if isinstance(symbols, (list, tuple, range)):
        symbols = np.asarray(symbols)
    check_array(symbols, "symbols", ndim=1, dtype_kind="iu")
    s = np.asarray(to_numpy(symbols), dtype=np.int64)
    if s.min() < 0 or s.max() >= n_symbols:
        bad = int(s[(s < 0) | (s >= n_symbols)][0])
        raise ValueError(f"symbols must lie in [0, {n_symbols}) (the columns of probabilities); found {bad}")
    if n_rows is not None and n_rows != 1 and n_rows != s.shape[0]:
        raise ValueError(
            f"probabilities must have one row per symbol (shape ({s.shape[0]}, K)) or shape (K,); "
            f"got {n_rows} rows for {s.shape[0]} symbols"
        )
    return np.ascontiguousarray(s)


# ----------------------------------------------------------- quantization
def _quantize_numpy(p: np.ndarray, precision: int) -> np.ndarray:
    """Reference: ``f = 1 + floor(p (M - K))``, then +1 for the largest fractional parts."""
    k = p.shape[-1]
    m = 1 << precision
    scaled = p * float(m - k)
    floor = np.floor(scaled)
    freq = 1 + floor.astype(np.int64)  # (rows, K)
    frac = scaled - floor
    rem = m - freq.sum(-1, keepdims=True)  # (rows, 1), in [0, K]
    whole, part = rem // k, rem % k
    idx = np.arange(k)
    # rank of each entry by fractional part, ties to the lower index: (rows, K, K) comparisons
    ahead = (frac[:, None, :] > frac[:, :, None]) | ((frac[:, None, :] == frac[:, :, None]) & (idx[None, None, :] < idx[None, :, None]))
    rank = ahead.sum(-1)
    return freq + whole + (rank < part)


def _quantize_numba(p: np.ndarray, precision: int) -> np.ndarray:
    return _k._quantize_rows_numba(np.ascontiguousarray(p, dtype=np.float64), precision)


def _quantize_cupy(p, precision: int):
    import cupy

    k = p.shape[-1]
    m = 1 << precision
    scaled = p.astype(cupy.float64) * float(m - k)
    floor = cupy.floor(scaled)
    freq = 1 + floor.astype(cupy.int64)
    frac = scaled - floor
    rem = m - freq.sum(-1, keepdims=True)
    whole, part = rem // k, rem % k
    idx = cupy.arange(k)
    ahead = (frac[:, None, :] > frac[:, :, None]) | ((frac[:, None, :] == frac[:, :, None]) & (idx[None, None, :] < idx[None, :, None]))
    return freq + whole + (ahead.sum(-1) < part)


_QUANTIZE = {"numpy": _quantize_numpy, "numba": _quantize_numba, "cupy": _quantize_cupy}


def quantize_probabilities(probabilities: Any, precision: int = 16, *, backend: str | None = None) -> Any:
    """Integer frequencies for an entropy coder: each row sums to ``2**precision``, every entry >= 1.

    With ``M = 2**precision`` and ``K`` symbols, entry ``k`` gets
    ``1 + floor(p_k (M - K))`` and the ``r`` entries with the largest fractional
    parts get one more, ``r`` being what is left of ``M``. Since
    ``f_k >= p_k (M - K)``, coding a symbol costs at most
    ``-log2 p_k + log2(M / (M - K))`` bits, and never infinitely many: a symbol
    the model thought impossible still gets frequency 1.

    Parameters
    ----------
    probabilities : array of shape (K,) or (n, K)
        Non-negative, finite, each row summing to 1 within ``1e-6`` (NumPy,
        CuPy or torch).
    precision : int, default 16
        ``log2`` of the frequency total, 1 to 16, with ``2**precision >= K``.
    backend : {"auto", "numpy", "numba", "cupy"}, optional
        All three give identical integers (only elementwise float operations).

    Returns
    -------
    array of int64, same shape and kind as ``probabilities``

    Examples
    --------
    >>> import numpy as np
    >>> from companion.compression import quantize_probabilities
    >>> quantize_probabilities(np.array([0.7, 0.3, 0.0]), precision=4).tolist()
    [10, 5, 1]
    """
    kind = _check_probabilities(probabilities)
    precision = _check_precision(precision, probabilities.shape[-1])
    name, kernel = dispatch(_QUANTIZE, backend, probabilities)
    p = for_backend(probabilities, name)
    lead = p.shape[:-1]
    out = kernel(p.reshape(-1, p.shape[-1]), precision).reshape(lead + (p.shape[-1],))
    return to_kind(out, kind, like=probabilities)


# ------------------------------------------------------------- coder: numpy
def _encode_numpy(symbols: np.ndarray, freq: np.ndarray, precision: int) -> np.ndarray:
    """Reference rANS encoder (Python integers), written for reading, not speed."""
    cum = np.concatenate([np.zeros((freq.shape[0], 1), dtype=np.int64), np.cumsum(freq, axis=1)], axis=1)
    out = bytearray()
    x = RANS_L
    for i in range(len(symbols) - 1, -1, -1):  # last in, first out: encode backwards
        row = cum[0 if freq.shape[0] == 1 else i]
        s = int(symbols[i])
        start, f = int(row[s]), int(row[s + 1] - row[s])
        x_max = ((RANS_L >> precision) << 8) * f  # keep the result below 2**31
        while x >= x_max:
            out.append(x & 0xFF)
            x >>= 8
        x = (x // f << precision) + x % f + start
    out += bytes((x >> shift) & 0xFF for shift in (24, 16, 8, 0))
    return np.frombuffer(bytes(out[::-1]), dtype=np.uint8).copy()


def _decode_numpy(data: np.ndarray, freq: np.ndarray, n: int, precision: int) -> tuple[np.ndarray, int]:
    """Reference rANS decoder; returns ``(symbols, status)`` (0 ok, 1 truncated, 2 bytes or state left over)."""
    cum = np.concatenate([np.zeros((freq.shape[0], 1), dtype=np.int64), np.cumsum(freq, axis=1)], axis=1)
    raw = data.tobytes()
    x = int.from_bytes(raw[:4], "little")
    pos, mask = 4, (1 << precision) - 1
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        row = cum[0 if freq.shape[0] == 1 else i]
        slot = x & mask
        s = int(np.searchsorted(row, slot, side="right")) - 1
        x = int(row[s + 1] - row[s]) * (x >> precision) + slot - int(row[s])
        while x < RANS_L:
            if pos >= len(raw):
                return out, 1
            x = (x << 8) | raw[pos]
            pos += 1
        out[i] = s
    return out, (0 if x == RANS_L and pos == len(raw) else 2)


def _encode_numba(symbols, freq, precision):
    return _k._encode_tables_numba(symbols, np.ascontiguousarray(freq, dtype=np.int64), precision)


def _decode_numba(data, freq, n, precision):
    return _k._decode_tables_numba(np.ascontiguousarray(data), np.ascontiguousarray(freq, dtype=np.int64), n, precision)


_ENCODERS = {"numpy": _encode_numpy, "numba": _encode_numba}
_DECODERS = {"numpy": _decode_numpy, "numba": _decode_numba}


def _coder_backend(backend: str | None) -> str:
    """The coder runs on the host: ``auto`` means numba; ``cupy`` is refused with the reason."""
    if backend == "cupy":
        raise ValueError("rANS has no 'cupy' kernel: the coder is a sequential recurrence (see the module docstring)")
    name, _ = dispatch(_ENCODERS, backend)
    return name


def _tables(probabilities: Any, precision: int, backend: str) -> np.ndarray:
    p = np.asarray(to_numpy(probabilities.detach() if array_kind(probabilities) == "torch" else probabilities),
                   dtype=np.float64)
    p2 = p.reshape(-1, p.shape[-1])  # (rows, K)
    return _QUANTIZE["numba" if backend == "numba" else "numpy"](p2, precision)


# ------------------------------------------------------------------ public
def rans_encode(symbols: Any, probabilities: Any, *, precision: int = 16, backend: str | None = None) -> np.ndarray:
    """Compress a sequence of symbols with rANS, given the model's probabilities.

    Parameters
    ----------
    symbols : integer array of shape (n,)
        Values in ``[0, K)``; ``n >= 1`` (NumPy, CuPy, torch, or a list).
    probabilities : array of shape (K,) or (n, K)
        One table for every symbol, or one table per symbol (row ``i`` is the
        model's distribution for symbol ``i``, e.g. conditioned on the symbols
        before it). Rows: non-negative, finite, summing to 1 within ``1e-6``.
    precision : int, default 16
        Frequencies sum to ``2**precision`` (1 to 16).
    backend : {"auto", "numpy", "numba"}, optional
        ``"numpy"`` is the pure-Python reference; ``"auto"`` runs numba. No
        CuPy coder (sequential recurrence, see the module docstring).

    Returns
    -------
    numpy.ndarray of uint8
        The code; ``8 * len(code)`` is the cost in bits.

    References
    ----------
    Duda, "Asymmetric numeral systems: entropy coding combining speed of Huffman
    coding with compression rate of arithmetic coding", 2013.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.compression import rans_encode, rans_decode
    >>> p = np.array([0.9, 0.05, 0.05])
    >>> x = np.array([0, 0, 1, 0, 2, 0, 0, 0, 0, 0])
    >>> code = rans_encode(x, p)
    >>> rans_decode(code, p, len(x)).tolist() == x.tolist()
    True
    """
    _check_probabilities(probabilities)
    precision = _check_precision(precision, probabilities.shape[-1])
    n_rows = probabilities.shape[0] if probabilities.ndim == 2 else None
    s = _check_symbols(symbols, probabilities.shape[-1], n_rows)
    name = _coder_backend(backend)
    freq = _tables(probabilities, precision, name)
    return _ENCODERS[name](s, freq, precision)


def rans_decode(code: Any, probabilities: Any, length: int | None = None, *, precision: int = 16,
                backend: str | None = None) -> np.ndarray:
    """Decode a :func:`rans_encode` code back to its symbols (exactly).

    Parameters
    ----------
    code : numpy.ndarray of uint8
        The encoder's output (at least 4 bytes).
    probabilities : array of shape (K,) or (n, K)
        The same probabilities the encoder was given.
    length : int, optional
        Number of symbols; required for a ``(K,)`` table, else ``n``.
    precision : int, default 16
        The encoder's precision.
    backend : {"auto", "numpy", "numba"}, optional
        As for :func:`rans_encode`.

    Returns
    -------
    numpy.ndarray of int64, shape (length,)

    Raises
    ------
    ValueError
        The code is too short, or does not end where it should (wrong
        probabilities, wrong length or a corrupted code): an rANS decoder that
        read exactly what its encoder wrote finishes in the encoder's initial
        state with no byte left, which is checked.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.compression import rans_encode, rans_decode
    >>> p = np.array([[0.5, 0.5], [0.99, 0.01], [0.2, 0.8]])
    >>> rans_decode(rans_encode(np.array([1, 0, 1]), p), p).tolist()
    [1, 0, 1]
    """
    _check_probabilities(probabilities)
    precision = _check_precision(precision, probabilities.shape[-1])
    if isinstance(code, (bytes, bytearray)):
        code = np.frombuffer(bytes(code), dtype=np.uint8)
    if not isinstance(code, np.ndarray) or code.dtype != np.uint8 or code.ndim != 1:
        raise TypeError(f"code must be a 1-d NumPy uint8 array (the output of rans_encode); got {type(code).__name__}"
                        + (f" of dtype {code.dtype} and shape {code.shape}" if isinstance(code, np.ndarray) else ""))
    if code.shape[0] < 4:
        raise ValueError(f"code must hold at least the 4 bytes of the final state; got {code.shape[0]} bytes")
    if probabilities.ndim == 2:
        n = probabilities.shape[0]
        if length is not None and check_int(length, "length", minimum=1) != n:
            raise ValueError(f"length={length} disagrees with the {n} rows of probabilities")
    else:
        if length is None:
            raise ValueError("length is required when probabilities is one (K,) table for all symbols")
        n = check_int(length, "length", minimum=1)
    name = _coder_backend(backend)
    freq = _tables(probabilities, precision, name)
    out, status = _DECODERS[name](code, freq, n, precision)
    _raise_status(status)
    return out


def _raise_status(status: int) -> None:
    if status == 1:
        raise ValueError("code is truncated: the decoder needed more bytes than the code holds "
                         "(wrong probabilities or length, or a damaged code)")
    if status == 2:
        raise ValueError("code does not decode cleanly: bytes or state were left over "
                         "(wrong probabilities, length or precision, or a damaged code)")


# ------------------------------------------------------------ code lengths
def _gathered(symbols: Any, probabilities: Any) -> np.ndarray:
    _check_probabilities(probabilities)
    n_rows = probabilities.shape[0] if probabilities.ndim == 2 else None
    s = _check_symbols(symbols, probabilities.shape[-1], n_rows)
    p = np.asarray(to_numpy(probabilities.detach() if array_kind(probabilities) == "torch" else probabilities),
                   dtype=np.float64).reshape(-1, probabilities.shape[-1])
    return p[np.arange(len(s)) if p.shape[0] > 1 else np.zeros(len(s), dtype=np.int64), s]


def cross_entropy_bits(symbols: Any, probabilities: Any) -> float:
    """The model's ideal code length ``sum_i -log2 p_i(x_i)`` in bits (``inf`` if a symbol had probability 0).

    Examples
    --------
    >>> import numpy as np
    >>> from companion.compression import cross_entropy_bits
    >>> cross_entropy_bits(np.array([0, 1]), np.array([0.5, 0.5]))
    2.0
    """
    with np.errstate(divide="ignore"):
        return float(-np.log2(_gathered(symbols, probabilities)).sum())


def quantized_code_length_bits(symbols: Any, probabilities: Any, *, precision: int = 16) -> float:
    """``sum_i log2(M / f_i)``: the ideal cost with the quantized frequencies the coder really uses.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.compression import quantized_code_length_bits
    >>> quantized_code_length_bits(np.array([0, 1]), np.array([0.5, 0.5]))
    2.0
    """
    _check_probabilities(probabilities)
    precision = _check_precision(precision, probabilities.shape[-1])
    n_rows = probabilities.shape[0] if probabilities.ndim == 2 else None
    s = _check_symbols(symbols, probabilities.shape[-1], n_rows)
    freq = _tables(probabilities, precision, "numba")
    rows = np.arange(len(s)) if freq.shape[0] > 1 else np.zeros(len(s), dtype=np.int64)
    return float(np.sum(precision - np.log2(freq[rows, s])))


def rans_overhead_bound_bits(n_symbols: int, alphabet_size: int, *, precision: int = 16) -> float:
    """Worst-case bits rANS spends above the model's cross-entropy for ``n_symbols`` symbols.

    Three terms: quantization, ``n log2(M / (M - K))`` (because
    ``f >= p (M - K)``); the coder's integer rounding, ``n log2(1 + 2**(precision - 23))``
    (after renormalization ``x / f >= 2**(23 - precision)``, and one step
    multiplies the state by at most ``(M / f)(1 + f / x)``); and the flush: the
    4 bytes of final state, 32 bits.

    Examples
    --------
    >>> from companion.compression import rans_overhead_bound_bits
    >>> round(rans_overhead_bound_bits(1000, 2), 2)
    43.27
    """
    n = check_int(n_symbols, "n_symbols", minimum=1)
    k = check_int(alphabet_size, "alphabet_size", minimum=1)
    precision = _check_precision(precision, k)
    m = 1 << precision
    return float(n * np.log2(m / (m - k)) if k < m else np.inf) + n * float(np.log2(1 + 2.0 ** (precision - 23))) + 32.0


encode = rans_encode  # the names the course text uses
decode = rans_decode

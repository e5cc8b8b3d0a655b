"""Bit packing: store integer codes of 1 to 8 bits densely in a byte array.

A quantizer that keeps ``b``-bit codes in one byte each wastes ``8 - b`` bits
per element; the memory saving only becomes real once the codes are packed.
Here the codes form one little-endian bit stream: code ``i`` occupies bits
``i * b .. i * b + b - 1`` of the stream, bit ``j`` of the stream is bit
``j % 8`` of byte ``j // 8``. For ``b`` in 1, 2, 4, 8 a code never straddles
two bytes; for 3, 5, 6 and 7 some do. Any 8 consecutive codes fill exactly
``b`` whole bytes, so the kernels work on blocks of 8 codes, in parallel.

Three layers: :func:`pack_bits` / :func:`unpack_bits` validate and dispatch;
``_pack_numpy`` / ``_unpack_numpy`` are the readable references (a bit matrix
through :func:`numpy.packbits`); the numba kernels and the CuPy ``bitpack`` /
``bitunpack`` kernels give one thread (or loop iteration) to each block of 8
codes.
"""

from __future__ import annotations

import functools
from typing import Any

import numba
import numpy as np

from .._validation import check_array, check_int
from ..backend import dispatch, for_backend, to_kind

__all__ = ["pack_bits", "unpack_bits", "packed_nbytes"]


def packed_nbytes(n: int, bits: int) -> int:
    """Bytes needed to pack ``n`` codes of ``bits`` bits: ``ceil(n * bits / 8)``.

    Parameters
    ----------
    n : int
        Number of codes, >= 0.
    bits : int
        Bits per code, 1 to 8.

    Returns
    -------
    int

    Example
    -------
    >>> from companion.kernels import packed_nbytes
    >>> packed_nbytes(10, 3)
    4
    """
    n = check_int(n, "n", minimum=0)
    bits = check_int(bits, "bits", minimum=1, maximum=8)
    return (n * bits + 7) // 8


# --------------------------------------------------------- NumPy reference
def _pack_numpy(codes: np.ndarray, bits: int) -> np.ndarray:
    """Reference: write each code's ``bits`` lowest bits into a bit matrix, then pack it."""
    codes = codes.reshape(-1).astype(np.uint8)
    bit_matrix = (codes[:, None] >> np.arange(bits, dtype=np.uint8)) & 1  # (n, bits), LSB first
    return np.packbits(bit_matrix.reshape(-1), bitorder="little")


def _unpack_numpy(packed: np.ndarray, bits: int, n: int) -> np.ndarray:
    """Reference: unpack the bit stream and weigh each row of ``bits`` bits by powers of two."""
    stream = np.unpackbits(packed, count=n * bits, bitorder="little")
    bit_matrix = stream.reshape(n, bits)  # (n, bits), LSB first
    weights = (1 << np.arange(bits)).astype(np.uint16)
    return (bit_matrix @ weights).astype(np.uint8)


# ------------------------------------------------------------ numba kernels
@numba.njit(cache=True, parallel=True)
def _pack_blocks_numba(codes, bits, out):  # pragma: no cover - jitted
    """Pack ``codes`` (n,) uint8 into ``out`` (ceil(n * bits / 8),): one block of 8 codes per iteration."""
    n = codes.shape[0]
    n_blocks = (n + 7) // 8
    for blk in numba.prange(n_blocks):
        acc = np.uint64(0)  # 8 codes of <= 8 bits fit in 64 bits
        start = blk * 8
        stop = min(start + 8, n)
        for i in range(start, stop):
            acc |= np.uint64(codes[i]) << np.uint64((i - start) * bits)
        first = blk * bits
        n_bytes = min(bits, out.shape[0] - first)
        for j in range(n_bytes):
            out[first + j] = np.uint8((acc >> np.uint64(8 * j)) & np.uint64(0xFF))


@numba.njit(cache=True, parallel=True)
def _unpack_blocks_numba(packed, bits, n, out):  # pragma: no cover - jitted
    """Inverse of :func:`_pack_blocks_numba`: ``out`` (n,) uint8 from the packed bytes."""
    n_blocks = (n + 7) // 8
    mask = np.uint64((1 << bits) - 1)
    for blk in numba.prange(n_blocks):
        first = blk * bits
        n_bytes = min(bits, packed.shape[0] - first)
        acc = np.uint64(0)
        for j in range(n_bytes):
            acc |= np.uint64(packed[first + j]) << np.uint64(8 * j)
        start = blk * 8
        stop = min(start + 8, n)
        for i in range(start, stop):
            out[i] = np.uint8((acc >> np.uint64((i - start) * bits)) & mask)


def _pack_numba(codes: np.ndarray, bits: int) -> np.ndarray:
    flat = np.ascontiguousarray(codes.reshape(-1), dtype=np.uint8)
    out = np.empty((flat.size * bits + 7) // 8, dtype=np.uint8)
    if flat.size:
        _pack_blocks_numba(flat, bits, out)
    return out


def _unpack_numba(packed: np.ndarray, bits: int, n: int) -> np.ndarray:
    out = np.empty(n, dtype=np.uint8)
    if n:
        _unpack_blocks_numba(np.ascontiguousarray(packed), bits, n, out)
    return out


# ------------------------------------------------------------- CuPy kernels
_BITPACK_CUDA = r"""
extern "C" __global__ void bitpack(const unsigned char* __restrict__ codes, const long long n,
                                   const int bits, const long long n_out, unsigned char* __restrict__ out)
{
    const long long n_blocks = (n + 7) / 8;
    for (long long blk = blockIdx.x * (long long)blockDim.x + threadIdx.x; blk < n_blocks;
         blk += (long long)blockDim.x * gridDim.x) {
        unsigned long long acc = 0;
        const long long start = blk * 8;
        const long long stop = start + 8 < n ? start + 8 : n;
        for (long long i = start; i < stop; ++i)
            acc |= ((unsigned long long)codes[i]) << ((i - start) * bits);
        const long long first = blk * bits;
        for (int j = 0; j < bits && first + j < n_out; ++j)
            out[first + j] = (unsigned char)((acc >> (8 * j)) & 0xFFull);
    }
}

extern "C" __global__ void bitunpack(const unsigned char* __restrict__ packed, const long long n_in,
                                     const int bits, const long long n, unsigned char* __restrict__ out)
{
    const long long n_blocks = (n + 7) / 8;
    const unsigned long long mask = (1ull << bits) - 1ull;
    for (long long blk = blockIdx.x * (long long)blockDim.x + threadIdx.x; blk < n_blocks;
         blk += (long long)blockDim.x * gridDim.x) {
        const long long first = blk * bits;
        unsigned long long acc = 0;
        for (int j = 0; j < bits && first + j < n_in; ++j)
            acc |= ((unsigned long long)packed[first + j]) << (8 * j);
        const long long start = blk * 8;
        const long long stop = start + 8 < n ? start + 8 : n;
        for (long long i = start; i < stop; ++i)
            out[i] = (unsigned char)((acc >> ((i - start) * bits)) & mask);
    }
}
"""


@functools.lru_cache(maxsize=None)
def _cupy_kernels():
    import cupy

    module = cupy.RawModule(code=_BITPACK_CUDA)
    return module.get_function("bitpack"), module.get_function("bitunpack")


def _grid(n_blocks: int, threads: int = 256) -> tuple[int, int]:
    return max(1, min((n_blocks + threads - 1) // threads, 1 << 20)), threads


def _pack_cupy(codes, bits: int):
    import cupy

    flat = cupy.ascontiguousarray(codes.reshape(-1), dtype=cupy.uint8)
    out = cupy.zeros((flat.size * bits + 7) // 8, dtype=cupy.uint8)
    if flat.size:
        blocks, threads = _grid((flat.size + 7) // 8)
        _cupy_kernels()[0]((blocks,), (threads,), (flat, np.int64(flat.size), np.int32(bits), np.int64(out.size), out))
    return out


def _unpack_cupy(packed, bits: int, n: int):
    import cupy

    packed = cupy.ascontiguousarray(packed, dtype=cupy.uint8)
    out = cupy.empty(n, dtype=cupy.uint8)
    if n:
        blocks, threads = _grid((n + 7) // 8)
        _cupy_kernels()[1]((blocks,), (threads,), (packed, np.int64(packed.size), np.int32(bits), np.int64(n), out))
    return out


_PACK = {"numpy": _pack_numpy, "numba": _pack_numba, "cupy": _pack_cupy}
_UNPACK = {"numpy": _unpack_numpy, "numba": _unpack_numba, "cupy": _unpack_cupy}


# ----------------------------------------------------------- public entry
def pack_bits(codes: Any, bits: int, *, backend: str | None = None) -> Any:
    """Pack integer codes of ``bits`` bits each into a dense byte array.

    Parameters
    ----------
    codes : array of any shape
        Integer NumPy array, CuPy array or torch tensor with values in
        ``0 .. 2**bits - 1``; read in C order. May be empty.
    bits : int
        Bits per code, 1 to 8.
    backend : {None, "auto", "numpy", "numba", "cupy"}
        Kernel choice (see :mod:`companion.backend`).

    Returns
    -------
    array of shape (ceil(codes.size * bits / 8),), uint8
        Same kind as ``codes``. Unused high bits of the last byte are zero.

    Raises
    ------
    TypeError
        ``codes`` is not an integer array.
    ValueError
        ``bits`` outside 1..8, or a code outside ``0 .. 2**bits - 1``.

    References
    ----------
    The packed layout used by KV-cache quantizers such as the one in
    "KV Cache is 1 Bit Per Channel: Efficient Large Language Model Inference with
    Coupled Quantization" (2024).

    Example
    -------
    >>> import numpy as np
    >>> from companion.kernels import pack_bits, unpack_bits
    >>> codes = np.array([1, 2, 3, 0, 3], dtype=np.uint8)
    >>> packed = pack_bits(codes, 2)
    >>> packed.tolist()
    [57, 3]
    >>> unpack_bits(packed, 2, 5).tolist()
    [1, 2, 3, 0, 3]
    """
    kind = check_array(codes, "codes", dtype_kind="iu", allow_empty=True)
    bits = check_int(bits, "bits", minimum=1, maximum=8)
    name, kernel = dispatch(_PACK, backend, codes)
    if int(np.prod(codes.shape)):
        low, high = int(codes.min()), int(codes.max())
        if low < 0 or high >= (1 << bits):
            raise ValueError(
                f"codes must lie in 0 .. {(1 << bits) - 1} for bits={bits}; got values from {low} to {high}"
            )
    out = kernel(for_backend(codes, name), bits)
    return to_kind(out, kind, like=codes)


def unpack_bits(packed: Any, bits: int, n: int, *, backend: str | None = None) -> Any:
    """Recover ``n`` codes of ``bits`` bits from the bytes written by :func:`pack_bits`.

    Parameters
    ----------
    packed : array of shape (ceil(n * bits / 8),), uint8
        NumPy array, CuPy array or torch tensor.
    bits : int
        Bits per code, 1 to 8 (the value used to pack).
    n : int
        Number of codes, >= 0.
    backend : {None, "auto", "numpy", "numba", "cupy"}
        Kernel choice.

    Returns
    -------
    array of shape (n,), uint8
        Same kind as ``packed``; ``unpack_bits(pack_bits(c, b), b, c.size)``
        equals ``c.reshape(-1)``.

    Raises
    ------
    TypeError
        ``packed`` is not a uint8 array.
    ValueError
        ``bits`` outside 1..8, ``n`` negative, or ``packed`` not 1-D of exactly
        ``ceil(n * bits / 8)`` bytes.

    Example
    -------
    >>> import numpy as np
    >>> from companion.kernels import pack_bits, unpack_bits
    >>> codes = np.arange(8, dtype=np.uint8)
    >>> bool((unpack_bits(pack_bits(codes, 3), 3, 8) == codes).all())
    True
    """
    kind = check_array(packed, "packed", ndim=1, dtype_kind="u", allow_empty=True)
    if str(packed.dtype) not in ("uint8", "torch.uint8"):
        raise TypeError(f"packed must have dtype uint8; got {packed.dtype}")
    bits = check_int(bits, "bits", minimum=1, maximum=8)
    n = check_int(n, "n", minimum=0)
    need = (n * bits + 7) // 8
    if packed.shape[0] != need:
        raise ValueError(
            f"packed must hold ceil(n * bits / 8) = {need} bytes for n={n}, bits={bits}; got {packed.shape[0]}"
        )
    name, kernel = dispatch(_UNPACK, backend, packed)
    out = kernel(for_backend(packed, name), bits, n)
    return to_kind(out, kind, like=packed)

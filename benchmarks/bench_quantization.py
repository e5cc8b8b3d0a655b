"""KV-cache quantization kernels beside the torch code a user would write and two peer libraries
(row C2 of shared/BENCHMARKS.md).

Two kernels on one shared float32 key cache of shape (1, heads, tokens, head_dim),
KIVI's key layout: per channel, groups of 32 tokens, 2 bits, codes bit-packed:

* ``kv_quantize_pack``: per-group min/max, scale and zero, rounding, packing:
  companion NumPy reference, companion numba (one pass over the cache in place:
  per 32-token x 128-channel tile, min/max, float16 scale/zero, codes and packing
  while the tile is in L1), eager torch (``amin``/``amax`` per group, ``round``,
  shifts to pack four 2-bit codes a byte), hqq (``Quantizer.quantize``, nbits=2,
  group_size=32, ``optimize=False``, ``device="cpu"``, bit-packed) and
  optimum-quanto (``MaxOptimizer`` + ``quantize_weight`` with ``qint2``,
  group_size=32, packed). Both peers group *contiguous* runs of elements, so
  they are given the cache transposed to (heads, head_dim, tokens), as a user
  would have to; the transpose copy is inside their timed call.
* ``kv_unpack_dequantize``: the inverse, ``code * scale + zero``: companion NumPy,
  companion numba (fused, into a new array), companion numba with ``out=`` (into a
  preallocated array), eager torch (shift and mask, then a broadcast multiply-add),
  hqq ``Quantizer.dequantize`` and quanto ``WeightQBitsTensor.dequantize``. The
  peers are handed *our* codes, scales and zeros in their own formats (hqq:
  ``zero = -z / s``; quanto: ``shift = -z``), so every row decodes the same codes;
  their output is in the (heads, head_dim, tokens) layout they quantized, and is
  transposed for the check outside the timed call.

KIVI is not pip-installable; faiss is not used for this row.

Correctness. Quantizers may legitimately differ in rounding ties and in how they
store scales (companion rounds float16 scales outward; torch, hqq and quanto keep
float32; hqq multiplies by an inverted scale and adds a float zero-point), so a
quantize row is judged by what it guarantees: every element read back from its
own codes, scales and zeros lies within half a step of the input
(``|x - x_hat| / step <= 0.5`` plus float rounding), i.e. the reconstruction error
measured in each implementation's own step. A dequantize row is compared with a
float64 NumPy dequantization of the same codes.

Sizes are scaled down from BENCHMARKS.md (32 heads x 32,768 tokens x 128) to what
the NumPy reference finishes in a few seconds on a shared 2-core machine.
"""

from __future__ import annotations

import numpy as np

import harness as H

SIZES = {"full": (8, 8192, 128), "tiny": (2, 256, 32)}  # (heads, tokens, head_dim)
BITS = 2
GROUP = 32


def load_quantization():
    """``(compression module, source)`` of the code under test."""
    import companion.compression as C

    return C, "companion.compression.quantization"


class StepRatio:
    """Lazy view for :func:`harness.compare`: ``|x - x_hat| / step`` per element, float64.

    Built inside the timed call, so it holds references only: the float64 work
    happens in ``__array__``, when the harness checks the row.
    """

    def __init__(self, x: np.ndarray, rebuild):
        self.x = x
        self.rebuild = rebuild  # () -> (x_hat, step), both in x's layout

    def __array__(self, dtype=None, copy=None):
        x_hat, step = self.rebuild()
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(step > 0, np.abs(x_hat.astype(np.float64) - self.x.astype(np.float64)) / step, 0.0)
        return out if dtype is None else out.astype(dtype)


class Transposed:
    """Lazy (1, heads, tokens, dim) view of a peer's (heads, dim, tokens) output, made when checked."""

    def __init__(self, t):
        self.t = t

    def __array__(self, dtype=None, copy=None):
        out = self.t.reshape(-1, *self.t.shape[-2:]).transpose(-1, -2).contiguous().numpy()[None]
        return out if dtype is None else out.astype(dtype)


def _ours_view(C, x, q):
    def rebuild():
        steps = np.repeat(q.scales.astype(np.float64), q.group_size, axis=-1)  # (heads*dim, tokens)
        moved = x.shape[:-2] + (x.shape[-1], x.shape[-2])
        return C.dequantize(q, backend="numpy"), np.moveaxis(steps.reshape(moved), -1, -2)

    return StepRatio(x, rebuild)


def _torch_quantize(xt, bits: int, group: int):
    """Eager torch: per-channel groups of ``group`` tokens, float32 scale/zero, codes packed 8/bits a byte."""
    import torch

    _, heads, tokens, dim = xt.shape
    g = xt.reshape(heads, tokens // group, group, dim)  # (heads, groups, group, dim)
    lo = g.amin(dim=2, keepdim=True)
    hi = g.amax(dim=2, keepdim=True)
    scale = (hi - lo) / (2**bits - 1)
    codes = torch.where(scale > 0, torch.round((g - lo) / scale), torch.zeros_like(g))
    codes = codes.clamp_(0, 2**bits - 1).to(torch.uint8).reshape(-1, 8 // bits)  # original layout
    shifts = torch.arange(0, 8, bits, dtype=torch.uint8)
    packed = (codes << shifts).sum(dim=1, dtype=torch.uint8)
    return packed, scale, lo


def _torch_view(K, xt, bits: int, group: int):
    def rebuild():
        packed, scale, lo = _torch_quantize(xt, bits, group)
        _, heads, tokens, dim = xt.shape
        codes = K.unpack_bits(packed.numpy(), bits, xt.numel()).reshape(heads, tokens // group, group, dim)
        x_hat = codes * scale.double().numpy() + lo.double().numpy()
        step = np.broadcast_to(scale.double().numpy(), codes.shape)
        return x_hat.reshape(xt.shape), step.reshape(xt.shape)

    return rebuild


def _torch_dequantize(packed, scale, lo, shape, bits: int, group: int):
    import torch

    _, heads, tokens, dim = shape
    shifts = torch.arange(0, 8, bits, dtype=torch.uint8)
    codes = (packed[:, None] >> shifts) & (2**bits - 1)  # (bytes, 8 // bits)
    codes = codes.reshape(heads, tokens // group, group, dim).to(torch.float32)
    return (codes * scale + lo).reshape(shape)


def _to_cache_layout(t) -> np.ndarray:
    """(heads, dim, tokens) or (heads * dim, tokens) torch -> (1, heads, tokens, dim) float64 NumPy."""
    return t.transpose(-1, -2).contiguous().numpy().astype(np.float64)[None]


def _hqq_quantize(xt):
    """hqq as a user calls it: keys transposed so each group of 32 tokens of a channel is contiguous."""
    from hqq.core.quantize import Quantizer

    k_t = xt[0].transpose(-1, -2).contiguous()  # (heads, dim, tokens)
    return Quantizer.quantize(k_t, nbits=BITS, group_size=GROUP, axis=1, optimize=False, device="cpu")


def _hqq_view(xt, heads: int, dim: int):
    def rebuild():
        from hqq.core.quantize import Quantizer

        w_q, meta = _hqq_quantize(xt)
        x_hat = Quantizer.dequantize(w_q, meta)  # (heads, dim, tokens)
        step = meta["scale"].expand(-1, GROUP).reshape(x_hat.shape)  # 1 / hqq's inverted scale
        return _to_cache_layout(x_hat), _to_cache_layout(step)

    return rebuild


def _quanto_quantize(xt):
    """optimum-quanto as a user calls it: MaxOptimizer (min/max) scale and shift, then quantize_weight."""
    from optimum.quanto import MaxOptimizer, qint2, quantize_weight

    k2 = xt[0].transpose(-1, -2).reshape(-1, xt.shape[2])  # (heads * dim, tokens): a transpose copy
    scale, shift = MaxOptimizer()(k2, qint2, axis=0, group_size=GROUP)
    return quantize_weight(k2, qint2, axis=0, scale=scale, shift=shift, group_size=GROUP, optimized=False), scale


def _quanto_view(xt, heads: int, dim: int):
    def rebuild():
        qt, scale = _quanto_quantize(xt)
        x_hat = qt.dequantize().reshape(heads, dim, -1)
        step = scale.expand(-1, GROUP).reshape(x_hat.shape)
        return _to_cache_layout(x_hat), _to_cache_layout(step)

    return rebuild


def bench_quantize(ctx: H.Context, C, K, source: str) -> list[H.Row]:
    import torch

    heads, tokens, dim = SIZES["tiny" if ctx.tiny else "full"]
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((1, heads, tokens, dim)) * rng.uniform(0.2, 5.0, size=dim)).astype(np.float32)
    xt = torch.from_numpy(x)
    zeros = np.zeros(x.shape)

    def check64(out):
        return H.compare(out, zeros, atol=0.5 + 1e-5, against="half-step bound |x - x_hat| / step <= 0.5")

    def ours(name):
        return lambda: _ours_view(C, x, C.quantize(x, BITS, axis=-2, group_size=GROUP, backend=name))

    torch_rebuild = _torch_view(K, xt, BITS, GROUP)

    def torch_call():
        with torch.inference_mode():
            _torch_quantize(xt, BITS, GROUP)
        return StepRatio(x, torch_rebuild)

    def hqq_call():
        with torch.inference_mode():
            _hqq_quantize(xt)
        return StepRatio(x, _hqq_view(xt, heads, dim))

    def quanto_call():
        with torch.inference_mode():
            _quanto_quantize(xt)
        return StepRatio(x, _quanto_view(xt, heads, dim))

    torch_threads = f"{torch.get_num_threads()} (torch intra-op)"
    compared = "compared: |x - x_hat| / own step <= 0.5 (reconstruction error in the peer's own step)"
    impls = [
        H.Impl("companion numpy", "reference", ours("numpy"), threads="1 (NumPy)", source=source,
               note="moveaxis copy, min/max, float64 rounding, packbits"),
        H.Impl("companion numba", "companion", ours("numba"),
               threads=f"{min(ctx.threads, __import__('numba').get_num_threads())} (numba parallel)", source=source,
               note="one pass in place: per 32x128 tile min/max, outward float16 scale/zero, float32 codes "
                    "(exact float64 division for a tile with a near-tie), packing; finiteness checked in the pass"),
        H.Impl("torch eager (user code)", "peer", torch_call, threads=torch_threads,
               source="torch amin/amax/round + shift packing", note="float32 scales and zeros; " + compared),
        H.Impl("hqq Quantizer.quantize", "peer", hqq_call, threads=torch_threads,
               source="hqq.core.quantize.Quantizer.quantize(nbits=2, group_size=32, axis=1, optimize=False, "
                      "device='cpu')",
               note="input transposed to (heads, dim, tokens) inside the call (hqq groups contiguous elements); "
                    "round(x * inv_scale + zero) with float32 inverted scale and float zero-point, 2bit_u8 packing; "
                    + compared),
        H.Impl("optimum-quanto quantize_weight", "peer", quanto_call, threads=torch_threads,
               source="optimum.quanto MaxOptimizer + quantize_weight(qint2, axis=0, group_size=32, optimized=False)",
               note="input transposed to (heads * dim, tokens) inside the call (quanto groups contiguous elements); "
                    "round((x - min) / scale), float32 scale and shift, packed 2-bit; " + compared),
    ]
    n = x.size
    n_groups = heads * dim * (tokens // GROUP)
    return H.bench_kernel(
        ctx, kernel="kv_quantize_pack",
        params={"heads": heads, "tokens": tokens, "head_dim": dim, "bits": BITS, "group": f"{GROUP} tokens per channel"},
        impls=impls, ours="companion numba", reference="companion numpy", check64=check64,
        peer_tol={"atol": 0.5 + 1e-5, "rtol": 0.0},
        bytes_min=4 * n + n * BITS // 8 + 4 * n_groups, flops_min=4 * n,
    )


def bench_dequantize(ctx: H.Context, C, K, source: str) -> list[H.Row]:
    import torch

    heads, tokens, dim = SIZES["tiny" if ctx.tiny else "full"]
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, heads, tokens, dim)).astype(np.float32)
    q = C.quantize(x, BITS, axis=-2, group_size=GROUP, scale_dtype="float32", backend="numba")
    codes = K.unpack_bits(q.packed, BITS, x.size).reshape(heads, dim, tokens)  # moved layout (heads, dim, tokens)
    want = (codes.reshape(heads * dim, tokens // GROUP, GROUP) * q.scales.astype(np.float64)[..., None]
            + q.zeros.astype(np.float64)[..., None]).reshape(heads, dim, tokens)
    want = np.moveaxis(want, -1, -2)[None]  # (1, heads, tokens, dim)

    # the same codes, scales and zeros in the torch code's layout (heads, groups, group, dim)
    codes_t = torch.from_numpy(np.ascontiguousarray(np.moveaxis(codes, -1, -2)).reshape(-1, 8 // BITS))
    shifts = torch.arange(0, 8, BITS, dtype=torch.uint8)
    packed_t = (codes_t << shifts).sum(dim=1, dtype=torch.uint8)
    scale_t = torch.from_numpy(np.ascontiguousarray(
        np.moveaxis(q.scales.reshape(heads, dim, tokens // GROUP), 1, 2))[:, :, None, :])  # (heads, groups, 1, dim)
    zero_t = torch.from_numpy(np.ascontiguousarray(
        np.moveaxis(q.zeros.reshape(heads, dim, tokens // GROUP), 1, 2))[:, :, None, :])

    def torch_call():
        with torch.inference_mode():
            return _torch_dequantize(packed_t, scale_t, zero_t, x.shape, BITS, GROUP)

    # the same codes, scales and zeros in the peers' formats: (heads * dim * groups, 32) codes, one scale per row
    from hqq.core.quantize import Quantizer
    from optimum.quanto import qint2
    from optimum.quanto.tensor.weights.qbits import WeightQBitsTensor

    codes_g = torch.from_numpy(np.ascontiguousarray(codes).reshape(-1, GROUP))
    s_g = torch.from_numpy(q.scales.reshape(-1, 1).astype(np.float32))
    z_g = torch.from_numpy(q.zeros.reshape(-1, 1).astype(np.float32))
    peer_shape = torch.Size([heads, dim, tokens])
    hqq_packed = Quantizer.pack["2bit_u8"](codes_g)
    hqq_meta = {"nbits": BITS, "group_size": GROUP, "shape": peer_shape, "scale": s_g,
                "zero": torch.where(s_g > 0, -z_g / s_g, torch.zeros_like(z_g)), "axis": 1, "packing": "2bit_u8",
                "unpack_view_dtype": torch.uint8, "view_as_float": False}
    quanto_t = WeightQBitsTensor(qint2, 0, GROUP, torch.Size([heads * dim, tokens]), (tokens, 1), codes_g, s_g, -z_g)
    buffer = np.empty_like(x)  # reused by the out= row
    buffer[...] = 0.0

    def hqq_call():
        with torch.inference_mode():
            return Transposed(Quantizer.dequantize(hqq_packed, hqq_meta))

    def quanto_call():
        with torch.inference_mode():
            return Transposed(quanto_t.dequantize().reshape(peer_shape))

    tol = {"atol": 4e-7 * float(np.abs(want).max()), "rtol": 0.0}
    torch_threads = f"{torch.get_num_threads()} (torch intra-op)"
    peer_layout = ("our codes, scales and zeros in its format; output in its (heads, dim, tokens) layout, "
                   "transposed for the check outside the timed call")
    impls = [
        H.Impl("companion numpy", "reference", lambda: C.dequantize(q, backend="numpy"), threads="1 (NumPy)",
               source=source, note="unpackbits + matrix product, float64 multiply-add, moveaxis copy"),
        H.Impl("companion numba", "companion", lambda: C.dequantize(q, backend="numba"),
               threads=f"{min(ctx.threads, __import__('numba').get_num_threads())} (numba parallel)", source=source,
               note="fused unpack+dequantize in place, tile by tile, into a new array (its page faults included)"),
        H.Impl("companion numba (out=)", "companion", lambda: C.dequantize(q, backend="numba", out=buffer),
               threads=f"{min(ctx.threads, __import__('numba').get_num_threads())} (numba parallel)", source=source,
               note="writes into a preallocated output (no page faults of a fresh 34 MB array)"),
        H.Impl("torch eager (user code)", "peer", torch_call, threads=torch_threads,
               source="torch shift/mask + broadcast multiply-add", note="float32 arithmetic"),
        H.Impl("hqq Quantizer.dequantize", "peer", hqq_call, threads=torch_threads,
               source="hqq.core.quantize.Quantizer.dequantize (2bit_u8 unpack, (code - zero) * scale)",
               note="zero-point -z/s; " + peer_layout),
        H.Impl("optimum-quanto dequantize", "peer", quanto_call, threads=torch_threads,
               source="optimum.quanto WeightQBitsTensor(qint2, group_size=32).dequantize()",
               note="shift -z; " + peer_layout),
    ]
    n = x.size
    return H.bench_kernel(
        ctx, kernel="kv_unpack_dequantize",
        params={"heads": heads, "tokens": tokens, "head_dim": dim, "bits": BITS, "group": f"{GROUP} tokens per channel"},
        impls=impls, ours="companion numba", reference="companion numpy",
        check64=lambda out: H.compare(out, want, against="float64 dequantization of the same codes", **tol),
        peer_tol=tol, bytes_min=n * BITS // 8 + 4 * n + 8 * heads * dim * (tokens // GROUP), flops_min=2 * n,
    )


def run(ctx: H.Context) -> dict:
    """All quantization rows: ``{"rows": [...], "checks": [], "source": ..., "note": ...}``."""
    C, source = load_quantization()
    import companion.kernels as K

    ctx.log(f"quantization kernels from: {source}")
    rows = bench_quantize(ctx, C, K, source)
    rows += bench_dequantize(ctx, C, K, source)
    note = ("peers: hqq and optimum-quanto (2-bit, groups of 32, given the cache transposed to their contiguous-group "
            "layout), torch eager user code; KIVI is not pip-installable")
    return {"rows": rows, "checks": [], "source": source, "note": note}

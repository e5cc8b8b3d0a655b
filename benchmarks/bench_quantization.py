"""KV-cache quantization kernels beside the torch code a user would write (row C2 of shared/BENCHMARKS.md).

Two kernels on one shared float32 key cache of shape (1, heads, tokens, head_dim),
KIVI's key layout: per channel, groups of 32 tokens, 2 bits, codes bit-packed:

* ``kv_quantize_pack``: per-group min/max, scale and zero, rounding, packing:
  companion NumPy reference, companion numba (fused quantize+pack over blocks of 8
  codes), and eager torch (``amin``/``amax`` per group, ``round``, shifts to pack
  four 2-bit codes a byte).
* ``kv_unpack_dequantize``: the inverse, ``code * scale + zero``: companion NumPy,
  companion numba (fused), eager torch (shift and mask, then a broadcast
  multiply-add).

Peers named in BENCHMARKS.md are absent here: ``hqq`` and ``optimum-quanto`` are not
installed, KIVI is not pip-installable, and faiss is not used for this row. Their
rows are left out.

Correctness. Quantizers may legitimately differ in rounding ties and in how they
store scales (companion rounds float16 scales outward; the torch code keeps float32),
so a quantize row is judged by what it guarantees: every element read back from its
own codes, scales and zeros lies within half a step of the input
(``|x - x_hat| / step <= 0.5`` plus float rounding). A dequantize row is compared
with a float64 NumPy dequantization of the same codes.

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
    """Lazy view for :func:`harness.compare`: ``|x - x_hat| / step`` per element, float64."""

    def __init__(self, x: np.ndarray, rebuild):
        self.x = x
        self.rebuild = rebuild  # () -> (x_hat, step), both in x's layout

    def __array__(self, dtype=None, copy=None):
        x_hat, step = self.rebuild()
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(step > 0, np.abs(x_hat.astype(np.float64) - self.x) / step, 0.0)
        return out if dtype is None else out.astype(dtype)


def _ours_view(C, x, q):
    def rebuild():
        steps = np.repeat(q.scales.astype(np.float64), q.group_size, axis=-1)  # (heads*dim, tokens)
        moved = x.shape[:-2] + (x.shape[-1], x.shape[-2])
        return C.dequantize(q, backend="numpy"), np.moveaxis(steps.reshape(moved), -1, -2)

    return StepRatio(x.astype(np.float64), rebuild)


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
        return StepRatio(x.astype(np.float64), torch_rebuild)

    impls = [
        H.Impl("companion numpy", "reference", ours("numpy"), threads="1 (NumPy)", source=source,
               note="moveaxis copy, min/max, float64 rounding, packbits"),
        H.Impl("companion numba", "companion", ours("numba"),
               threads=f"{min(ctx.threads, __import__('numba').get_num_threads())} (numba parallel)", source=source,
               note="moveaxis copy + group min/max kernel + fused quantize+pack kernel; float16 scales"),
        H.Impl("torch eager (user code)", "peer", torch_call, threads=f"{torch.get_num_threads()} (torch intra-op)",
               source="torch amin/amax/round + shift packing", note="float32 scales and zeros"),
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

    tol = {"atol": 4e-7 * float(np.abs(want).max()), "rtol": 0.0}
    impls = [
        H.Impl("companion numpy", "reference", lambda: C.dequantize(q, backend="numpy"), threads="1 (NumPy)",
               source=source, note="unpackbits + matrix product, float64 multiply-add, moveaxis copy"),
        H.Impl("companion numba", "companion", lambda: C.dequantize(q, backend="numba"),
               threads=f"{min(ctx.threads, __import__('numba').get_num_threads())} (numba parallel)", source=source,
               note="fused unpack+dequantize kernel + moveaxis copy"),
        H.Impl("torch eager (user code)", "peer", torch_call, threads=f"{torch.get_num_threads()} (torch intra-op)",
               source="torch shift/mask + broadcast multiply-add", note="float32 arithmetic"),
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
    note = ("peers absent here: hqq and optimum-quanto (not installed), KIVI (not pip-installable); "
            "torch eager user code is timed instead")
    return {"rows": rows, "checks": [], "source": source, "note": note}

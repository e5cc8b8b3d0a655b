"""Attention-pattern kernels of chapter M5 beside their peers.

* ``block_sparse_attention`` on q, k, v of shape (1, 2, 4096, 64) float32, blocks of 64,
  causal, for three masks: all ones (dense), strided (stride ceil(sqrt(64)) = 8 blocks)
  and window + global (window 3, 1 global block). Implementations: companion NumPy
  reference (dense scores, masked), companion numba (visits only the allowed blocks: per
  query block, chunks of up to 512 keys, scores and P V as float32 BLAS products, an online
  softmax with a vectorised exp2 polynomial between them, query blocks shared by the
  benchmark threads),
  and the torch code a user would write: ``scaled_dot_product_attention`` with
  ``is_causal=True`` for the dense mask, with a materialized boolean token mask
  (``attn_mask``) for the sparse ones. SDPA computes every score whatever the mask
  says, so the sparse rows show what skipping blocks buys.
* ``causal_linear_attention`` (elu+1, normalised), (1, 2, 4096, 64): companion NumPy
  (the quadratic form), companion numba (the scan), torch user code (quadratic form
  ``tril(phi(Q) phi(K)^T) V``).
* ``causal_long_conv`` (FFT), u (1, 64, 16384) with a kernel as long as the sequence:
  companion NumPy (``numpy.fft``), companion numba (fast CPU path: ``scipy.fft`` in float32 /
  complex64 with ``workers`` = the benchmark threads), torch user code (``torch.fft.rfft`` /
  ``irfft``).

Every output is checked against a float64 reference before anything is timed.
"""

from __future__ import annotations

import math

import numpy as np

import harness as H

SIZES = {
    "full": {"attn": (1, 2, 4096, 64), "block": 64, "conv": (1, 64, 16384)},
    "tiny": {"attn": (1, 2, 128, 16), "block": 16, "conv": (1, 4, 256)},
}


def load_memory():
    import companion.memory as M

    return M, "companion.memory"


def attention_reference64(q, k, v, allowed) -> np.ndarray:
    """Float64 masked softmax attention from the definition."""
    s = np.einsum("...id,...jd->...ij", q.astype(np.float64), k.astype(np.float64)) / math.sqrt(q.shape[-1])
    s = np.where(allowed, s, -np.inf)
    w = np.exp(s - s.max(axis=-1, keepdims=True))
    return (w / w.sum(axis=-1, keepdims=True)) @ v.astype(np.float64)


def _torch_call(fn):
    import torch

    def call():
        with torch.inference_mode():
            return fn()

    return call


def bench_block_sparse(ctx: H.Context, M, source: str) -> list[H.Row]:
    import torch
    import torch.nn.functional as F

    shape = SIZES["tiny" if ctx.tiny else "full"]["attn"]
    block = SIZES["tiny" if ctx.tiny else "full"]["block"]
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal(shape, dtype=np.float32) for _ in range(3))
    qt, kt, vt = (torch.from_numpy(a) for a in (q, k, v))
    n_blocks = shape[-2] // block
    stride = int(math.ceil(math.sqrt(n_blocks)))
    masks = {
        "dense": M.dense_block_mask(n_blocks),
        "strided": M.strided_block_mask(n_blocks, stride),
        "window+global": M.window_global_block_mask(n_blocks, 3, 1),
    }
    rows: list[H.Row] = []
    heads = shape[0] * shape[1]
    for name, mask in masks.items():
        allowed = M.token_mask(mask, block)  # (n, n) with the causal triangle
        allowed_t = torch.from_numpy(allowed)
        ref = attention_reference64(q, k, v, allowed)
        tol = {"atol": 2e-5, "rtol": 1e-4}

        def check64(out, ref=ref):
            return H.compare(out, ref, against="float64 reference", **tol)

        pairs = int(allowed.sum())
        if name == "dense":
            peer = H.Impl("torch SDPA is_causal (user code)", "peer",
                          _torch_call(lambda: F.scaled_dot_product_attention(qt, kt, vt, is_causal=True)),
                          threads=f"{torch.get_num_threads()} (torch intra-op)", source="torch.nn.functional",
                          note="fused dense causal attention")
        else:
            peer = H.Impl("torch SDPA + token mask (user code)", "peer",
                          _torch_call(lambda a=allowed_t: F.scaled_dot_product_attention(qt, kt, vt, attn_mask=a)),
                          threads=f"{torch.get_num_threads()} (torch intra-op)", source="torch.nn.functional",
                          note="boolean (n, n) mask materialized once; every score is still computed")
        impls = [
            H.Impl("companion numpy", "reference",
                   lambda m=mask: M.block_sparse_attention(q, k, v, m, block_size=block, backend="numpy"),
                   threads="1 (NumPy einsum)", source=source, note="dense scores, masked"),
            H.Impl("companion numba", "companion",
                   lambda m=mask: M.block_sparse_attention(q, k, v, m, block_size=block, backend="numba"),
                   threads=f"{ctx.threads} (Python threads, BLAS 1 thread each)", source=source,
                   note="allowed blocks only; BLAS sgemm + numba online softmax"),
            peer,
        ]
        rows += H.bench_kernel(
            ctx,
            kernel=f"block_sparse_attention[{name}]",
            params={"shape": list(shape), "dtype": "float32", "block_size": block, "causal": True,
                    "blocks_read": int(mask.sum()), "stride": stride if name == "strided" else None},
            impls=impls,
            ours="companion numba",
            reference="companion numpy",
            check64=check64,
            peer_tol=tol,
            bytes_min=4 * 4 * int(np.prod(shape)),  # read q, k, v, write out
            flops_min=4 * shape[-1] * pairs * heads,  # q.k and p*v per allowed pair
        )
    return rows


def bench_linear(ctx: H.Context, M, source: str) -> list[H.Row]:
    import torch

    shape = SIZES["tiny" if ctx.tiny else "full"]["attn"]
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal(shape, dtype=np.float32) for _ in range(3))
    qt, kt, vt = (torch.from_numpy(a) for a in (q, k, v))
    n, d = shape[-2], shape[-1]

    def phi64(x):
        x = x.astype(np.float64)
        return np.where(x > 0, x + 1.0, np.exp(np.minimum(x, 0.0)))

    a = np.einsum("...id,...jd->...ij", phi64(q), phi64(k)) * np.tri(n)
    ref = (a @ v.astype(np.float64)) / (a.sum(-1, keepdims=True) + 1e-6)
    del a
    tol = {"atol": 1e-5, "rtol": 1e-4}

    def torch_quadratic():
        fq, fk = torch.nn.functional.elu(qt) + 1, torch.nn.functional.elu(kt) + 1
        a = torch.tril(fq @ fk.transpose(-1, -2))
        return (a @ vt) / (a.sum(-1, keepdim=True) + 1e-6)

    impls = [
        H.Impl("companion numpy", "reference", lambda: M.causal_linear_attention(q, k, v, backend="numpy"),
               threads="1 (NumPy einsum)", source=source, note="quadratic form"),
        H.Impl("companion numba", "companion", lambda: M.causal_linear_attention(q, k, v, backend="numba"),
               threads=f"{ctx.threads} (numba parallel over heads)", source=source, note="recurrent scan"),
        H.Impl("torch quadratic form (user code)", "peer", _torch_call(torch_quadratic),
               threads=f"{torch.get_num_threads()} (torch intra-op)", source="eager torch"),
    ]
    heads = shape[0] * shape[1]
    return H.bench_kernel(
        ctx,
        kernel="causal_linear_attention[elu+1]",
        params={"shape": list(shape), "dtype": "float32", "feature_map": "elu+1"},
        impls=impls,
        ours="companion numba",
        reference="companion numpy",
        check64=lambda out: H.compare(out, ref, against="float64 reference", **tol),
        peer_tol=tol,
        bytes_min=4 * 4 * int(np.prod(shape)),
        flops_min=4 * heads * n * d * d,  # state update and read, d x dv each per token
    )


def bench_long_conv(ctx: H.Context, M, source: str) -> list[H.Row]:
    import torch

    shape = SIZES["tiny" if ctx.tiny else "full"]["conv"]
    rng = np.random.default_rng(2)
    u = rng.standard_normal(shape, dtype=np.float32)
    kern = (rng.standard_normal(shape[1:], dtype=np.float32) * np.exp(-np.arange(shape[-1]) / 512)).astype(np.float32)
    ut, kt = torch.from_numpy(u), torch.from_numpy(kern)
    n = shape[-1]
    size = 1 << math.ceil(math.log2(2 * n - 1))
    ref = np.fft.irfft(np.fft.rfft(u.astype(np.float64), size) * np.fft.rfft(kern.astype(np.float64), size), size)[..., :n]
    tol = {"atol": 1e-3, "rtol": 1e-4}

    def torch_fft():
        spec = torch.fft.rfft(ut, size) * torch.fft.rfft(kt, size)
        return torch.fft.irfft(spec, size)[..., :n]

    impls = [
        H.Impl("companion numpy", "reference", lambda: M.causal_long_conv(u, kern, backend="numpy"),
               threads="1 (numpy.fft / pocketfft)", source=source),
        H.Impl("companion numba", "companion", lambda: M.causal_long_conv(u, kern, backend="numba"),
               threads=f"{ctx.threads} (scipy.fft workers)", source=source,
               note="scipy.fft (pocketfft) rfft/irfft, complex64"),
        H.Impl("torch.fft (user code)", "peer", _torch_call(torch_fft),
               threads=f"{torch.get_num_threads()} (torch intra-op)", source="torch.fft.rfft/irfft"),
    ]
    channels = shape[0] * shape[1]
    return H.bench_kernel(
        ctx,
        kernel="causal_long_conv[fft]",
        params={"u_shape": list(shape), "kernel_len": n, "dtype": "float32", "fft_size": size},
        impls=impls,
        ours="companion numba",
        reference="companion numpy",
        check64=lambda out: H.compare(out, ref, against="float64 reference", **tol),
        peer_tol=tol,
        bytes_min=4 * (2 * int(np.prod(shape)) + int(np.prod(shape[1:]))),
        flops_min=int(3 * channels * 2.5 * size * math.log2(size)),  # three real FFTs of the padded size
    )


def run(ctx: H.Context) -> dict:
    """All M5 rows: ``{"rows": [...], "checks": [], "source": ...}``."""
    M, source = load_memory()
    ctx.log(f"memory kernels from: {source}")
    rows = bench_block_sparse(ctx, M, source) + bench_linear(ctx, M, source) + bench_long_conv(ctx, M, source)
    return {"rows": rows, "checks": [], "source": source}

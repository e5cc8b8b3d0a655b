"""GPU rows: the companion CuPy kernels beside the torch code a user would write, on one CUDA device.

Run by ``benchmarks/run.py --gpu`` (see ``benchmarks/gpu_check.sh``, the one prepared script a
session with a lent GPU runs). Every row is checked before it is timed: the CuPy output is
compared with the companion NumPy reference computed on host copies of the same input, and
torch's output with ours. Times are medians of CUDA-event intervals after a warm-up.

``--gpu --emulate`` runs the same rows with NumPy arrays, the numba backend and torch on the CPU
at tiny sizes. It only checks the plumbing (that every row builds, is checked and is timed) on a
machine without a GPU; its numbers mean nothing and it never writes to ``benchmarks/results``.

Peers that have no GPU build here (faiss-gpu, kvpress's pipeline) are not rows; torch eager code
is the peer of every kernel.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import numpy as np

import harness as H

SIZES = {
    "full": {
        "rope": (1, 32, 8192, 128),
        "fourier": (262_144, 2, 256),
        "alibi": (1, 16, 4096, 64),
        "hopfield": (65_536, 128, 1024),
        "topk": (1_048_576, 64, 32, (512, 1)),
        "assign": (65_536, 256, 1024),
        "pack": 1 << 28,
        "attn": (1, 16, 8192, 64, 64),
        "linear": (1, 16, 8192, 64),
        "conv": (1, 256, 65_536),
        "kv": (1, 8, 131_072, 128),
    },
    "tiny": {
        "rope": (1, 2, 64, 16),
        "fourier": (256, 2, 8),
        "alibi": (1, 2, 64, 16),
        "hopfield": (512, 16, 32),
        "topk": (4096, 16, 8, (32, 1)),
        "assign": (256, 16, 32),
        "pack": 1 << 12,
        "attn": (1, 2, 256, 16, 32),
        "linear": (1, 2, 128, 16),
        "conv": (1, 4, 256),
        "kv": (1, 2, 256, 16),
    },
}


@dataclasses.dataclass
class Env:
    """Where the rows run: ``xp`` arrays, the companion ``backend`` and torch's ``device``."""

    xp: Any
    backend: str
    torch_device: str
    emulated: bool

    def to_dev(self, a: np.ndarray):
        return self.xp.asarray(a)

    def to_torch(self, a: np.ndarray):
        import torch

        return torch.from_numpy(np.ascontiguousarray(a)).to(self.torch_device)

    @property
    def ours_name(self) -> str:
        return "companion numba (emulation)" if self.emulated else "companion cupy"


def make_env(emulate: bool) -> Env:
    if emulate:
        return Env(np, "numba", "cpu", True)
    import cupy

    if not cupy.cuda.is_available():
        raise RuntimeError("no CUDA device visible to CuPy; use --emulate to check the plumbing")
    return Env(cupy, "cupy", "cuda", False)


def measure_gpu_ceilings(env: Env, *, tiny: bool) -> dict:
    """Device copy bandwidth (bytes read + written) and float32 / bf16 matrix-product rates, measured now."""
    import torch

    dev = "cpu" if env.emulated else "cuda"
    n_copy = (1 << 20) if tiny else (1 << 28)  # 4 MiB or 1 GiB of float32
    src = torch.empty(n_copy, dtype=torch.float32, device=dev).uniform_()
    dst = torch.empty_like(src)
    t = H.time_fn(lambda: dst.copy_(src), repeat=9, warmup=2, device="cpu" if env.emulated else "cuda")
    copy_gbps = 2 * 4 * n_copy / t.median_s / 1e9
    n = 512 if tiny else 8192
    out = {"copy": {"bytes_moved": 8 * n_copy, "median_s": t.median_s, "GBps": copy_gbps}}
    for name, dtype, tf32 in (("sgemm", torch.float32, False), ("bf16_gemm", torch.bfloat16, False)):
        a = torch.randn(n, n, device=dev).to(dtype)
        b = torch.randn(n, n, device=dev).to(dtype)
        if dev == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = tf32
        t = H.time_fn(lambda: a @ b, repeat=7, warmup=2, device="cpu" if env.emulated else "cuda")
        out[name] = {"n": n, "median_s": t.median_s, "GFLOPs": 2 * n**3 / t.median_s / 1e9,
                     "note": "torch matmul, TF32 off" if name == "sgemm" else "torch matmul"}
    return {
        **out,
        "copy_GBps": copy_gbps,
        "copy_1thread_GBps": copy_gbps,
        "copy_fresh_output_GBps": copy_gbps,
        "sgemm_GFLOPs": out["sgemm"]["GFLOPs"],
        "bf16_GFLOPs": out["bf16_gemm"]["GFLOPs"],
        "threads": 1,
        "note": "device copy GB/s counts bytes read + written (torch copy_ on the device); sgemm is a float32 "
        "torch matmul with TF32 off: fraction of ceiling uses these two",
    }


def _row(ctx: H.Context, env: Env, *, kernel: str, params: dict, ours: Callable[[], Any], want: np.ndarray,
         torch_fn: Callable[[], Any] | None, torch_name: str, tol: dict, bytes_min: int, flops_min: int,
         note: str = "") -> list[H.Row]:
    """Check, then time, ``ours`` (companion on the device) and ``torch_fn`` against ``want`` (host reference)."""
    import torch

    def torch_call():
        with torch.inference_mode():
            return torch_fn()

    impls = [H.Impl(env.ours_name, "companion", ours, threads="device", source="companion", note=note)]
    if torch_fn is not None:
        impls.append(H.Impl(torch_name, "peer", torch_call, threads="device", source=f"torch {torch.__version__}"))
    return H.bench_kernel(
        ctx, kernel=kernel, params=params, impls=impls, ours=env.ours_name, reference=None,
        check64=lambda out: H.compare(out, want, against="companion numpy reference on the host", **tol),
        peer_tol=tol, bytes_min=bytes_min, flops_min=flops_min,
    )


def run(ctx: H.Context, env: Env) -> dict:
    import torch
    import torch.nn.functional as F

    import companion.kernels as K
    import companion.memory as M
    import companion.positional as P

    S = SIZES["tiny" if ctx.tiny else "full"]
    rng = np.random.default_rng(0)
    b = env.backend
    rows: list[H.Row] = []

    # --- RoPE (streaming): read x, write the rotated copy
    shape = S["rope"]
    x = rng.standard_normal(shape, dtype=np.float32)
    xd, xt = env.to_dev(x), env.to_torch(x)
    want = P.rope_apply(x, layout="half", backend="numpy")
    buf = env.xp.empty_like(xd)

    def rope_torch():
        d = shape[-1]
        inv = 1.0 / (10000.0 ** (torch.arange(0, d, 2, device=xt.device, dtype=torch.float64) / d))
        ang = torch.arange(shape[-2], device=xt.device, dtype=torch.float64)[:, None] * inv[None]
        cos = torch.cat([ang.cos(), ang.cos()], -1).float()
        sin = torch.cat([ang.sin(), ang.sin()], -1).float()
        x1, x2 = xt[..., : d // 2], xt[..., d // 2:]
        return xt * cos + torch.cat([-x2, x1], -1) * sin

    tol = {"atol": 2e-5, "rtol": 1e-5}
    rows += _row(ctx, env, kernel="rope_apply[half]", params={"shape": list(shape), "dtype": "float32"},
                 ours=lambda: P.rope_apply(xd, layout="half", backend=b), want=want, torch_fn=rope_torch,
                 torch_name="torch rotate-half (user code)", tol=tol, bytes_min=8 * x.size, flops_min=3 * x.size)
    rows += _row(ctx, env, kernel="rope_apply[half, out=]", params={"shape": list(shape), "dtype": "float32"},
                 ours=lambda: P.rope_apply(xd, layout="half", backend=b, out=buf), want=want, torch_fn=None,
                 torch_name="", tol=tol, bytes_min=8 * x.size, flops_min=3 * x.size)
    del x, xd, xt, buf, want

    # --- Fourier features (streaming writes)
    n, dim, f = S["fourier"]
    coords = rng.uniform(-1, 1, (n, dim)).astype(np.float32)
    freqs = (10.0 * rng.standard_normal((f, dim))).astype(np.float32)
    want = P.fourier_features(coords, frequencies=freqs, backend="numpy")
    cd, fd = env.to_dev(coords), env.to_dev(freqs)
    ct, ft = env.to_torch(coords), env.to_torch(freqs)

    def fourier_torch():
        ph = 2 * math.pi * (ct @ ft.T)
        return torch.cat([ph.cos(), ph.sin()], -1)

    rows += _row(ctx, env, kernel=f"fourier_features[F={f}]", params={"coords_shape": [n, dim], "n_frequencies": f},
                 ours=lambda: P.fourier_features(cd, frequencies=fd, backend=b), want=want, torch_fn=fourier_torch,
                 torch_name="torch cos/sin (user code)", tol={"atol": 2e-4, "rtol": 0.0},
                 bytes_min=4 * (coords.size + 2 * n * f), flops_min=2 * n * f * dim)

    # --- ALiBi scores
    shape = S["alibi"]
    q = rng.standard_normal(shape, dtype=np.float32)
    k = rng.standard_normal(shape, dtype=np.float32)
    scale = 1.0 / math.sqrt(shape[-1])
    want = P.alibi_attention_scores(q, k, causal=True, scale=scale, backend="numpy")
    qd, kd, qt, kt = env.to_dev(q), env.to_dev(k), env.to_torch(q), env.to_torch(k)
    slopes_t = env.to_torch(np.asarray(P.alibi_slopes(shape[1]), dtype=np.float32))

    def alibi_torch():
        t = shape[-2]
        pos = torch.arange(t, device=qt.device)
        dist = (pos[:, None] - pos[None, :]).abs().float()
        s = scale * qt @ kt.transpose(-1, -2) - slopes_t[:, None, None] * dist
        return s.masked_fill(pos[None, :] > pos[:, None], float("-inf"))

    nb = shape[0] * shape[1]
    rows += _row(ctx, env, kernel=f"alibi_attention_scores[H={shape[1]}]", params={"q_shape": list(shape)},
                 ours=lambda: P.alibi_attention_scores(qd, kd, causal=True, scale=scale, backend=b), want=want,
                 torch_fn=alibi_torch, torch_name="torch matmul + bias (user code)", tol={"atol": 1e-4, "rtol": 1e-5},
                 bytes_min=4 * (2 * q.size + nb * shape[2] ** 2), flops_min=2 * nb * shape[2] ** 2 * shape[3])
    del want

    # --- Hopfield retrieval, one step
    n, d, nq = S["hopfield"]
    pats = rng.standard_normal((n, d), dtype=np.float32)
    qs = (pats[rng.choice(n, nq, replace=False)] + 0.5 * rng.standard_normal((nq, d), dtype=np.float32))
    beta = 0.25
    want = M.hopfield_retrieve(pats, qs, beta=beta, backend="numpy")
    pd_, qd = env.to_dev(pats), env.to_dev(qs)
    pt, qt = env.to_torch(pats), env.to_torch(qs)
    rows += _row(ctx, env, kernel="hopfield_retrieve[steps=1]", params={"n_patterns": n, "d": d, "n_queries": nq},
                 ours=lambda: M.hopfield_retrieve(pd_, qd, beta=beta, backend=b), want=want,
                 torch_fn=lambda: torch.softmax(beta * qt @ pt.T, -1) @ pt, torch_name="torch softmax matmul (user code)",
                 tol={"atol": 1e-3, "rtol": 1e-4}, bytes_min=4 * (n * d + 2 * nq * d), flops_min=4 * nq * n * d)

    # --- exact top-k inner product (scores as sorted index sets)
    n, d, kk, nqs = S["topk"]
    keys = rng.standard_normal((n, d), dtype=np.float32)
    keys_d, keys_t = env.to_dev(keys), env.to_torch(keys)
    for nq in nqs:
        qs = rng.standard_normal((nq, d), dtype=np.float32)
        q_d, q_t = env.to_dev(qs), env.to_torch(qs)
        want = np.sort(np.asarray(K.topk_inner_product(qs, keys, kk, backend="numpy")[1]), axis=1)

        def ours(q_d=q_d):
            return env.xp.sort(K.topk_inner_product(q_d, keys_d, kk, backend=b)[1], axis=1)

        def peer(q_t=q_t):
            return torch.sort(torch.topk(q_t @ keys_t.T, kk, dim=1).indices, dim=1).values

        rows += _row(ctx, env, kernel=f"topk_inner_product[Q={nq}]", params={"keys": n, "dim": d, "k": kk},
                     ours=ours, want=want, torch_fn=peer, torch_name="torch matmul + topk (user code)",
                     tol={"atol": 0.0, "rtol": 0.0}, bytes_min=4 * (n * d + nq * d), flops_min=2 * nq * n * d,
                     note="index sets sorted for the comparison")

    # --- nearest centroid (VQ assignment)
    n, d, kc = S["assign"]
    xs = rng.standard_normal((n, d), dtype=np.float32)
    cents = rng.standard_normal((kc, d), dtype=np.float32)
    want = np.asarray(K.nearest_centroid(xs, cents, backend="numpy")[0])
    xd_, cd_ = env.to_dev(xs), env.to_dev(cents)
    xt_, ct_ = env.to_torch(xs), env.to_torch(cents)
    rows += _row(ctx, env, kernel="nearest_centroid[VQ]", params={"n": n, "d": d, "K": kc},
                 ours=lambda: K.nearest_centroid(xd_, cd_, backend=b)[0], want=want,
                 torch_fn=lambda: torch.cdist(xt_, ct_).argmin(1), torch_name="torch cdist + argmin (user code)",
                 tol={"atol": 0.0, "rtol": 0.0}, bytes_min=4 * (xs.size + cents.size), flops_min=2 * n * kc * d)

    # --- 2-bit packing and unpacking (streaming)
    n = S["pack"]
    codes = rng.integers(0, 4, n, dtype=np.uint8)
    packed = np.asarray(K.pack_bits(codes, 2, backend="numpy"))
    codes_d, packed_d = env.to_dev(codes), env.to_dev(packed)
    codes_t, packed_t = env.to_torch(codes), env.to_torch(packed)
    shifts = torch.arange(0, 8, 2, dtype=torch.uint8, device=env.torch_device)
    order = _bit_order(K)

    def pack_torch():
        c = codes_t.view(-1, 4)
        sh = shifts if order == "lsb" else shifts.flip(0)
        return (c << sh).sum(dim=1, dtype=torch.uint8)

    def unpack_torch():
        sh = shifts if order == "lsb" else shifts.flip(0)
        return ((packed_t[:, None] >> sh) & 3).reshape(-1)

    rows += _row(ctx, env, kernel="pack_bits[2 bits]", params={"n": n}, ours=lambda: K.pack_bits(codes_d, 2, backend=b),
                 want=packed, torch_fn=pack_torch, torch_name="torch shift + sum (user code)",
                 tol={"atol": 0.0, "rtol": 0.0}, bytes_min=n + n // 4, flops_min=0)
    rows += _row(ctx, env, kernel="unpack_bits[2 bits]", params={"n": n},
                 ours=lambda: K.unpack_bits(packed_d, 2, n, backend=b), want=codes, torch_fn=unpack_torch,
                 torch_name="torch shift + mask (user code)", tol={"atol": 0.0, "rtol": 0.0},
                 bytes_min=n + n // 4, flops_min=0)
    del codes, packed, codes_d, packed_d, codes_t, packed_t

    # --- block-sparse attention: dense causal and window+global
    bsz, h, t, d, block = S["attn"]
    q, k, v = (rng.standard_normal((bsz, h, t, d), dtype=np.float32) for _ in range(3))
    qd, kd, vd = env.to_dev(q), env.to_dev(k), env.to_dev(v)
    qt, kt, vt = env.to_torch(q), env.to_torch(k), env.to_torch(v)
    nbk = t // block
    for name, mask in (("dense", M.dense_block_mask(nbk)), ("window+global", M.window_global_block_mask(nbk, 3, 1))):
        want = M.block_sparse_attention(q, k, v, mask, block_size=block, backend="numpy")
        allowed = env.to_torch(M.token_mask(mask, block))
        if name == "dense":
            peer = (lambda: F.scaled_dot_product_attention(qt, kt, vt, is_causal=True))
            pname = "torch SDPA is_causal (user code)"
        else:
            peer = (lambda a=allowed: F.scaled_dot_product_attention(qt, kt, vt, attn_mask=a))
            pname = "torch SDPA + token mask (user code)"
        pairs = int(M.token_mask(mask, block).sum())
        rows += _row(ctx, env, kernel=f"block_sparse_attention[{name}]",
                     params={"shape": [bsz, h, t, d], "block_size": block, "blocks_read": int(mask.sum())},
                     ours=lambda m=mask: M.block_sparse_attention(qd, kd, vd, m, block_size=block, backend=b),
                     want=want, torch_fn=peer, torch_name=pname, tol={"atol": 5e-5, "rtol": 1e-4},
                     bytes_min=4 * 4 * q.size, flops_min=4 * bsz * h * pairs * d)
    del q, k, v, qd, kd, vd, qt, kt, vt

    # --- causal linear attention
    shape = S["linear"]
    q, k, v = (rng.standard_normal(shape, dtype=np.float32) for _ in range(3))
    want = M.causal_linear_attention(q, k, v, backend="numpy")
    qd, kd, vd = env.to_dev(q), env.to_dev(k), env.to_dev(v)
    qt, kt, vt = env.to_torch(q), env.to_torch(k), env.to_torch(v)

    def linear_torch():
        fq, fk = F.elu(qt) + 1, F.elu(kt) + 1
        a = (fq @ fk.transpose(-1, -2)).tril()
        return (a @ vt) / (a.sum(-1, keepdim=True) + 1e-6)

    rows += _row(ctx, env, kernel="causal_linear_attention[elu+1]", params={"shape": list(shape)},
                 ours=lambda: M.causal_linear_attention(qd, kd, vd, backend=b), want=want, torch_fn=linear_torch,
                 torch_name="torch quadratic form (user code)", tol={"atol": 1e-4, "rtol": 1e-4},
                 bytes_min=16 * q.size, flops_min=4 * q.size * shape[-1])
    del q, k, v

    # --- FFT long convolution
    bsz, ch, length = S["conv"]
    u = rng.standard_normal((bsz, ch, length), dtype=np.float32)
    kern = (rng.standard_normal((ch, length)) * np.exp(-np.arange(length) / (length / 8))).astype(np.float32)
    want = M.causal_long_conv(u, kern, backend="numpy")
    ud, kd = env.to_dev(u), env.to_dev(kern)
    ut, kt = env.to_torch(u), env.to_torch(kern)

    def conv_torch():
        nfft = 2 * length
        y = torch.fft.irfft(torch.fft.rfft(ut, n=nfft) * torch.fft.rfft(kt, n=nfft), n=nfft)
        return y[..., :length]

    rows += _row(ctx, env, kernel="causal_long_conv[fft]", params={"u_shape": [bsz, ch, length]},
                 ours=lambda: M.causal_long_conv(ud, kd, backend=b), want=want, torch_fn=conv_torch,
                 torch_name="torch.fft (user code)", tol={"atol": 2e-3, "rtol": 1e-4},
                 bytes_min=4 * (2 * u.size + kern.size), flops_min=int(3 * 5 * u.size * 2 * math.log2(2 * length)))
    del u

    # --- KV eviction by key norm: score, select, gather
    shape = S["kv"]
    Kk = rng.standard_normal(shape, dtype=np.float32)
    Vv = rng.standard_normal(shape, dtype=np.float32)
    n_keep = shape[-2] // 2
    scores = -np.linalg.norm(Kk, axis=-1)
    want = np.asarray(K.compress_kv(Kk, Vv, scores, n_keep, backend="numpy")[0])
    Kd, Vd = env.to_dev(Kk), env.to_dev(Vv)
    Kt, Vt = env.to_torch(Kk), env.to_torch(Vv)
    compress = K.compress_kv

    def knorm_ours():
        s = -env.xp.linalg.norm(Kd, axis=-1)
        return compress(Kd, Vd, s, n_keep, backend=b)[0]

    def knorm_torch():
        idx = torch.topk(-Kt.norm(dim=-1), n_keep, dim=-1).indices.sort(-1).values
        g = idx[..., None].expand(-1, -1, -1, shape[-1])
        return Kt.gather(-2, g), Vt.gather(-2, g)

    rows += _row(ctx, env, kernel="compress_kv[knorm]", params={"shape": list(shape), "ratio": 0.5},
                 ours=knorm_ours, want=want, torch_fn=lambda: knorm_torch()[0],
                 torch_name="torch topk + gather (kvpress-style user code)", tol={"atol": 0.0, "rtol": 0.0},
                 bytes_min=4 * Kk.size * 3, flops_min=0)
    return {"rows": rows, "checks": [], "source": "companion (CuPy backend)" if not env.emulated else "emulation"}


def _bit_order(K) -> str:
    """Which end of a byte :func:`companion.kernels.pack_bits` fills first (read from the reference)."""
    probe = np.asarray(K.pack_bits(np.array([1, 0, 0, 0], dtype=np.uint8), 2, backend="numpy"))
    return "lsb" if int(probe[0]) == 1 else "msb"

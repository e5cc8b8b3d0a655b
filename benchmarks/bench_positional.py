"""Positional-encoding kernels beside their peers (rows P1 and P2 of shared/BENCHMARKS.md).

P1, ``rope_apply`` on q of shape (1, 32, 8192, 128) float32, in both pair layouts:

* ``half`` (pairs (j, j + dim/2), Llama / transformers rotate-half): companion NumPy
  reference, companion numba, and the torch code a user would write (transformers'
  ``rotate_half`` + ``apply_rotary_pos_emb``, with the cos/sin tables built per call).
* ``interleaved`` (pairs (2j, 2j+1)): companion NumPy, companion numba, and
  rotary-embedding-torch ``RotaryEmbedding(dim).rotate_queries_or_keys`` (its default
  layout; it caches its frequency table across calls, as it does in a model).

P2, causal ALiBi attention scores ``scale * q.k + bias`` (``-inf`` above the diagonal)
at H = 16 and H = 12 (non-power-of-two slopes), T = 2048, d = 64: companion NumPy
(materialized bias), companion numba (bias computed on the fly), torch matmul + a
materialized bias built per call, and x-transformers ``AlibiPositionalBias(H)(T, T)``
+ matmul (the module caches its bias across calls, as in a model; the memory
measurement clears that cache first so the bias build is counted).

Conventions are aligned before anything is timed: rotary-embedding-torch is
compared with our ``layout="interleaved"``, the rotate-half code with ``"half"``;
x-transformers' bias is ``-|i - j| * slope``, equal to our ``slope * (j - i)`` on every
entry the causal mask keeps, and its slopes (``_get_slopes``) are checked equal to
``alibi_slopes``.
"""

from __future__ import annotations

import math

import numpy as np

import harness as H

SIZES = {
    "full": {"rope": (1, 32, 8192, 128), "alibi": [(16, 2048, 64), (12, 2048, 64)]},
    "tiny": {"rope": (1, 2, 64, 32), "alibi": [(16, 64, 16), (12, 48, 16)]},
}
EPS32 = 2.0**-24  # unit roundoff of float32


def load_positional():
    """``(module, source)`` of the kernels under test."""
    import companion.positional as P

    return P, "companion.positional"


def numba_threads(P, kernel_path: str, n: int) -> str:
    """How many threads a companion numba kernel uses: ``n`` if compiled with
    ``parallel=True``, else 1 (read from the dispatcher's options)."""
    obj = P
    try:
        for part in kernel_path.split("."):
            obj = getattr(obj, part)
        parallel = bool(obj.targetoptions.get("parallel"))
    except AttributeError:
        return f"{n} (numba; kernel options unknown)"
    return f"{n} (numba parallel)" if parallel else "1 (numba kernel is serial)"


# ---------------------------------------------------------------- references


def rope_reference64(x: np.ndarray, layout: str, base: float = 10000.0) -> np.ndarray:
    """Float64 RoPE written from the definition, positions 0..seq-1."""
    x = x.astype(np.float64)
    seq, dim = x.shape[-2], x.shape[-1]
    half = dim // 2
    inv = base ** (-np.arange(half, dtype=np.float64) * 2.0 / dim)
    ang = np.arange(seq, dtype=np.float64)[:, None] * inv[None, :]
    c, s = np.cos(ang), np.sin(ang)
    out = np.empty_like(x)
    if layout == "half":
        a, b = x[..., :half], x[..., half:]
        out[..., :half] = a * c - b * s
        out[..., half:] = b * c + a * s
    else:
        a, b = x[..., 0::2], x[..., 1::2]
        out[..., 0::2] = a * c - b * s
        out[..., 1::2] = b * c + a * s
    return out


def torch_rope_half(x, base: float = 10000.0):
    """The torch code a user would write: transformers' Llama rotary embedding, eager."""
    import torch

    seq, dim = x.shape[-2], x.shape[-1]
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    t = torch.arange(seq, dtype=torch.float32)
    freqs = torch.outer(t, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()

    def rotate_half(v):
        v1, v2 = v[..., : dim // 2], v[..., dim // 2 :]
        return torch.cat((-v2, v1), dim=-1)

    return (x * cos) + (rotate_half(x) * sin)


def alibi_reference64_head(q, k, slope: float, scale: float) -> np.ndarray:
    """Float64 causal ALiBi scores of one (batch, head): scale q.k + slope (j - i), -inf above."""
    tq, tk = q.shape[0], k.shape[0]
    s = scale * (q.astype(np.float64) @ k.astype(np.float64).T)
    i = np.arange(tk - tq, tk)[:, None]
    j = np.arange(tk)[None, :]
    s += slope * (j - i)
    s[j > i] = -np.inf
    return s


def torch_alibi_scores(q, k, slopes, scale: float):
    """The torch code a user would write: materialized bias + matmul + causal mask."""
    import torch

    tq, tk = q.shape[-2], k.shape[-2]
    i = torch.arange(tk - tq, tk).view(-1, 1)
    j = torch.arange(tk).view(1, -1)
    bias = slopes.view(-1, 1, 1) * (j - i).to(torch.float32)
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale + bias
    mask = torch.ones(tq, tk, dtype=torch.bool).triu(tk - tq + 1)
    return scores.masked_fill(mask, float("-inf"))


def xtransformers_alibi_scores(module, q, k, scale: float):
    """x-transformers' AlibiPositionalBias (cached by the module) + matmul + causal mask."""
    import torch

    tq, tk = q.shape[-2], k.shape[-2]
    bias = module(tq, tk)
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale + bias
    mask = torch.ones(tq, tk, dtype=torch.bool).triu(tk - tq + 1)
    return scores.masked_fill(mask, float("-inf"))


# ------------------------------------------------------------------- benches


def _torch_call(fn):
    import torch

    def call():
        with torch.inference_mode():
            return fn()

    return call


def bench_rope(ctx: H.Context, P, source: str) -> list[H.Row]:
    import torch
    from rotary_embedding_torch import RotaryEmbedding

    shape = SIZES["tiny" if ctx.tiny else "full"]["rope"]
    seq, dim = shape[-2], shape[-1]
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    xt = torch.from_numpy(x)
    n = ctx.threads
    amax = float(np.abs(x).max())
    # Peers build their angles pos * inv_freq in float32: an angle error of a few ulps
    # of seq, i.e. ~ seq * 2^-23 rad, times the pair's norm (<= sqrt(2) max|x|).
    atol = 8 * EPS32 * seq * math.sqrt(2) * amax + 16 * EPS32 * amax
    tol = {"atol": atol, "rtol": 0.0}
    rot = RotaryEmbedding(dim)
    numel = int(np.prod(shape))
    rows: list[H.Row] = []
    buffer = np.empty_like(x)  # reused by the out= row
    for layout in ("half", "interleaved"):
        ref = rope_reference64(x, layout)

        def check64(out, ref=ref):
            return H.compare(out, ref, against="float64 reference", **tol)

        impls = [
            H.Impl(
                "companion numpy",
                "reference",
                lambda layout=layout: P.rope_apply(x, layout=layout, backend="numpy"),
                threads="1 (NumPy elementwise)",
                convention=layout,
                source=source,
            ),
            H.Impl(
                "companion numba",
                "companion",
                lambda layout=layout: P.rope_apply(x, layout=layout, backend="numba"),
                threads=numba_threads(P, "rope._rope_rows_numba", n),
                convention=layout,
                source=source,
            ),
            H.Impl(
                "companion numba (out=)",
                "companion",
                lambda layout=layout: P.rope_apply(x, layout=layout, backend="numba", out=buffer),
                threads=numba_threads(P, "rope._rope_rows_numba", n),
                convention=layout,
                source=source,
                note="writes into a preallocated output (no page faults of a fresh 134 MB array)",
            ),
        ]
        if layout == "half":
            impls.append(
                H.Impl(
                    "torch rotate-half (user code)",
                    "peer",
                    _torch_call(lambda: torch_rope_half(xt)),
                    threads=f"{torch.get_num_threads()} (torch intra-op)",
                    convention="half",
                    source="transformers-style rotate_half, eager torch",
                    note="cos/sin tables built per call",
                )
            )
        else:
            impls.append(
                H.Impl(
                    "rotary-embedding-torch",
                    "peer",
                    _torch_call(lambda: rot.rotate_queries_or_keys(xt)),
                    threads=f"{torch.get_num_threads()} (torch intra-op)",
                    convention="interleaved",
                    source="rotary_embedding_torch.RotaryEmbedding(dim).rotate_queries_or_keys",
                    note="frequency table cached by the module across calls",
                )
            )
        rows += H.bench_kernel(
            ctx,
            kernel=f"rope_apply[{layout}]",
            params={"shape": list(shape), "dtype": "float32", "layout": layout, "base": 10000.0, "offset": 0},
            impls=impls,
            ours="companion numba",
            reference="companion numpy",
            check64=check64,
            peer_tol=tol,
            bytes_min=2 * 4 * numel,  # read x, write out; the (seq, dim/2) tables are small
            flops_min=3 * numel,  # a*c - b*s per output element
        )
        del ref
    return rows


def bench_alibi(ctx: H.Context, P, source: str) -> tuple[list[H.Row], list[dict]]:
    import torch
    from x_transformers.x_transformers import AlibiPositionalBias

    rows: list[H.Row] = []
    checks: list[dict] = []
    n = ctx.threads
    for heads, T, d in SIZES["tiny" if ctx.tiny else "full"]["alibi"]:
        rng = np.random.default_rng(heads)
        q = rng.standard_normal((1, heads, T, d), dtype=np.float32)
        k = rng.standard_normal((1, heads, T, d), dtype=np.float32)
        qt, kt = torch.from_numpy(q), torch.from_numpy(k)
        scale = 1.0 / math.sqrt(d)

        ours_slopes = np.asarray(P.alibi_slopes(heads), dtype=np.float64)
        xt_slopes = np.asarray(AlibiPositionalBias._get_slopes(heads), dtype=np.float64)
        slope_diff = float(np.abs(ours_slopes - xt_slopes).max())
        checks.append(
            {
                "name": f"alibi_slopes({heads}) == x_transformers AlibiPositionalBias._get_slopes({heads})",
                "ok": bool(ours_slopes.shape == xt_slopes.shape and slope_diff <= 1e-12),
                "max_abs_diff": slope_diff,
            }
        )
        bias_mod = AlibiPositionalBias(heads=heads)
        slopes_t = torch.tensor(ours_slopes, dtype=torch.float32)

        amax_q, amax_k = float(np.abs(q).max()), float(np.abs(k).max())
        magnitude = float(ours_slopes.max()) * T + scale * d * amax_q * amax_k
        tol = {"atol": 16 * EPS32 * magnitude, "rtol": 0.0}

        def check64(out, q=q, k=k, slopes=ours_slopes, scale=scale, tol=tol):
            o = H._as_numpy(out)
            parts = [
                H.compare(o[0, h], alibi_reference64_head(q[0, h], k[0, h], float(slopes[h]), scale), **tol)
                for h in range(q.shape[1])
            ]
            return H.merge_checks(parts, "float64 reference")

        bias_bytes = heads * T * T * 4
        impls = [
            H.Impl(
                "companion numpy",
                "reference",
                lambda q=q, k=k, scale=scale: P.alibi_attention_scores(q, k, causal=True, scale=scale, backend="numpy"),
                threads=f"{n} (BLAS matmul), 1 (NumPy elementwise)",
                convention="-slope*|i-j| (= slope*(j-i) where causal keeps), -inf above diagonal",
                source=source,
                note="bias materialized",
                bias_bytes=bias_bytes,
            ),
            H.Impl(
                "companion numba",
                "companion",
                lambda q=q, k=k, scale=scale: P.alibi_attention_scores(q, k, causal=True, scale=scale, backend="numba"),
                threads=numba_threads(P, "alibi._alibi_scores_kernel", n),
                convention="-slope*|i-j| (= slope*(j-i) where causal keeps), -inf above diagonal",
                source=source,
                note="bias computed on the fly",
                bias_bytes=0,
            ),
            H.Impl(
                "torch matmul + bias (user code)",
                "peer",
                _torch_call(lambda qt=qt, kt=kt, s=slopes_t, scale=scale: torch_alibi_scores(qt, kt, s, scale)),
                threads=f"{torch.get_num_threads()} (torch intra-op)",
                convention="slope*(j-i), masked_fill -inf",
                source="eager torch",
                note="bias materialized per call",
                bias_bytes=bias_bytes,
            ),
            H.Impl(
                "x-transformers",
                "peer",
                _torch_call(lambda m=bias_mod, qt=qt, kt=kt, scale=scale: xtransformers_alibi_scores(m, qt, kt, scale)),
                threads=f"{torch.get_num_threads()} (torch intra-op)",
                convention="-|i-j|*slope (= slope*(j-i) where causal keeps), masked_fill -inf",
                source="x_transformers.AlibiPositionalBias(heads)(T, T) + matmul",
                note="bias materialized once and cached by the module (held between calls); "
                "memory measured with the cache cleared",
                bias_bytes=bias_bytes,
                before_memory=lambda m=bias_mod: setattr(m, "bias", None),
            ),
        ]
        rows += H.bench_kernel(
            ctx,
            kernel=f"alibi_attention_scores[H={heads}]",
            params={"q_shape": [1, heads, T, d], "k_shape": [1, heads, T, d], "dtype": "float32", "causal": True,
                    "scale": scale},
            impls=impls,
            ours="companion numba",
            reference="companion numpy",
            check64=check64,
            peer_tol=tol,
            # read q and k, write the dense (H, T, T) scores; only the causal triangle needs FLOPs
            bytes_min=4 * (2 * heads * T * d + heads * T * T),
            flops_min=2 * d * heads * T * (T + 1) // 2,
            measure_memory=True,
        )
        bias_mod.bias = None
        del bias_mod
    return rows, checks


def run(ctx: H.Context) -> dict:
    """All positional rows and checks: ``{"rows": [...], "checks": [...], "source": ...}``."""
    P, source = load_positional()
    ctx.log(f"positional kernels from: {source}")
    rows = bench_rope(ctx, P, source)
    alibi_rows, checks = bench_alibi(ctx, P, source)
    return {"rows": rows + alibi_rows, "checks": checks, "source": source}

"""Outer-product associative memory kernels beside the torch code a user would write (chapter M1).

Two loops of ``companion.memory.AssociativeMemory`` that are not plain BLAS calls:

* ``associative_read[argmax]``: the best of ``M = 64`` class rows for each of ``N``
  queries, ``argmax_c q . C[c]`` (the read of a memory, ``C = U W``). Companion NumPy
  (one (N, M) score matrix, then ``argmax``), companion numba (tiles of 1,024 queries
  scored by NumPy's BLAS and reduced by a vectorised numba argmax, tiles shared by
  Python threads with the BLAS on one thread, so one tile of scores per thread), and torch
  ``(q @ C.T).argmax(1)``. Inputs are tie-free: each query is a noisy copy of one
  class row, so every implementation must return exactly the float64 answer.
  Cost: ``2 N d M`` = 8.6 GFLOP against 268 MB of queries read once, so the
  roofline floor is the product (about 28 ms at 308 GFLOP/s), not the read (about
  12 ms at 23 GB/s).
* ``associative_write[class sums]``: ``A[c] = sum_{i: y_i = c} w_i k_i``, the
  scatter-add that turns a write of ``N`` keys with class-embedding values into one
  small matrix product. Companion NumPy (``np.add.at``), companion numba (a serial
  loop over keys), and torch ``index_add_``.

Full sizes: N = 65,536 queries or keys of width d = 1,024 (256 MB float32); tiny: N = 256, d = 32.
"""

from __future__ import annotations

import numpy as np

import harness as H

SIZES = {"full": {"n": 65_536, "d": 1024, "m": 64}, "tiny": {"n": 256, "d": 32, "m": 64}}
EPS32 = 2.0**-24


def load_memory():
    from companion.memory import _m1_kernels as K

    return K, "companion.memory._m1_kernels"


def _numba_threads(fn) -> str:
    parallel = bool(getattr(fn, "targetoptions", {}).get("parallel"))
    return "n (numba parallel)" if parallel else "1 (numba kernel is serial; BLAS inside uses its pool)"


def _tile_threads() -> str:
    import numba

    workers = numba.get_num_threads()
    return (f"{workers} (Python threads over query tiles, each: NumPy BLAS pinned to 1 thread + nogil numba argmax)"
            if workers > 1 else "1 (numba kernel and BLAS in the calling thread)")


def bench_read(ctx: H.Context, K, source: str) -> list[H.Row]:
    import torch

    size = SIZES["tiny" if ctx.tiny else "full"]
    n, d, m = size["n"], size["d"], size["m"]
    rng = np.random.default_rng(0)
    classes = (rng.standard_normal((m, d)) / np.sqrt(d)).astype(np.float32)  # (M, d)
    labels = rng.integers(0, m, size=n)
    queries = (classes[labels] + 0.3 * rng.standard_normal((n, d)) / np.sqrt(d)).astype(np.float32)  # (N, d)
    ref = (queries.astype(np.float64) @ classes.astype(np.float64).T).argmax(1)
    qt, ct = torch.from_numpy(queries), torch.from_numpy(classes)

    def check64(out):
        return H.compare(out, ref, atol=0.0, against="float64 argmax")

    impls = [
        H.Impl("companion numpy", "reference", lambda: K.argmax_read_numpy(queries, classes),
               threads="BLAS pool (NumPy matmul)", source=source, note="materialises the (N, M) scores"),
        H.Impl("companion numba", "companion", lambda: K.argmax_read_numba(queries, classes),
               threads=_tile_threads(), source=source,
               note="query tiles: scores by NumPy's BLAS, argmax in the numba kernel"),
        H.Impl("torch matmul + argmax (user code)", "peer", lambda: (qt @ ct.T).argmax(1),
               threads=f"{torch.get_num_threads()} (torch intra-op)", source="torch eager"),
    ]
    return H.bench_kernel(
        ctx, kernel="associative_read[argmax]", params={"n_queries": n, "d": d, "n_classes": m, "dtype": "float32"},
        impls=impls, ours="companion numba", reference="companion numpy", check64=check64,
        peer_tol={"atol": 0.0, "rtol": 0.0},
        bytes_min=4 * n * d + 4 * m * d + 8 * n, flops_min=2 * n * d * m,
    )


def bench_write(ctx: H.Context, K, source: str) -> list[H.Row]:
    import torch

    size = SIZES["tiny" if ctx.tiny else "full"]
    n, d, m = size["n"], size["d"], size["m"]
    rng = np.random.default_rng(1)
    keys = (rng.standard_normal((n, d)) / np.sqrt(d)).astype(np.float32)
    labels = rng.integers(0, m, size=n)
    weights = rng.random(n).astype(np.float32)
    ref = np.zeros((m, d))
    np.add.at(ref, labels, keys.astype(np.float64) * weights[:, None])
    # float32 sums of about n/m terms of size ~1/sqrt(d): a few ulps per term
    atol = 8 * EPS32 * (n / m) * float(np.abs(keys).max()) + 1e-7
    kt, lt, wt = torch.from_numpy(keys), torch.from_numpy(labels), torch.from_numpy(weights)

    def check64(out):
        return H.compare(out, ref, atol=atol, against="float64 scatter-add")

    impls = [
        H.Impl("companion numpy", "reference", lambda: K.class_sums_numpy(keys, labels, weights, m),
               threads="1 (np.add.at)", source=source),
        H.Impl("companion numba", "companion", lambda: K.class_sums_numba(keys, labels, weights, m),
               threads=_numba_threads(K._class_sums_kernel), source=source),
        H.Impl("torch index_add_ (user code)", "peer",
               lambda: torch.zeros(m, d).index_add_(0, lt, kt * wt[:, None]),
               threads=f"{torch.get_num_threads()} (torch intra-op)", source="torch eager"),
    ]
    return H.bench_kernel(
        ctx, kernel="associative_write[class sums]", params={"n_keys": n, "d": d, "n_classes": m, "dtype": "float32"},
        impls=impls, ours="companion numba", reference="companion numpy", check64=check64,
        peer_tol={"atol": 2 * atol, "rtol": 0.0},
        bytes_min=4 * n * d + 12 * n + 4 * m * d, flops_min=2 * n * d,
    )


def run(ctx: H.Context) -> dict:
    """All associative-memory rows: ``{"rows": [...], "checks": [], "source": ...}``."""
    K, source = load_memory()
    ctx.log(f"associative-memory kernels from: {source}")
    return {"rows": bench_read(ctx, K, source) + bench_write(ctx, K, source), "checks": [], "source": source}

"""Modern Hopfield retrieval beside its peers (row M1 of shared/BENCHMARKS.md).

``hopfield_retrieve(X, queries, beta=beta, steps=k)``: ``xi <- X^T softmax(beta X xi)``
for Q = 1,024 queries over N = 65,536 stored patterns of d = 128, float32, with
1 and 3 update steps:

* companion NumPy reference (materialises the (Q, N) score matrix, BLAS products);
* companion numba (blocked streaming softmax: per tile of 256 queries and block of
  1,024 patterns, two NumPy BLAS products and one numba kernel with a vectorised
  polynomial ``exp``; tiles shared by Python threads with the BLAS on one thread;
  memory does not grow with N);
* ``torch.nn.functional.scaled_dot_product_attention(xi, X, X, scale=beta)``, the
  peer: attention with keys = values = patterns is the same update;
* the torch code a user would write: ``softmax(beta * xi @ X.T) @ X``.

``hopfield-layers`` (the paper's own package) is not on the package index, so it is
not a row. The float64 check runs the reference on float64 copies, a few queries
at a time so its score matrix stays small. FLOPs: two products of ``2 Q N d`` per step.
"""

from __future__ import annotations

import numpy as np

import harness as H

SIZES = {
    "full": {"n": 65536, "d": 128, "q": 1024},
    "tiny": {"n": 512, "d": 16, "q": 32},
}
BETA = 0.25  # patterns ~ N(0, 1): typical scores |beta x.xi| of a few units, a softmax that neither ties nor saturates
EPS32 = 2.0**-24


def load_memory():
    """``(module, source)`` of the kernels under test."""
    import companion.memory as M

    return M, "companion.memory"


def numba_threads(n: int) -> str:
    import numba

    workers = numba.get_num_threads()
    return (f"{workers} (Python threads over query tiles, each: NumPy BLAS pinned to 1 thread + nogil numba kernel)"
            if workers > 1 else "1 (numba kernel and BLAS in the calling thread)")


def reference64(x: np.ndarray, q: np.ndarray, beta: float, steps: int, chunk: int = 64) -> np.ndarray:
    """Float64 update written from the definition, ``chunk`` queries at a time."""
    x64 = x.astype(np.float64)
    out = np.empty(q.shape, dtype=np.float64)
    for lo in range(0, q.shape[0], chunk):
        state = q[lo:lo + chunk].astype(np.float64)
        for _ in range(steps):
            s = beta * state @ x64.T
            w = np.exp(s - s.max(axis=1, keepdims=True))
            state = (w / w.sum(axis=1, keepdims=True)) @ x64
        out[lo:lo + chunk] = state
    return out


def _torch_call(fn):
    import torch

    def call():
        with torch.inference_mode():
            return fn()

    return call


def run(ctx: H.Context) -> dict:
    import torch
    import torch.nn.functional as F

    M, source = load_memory()
    size = SIZES["tiny" if ctx.tiny else "full"]
    n, d, nq = size["n"], size["d"], size["q"]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d), dtype=np.float32)
    q = (x[rng.choice(n, nq, replace=False)] + 0.5 * rng.standard_normal((nq, d), dtype=np.float32)).astype(np.float32)
    xt, qt = torch.from_numpy(x), torch.from_numpy(q)
    threads = ctx.threads
    rows: list[H.Row] = []
    for steps in (1, 3):
        ref = reference64(x, q, BETA, steps)
        # float32 products over d terms and sums over N weights: errors of a few ulps of |x| max, grown per step
        tol = {"atol": 64 * steps * EPS32 * float(np.abs(x).max()) * np.sqrt(d), "rtol": 1e-4}

        def check64(out, ref=ref, tol=tol):
            return H.compare(out, ref, against="float64 reference", **tol)

        def sdpa(steps=steps):
            state = qt[None]
            for _ in range(steps):
                state = F.scaled_dot_product_attention(state, xt[None], xt[None], scale=BETA)
            return state[0]

        def user(steps=steps):
            state = qt
            for _ in range(steps):
                state = torch.softmax(BETA * state @ xt.T, dim=-1) @ xt
            return state

        impls = [
            H.Impl("companion numpy", "reference",
                   lambda steps=steps: M.hopfield_retrieve(x, q, beta=BETA, steps=steps, backend="numpy"),
                   threads=f"{threads} (BLAS matmul), 1 (NumPy elementwise)", convention="rows are patterns/queries",
                   source=source, note="materialises the (Q, N) scores"),
            H.Impl("companion numba", "companion",
                   lambda steps=steps: M.hopfield_retrieve(x, q, beta=BETA, steps=steps, backend="numba"),
                   threads=numba_threads(threads), convention="rows are patterns/queries", source=source,
                   note="blocked streaming softmax: 256 queries x 1,024 patterns of scores at a time (1 MB)"),
            H.Impl("torch scaled_dot_product_attention", "peer", _torch_call(sdpa),
                   threads=f"{torch.get_num_threads()} (torch intra-op)", convention="q=xi, k=v=X, scale=beta",
                   source="torch.nn.functional.scaled_dot_product_attention"),
            H.Impl("torch softmax matmul (user code)", "peer", _torch_call(user),
                   threads=f"{torch.get_num_threads()} (torch intra-op)", convention="softmax(beta xi X^T) X",
                   source="eager torch"),
        ]
        rows += H.bench_kernel(
            ctx,
            kernel=f"hopfield_retrieve[steps={steps}]",
            params={"n_patterns": n, "d": d, "n_queries": nq, "dtype": "float32", "beta": BETA, "steps": steps},
            impls=impls,
            ours="companion numba",
            reference="companion numpy",
            check64=check64,
            peer_tol=tol,
            bytes_min=4 * (n * d + 2 * nq * d),  # read X and the queries once, write the states
            flops_min=steps * 4 * nq * n * d,
        )
    return {"rows": rows, "checks": [], "source": source}

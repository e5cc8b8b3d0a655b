"""Exact top-k inner-product search beside its peers (row M2 of shared/BENCHMARKS.md).

M = 262,144 keys x d = 64 float32, k = 32, inner product, for a chunk of Q = 512
queries and for one decoding query (Q = 1):

* companion NumPy reference (BLAS block scores + ``argpartition``);
* companion numba (the default: for Q = 512 BLAS block scores merged by the parallel numba
  kernel, for Q = 1 the BLAS-free kernel below);
* companion numba BLAS-free (dot products and selection in one numba pass, parallel over
  ranges of keys, software prefetch; no score block);
* ``torch.topk(q @ K.T, 32)``, the code a user would write;
* faiss ``IndexFlatIP(d)`` (exact inner-product search; the index is built once,
  outside the timing, as a datastore would be).

Every output is the
(Q, k) index array sorted along each row, i.e. each query's id *set*; it must equal the
float64 reference's set exactly (exact search on tie-free data: recall@32 = 1). Sets, not
ranked lists, because float32 rounding may swap two neighbours whose scores differ by ~1e-6.
"""

from __future__ import annotations

import numpy as np

import harness as H

SIZES = {
    "full": {"keys": 262_144, "dim": 64, "k": 32, "queries": [512, 1]},
    "tiny": {"keys": 4_096, "dim": 16, "k": 8, "queries": [32, 1]},
}


def load_topk():
    """``(module, source)`` of the kernel under test."""
    import companion.kernels.topk as T

    return T, "companion.kernels.topk"


def _thread_note(T, n: int, n_queries: int) -> str:
    if n_queries <= getattr(T, "_DIRECT_MAX_QUERIES", 0):
        return f"{n} (numba parallel over key ranges, BLAS-free)"
    parallel = bool(T._merge_block_numba.targetoptions.get("parallel"))
    return f"{n} (numba parallel merge + BLAS)" if parallel else f"{n} (BLAS), merge serial"


def run(ctx: H.Context) -> dict:
    import torch

    T, source = load_topk()
    ctx.log(f"top-k kernels from: {source}")
    size = SIZES["tiny" if ctx.tiny else "full"]
    n_keys, dim, k = size["keys"], size["dim"], size["k"]
    rng = np.random.default_rng(0)
    keys = rng.standard_normal((n_keys, dim), dtype=np.float32)
    keys_t = torch.from_numpy(keys)
    n = ctx.threads
    rows: list[H.Row] = []
    for n_queries in size["queries"]:
        queries = rng.standard_normal((n_queries, dim), dtype=np.float32)
        queries_t = torch.from_numpy(queries)
        scores64 = queries.astype(np.float64) @ keys.astype(np.float64).T  # (Q, M)
        ref_sets = np.sort(np.argpartition(-scores64, k - 1, axis=1)[:, :k], axis=1)
        del scores64

        def check64(out, ref_sets=ref_sets):
            return H.compare(out, ref_sets, atol=0.0, against="float64 reference (id sets)")

        impls = [
            H.Impl("companion numpy", "reference",
                   lambda q=queries: T.topk_inner_product(q, keys, k, backend="numpy")[1],
                   threads=f"{n} (BLAS)", convention="inner product, exact", source=source),
            H.Impl("companion numba", "companion",
                   lambda q=queries: T.topk_inner_product(q, keys, k, backend="numba")[1],
                   threads=_thread_note(T, n, n_queries), convention="inner product, exact", source=source),
            H.Impl("companion numba BLAS-free", "companion",
                   lambda q=queries: T._topk_numba_direct(q, keys, k, 0)[1],
                   threads=f"{n} (numba parallel over key ranges)", convention="inner product, exact",
                   source=source + "._topk_numba_direct", note="no score block; dot products in numba"),
            H.Impl("torch matmul + topk (user code)", "peer",
                   lambda q=queries_t: torch.topk(q @ keys_t.T, k, dim=1).indices,
                   threads=f"{torch.get_num_threads()} (torch intra-op)", convention="inner product, exact",
                   source="torch.topk(q @ K.T, k)"),
        ]
        try:
            import faiss

            faiss.omp_set_num_threads(n)
            index = faiss.IndexFlatIP(dim)
            index.add(keys)
            impls.append(H.Impl("faiss IndexFlatIP", "peer", lambda q=queries, index=index: index.search(q, k)[1],
                                threads=f"{n} (faiss OpenMP)", convention="inner product, exact",
                                source=f"faiss {faiss.__version__} IndexFlatIP(d).search(q, k)"))
        except ImportError:  # pragma: no cover - faiss is a benchmark peer, not a dependency
            ctx.log("    faiss not installed: no faiss row")
        ref_name = "companion numba"
        for impl in impls:  # every output becomes its sorted id set per query (sorting Q x k ids is negligible)
            impl.fn = (lambda f: lambda: np.sort(H._as_numpy(f()).astype(np.int64), axis=1))(impl.fn)
        rows += H.bench_kernel(
            ctx,
            kernel=f"topk_inner_product[Q={n_queries}]",
            params={"keys": n_keys, "dim": dim, "k": k, "queries": n_queries, "dtype": "float32"},
            impls=impls,
            ours=ref_name,
            reference="companion numpy",
            check64=check64,
            peer_tol={"atol": 0.0},  # identical id sets
            bytes_min=4 * (n_keys * dim + n_queries * dim),  # read every key once
            flops_min=2 * n_queries * n_keys * dim,
        )
    return {"rows": rows, "checks": [], "source": source}

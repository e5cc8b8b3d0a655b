"""Codebook kernels beside their peers (row C3 of shared/BENCHMARKS.md, PQ and VQ parts).

Three kernels, each on one shared float32 input:

* ``pq_encode``: product-quantization encoding, d = 128, M = 16 subspaces of 8,
  K = 256 (8 bits): companion NumPy reference, companion numba (one fused float32
  screen over all subspaces with an exact float64 recheck of near ties), the torch
  code a user would write (``torch.cdist`` + ``argmin`` per subspace), faiss
  ``ProductQuantizer.compute_codes`` and nanopq ``PQ.encode``, both given *our*
  centroids (so codes can be compared code for code).
* ``adc_search``: asymmetric-distance top-10 over an encoded database (M = 16
  bytes a vector) from per-query distance tables: companion NumPy, companion numba,
  torch (gather + sum + ``topk``) and faiss ``IndexPQ.search`` on the same codes and
  centroids (faiss builds its own tables inside the call).
* ``nearest_centroid`` (VQ assignment), d = 256, K = 1,024: companion NumPy,
  companion numba (float32 sgemm screen + exact float64 finish), ``torch.cdist`` +
  ``argmin`` and vector_quantize_pytorch's ``VectorQuantize`` (eval mode, its
  codebook set to ours; its Euclidean ``cdist`` + ``argmax`` of the negated distance).

Peers: faiss-cpu, nanopq and vector_quantize_pytorch are timed when installed (a
missing one leaves its row out).

Correctness is judged by the distance of what each implementation picks: an
assignment is right when the float64 distance to the codeword it chose is within a
float32 rounding bound of the float64 optimum (peers that expand
``|x|^2 - 2 x.c + |c|^2`` in float32 may break near-ties differently; the number of
codes that differ from ours is recorded in each row's note). A search result is
right when the float64 distances of the rows it returns equal the k smallest.

Sizes are scaled down from BENCHMARKS.md (10^6 vectors) to what the NumPy reference
finishes in a few seconds on a shared 2-core machine; the floors scale with them.
"""

from __future__ import annotations

import copy

import numpy as np

import harness as H

SIZES = {
    "full": {"encode": (4_096, 128, 16, 256), "adc": (262_144, 16, 10), "vq": (2_048, 256, 1_024)},
    "tiny": {"encode": (512, 32, 4, 256), "adc": (3_000, 4, 5), "vq": (256, 32, 64)},
}
EPS32 = 2.0**-24


def load_codebooks():
    """``(compression module, kernels module, source)`` of the code under test."""
    import companion.compression as C
    import companion.kernels as K

    return C, K, "companion.compression / companion.kernels"


def numba_threads(fn, n: int) -> str:
    parallel = bool(getattr(fn, "targetoptions", {}).get("parallel"))
    return f"{n} (numba parallel)" if parallel else "1 (numba kernel is serial)"


def _version(dist: str) -> str:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:  # pragma: no cover - metadata missing
        return "?"


def nanopq_or_none():
    try:
        import nanopq
    except ImportError:  # pragma: no cover - optional peer
        return None
    return nanopq


def vqp_or_none():
    try:
        import vector_quantize_pytorch
    except ImportError:  # pragma: no cover - optional peer
        return None
    return vector_quantize_pytorch


def faiss_or_none():
    try:
        import faiss
    except ImportError:  # pragma: no cover - optional peer
        return None
    return faiss


class Chosen:
    """Lazy view of an assignment for :func:`harness.compare`: the float64 squared
    distance from every vector to the codewords it picked (summed over subspaces)."""

    def __init__(self, codes, x_sub64: np.ndarray, books64: np.ndarray):
        self.codes = H._as_numpy(codes).astype(np.int64).reshape(x_sub64.shape[0], x_sub64.shape[1])
        self.x = x_sub64  # (n, M, d/M)
        self.books = books64  # (M, K, d/M)

    def __array__(self, dtype=None, copy=None):
        m_idx = np.arange(self.x.shape[1])
        picked = self.books[m_idx[None, :], self.codes]  # (n, M, d/M)
        out = ((self.x - picked) ** 2).sum(axis=(1, 2))
        return out if dtype is None else out.astype(dtype)


class Found:
    """Lazy view of a top-k search result: float64 ADC distances of the rows returned, sorted."""

    def __init__(self, idx, dist64: np.ndarray):
        self.idx = H._as_numpy(idx).astype(np.int64)
        self.dist64 = dist64  # (q, n) float64 distances of every row

    def __array__(self, dtype=None, copy=None):
        out = np.sort(np.take_along_axis(self.dist64, self.idx, axis=1), axis=1)
        return out if dtype is None else out.astype(dtype)


def _optimal_assignment64(x_sub64: np.ndarray, books64: np.ndarray) -> np.ndarray:
    """Float64 minimum over codewords of each subspace, summed: ``(n,)``."""
    total = np.zeros(x_sub64.shape[0])
    for m in range(x_sub64.shape[1]):
        xm, cm = x_sub64[:, m], books64[m]
        for start in range(0, len(xm), 1024):
            d = ((xm[start:start + 1024, None, :] - cm[None]) ** 2).sum(-1)
            total[start:start + 1024] += d.min(axis=1)
    return total


def _torch_call(fn):
    import torch

    def call():
        with torch.inference_mode():
            return fn()

    return call


def _codes_differ_note(rows, outputs: dict, ours) -> None:
    for r in rows:
        if r.impl in outputs and r.impl != "companion numba":
            got = outputs[r.impl].codes.reshape(ours.shape)
            differ = int(np.count_nonzero(got != ours))
            r.note = (r.note + "; " if r.note else "") + f"{differ} of {ours.size} codes differ from companion's"


# ------------------------------------------------------------------- pq_encode
def bench_encode(ctx: H.Context, C, K, source: str) -> tuple[list[H.Row], dict]:
    import torch

    n, d, m_sub, k = SIZES["tiny" if ctx.tiny else "full"]["encode"]
    rng = np.random.default_rng(0)
    train = rng.standard_normal((max(4 * k, 4096 if not ctx.tiny else 256), d), dtype=np.float32)
    x = rng.standard_normal((n, d), dtype=np.float32)
    pq_np = C.ProductQuantizer(m_sub, k, iters=5, backend="numpy")
    pq_np.fit(train, rng=1)
    pq_nb = copy.copy(pq_np)
    pq_nb.backend = "numba"
    books = pq_np.codebooks_  # (M, K, d/M) float32
    sub = d // m_sub
    x_sub64 = x.astype(np.float64).reshape(n, m_sub, sub)
    books64 = books.astype(np.float64)
    opt = _optimal_assignment64(x_sub64, books64)
    scale = float(np.max((x_sub64**2).sum(-1)) + np.max((books64**2).sum(-1)))
    tol = {"atol": 64 * EPS32 * scale * m_sub, "rtol": 0.0}

    def check64(out):
        return H.compare(out, opt, against="float64 optimal assignment", **tol)

    def judged(fn):
        """``fn`` whose codes are judged by the float64 distance of the codewords they pick."""
        return lambda: Chosen(fn(), x_sub64, books64)

    xt = torch.from_numpy(x)
    books_t = [torch.from_numpy(np.ascontiguousarray(books[m])) for m in range(m_sub)]

    def torch_encode():
        return torch.stack([torch.cdist(xt[:, m * sub:(m + 1) * sub], books_t[m]).argmin(1) for m in range(m_sub)], 1)

    n_thr = ctx.threads
    impls = [
        H.Impl("companion numpy", "reference", judged(lambda: pq_np.encode(x)), threads="1 (NumPy elementwise)",
               source=source),
        H.Impl("companion numba", "companion", judged(lambda: pq_nb.encode(x)),
               threads=numba_threads(K.assign._screen_fused_numba, n_thr), source=source,
               note="one fused float32 screen + argmin over all subspaces, exact float64 recheck of near ties"),
        H.Impl("torch cdist + argmin (user code)", "peer", judged(_torch_call(torch_encode)),
               threads=f"{torch.get_num_threads()} (torch intra-op)", source="torch.cdist per subspace",
               note="cdist expands |x|^2 - 2x.c + |c|^2 through a matrix product"),
    ]
    faiss = faiss_or_none()
    if faiss is not None:
        faiss.omp_set_num_threads(n_thr)
        fpq = faiss.ProductQuantizer(d, m_sub, int(np.log2(k)))
        faiss.copy_array_to_vector(np.ascontiguousarray(books).ravel(), fpq.centroids)
        impls.append(H.Impl("faiss ProductQuantizer.compute_codes", "peer", judged(lambda: fpq.compute_codes(x)),
                            threads=f"{n_thr} (faiss OpenMP)", source=f"faiss {faiss.__version__}, our centroids",
                            note="float32 distances"))
    nanopq = nanopq_or_none()
    if nanopq is not None:
        npq = nanopq.PQ(m_sub, Ks=k, verbose=False)
        npq.codewords = np.ascontiguousarray(books, dtype=np.float32)  # (M, K, d/M): our codebooks
        npq.Ds = sub
        impls.append(H.Impl("nanopq PQ.encode", "peer", judged(lambda: npq.encode(x)), threads="1 (scipy vq)",
                            source=f"nanopq {getattr(nanopq, '__version__', '?')}, our codewords",
                            note="scipy.cluster.vq.vq per subspace"))
    outputs = {i.name: i.fn() for i in impls if i.role == "peer"}
    ours = H._as_numpy(pq_nb.encode(x)).astype(np.int64)
    rows = H.bench_kernel(
        ctx, kernel="pq_encode", params={"n": n, "d": d, "M": m_sub, "K": k, "dtype": "float32"},
        impls=impls, ours="companion numba", reference="companion numpy", check64=check64, peer_tol=tol,
        bytes_min=4 * n * d + n * m_sub + 4 * m_sub * k * sub, flops_min=2 * n * k * d,
    )
    _codes_differ_note(rows, outputs, ours)
    return rows, {"pq": pq_np, "train": train}


# ------------------------------------------------------------------ adc_search
def _embedding_like(rng, n: int, centres: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Clustered vectors of low intrinsic dimension: centre + 16-d latent through ``basis`` + small noise."""
    member = rng.integers(0, len(centres), n)
    latent = rng.standard_normal((n, basis.shape[0]))  # (n, 16)
    noise = 0.1 * rng.standard_normal((n, basis.shape[1]))
    return (centres[member] + latent @ basis + noise).astype(np.float32)  # (n, d)


def bench_adc(ctx: H.Context, C, K, source: str, pq_shape) -> tuple[list[H.Row], dict]:
    import torch

    n, q, topk = SIZES["tiny" if ctx.tiny else "full"]["adc"]
    m_sub, k, d = pq_shape
    rng = np.random.default_rng(2)
    centres = 2.0 * rng.standard_normal((256, d))
    basis = rng.standard_normal((16, d)) / 4.0
    database = _embedding_like(rng, n, centres, basis)  # (n, d)
    queries = _embedding_like(rng, q, centres, basis)  # (q, d)
    train_n = min(n, 16_384)
    pq_nb = C.ProductQuantizer(m_sub, k, iters=10, backend="numba").fit(database[:train_n], rng=4)
    pq = pq_nb
    codes = pq_nb.encode(database)  # (n, M) uint8
    tables = pq_nb.distance_tables(queries)  # (q, M, K) float32
    tables64 = tables.astype(np.float64)
    dist64 = np.zeros((q, n))
    for m in range(m_sub):
        dist64 += tables64[:, m, codes[:, m]]
    best64 = np.sort(dist64, axis=1)[:, :topk]
    tol = {"atol": 64 * EPS32 * float(dist64.max()), "rtol": 0.0}

    def check64(out):
        return H.compare(out, best64, against="float64 k smallest ADC distances", **tol)

    def judged(fn):
        """``fn`` whose result rows are judged by their float64 ADC distances (ties may pick either row)."""
        return lambda: Found(fn(), dist64)

    tables_t = torch.from_numpy(tables)
    codes_t = torch.from_numpy(codes.astype(np.int64))

    def torch_adc():
        dist = tables_t[:, 0, codes_t[:, 0]].clone()  # (q, n)
        for m in range(1, m_sub):
            dist += tables_t[:, m, codes_t[:, m]]
        return torch.topk(dist, topk, dim=1, largest=False, sorted=True).indices

    n_thr = ctx.threads
    impls = [
        H.Impl("companion numpy", "reference", judged(lambda: C.adc_search(tables, codes, topk, backend="numpy")[1]),
               threads="1 (NumPy)", source=source, note="all distances, then a stable argsort"),
        H.Impl("companion numba", "companion", judged(lambda: C.adc_search(tables, codes, topk, backend="numba")[1]),
               threads=numba_threads(C._c3_adc._adc_scan_numba, n_thr), source=source,
               note="16 queries per pass over the codes (interleaved tables, one vector add per subspace), "
                    "per-chunk top-k with a vector threshold test, merged in row order"),
        H.Impl("torch gather + topk (user code)", "peer", judged(_torch_call(torch_adc)),
               threads=f"{torch.get_num_threads()} (torch intra-op)", source="eager torch"),
    ]
    faiss = faiss_or_none()
    if faiss is not None:
        faiss.omp_set_num_threads(n_thr)
        index = faiss.IndexPQ(d, m_sub, int(np.log2(k)))
        faiss.copy_array_to_vector(np.ascontiguousarray(pq.codebooks_).ravel(), index.pq.centroids)
        index.is_trained = True
        faiss.copy_array_to_vector(np.ascontiguousarray(codes).ravel(), index.codes)
        index.ntotal = n
        impls.append(H.Impl("faiss IndexPQ.search", "peer", judged(lambda: index.search(queries, topk)[1]),
                            threads=f"{n_thr} (faiss OpenMP)", source=f"faiss {faiss.__version__}, same codes",
                            note="builds its distance tables inside the call (ours are built outside)"))
    peer_idx = {i.name: i.fn().idx for i in impls if i.role == "peer"}
    ours_idx = C.adc_search(tables, codes, topk, backend="numba")[1]
    rows = H.bench_kernel(
        ctx, kernel="adc_search", params={"n": n, "queries": q, "M": m_sub, "K": k, "k": topk, "dtype": "float32"},
        impls=impls, ours="companion numba", reference="companion numpy", check64=check64, peer_tol=tol,
        bytes_min=q * n * m_sub, flops_min=q * n * m_sub,
    )
    # recall@k of the compressed search against exact search of the raw vectors
    true_nn, _ = K.nearest_centroid(queries, database)
    found = C.adc_search(tables, codes, topk, backend="numba")[1]
    recall = float(np.mean([true_nn[i] in found[i] for i in range(q)]))
    for r in rows:
        r.params["recall_at_k"] = recall
        if r.impl in peer_idx:
            same = sum(set(peer_idx[r.impl][i].tolist()) == set(ours_idx[i].tolist()) for i in range(q))
            r.note = (r.note + "; " if r.note else "") + f"{same} of {q} queries return the same row set as companion"
        if r.impl == "companion numba":
            r.note += (f"; recall@{topk} of the true nearest neighbour (exact float search) = {recall:.3f} "
                       f"on clustered vectors of intrinsic dimension 16 (PQ trained on {train_n} of them)")
    return rows, {"recall": recall}


# ------------------------------------------------------------ nearest_centroid
def bench_vq(ctx: H.Context, C, K, source: str) -> list[H.Row]:
    import torch

    n, d, k = SIZES["tiny" if ctx.tiny else "full"]["vq"]
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n, d), dtype=np.float32)
    c = rng.standard_normal((k, d), dtype=np.float32)
    x64 = x.astype(np.float64)[:, None, :]  # (n, 1, d): one "subspace"
    c64 = c.astype(np.float64)[None]  # (1, k, d)
    opt = _optimal_assignment64(x64, c64)
    scale = float((x64**2).sum(-1).max() + (c64**2).sum(-1).max())
    tol = {"atol": 64 * EPS32 * scale, "rtol": 0.0}

    def check64(out):
        return H.compare(out, opt, against="float64 optimal assignment", **tol)

    def judged(fn):
        return lambda: Chosen(fn(), x64, c64)

    xt, ct = torch.from_numpy(x), torch.from_numpy(c)
    impls = [
        H.Impl("companion numpy", "reference", judged(lambda: K.nearest_centroid(x, c, backend="numpy")[0]),
               threads="1 (NumPy elementwise)", source=source),
        H.Impl("companion numba", "companion", judged(lambda: K.nearest_centroid(x, c, backend="numba")[0]),
               threads=numba_threads(K.assign._screened32_block_numba, ctx.threads), source=source,
               note="float32 sgemm screen (NumPy BLAS), fused numba argmin, exact float64 distances "
                    "(near ties re-measured)"),
        H.Impl("torch cdist + argmin (user code)", "peer", judged(_torch_call(lambda: torch.cdist(xt, ct).argmin(1))),
               threads=f"{torch.get_num_threads()} (torch intra-op)", source="torch.cdist",
               note="matrix-product expansion in float32"),
    ]
    vqp = vqp_or_none()
    if vqp is not None:
        vq = vqp.VectorQuantize(dim=d, codebook_size=k, kmeans_init=False).eval()
        with torch.no_grad():
            vq._codebook.embed.copy_(ct[None])  # (1, K, d): our codebook
        impls.append(H.Impl("vector_quantize_pytorch VectorQuantize", "peer",
                            judged(_torch_call(lambda: vq(xt[None])[1][0])),
                            threads=f"{torch.get_num_threads()} (torch intra-op)",
                            source=f"vector_quantize_pytorch {_version('vector_quantize_pytorch')}, our codebook",
                            note="eval-mode forward (quantize, indices, loss); its cdist + argmax in float32"))
    outputs = {i.name: i.fn() for i in impls if i.role == "peer"}
    ours = H._as_numpy(K.nearest_centroid(x, c, backend="numba")[0])
    rows = H.bench_kernel(
        ctx, kernel="nearest_centroid[VQ]", params={"n": n, "d": d, "K": k, "dtype": "float32"},
        impls=impls, ours="companion numba", reference="companion numpy", check64=check64, peer_tol=tol,
        bytes_min=4 * (n * d + k * d) + 8 * n, flops_min=2 * n * k * d,
    )
    _codes_differ_note(rows, outputs, ours)
    return rows


def run(ctx: H.Context) -> dict:
    """All codebook rows and checks: ``{"rows": [...], "checks": [...], "source": ..., "note": ...}``."""
    C, K, source = load_codebooks()
    ctx.log(f"codebook kernels from: {source}")
    rows, state = bench_encode(ctx, C, K, source)
    pq = state["pq"]
    adc_rows, _ = bench_adc(ctx, C, K, source, (pq.n_subspaces, pq.n_centroids, pq.dim_))
    rows += adc_rows
    rows += bench_vq(ctx, C, K, source)
    peers = {"faiss-cpu": faiss_or_none(), "nanopq": nanopq_or_none(), "vector_quantize_pytorch": vqp_or_none()}
    note = "; ".join(f"{name} {'timed' if mod is not None else 'not installed (row left out)'}"
                     for name, mod in peers.items())
    return {"rows": rows, "checks": [], "source": source, "note": note}

"""KV-cache eviction kernels beside kvpress and the torch code a user would write (row C1 of shared/BENCHMARKS.md).

Workload: one layer's cache, B = 1, H_kv = 8 heads, T = 16,384 tokens, d = 128, float32;
keep half of the tokens (ratio 0.5). Three scorers feed the same select-and-gather step:

* ``knorm``: score = -|k| (keys with small norm are kept; kvpress ``KnormPress``);
* ``streaming_llm``: 4 sink tokens plus the newest ``T/2 - 4`` (kvpress ``StreamingLLMPress``);
* ``h2o``: a decode step of H2O: add one query's attention weights to the accumulated
  scores, then keep 64 recent tokens and the heaviest of the rest (no kvpress peer:
  kvpress scores once at prefill).

Implementations: companion NumPy reference, companion numba (``compress_kv``, with
``accumulate_attention`` for H2O), the torch code kvpress runs inside its presses
(``scores.topk(n_kept).indices`` then ``gather``) written out, and, for knorm and
streaming_llm, kvpress itself: ``KnormPress(compression_ratio=0.5)`` and
``StreamingLLMPress(compression_ratio=0.5, n_sink=4)``, calling their
``compress(module, hidden_states, keys, values, attentions, kwargs)`` with a stub
``module`` that has the one attribute it reads (``head_dim``).

Orders: ours keep the positions ascending; torch's top-k returns them in score order,
and the written-out torch code sorts them before the gather. kvpress does not sort: its
kept rows come in top-k order (descending score; for streaming_llm an unspecified order
among equal scores). For the comparison only (outside the timed call) each kvpress row is
located in the input keys by an exact match of its bytes and the rows are put in position
order; the kept position *sets* are checked identical to ours (tie-free knorm scores).

The knorm score of our rows is ``-sqrt(einsum("...d,...d", K, K))`` (one pass over K, no
temporary; ``np.linalg.norm(K, axis=-1)`` squares K into a 67 MB temporary first and costs
about three times as much), the torch rows use ``Kt.norm(dim=-1)``, kvpress its own
``vector_norm``. A float64 NumPy reference checks every output.

The floor is the bytes that must move: read K and V (2 * 8 * 16384 * 128 * 4 B = 134 MB)
and write the kept half (67 MB). Every implementation returns fresh arrays, so the
writes land on newly mapped pages (the harness' "fresh output" copy rate applies).
"""

from __future__ import annotations

import numpy as np

import harness as H

SIZES = {"full": (1, 8, 16384, 128), "tiny": (1, 2, 256, 16)}
RATIO = 0.5
N_SINKS = 4
H2O_RECENT = 64


def load_eviction():
    """``(module, source)`` of the kernels under test."""
    import companion.kernels.eviction as E

    return E, "companion.kernels.eviction"


def reference64_keep(scores: np.ndarray, n_keep: int, n_sinks: int, n_recent: int) -> np.ndarray:
    """Float64 kept indices from the definition: protected ends plus the top scores, sorted."""
    s = scores.astype(np.float64)
    n = s.shape[-1]
    out = np.empty(s.shape[:-1] + (n_keep,), dtype=np.int64)
    for idx in np.ndindex(*s.shape[:-1]):
        middle = np.arange(n_sinks, n - n_recent)
        best = middle[np.argsort(-s[idx][middle], kind="stable")[: n_keep - n_sinks - n_recent]]
        out[idx] = np.sort(np.concatenate([np.arange(n_sinks), best, np.arange(n - n_recent, n)]))
    return out


def torch_compress(keys, values, scores, n_keep: int, n_sinks: int, n_recent: int):
    """kvpress-style user code: protect the ends with +inf, topk, sort, gather."""
    import torch

    s = scores.clone()
    n = s.shape[-1]
    if n_sinks:
        s[..., :n_sinks] = float("inf")
    if n_recent:
        s[..., n - n_recent :] = float("inf")
    idx = s.topk(n_keep, dim=-1).indices.sort(dim=-1).values  # (B, H, n_keep)
    gather = idx[..., None].expand(*idx.shape, keys.shape[-1])
    return keys.gather(2, gather), values.gather(2, gather)


class _PositionOrdered:
    """kvpress' kept (keys, values), compared in position order (the reordering runs only when compared).

    ``kvpress`` returns kept rows in top-k order. Each returned key row is found in the
    input ``keys`` by an exact match of its bytes (random keys: no two rows are equal),
    giving the kept positions; rows are then sorted by position. ``positions()`` gives
    the kept position sets, sorted, of shape (B, H, n_kept).
    """

    def __init__(self, kept, keys):
        self.kept = kept  # (kept keys, kept values), torch tensors (B, H, n_kept, d)
        self.keys = keys  # the input keys, NumPy (B, H, T, d)

    def positions(self) -> np.ndarray:
        kk = H._as_numpy(self.kept[0])
        lead, (n_kept, d) = kk.shape[:-2], kk.shape[-2:]
        void = np.dtype((np.void, d * kk.dtype.itemsize))
        src = np.ascontiguousarray(self.keys).reshape(-1, self.keys.shape[-2], d)
        got = np.ascontiguousarray(kk).reshape(-1, n_kept, d)
        pos = np.empty(got.shape[:2], dtype=np.int64)
        for r in range(src.shape[0]):
            rows = src[r].view(void).ravel()
            order = np.argsort(rows)
            found = order[np.searchsorted(rows[order], got[r].view(void).ravel())]
            if not np.array_equal(src[r][found], got[r]):
                raise AssertionError("a kvpress row is not a row of the input keys")
            pos[r] = found
        return pos.reshape(lead + (n_kept,))

    def _ordered(self) -> list[np.ndarray]:
        order = np.argsort(self.positions(), axis=-1)[..., None]
        return [np.take_along_axis(H._as_numpy(x), order, axis=-2) for x in self.kept]

    def __getitem__(self, i):
        return self._ordered()[i]

    def __array__(self, dtype=None, copy=None):
        out = np.stack(self._ordered())
        return out if dtype is None else out.astype(dtype)


def _kvpress_impls(case: str, Kt, Vt, K, n_keep: int, d: int, n: int, kept_ours: np.ndarray, checks: list):
    """The kvpress row for ``case`` (knorm or streaming_llm), after checking its kept position sets."""
    import types

    import torch

    try:
        import kvpress
        from kvpress import KnormPress, StreamingLLMPress
    except ImportError:  # pragma: no cover - a benchmark peer, not a dependency
        return []
    if case == "knorm":
        press = KnormPress(compression_ratio=RATIO)
        label = f"kvpress KnormPress(compression_ratio={RATIO})"
    elif case == "streaming_llm":
        press = StreamingLLMPress(compression_ratio=RATIO, n_sink=N_SINKS)
        label = f"kvpress StreamingLLMPress(compression_ratio={RATIO}, n_sink={N_SINKS})"
    else:
        return []
    module = types.SimpleNamespace(head_dim=d)  # the one attribute ScorerPress.compress reads

    def call():
        with torch.inference_mode():
            return _PositionOrdered(press.compress(module, None, Kt, Vt, None, {}), K)

    out = call()
    same = out.kept[0].shape[-2] == n_keep and bool(np.array_equal(np.sort(out.positions(), axis=-1), kept_ours))
    checks.append({"name": f"{case}: kvpress kept position sets == companion select_keep's", "ok": same})
    version = getattr(kvpress, "__version__", None)
    if version is None:
        from importlib import metadata

        version = metadata.version("kvpress")
    return [H.Impl("kvpress " + type(press).__name__, "peer", call,
                   threads=f"{n} (torch intra-op)",
                   convention="kept rows in top-k order; compared after sorting by position",
                   source=f"kvpress {version} {label}.compress(module, None, K, V, None, {{}})",
                   note="kvpress keeps top-k order (descending score); each kept row is located in K "
                        "by exact match and sorted by position for the comparison only (untimed); "
                        "kept position sets checked identical to ours")]


def _torch_call(fn):
    import torch

    def call():
        with torch.inference_mode():
            return fn()

    return call


def bench_eviction(ctx: H.Context, E, source: str) -> tuple[list[H.Row], list[dict]]:
    import torch

    shape = SIZES["tiny" if ctx.tiny else "full"]
    B, Hh, T, d = shape
    n_keep = int(T * (1 - RATIO))
    rng = np.random.default_rng(0)
    K = rng.standard_normal(shape, dtype=np.float32)
    V = rng.standard_normal(shape, dtype=np.float32)
    Kt, Vt = torch.from_numpy(K), torch.from_numpy(V)
    accumulated = rng.random((B, Hh, T)).astype(np.float32)
    weights = rng.dirichlet(np.ones(T), size=(B, Hh, 1)).astype(np.float32)  # one query's attention
    acc_t, w_t = torch.from_numpy(accumulated), torch.from_numpy(weights)
    n = ctx.threads
    rows: list[H.Row] = []
    checks: list[dict] = []
    kv_bytes = 2 * K.nbytes

    cases = {
        "knorm": (lambda: -np.linalg.norm(K.astype(np.float64), axis=-1), 0, 0),
        "streaming_llm": (lambda: np.zeros((B, Hh, T)), N_SINKS, n_keep - N_SINKS),
        "h2o": (lambda: accumulated.astype(np.float64) + weights.astype(np.float64).sum(-2), 0, H2O_RECENT),
    }
    for case, (scores64_fn, n_sinks, n_recent) in cases.items():
        scores64 = scores64_fn()
        keep64 = reference64_keep(scores64, n_keep, n_sinks, n_recent)
        want_k = np.take_along_axis(K, keep64[..., None], axis=-2)

        def check64(out, want_k=want_k):
            return H.compare(out[0], want_k, atol=0.0, against="float64 reference (kept keys)")

        def ours(backend, case=case, n_sinks=n_sinks, n_recent=n_recent):
            if case == "knorm":
                scores = -np.sqrt(np.einsum("...d,...d->...", K, K))  # (B, H, T): -|k|, one pass, no temporary
            elif case == "streaming_llm":
                scores = np.zeros((B, Hh, T), dtype=np.float32)
            else:
                scores = E.accumulate_attention(accumulated, weights, backend=backend)
            kk, vv, _ = E.compress_kv(K, V, scores, n_keep, n_sinks=n_sinks, n_recent=n_recent, backend=backend)
            return kk, vv

        def torch_user(case=case, n_sinks=n_sinks, n_recent=n_recent):
            if case == "knorm":
                scores = -Kt.norm(dim=-1)
            elif case == "streaming_llm":
                scores = torch.zeros(B, Hh, T)
            else:
                scores = acc_t + w_t.sum(-2)
            return torch_compress(Kt, Vt, scores, n_keep, n_sinks, n_recent)

        # the kept-index sets of the companion kernel and of torch's top-k must be identical
        got = E.select_keep(np.asarray(scores64, dtype=np.float64), n_keep, n_sinks=n_sinks, n_recent=n_recent)
        checks.append({"name": f"{case}: select_keep index sets == float64 reference",
                       "ok": bool(np.array_equal(got, keep64))})
        impls = [
            H.Impl("companion numpy", "reference", lambda ours=ours: ours("numpy"),
                   threads="1 (NumPy argsort)", convention="kept indices ascending", source=source),
            H.Impl("companion numba", "companion", lambda ours=ours: ours("numba"),
                   threads=f"{n} (numba parallel over rows and kept ranges)", convention="kept indices ascending",
                   source=source),
            H.Impl("torch topk + gather (kvpress-style user code)", "peer", _torch_call(torch_user),
                   threads=f"{torch.get_num_threads()} (torch intra-op)",
                   convention="topk indices sorted before the gather",
                   source="eager torch (the press logic written out, sorted indices)",
                   note="kvpress ScorerPress.compress does scores.topk(n_kept).indices + gather"),
        ]
        impls += _kvpress_impls(case, Kt, Vt, K, n_keep, d, n, got, checks)
        rows += H.bench_kernel(
            ctx,
            kernel=f"compress_kv[{case}]",
            params={"shape": list(shape), "dtype": "float32", "ratio": RATIO, "n_sinks": n_sinks,
                    "n_recent": n_recent},
            impls=impls,
            ours="companion numba",
            reference="companion numpy",
            check64=check64,
            peer_tol={"atol": 0.0, "rtol": 0.0},
            bytes_min=kv_bytes + kv_bytes // 2,  # read K and V, write the kept half
            flops_min=0,
        )
    return rows, checks


def run(ctx: H.Context) -> dict:
    """All KV-eviction rows and checks: ``{"rows": [...], "checks": [...], "source": ...}``."""
    E, source = load_eviction()
    ctx.log(f"eviction kernels from: {source}")
    rows, checks = bench_eviction(ctx, E, source)
    return {"rows": rows, "checks": checks, "source": source}

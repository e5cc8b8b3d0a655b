"""Benchmark harness for the companion kernels.

What it gives the ``bench_*.py`` modules:

* **Timing** (:func:`time_fn`): warm-up calls outside the timed region, then the
  median of at least five timed calls with :func:`time.perf_counter` (garbage
  collection off while timing). On a GPU the calls are timed with CUDA events
  (CuPy's when CuPy sees a device, torch's otherwise) after a synchronize.
* **Ceilings** (:func:`measure_ceilings`), measured in the same run: memory
  bandwidth from a large copy (bytes read + bytes written, an array far beyond
  the caches), on one thread (NumPy and numba) and on all benchmark threads
  (numba ``parallel=True``); and the float32 matrix-product rate of a large
  ``sgemm`` through NumPy's BLAS.
* **Rows** (:class:`Row`): one implementation of one kernel on one input, with its
  median time, the least bytes and FLOPs the job needs, the achieved GB/s and
  GFLOP/s, the roofline floor ``max(bytes / copy bandwidth, flops / sgemm rate)``
  and the fraction of ceiling ``floor / median`` (1.0 would be as fast as the
  machine allows), and its time ratio against every other implementation.
* **Correctness before timing** (:func:`bench_kernel`): every output is compared
  with a float64 NumPy reference, and every peer's output with ours on the same
  input; a row that disagrees is *refused*: recorded with its error, never timed.

Thread counts: :func:`apply_threads` gives numba, torch (intra-op) and NumPy's
BLAS the same number of threads; every row says how many threads it used.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import gc
import math
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numba
import numpy as np

ROOT = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------------- threads


def default_threads() -> int:
    """Benchmark threads: ``OMP_NUM_THREADS`` when set, else the CPUs this process may use."""
    env = os.environ.get("OMP_NUM_THREADS")
    if env and env.strip().isdigit() and int(env) > 0:
        return int(env)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def apply_threads(n: int) -> dict:
    """Give numba, torch and NumPy's BLAS ``n`` threads; return what each ended up with."""
    out: dict[str, Any] = {"requested": n}
    # torch first: when numba's OpenMP threading layer (the system libgomp) is launched before
    # torch (with its own bundled libgomp) is imported, torch's parallel kernels ran 5-7 times
    # slower in the same process here (SDPA on (1, 2, 4096, 64): 147 ms against 21 ms), which
    # made every torch row look slow. numba.set_num_threads launches that layer.
    try:
        import torch

        torch.set_num_threads(n)
        out["torch"] = torch.get_num_threads()
    except ImportError:
        out["torch"] = None
    n_numba = min(n, numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(n_numba)
    out["numba"] = numba.get_num_threads()
    out["numba_threading_layer"] = _numba_layer()
    try:
        from threadpoolctl import threadpool_info, threadpool_limits

        threadpool_limits(limits=n, user_api="blas")
        out["blas"] = sorted({p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"})
    except ImportError:  # pragma: no cover - threadpoolctl is a bench dependency
        out["blas"] = None
    return out


def _numba_layer() -> str:
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        return f"not yet chosen (config: {numba.config.THREADING_LAYER})"


# ----------------------------------------------------------------------- timing


@dataclasses.dataclass
class Timing:
    median_s: float
    times_s: list[float]
    warmup: int
    clock: str


def time_fn(
    fn: Callable[[], Any],
    *,
    repeat: int = 7,
    warmup: int = 1,
    device: str = "cpu",
) -> Timing:
    """Median wall time of ``fn()`` over ``repeat`` (at least 5) calls, after ``warmup`` calls.

    ``device="cpu"`` uses :func:`time.perf_counter`; ``device="cuda"`` times each call
    between two CUDA events (CuPy's if CuPy sees a device, else torch's) after a
    device synchronize. The output of each call is freed outside the timed region.
    """
    repeat = max(int(repeat), 5)
    if device == "cuda":
        return _time_cuda(fn, repeat=repeat, warmup=warmup)
    if device != "cpu":
        raise ValueError(f"device must be 'cpu' or 'cuda'; got {device!r}")
    for _ in range(warmup):
        out = fn()
        del out
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    times = []
    try:
        for _ in range(repeat):
            t0 = time.perf_counter()
            out = fn()
            t1 = time.perf_counter()
            times.append(t1 - t0)
            del out
    finally:
        if enabled:
            gc.enable()
    return Timing(statistics.median(times), times, warmup, "time.perf_counter")


def _cuda_event_lib() -> str:
    try:
        import cupy

        if cupy.cuda.is_available():
            return "cupy"
    except Exception:
        pass
    try:
        import torch

        if torch.cuda.is_available():
            return "torch"
    except ImportError:
        pass
    raise RuntimeError("device='cuda' needs CuPy or torch with a visible CUDA device")


def _time_cuda(fn: Callable[[], Any], *, repeat: int, warmup: int) -> Timing:
    lib = _cuda_event_lib()
    if lib == "cupy":
        import cupy

        def sync():
            cupy.cuda.Device().synchronize()

        def event():
            return cupy.cuda.Event()

        def elapsed(a, b):
            return cupy.cuda.get_elapsed_time(a, b) / 1e3

    else:
        import torch

        def sync():
            torch.cuda.synchronize()

        def event():
            return torch.cuda.Event(enable_timing=True)

        def elapsed(a, b):
            return a.elapsed_time(b) / 1e3

    for _ in range(warmup):
        out = fn()
        sync()
        del out
    gc.collect()
    times = []
    start, end = event(), event()
    for _ in range(repeat):
        sync()
        start.record()
        out = fn()
        end.record()
        end.synchronize()
        times.append(elapsed(start, end))
        del out
    return Timing(statistics.median(times), times, warmup, f"{lib} CUDA events")


# ------------------------------------------------------------------ peak memory


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):  # pragma: no cover - not Linux
        return None


def _malloc_trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except Exception:  # pragma: no cover - not glibc
        pass


def peak_rss_delta(fn: Callable[[], Any], before: Callable[[], Any] | None = None) -> int | None:
    """Extra resident memory during one call of ``fn`` (peak minus the level just before).

    A thread samples ``/proc/self/statm`` every half millisecond while ``fn`` runs,
    and once more after it returns (its output still alive), so code that holds the
    GIL (a numba kernel) is still measured at its end. Large buffers are mmapped by
    the allocators, so they show up in the resident size as they are touched.
    ``before`` runs first, outside the measurement (e.g. to clear a peer's cache).
    """
    if _rss_bytes() is None:
        return None
    if before is not None:
        before()
    gc.collect()
    _malloc_trim()
    base = _rss_bytes()
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            r = _rss_bytes()
            if r > peak[0]:
                peak[0] = r
            time.sleep(0.0005)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        out = fn()
        peak[0] = max(peak[0], _rss_bytes())
    finally:
        stop.set()
        th.join()
    del out
    gc.collect()
    return int(peak[0] - base)


# --------------------------------------------------------------------- ceilings


@numba.njit(parallel=True, cache=True)
def _pcopy(dst, src):  # pragma: no cover - jitted
    """``dst[:] = src`` in 256 contiguous chunks spread over the numba threads."""
    n = src.size
    nchunks = 256
    step = (n + nchunks - 1) // nchunks
    for c in numba.prange(nchunks):
        lo = c * step
        hi = min(lo + step, n)
        for i in range(lo, hi):
            dst[i] = src[i]


def measure_copy_bandwidth(nbytes: int, threads: int, *, repeat: int = 7) -> dict:
    """GB/s of a large float32 copy, counting bytes read + bytes written (2 x ``nbytes``).

    ``numpy_1t``: ``np.copyto`` (one thread, libc memcpy); ``numba_1t`` and
    ``numba_{threads}t``: a numba ``prange`` copy loop on 1 and ``threads`` threads;
    ``torch_{threads}t``: ``Tensor.copy_`` on torch's intra-op threads. The ceilings
    are the best of these at one thread and at any thread count, all into an existing
    (already touched) destination. ``numpy_1t_fresh_output`` (``src.copy()``) is
    recorded beside them: the same copy into a new array, page faults included.
    """
    n = nbytes // 4
    src = np.random.default_rng(0).random(n, dtype=np.float32)
    dst = np.empty_like(src)
    dst[:] = 0.0  # touch the pages outside the timing
    moved = 2 * src.nbytes
    pcopy = _pcopy
    out: dict[str, Any] = {"array_bytes": int(src.nbytes), "bytes_moved_per_copy": int(moved)}

    t = time_fn(lambda: np.copyto(dst, src), repeat=repeat)
    out["numpy_1t_GBps"] = moved / t.median_s / 1e9
    # the same copy into a fresh array: what a kernel that returns a new output pays
    # (page faults and zeroing of the new pages) on top of the streaming itself
    t = time_fn(lambda: src.copy(), repeat=repeat)
    out["numpy_1t_fresh_output_GBps"] = moved / t.median_s / 1e9
    saved = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        t = time_fn(lambda: pcopy(dst, src), repeat=repeat, warmup=2)
        out["numba_1t_GBps"] = moved / t.median_s / 1e9
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        t = time_fn(lambda: pcopy(dst, src), repeat=repeat, warmup=1)
        out[f"numba_{numba.get_num_threads()}t_GBps"] = moved / t.median_s / 1e9
    finally:
        numba.set_num_threads(saved)
    try:  # torch's copy_ also splits a large copy over its intra-op threads
        import torch

        s_t, d_t = torch.from_numpy(src), torch.from_numpy(dst)
        t = time_fn(lambda: d_t.copy_(s_t), repeat=repeat, warmup=1)
        out[f"torch_{torch.get_num_threads()}t_GBps"] = moved / t.median_s / 1e9
    except ImportError:  # pragma: no cover - torch is a bench dependency
        pass
    if not np.array_equal(dst, src):  # pragma: no cover - a broken copy kernel
        raise AssertionError("numba copy kernel produced a wrong copy")
    out["one_thread_GBps"] = max(out["numpy_1t_GBps"], out["numba_1t_GBps"])
    out["all_threads_GBps"] = max(v for k, v in out.items() if k.endswith("_GBps") and "fresh" not in k)
    return out


def measure_sgemm(n: int, *, repeat: int = 5) -> dict:
    """GFLOP/s of an ``n x n`` float32 matrix product through NumPy (``2 n^3`` FLOPs)."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), dtype=np.float32)
    t = time_fn(lambda: np.matmul(a, b, out=c), repeat=repeat, warmup=1)
    check = float(np.abs(c[:4, :4] - (a[:4].astype(np.float64) @ b[:, :4].astype(np.float64))).max())
    if check > 1e-2 * math.sqrt(n):  # pragma: no cover - a broken BLAS
        raise AssertionError(f"sgemm check failed: {check}")
    return {"n": n, "flops": 2 * n**3, "median_s": t.median_s, "GFLOPs": 2 * n**3 / t.median_s / 1e9}


def measure_ceilings(*, tiny: bool, threads: int) -> dict:
    """Copy bandwidth (1 thread and ``threads``) and float32 matrix-product rate, measured now."""
    copy_bytes = (16 if tiny else 256) * 2**20
    gemm_n = 1024 if tiny else 4096
    copy = measure_copy_bandwidth(copy_bytes, threads, repeat=5 if tiny else 9)
    gemm = measure_sgemm(gemm_n, repeat=5)
    return {
        "copy": copy,
        "sgemm": gemm,
        "copy_GBps": copy["all_threads_GBps"],
        "copy_1thread_GBps": copy["one_thread_GBps"],
        "copy_fresh_output_GBps": copy["numpy_1t_fresh_output_GBps"],
        "sgemm_GFLOPs": gemm["GFLOPs"],
        "threads": threads,
        "note": "copy GB/s counts bytes read + bytes written; sgemm is NumPy float32 matmul with the "
        "benchmark's BLAS threads; tiny mode uses small arrays that fit in cache",
    }


# ------------------------------------------------------------------ correctness


@dataclasses.dataclass
class Check:
    ok: bool
    max_abs_diff: float
    atol: float
    rtol: float
    n_bad: int
    nonfinite_match: bool
    against: str

    def asdict(self) -> dict:
        return dataclasses.asdict(self)


def _as_numpy(x: Any) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    mod = type(x).__module__
    if mod.startswith("torch"):
        return x.detach().cpu().numpy()
    if mod.startswith("cupy"):
        return x.get()
    return np.asarray(x)


def compare(
    got: Any,
    want: Any,
    *,
    atol: float,
    rtol: float = 0.0,
    against: str = "",
    chunk: int = 1 << 22,
) -> Check:
    """Whether ``got`` matches ``want`` elementwise: same shape, same non-finite entries
    (e.g. the ``-inf`` of a causal mask), and ``|got - want| <= atol + rtol |want|`` on
    the finite ones. Works in float64 chunks so gigabyte outputs need little extra memory.
    """
    g = _as_numpy(got)
    w = _as_numpy(want)
    if g.shape != w.shape:
        return Check(False, math.inf, atol, rtol, -1, False, f"{against} (shape {g.shape} != {w.shape})")
    gf = g.reshape(-1)
    wf = w.reshape(-1)
    max_diff = 0.0
    n_bad = 0
    nonfinite_ok = True
    for lo in range(0, gf.size, chunk):
        a = gf[lo : lo + chunk].astype(np.float64)
        b = wf[lo : lo + chunk].astype(np.float64)
        fa, fb = np.isfinite(a), np.isfinite(b)
        same_nf = np.array_equal(fa, fb) and np.array_equal(a[~fa], b[~fb])
        nonfinite_ok &= bool(same_nf)
        both = fa & fb
        d = np.abs(a[both] - b[both])
        if d.size:
            max_diff = max(max_diff, float(d.max()))
            n_bad += int(np.count_nonzero(d > atol + rtol * np.abs(b[both])))
        n_bad += int(np.count_nonzero(fa != fb))
    return Check(n_bad == 0 and nonfinite_ok, max_diff, atol, rtol, n_bad, nonfinite_ok, against)


def merge_checks(parts: Iterable[Check], against: str) -> Check:
    """One :class:`Check` from several chunks (e.g. one per attention head)."""
    parts = list(parts)
    return Check(
        all(p.ok for p in parts),
        max((p.max_abs_diff for p in parts), default=0.0),
        max((p.atol for p in parts), default=0.0),
        max((p.rtol for p in parts), default=0.0),
        sum(p.n_bad for p in parts),
        all(p.nonfinite_match for p in parts),
        against,
    )


# ------------------------------------------------------------------------ rows


@dataclasses.dataclass
class Row:
    """One implementation of one kernel on one input.

    ``ratios[other]`` is ``time(other) / time(self)``: above 1 means this row is faster.
    ``speedup_vs_numpy`` is the same ratio against the kernel's NumPy reference row.
    ``frac_ceiling`` is ``floor_s / median_s`` with ``floor_s = max(bytes_min / copy
    bandwidth, flops_min / sgemm rate)`` from the ceilings measured in the same run.
    """

    kernel: str
    impl: str
    role: str  # "reference" (the NumPy reference), "companion", "peer"
    params: dict
    threads: str
    convention: str = ""
    source: str = ""
    median_s: float | None = None
    times_s: list = dataclasses.field(default_factory=list)
    bytes_min: int = 0
    flops_min: int = 0
    achieved_GBps: float | None = None
    achieved_GFLOPs: float | None = None
    floor_s: float | None = None
    bound: str = ""
    frac_ceiling: float | None = None
    speedup_vs_numpy: float | None = None
    ratios: dict = dataclasses.field(default_factory=dict)
    check: dict = dataclasses.field(default_factory=dict)
    check_f64: dict = dataclasses.field(default_factory=dict)
    refused: bool = False
    refusal: str = ""
    peak_mem_bytes: int | None = None
    bias_bytes: int | None = None
    note: str = ""

    def asdict(self) -> dict:
        return _jsonable(dataclasses.asdict(self))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def finish_rows(rows: list[Row], ceilings: dict, reference: str | None) -> list[Row]:
    """Fill in rates, roofline floor, fraction of ceiling and pairwise ratios."""
    bw = ceilings["copy_GBps"] * 1e9
    fl = ceilings["sgemm_GFLOPs"] * 1e9
    for r in rows:
        if r.median_s is None:
            continue
        t_mem = r.bytes_min / bw if bw > 0 else 0.0
        t_fl = r.flops_min / fl if fl > 0 else 0.0
        r.floor_s = max(t_mem, t_fl)
        r.bound = "memory" if t_mem >= t_fl else "compute"
        r.achieved_GBps = r.bytes_min / r.median_s / 1e9
        r.achieved_GFLOPs = r.flops_min / r.median_s / 1e9
        r.frac_ceiling = r.floor_s / r.median_s
    timed = [r for r in rows if r.median_s is not None]
    for r in timed:
        r.ratios = {o.impl: o.median_s / r.median_s for o in timed if o is not r}
        if reference is not None and reference in r.ratios:
            r.speedup_vs_numpy = r.ratios[reference]
        elif r.impl == reference:
            r.speedup_vs_numpy = 1.0
    return rows


@dataclasses.dataclass
class Impl:
    """An implementation to time: ``fn()`` computes the kernel's output on the shared input."""

    name: str
    role: str
    fn: Callable[[], Any]
    threads: str
    convention: str = ""
    source: str = ""
    note: str = ""
    bias_bytes: int | None = None
    before_memory: Callable[[], Any] | None = None


@dataclasses.dataclass
class Context:
    tiny: bool
    threads: int
    ceilings: dict
    repeat: int = 7
    warmup: int = 1
    settle_s: float = 0.0  # pause before timing each implementation (idle BLAS/OpenMP threads spin for a while)
    log: Callable[[str], None] = print
    device: str = "cpu"  # "cuda": time with CUDA events (benchmarks/gpu_bench.py)


def bench_kernel(
    ctx: Context,
    *,
    kernel: str,
    params: dict,
    impls: list[Impl],
    ours: str,
    reference: str | None,
    check64: Callable[[Any], Check],
    peer_tol: dict,
    bytes_min: int,
    flops_min: int,
    measure_memory: bool = False,
) -> list[Row]:
    """Check, then time, every implementation of one kernel on one input.

    ``ours`` names the companion implementation whose output every other one is
    compared with (tolerances ``peer_tol = {"atol": .., "rtol": ..}``); every output,
    ours included, is also compared with the float64 reference through ``check64``.
    A companion or reference row is refused when it fails the float64 check, a peer
    row when it disagrees with ours. Refused rows are not timed.
    """
    by_name = {i.name: i for i in impls}
    if ours not in by_name:
        raise ValueError(f"ours={ours!r} is not among {list(by_name)}")
    rows: list[Row] = []
    ctx.log(f"  {kernel} {params}")
    out_ours = by_name[ours].fn()  # also the JIT warm-up
    check_ours = check64(out_ours)
    for impl in impls:
        row = Row(
            kernel=kernel,
            impl=impl.name,
            role=impl.role,
            params=dict(params),
            threads=impl.threads,
            convention=impl.convention,
            source=impl.source,
            bytes_min=int(bytes_min),
            flops_min=int(flops_min),
            bias_bytes=impl.bias_bytes,
            note=impl.note,
        )
        try:
            if impl.name == ours:
                c64 = check_ours
                cpeer = c64
            else:
                out = impl.fn()
                c64 = check64(out)
                cpeer = compare(out, out_ours, against=ours, **peer_tol)
                del out
        except Exception as exc:  # a peer that crashes is refused, not fatal
            row.refused = True
            row.refusal = f"raised {type(exc).__name__}: {exc}"
            rows.append(row)
            ctx.log(f"    {impl.name:<32} REFUSED ({row.refusal})")
            continue
        row.check_f64 = c64.asdict()
        row.check = cpeer.asdict()
        decisive = cpeer if impl.role == "peer" else c64
        if not decisive.ok:
            row.refused = True
            row.refusal = (
                f"output disagrees with {decisive.against}: max |diff| {decisive.max_abs_diff:.3g} "
                f"(atol {decisive.atol:.3g}, rtol {decisive.rtol:.3g}), {decisive.n_bad} bad entries, "
                f"non-finite pattern {'matches' if decisive.nonfinite_match else 'differs'}"
            )
            rows.append(row)
            ctx.log(f"    {impl.name:<32} REFUSED ({row.refusal})")
            continue
        rows.append(row)
    del out_ours
    gc.collect()
    for row in rows:
        if row.refused:
            continue
        impl = by_name[row.impl]
        if ctx.settle_s:
            time.sleep(ctx.settle_s)
        t = time_fn(impl.fn, repeat=ctx.repeat, warmup=ctx.warmup, device=ctx.device)
        row.median_s = t.median_s
        row.times_s = t.times_s
        if measure_memory:
            row.peak_mem_bytes = peak_rss_delta(impl.fn, before=impl.before_memory)
        ctx.log(f"    {impl.name:<32} {t.median_s * 1e3:10.2f} ms")
    return finish_rows(rows, ctx.ceilings, reference)


# ----------------------------------------------------------------- machine info


def machine_info() -> dict:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
    }
    try:
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        pass
    try:
        text = Path("/proc/cpuinfo").read_text()
        models = [ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")]
        info["cpu_model"] = models[0] if models else platform.processor()
        flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
        info["simd"] = [f for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512_bf16", "amx_tile") if f in flags]
    except OSError:  # pragma: no cover - not Linux
        info["cpu_model"] = platform.processor()
    try:
        for ln in Path("/proc/meminfo").read_text().splitlines():
            if ln.startswith("MemTotal:"):
                info["ram_bytes"] = int(ln.split()[1]) * 1024
    except OSError:  # pragma: no cover
        pass
    try:
        info["load_average"] = list(os.getloadavg())
    except OSError:  # pragma: no cover
        pass
    return info


def library_versions() -> dict:
    from importlib import metadata

    names = {
        "numpy": "numpy",
        "numba": "numba",
        "scipy": "scipy",
        "torch": "torch",
        "torch-geometric": "torch-geometric",
        "threadpoolctl": "threadpoolctl",
        "rotary-embedding-torch": "rotary-embedding-torch",
        "x-transformers": "x-transformers",
        "einx": "einx",
        "companion": "companion",
    }
    out = {"python": sys.version.split()[0]}
    for key, dist in names.items():
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[key] = None
    try:
        rev = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if rev.returncode == 0:
            out["companion_git"] = rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):  # pragma: no cover - no git
        pass
    return out


def blas_info() -> dict:
    """Which BLAS NumPy (and torch) loaded, with kernel architecture and threads (threadpoolctl)."""
    from threadpoolctl import threadpool_info

    out: dict[str, Any] = {
        "threadpools": [
            {k: p.get(k) for k in ("user_api", "internal_api", "prefix", "version", "architecture", "num_threads", "threading_layer")}
            for p in threadpool_info()
        ]
    }
    try:
        import torch

        import re

        cfg = torch.__config__.show()
        found = dict(re.findall(r"\b(BLAS_INFO|LAPACK_INFO|USE_OPENMP|USE_MKLDNN)=(\w+)", cfg))
        out["torch_blas"] = ", ".join(f"{k}={v}" for k, v in found.items()) or None
        out["torch_parallel"] = torch.__config__.parallel_info().splitlines()[:5]
    except ImportError:  # pragma: no cover
        pass
    return out


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")

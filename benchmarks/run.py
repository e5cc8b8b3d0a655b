"""Run the machine ceilings and every ``benchmarks/bench_*.py`` module; write one JSON file.

    python benchmarks/run.py                 # full sizes -> benchmarks/results/cpu.json
    python benchmarks/run.py --tiny          # tiny sizes, a few seconds -> a temp file
    python benchmarks/run.py --out PATH [--threads N] [--only positional graph]
    python benchmarks/run.py --gpu           # CuPy kernels vs torch on a CUDA device -> benchmarks/results/gpu.json
    python benchmarks/run.py --gpu --emulate --tiny   # the GPU rows' plumbing on the CPU (numbers mean nothing)

The process first re-executes itself without ``OPENBLAS_CORETYPE`` and
``OPENBLAS_L2_SIZE`` (see ``blasenv.py``), then gives numba, torch and NumPy's
BLAS the same thread count (``--threads``, else ``OMP_NUM_THREADS``, else the
usable CPUs). Exit status: 0 when every row was checked and timed, 1 when a bench
module raised, 2 when a row was refused (its output disagreed) or a check failed.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import blasenv  # noqa: E402  (must run before numpy is imported)

blasenv.ensure_unset()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import importlib  # noqa: E402

import harness as H  # noqa: E402


def bench_modules(only: list[str] | None) -> list[str]:
    names = sorted(p.stem for p in HERE.glob("bench_*.py"))
    if only:
        names = [n for n in names if n.removeprefix("bench_") in only or n in only]
    return names


def format_table(rows: list[dict]) -> str:
    head = f"{'kernel':<30} {'implementation':<32} {'median ms':>10} {'vs numpy':>9} {'GB/s':>7} {'GFLOP/s':>8} {'of ceil':>8}  status"
    lines = [head, "-" * len(head)]
    for r in rows:
        if r["refused"]:
            lines.append(f"{r['kernel']:<30} {r['impl']:<32} {'':>10} {'':>9} {'':>7} {'':>8} {'':>8}  REFUSED")
            continue
        lines.append(
            f"{r['kernel']:<30} {r['impl']:<32} {r['median_s'] * 1e3:10.2f} {r['speedup_vs_numpy'] or 0:8.2f}x "
            f"{r['achieved_GBps']:7.1f} {r['achieved_GFLOPs']:8.1f} {r['frac_ceiling'] * 100:7.1f}%  ok"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny sizes, only to check that everything still works")
    ap.add_argument("--out", type=Path, help="results JSON (default benchmarks/results/cpu.json; a temp file with --tiny)")
    ap.add_argument("--threads", type=int, default=None, help="threads for numba, torch and BLAS")
    ap.add_argument("--only", nargs="*", help="bench module names to run (e.g. positional)")
    ap.add_argument("--gpu", action="store_true", help="the GPU rows (benchmarks/gpu_bench.py) on a CUDA device")
    ap.add_argument("--emulate", action="store_true", help="with --gpu: run the GPU rows on the CPU (plumbing check)")
    args = ap.parse_args(argv)
    if args.emulate and not args.gpu:
        ap.error("--emulate only goes with --gpu")
    if args.gpu:
        return main_gpu(args)

    if args.out is None:
        if args.tiny:
            fd, tmp = tempfile.mkstemp(prefix="companion-bench-tiny-", suffix=".json")
            os.close(fd)
            args.out = Path(tmp)
        else:
            args.out = HERE / "results" / "cpu.json"

    started = time.perf_counter()
    threads = args.threads or H.default_threads()
    thread_info = H.apply_threads(threads)
    print(f"threads: {thread_info}", flush=True)
    results: dict = {
        "schema": 1,
        "kind": "cpu",
        "mode": "tiny" if args.tiny else "full",
        "date": H.now_iso(),
        "machine": H.machine_info(),
        "versions": H.library_versions(),
        "blas_env": blasenv.unset_record(),
        "note": "Measured on a shared machine: other processes may have been running, so times are "
        "upper bounds and ratios are indicative. Ratios are time(other) / time(this row).",
    }

    print("measuring ceilings ...", flush=True)
    ceilings = H.measure_ceilings(tiny=args.tiny, threads=threads)
    results["ceilings"] = ceilings
    print(
        f"  copy {ceilings['copy_GBps']:.1f} GB/s ({threads} threads), {ceilings['copy_1thread_GBps']:.1f} GB/s "
        f"(1 thread); sgemm {ceilings['sgemm_GFLOPs']:.0f} GFLOP/s",
        flush=True,
    )
    ctx = H.Context(
        tiny=args.tiny,
        threads=threads,
        ceilings=ceilings,
        repeat=5 if args.tiny else 7,
        warmup=1,
        settle_s=0.0 if args.tiny else 0.3,
        log=lambda s: print(s, flush=True),
    )
    rows: list[dict] = []
    checks: list[dict] = []
    errors: list[dict] = []
    modules: dict = {}
    for name in bench_modules(args.only):
        print(f"{name} ...", flush=True)
        t0 = time.perf_counter()
        try:
            mod = importlib.import_module(name)
            out = mod.run(ctx)
        except Exception as exc:
            traceback.print_exc()
            errors.append({"module": name, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})
            continue
        rows += [r.asdict() for r in out.get("rows", [])]
        checks += out.get("checks", [])
        modules[name] = {"seconds": time.perf_counter() - t0, "source": out.get("source")}
        if out.get("note"):
            modules[name]["note"] = out["note"]

    thread_info["numba_threading_layer"] = H._numba_layer()
    results.update(
        {
            "threads": thread_info,
            "blas": H.blas_info(),
            "modules": modules,
            "checks": checks,
            "rows": rows,
            "errors": errors,
            "seconds": time.perf_counter() - started,
        }
    )
    results["machine"]["load_average_end"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(H._jsonable(results), indent=1, allow_nan=False) + "\n")

    print()
    print(format_table(rows))
    for c in checks:
        print(f"check {'ok  ' if c['ok'] else 'FAIL'} {c['name']}")
    print(f"\nwrote {args.out} in {results['seconds']:.1f} s")
    if errors:
        return 1
    if any(r["refused"] for r in rows) or not all(c["ok"] for c in checks):
        return 2
    return 0


def gpu_info() -> dict:
    info: dict = {}
    try:
        import torch

        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            info.update({"name": p.name, "multiprocessors": p.multi_processor_count,
                         "memory_bytes": p.total_memory, "torch_cuda": torch.version.cuda})
    except Exception as exc:  # pragma: no cover - reported, not fatal
        info["error"] = f"{type(exc).__name__}: {exc}"
    try:
        import cupy

        info["cupy"] = cupy.__version__
        info["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
        info["driver"] = cupy.cuda.runtime.driverGetVersion()
    except Exception as exc:
        info["cupy_error"] = f"{type(exc).__name__}: {exc}"
    return info


def main_gpu(args) -> int:
    """GPU rows: companion CuPy kernels beside torch on one device (or their CPU emulation)."""
    import gpu_bench

    if args.out is None:
        if args.emulate or args.tiny:
            fd, tmp = tempfile.mkstemp(prefix="companion-bench-gpu-", suffix=".json")
            os.close(fd)
            args.out = Path(tmp)
        else:
            args.out = HERE / "results" / "gpu.json"
    started = time.perf_counter()
    env = gpu_bench.make_env(args.emulate)
    if args.emulate:
        H.apply_threads(args.threads or H.default_threads())
    results: dict = {
        "schema": 1,
        "kind": "gpu-emulation" if args.emulate else "gpu",
        "mode": "tiny" if args.tiny else "full",
        "date": H.now_iso(),
        "machine": H.machine_info(),
        "gpu": gpu_info(),
        "versions": H.library_versions(),
        "note": "CUDA-event medians after a warm-up; every row checked against the companion NumPy reference "
        "on host copies of its input before timing. Ratios are time(other) / time(this row).",
    }
    ceilings = gpu_bench.measure_gpu_ceilings(env, tiny=args.tiny)
    results["ceilings"] = ceilings
    print(f"device copy {ceilings['copy_GBps']:.0f} GB/s, sgemm {ceilings['sgemm_GFLOPs']:.0f} GFLOP/s, "
          f"bf16 {ceilings['bf16_GFLOPs']:.0f} GFLOP/s", flush=True)
    ctx = H.Context(tiny=args.tiny, threads=1, ceilings=ceilings, repeat=5 if args.tiny else 9, warmup=2,
                    log=lambda s: print(s, flush=True), device="cpu" if args.emulate else "cuda")
    errors: list[dict] = []
    rows: list[dict] = []
    try:
        out = gpu_bench.run(ctx, env)
        rows = [r.asdict() for r in out["rows"]]
    except Exception as exc:
        traceback.print_exc()
        errors.append({"module": "gpu_bench", "error": f"{type(exc).__name__}: {exc}",
                       "traceback": traceback.format_exc()})
    results.update({"rows": rows, "checks": [], "errors": errors, "seconds": time.perf_counter() - started})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(H._jsonable(results), indent=1, allow_nan=False) + "\n")
    print()
    print(format_table(rows))
    print(f"\nwrote {args.out} in {results['seconds']:.1f} s")
    if errors:
        return 1
    return 2 if any(r["refused"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

"""The benchmark harness still works: ``benchmarks/run.py --tiny`` in a subprocess.

Not a timed test: tiny sizes only check that every bench module runs, that every
implementation's output passed its correctness checks (so none was refused), and
that the results file holds ceilings, machine information and positive times.
"""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

EXPECTED = {
    "rope_apply[half]": {"companion numpy", "companion numba", "companion numba (out=)", "torch rotate-half (user code)"},
    "rope_apply[interleaved]": {"companion numpy", "companion numba", "companion numba (out=)", "rotary-embedding-torch"},
    "alibi_attention_scores[H=16]": {
        "companion numpy",
        "companion numba",
        "torch matmul + bias (user code)",
        "x-transformers",
    },
    "alibi_attention_scores[H=12]": {
        "companion numpy",
        "companion numba",
        "torch matmul + bias (user code)",
        "x-transformers",
    },
    "random_walk_pe[large graph]": {"companion numpy", "companion numba"},
    "random_walk_pe[dense-feasible graph]": {
        "companion numpy",
        "companion numba",
        "torch dense matrix powers (user code)",
        "torch_geometric AddRandomWalkPE",
    },
    "fourier_features[F=256]": {"companion numpy", "companion numba", "torch cos/sin (user code)"},
    "ollivier_ricci_curvature[sinkhorn]": {"companion numpy", "companion numba"},
}


def test_tiny_benchmark_run(tmp_path):
    out = tmp_path / "tiny.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--tiny", "--threads", "1", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    res = json.loads(out.read_text())

    assert res["mode"] == "tiny"
    assert res["errors"] == []
    assert res["machine"]["cpu_count"] >= 1 and res["machine"].get("ram_bytes", 1) > 0
    assert res["versions"]["numpy"] and res["versions"]["torch"]
    assert res["blas"]["threadpools"], "threadpoolctl found no BLAS"
    assert res["blas_env"]["still_set"] == {}, "OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE were not unset"
    assert res["threads"]["numba"] == 1 and res["threads"]["torch"] == 1

    c = res["ceilings"]
    assert c["copy_GBps"] > 0 and c["copy_1thread_GBps"] > 0 and c["sgemm_GFLOPs"] > 0

    by_kernel: dict[str, set] = {}
    for row in res["rows"]:
        assert not row["refused"], f"{row['kernel']} / {row['impl']} refused: {row['refusal']}"
        assert row["check"]["ok"] and row["check_f64"]["ok"], row
        assert row["median_s"] > 0 and len(row["times_s"]) >= 5
        assert row["bytes_min"] > 0 and row["frac_ceiling"] > 0
        by_kernel.setdefault(row["kernel"], set()).add(row["impl"])
    for kernel, impls in EXPECTED.items():  # kernels of later parts add their own rows
        assert by_kernel.get(kernel) == impls, kernel
    for kernel, impls in by_kernel.items():
        roles = {row["role"] for row in res["rows"] if row["kernel"] == kernel}
        assert "companion" in roles, f"{kernel} has no companion row"
    modules = {p.stem for p in (ROOT / "benchmarks").glob("bench_*.py")}
    assert set(res["modules"]) == modules
    for name, info in res["modules"].items():
        assert info["seconds"] < 60, (name, info)
    assert res["checks"] and all(ch["ok"] for ch in res["checks"])


def test_tiny_benchmark_reexecs_without_openblas_overrides(tmp_path):
    """With the OpenBLAS overrides set, run.py re-executes itself without them and says so."""
    import os

    out = tmp_path / "tiny.json"
    env = dict(os.environ, OPENBLAS_CORETYPE="Haswell", OPENBLAS_L2_SIZE="1048576")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--tiny", "--threads", "1", "--out", str(out),
         "--only", "none"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    res = json.loads(out.read_text())
    assert res["blas_env"]["unset_before_start"] == {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "1048576"}
    assert res["blas_env"]["still_set"] == {}
    assert res["rows"] == [] and res["ceilings"]["sgemm_GFLOPs"] > 0
    blas = [p for p in res["blas"]["threadpools"] if p["user_api"] == "blas"]
    assert blas and all(p["architecture"] != "Haswell" for p in blas), blas

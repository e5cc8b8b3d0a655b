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
    'pq_encode': {
        'companion numba',
        'companion numpy',
        'nanopq PQ.encode',
        'faiss ProductQuantizer.compute_codes',
        'torch cdist + argmin (user code)',
    },
    'adc_search': {
        'companion numba',
        'companion numpy',
        'faiss IndexPQ.search',
        'torch gather + topk (user code)',
    },
    'nearest_centroid[VQ]': {
        'companion numba',
        'companion numpy',
        'vector_quantize_pytorch VectorQuantize',
        'torch cdist + argmin (user code)',
    },
    'random_walk_pe[large graph]': {
        'companion numba',
        'companion numpy',
    },
    'random_walk_pe[dense-feasible graph]': {
        'companion numba',
        'companion numpy',
        'torch dense matrix powers (user code)',
        'torch_geometric AddRandomWalkPE',
    },
    'random_walk_step[local order, float64, B=32]': {
        'companion numba',
        'companion numba (out=)',
        'companion numpy',
        'scipy.sparse csr @ dense',
        'torch.sparse.mm (user code)',
    },
    'random_walk_step[local order, float32, B=32]': {
        'companion numba',
        'companion numba (out=)',
        'companion numpy',
        'scipy.sparse csr @ dense',
        'torch.sparse.mm (user code)',
    },
    'random_walk_step[random order, float64, B=32]': {
        'companion numba',
        'companion numba (out=)',
        'companion numpy',
        'scipy.sparse csr @ dense',
        'torch.sparse.mm (user code)',
    },
    'laplacian_pe[k=8]': {
        'companion',
        'torch_geometric AddLaplacianEigenvectorPE',
    },
    'fourier_features[F=256]': {
        'companion numba',
        'companion numpy',
        'torch cos/sin (user code)',
    },
    'ollivier_ricci_curvature[sinkhorn]': {
        'companion numba',
        'companion numpy',
    },
    'compress_kv[knorm]': {
        'companion numba',
        'companion numpy',
        'kvpress KnormPress',
        'torch topk + gather (kvpress-style user code)',
    },
    'compress_kv[streaming_llm]': {
        'companion numba',
        'companion numpy',
        'kvpress StreamingLLMPress',
        'torch topk + gather (kvpress-style user code)',
    },
    'compress_kv[h2o]': {
        'companion numba',
        'companion numpy',
        'torch topk + gather (kvpress-style user code)',
    },
    'associative_read[argmax]': {
        'companion numba',
        'companion numpy',
        'torch matmul + argmax (user code)',
    },
    'associative_write[class sums]': {
        'companion numba',
        'companion numpy',
        'torch index_add_ (user code)',
    },
    'block_sparse_attention[dense]': {
        'companion numba',
        'companion numpy',
        'torch SDPA is_causal (user code)',
    },
    'block_sparse_attention[strided]': {
        'companion numba',
        'companion numpy',
        'torch SDPA + token mask (user code)',
    },
    'block_sparse_attention[window+global]': {
        'companion numba',
        'companion numpy',
        'torch SDPA + token mask (user code)',
    },
    'causal_linear_attention[elu+1]': {
        'companion numba',
        'companion numpy',
        'torch quadratic form (user code)',
    },
    'causal_long_conv[fft]': {
        'companion numba',
        'companion numpy',
        'torch.fft (user code)',
    },
    'hopfield_retrieve[steps=1]': {
        'companion numba',
        'companion numpy',
        'torch scaled_dot_product_attention',
        'torch softmax matmul (user code)',
    },
    'hopfield_retrieve[steps=3]': {
        'companion numba',
        'companion numpy',
        'torch scaled_dot_product_attention',
        'torch softmax matmul (user code)',
    },
    'rope_apply[half]': {
        'companion numba',
        'companion numba (out=)',
        'companion numpy',
        'torch rotate-half (user code)',
    },
    'rope_apply[interleaved]': {
        'companion numba',
        'companion numba (out=)',
        'companion numpy',
        'rotary-embedding-torch',
    },
    'alibi_attention_scores[H=16]': {
        'companion numba',
        'companion numpy',
        'torch matmul + bias (user code)',
        'x-transformers',
    },
    'alibi_attention_scores[H=12]': {
        'companion numba',
        'companion numpy',
        'torch matmul + bias (user code)',
        'x-transformers',
    },
    'kv_quantize_pack': {
        'companion numba',
        'companion numpy',
        'hqq Quantizer.quantize',
        'optimum-quanto quantize_weight',
        'torch eager (user code)',
    },
    'kv_unpack_dequantize': {
        'companion numba',
        'companion numba (out=)',
        'companion numpy',
        'hqq Quantizer.dequantize',
        'optimum-quanto dequantize',
        'torch eager (user code)',
    },
    'topk_inner_product[Q=32]': {
        'companion numba',
        'companion numba BLAS-free',
        'companion numpy',
        'faiss IndexFlatIP',
        'torch matmul + topk (user code)',
    },
    'topk_inner_product[Q=1]': {
        'companion numba',
        'companion numba BLAS-free',
        'companion numpy',
        'faiss IndexFlatIP',
        'torch matmul + topk (user code)',
    },
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
    assert set(by_kernel) == set(EXPECTED), set(by_kernel) ^ set(EXPECTED)
    for kernel, impls in EXPECTED.items():
        assert by_kernel[kernel] == impls, kernel
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


GPU_KERNELS = {
    "rope_apply[half]", "rope_apply[half, out=]", "fourier_features[F=8]", "alibi_attention_scores[H=2]",
    "hopfield_retrieve[steps=1]", "topk_inner_product[Q=32]", "topk_inner_product[Q=1]", "nearest_centroid[VQ]",
    "pack_bits[2 bits]", "unpack_bits[2 bits]", "block_sparse_attention[dense]",
    "block_sparse_attention[window+global]", "causal_linear_attention[elu+1]", "causal_long_conv[fft]",
    "compress_kv[knorm]",
}


def test_gpu_rows_plumbing_in_emulation(tmp_path):
    """``run.py --gpu --emulate --tiny``: every GPU row builds, passes its check and is timed.

    Without a GPU this runs the rows with NumPy arrays, the numba backend and torch on the
    CPU; it proves the prepared GPU check (benchmarks/gpu_check.sh) will not die on a typo,
    not that the CuPy kernels are right (their tests are marked ``gpu``).
    """
    out = tmp_path / "gpu.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--gpu", "--emulate", "--tiny", "--threads", "1",
         "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    res = json.loads(out.read_text())
    assert res["kind"] == "gpu-emulation" and res["errors"] == []
    assert res["ceilings"]["copy_GBps"] > 0 and res["ceilings"]["sgemm_GFLOPs"] > 0
    kernels = set()
    for row in res["rows"]:
        assert not row["refused"], f"{row['kernel']} / {row['impl']} refused: {row['refusal']}"
        assert row["check_f64"]["ok"] and row["median_s"] > 0
        kernels.add(row["kernel"])
    assert kernels == GPU_KERNELS, kernels ^ GPU_KERNELS
    peers = {row["kernel"] for row in res["rows"] if row["role"] == "peer"}
    assert peers == GPU_KERNELS - {"rope_apply[half, out=]"}

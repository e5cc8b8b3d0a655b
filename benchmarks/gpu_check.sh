#!/usr/bin/env bash
# The one prepared GPU check (issue 6, item 4), for a session that is lent a CUDA machine.
#
#   device run, from the repository root:  bash benchmarks/gpu_check.sh
#
# 1. the CuPy tests (`pytest -m gpu`) of the package against their NumPy references;
# 2. the GPU rows of benchmarks/gpu_bench.py (companion CuPy vs torch eager, CUDA events),
#    written to $OUT/gpu.json (or benchmarks/results/gpu.json when OUT is unset).
# The machine's own python3 (torch, CuPy, numba, scipy, pytest, hypothesis) is used and
# companion is imported from the working tree; nothing is installed or fetched.
# Copy $OUT/gpu.json to benchmarks/results/gpu.json afterwards and commit it with the card's name.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv > "$OUT/nvidia_smi.csv" 2>&1
"$PY" -c "import cupy, torch, numba, numpy; print('cupy', cupy.__version__, 'torch', torch.__version__, 'numba', numba.__version__, 'numpy', numpy.__version__)"
# Only the package's own test modules: the book and site tests need Jupyter and a browser.
timeout 240 "$PY" -m pytest -p no:cacheprovider -q -m gpu --continue-on-collection-errors \
    --junitxml="$OUT/gpu_tests.xml" \
    tests/unit/test_backend.py tests/unit/test_kernels_*.py tests/unit/test_memory_*.py \
    tests/unit/test_compression_*.py tests/unit/test_positional_*.py tests/unit/test_nn*.py \
    2>&1 | tail -n 60 | tee "$OUT/gpu_tests.log"
tests_rc=${PIPESTATUS[0]}
timeout 300 "$PY" benchmarks/run.py --gpu --out "$OUT/gpu.json" 2>&1 | tail -n 80 | tee "$OUT/gpu_bench.log"
bench_rc=${PIPESTATUS[0]}
echo "gpu tests rc=$tests_rc bench rc=$bench_rc"
exit $(( tests_rc != 0 || bench_rc != 0 ))

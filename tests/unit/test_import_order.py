"""``import companion`` loads torch before numba can start its OpenMP threads.

When numba's threading layer is launched first, torch's parallel CPU kernels run several
times slower for the rest of the process (see ``companion/__init__.py``). This checks the
import order that prevents it (the slowdown itself is a timing, measured by the benchmarks,
not asserted in a test).
"""

import subprocess
import sys

PROBE = """
import sys
import companion, numba
assert 'torch' in sys.modules, 'companion did not import torch'
numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))  # launches numba's threading layer
import torch
print(numba.threading_layer())
"""


def test_companion_imports_torch_before_numba_threads():
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip(), proc.stderr[-3000:]

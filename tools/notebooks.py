"""Execute a notebook with papermill, in smoke or full mode, with the course's environment.

Used by the test suite (one smoke run per chapter) and by the site build.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "_build"


@dataclass
class ExecutionResult:
    source: Path
    output: Path
    seconds: float


def executed_path(source: Path, mode: str) -> Path:
    """Where the executed copy of ``source`` goes: ``_build/exec/<mode>/<path relative to root>``."""
    return BUILD / "exec" / mode / source.resolve().relative_to(ROOT)


def claims_dir(mode: str) -> Path:
    return BUILD / "claims" / mode


def execute(
    source: Path,
    *,
    smoke: bool,
    parameters: dict | None = None,
    threads: int = 1,
    timeout: int | None = None,
) -> ExecutionResult:
    """Run ``source`` with papermill and save the executed copy under ``_build/exec``.

    ``SMOKE`` is injected after the cell tagged ``parameters``. Claim records go to
    ``_build/claims/<mode>/<notebook stem>/`` (cleared first, so a rerun replaces
    them). The kernel runs in the notebook's own folder, as Jupyter Book would,
    with ``threads`` BLAS/torch threads.
    """
    import papermill

    mode = "smoke" if smoke else "full"
    source = Path(source).resolve()
    output = executed_path(source, mode)
    output.parent.mkdir(parents=True, exist_ok=True)
    records = claims_dir(mode) / source.stem
    shutil.rmtree(records, ignore_errors=True)
    env_updates = {
        "COMPANION_CLAIMS_DIR": str(records),
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "NUMBA_NUM_THREADS": str(max(threads, 1)),
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        "TQDM_MININTERVAL": "5",
    }
    saved = {k: os.environ.get(k) for k in env_updates}
    os.environ.update(env_updates)
    params = {"SMOKE": smoke}
    params.update(parameters or {})
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(source),
            str(output),
            parameters=params,
            cwd=str(source.parent),
            kernel_name="python3",
            progress_bar=False,
            log_output=False,
            execution_timeout=timeout,
        )
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return ExecutionResult(source, output, time.perf_counter() - start)

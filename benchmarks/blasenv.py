"""Run this process without ``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE``.

Some machines of this project set both variables (older OpenBLAS builds
misdetect their processor); they make NumPy's current OpenBLAS fall back to a
slower kernel. A benchmark that compares against BLAS must not run under them,
and OpenBLAS reads them once, when it is loaded. So :func:`ensure_unset` must be
called before NumPy is imported: when either variable is set it re-executes the
interpreter with the same arguments and both variables removed, and records what
they were in ``COMPANION_BENCH_BLAS_ENV_UNSET`` (a JSON object) for the results.

This module imports nothing heavy on purpose.
"""

from __future__ import annotations

import json
import os
import sys

BLAS_ENV_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
MARK = "COMPANION_BENCH_BLAS_ENV_UNSET"


def ensure_unset() -> None:
    """Re-exec the current interpreter without the OpenBLAS variables, if any is set."""
    present = {k: os.environ[k] for k in BLAS_ENV_VARS if k in os.environ}
    if not present:
        os.environ.setdefault(MARK, "{}")
        return
    if "numpy" in sys.modules:  # pragma: no cover - programming error
        raise RuntimeError("blasenv.ensure_unset() must run before numpy is imported")
    env = {k: v for k, v in os.environ.items() if k not in BLAS_ENV_VARS}
    previous = json.loads(os.environ.get(MARK) or "{}")
    previous.update(present)
    env[MARK] = json.dumps(previous)
    argv = [sys.executable, *sys.orig_argv[1:]]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)


def unset_record() -> dict:
    """What the variables were before the re-exec (empty when they were not set)."""
    return {
        "unset_before_start": json.loads(os.environ.get(MARK) or "{}"),
        "still_set": {k: os.environ[k] for k in BLAS_ENV_VARS if k in os.environ},
    }

"""Coarse CPU parallelism for kernels that mix NumPy's BLAS with ``nogil`` numba code.

Calling BLAS from inside a numba ``prange`` region oversubscribes the cores (and
OpenBLAS warns about nested OpenMP loops), and a 2-thread BLAS call per small
product pays a thread barrier each time. So the numba paths of Hopfield retrieval,
the associative read and block-sparse attention split their work into independent
tasks, run them on ``workers`` Python threads that each own their scratch buffers,
and pin the BLAS to one thread while they run. The threads spend their time in
BLAS and in ``nogil`` numba kernels, both of which release the GIL.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Iterable

import numba

_CONTROLLER = None


def blas_one_thread():
    """Context manager pinning the BLAS libraries to one thread (threadpoolctl).

    The limit is process-wide while it lasts; without threadpoolctl it does nothing.
    """
    global _CONTROLLER
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency of companion and scikit-learn
        return contextlib.nullcontext()
    if _CONTROLLER is None:
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1, user_api="blas")


#: Below this many multiply-adds a call runs on the calling thread (starting threads costs more).
SMALL_WORK = 1 << 22


def default_workers(work: int, small: int = SMALL_WORK) -> int:
    """``numba.get_num_threads()`` workers for ``work`` multiply-adds of at least ``small``, else 1."""
    return numba.get_num_threads() if work >= small else 1


def run_tasks(tasks: Iterable[Any], work: Callable[[Any, Any], None], make_scratch: Callable[[], Any],
              workers: int) -> None:
    """Call ``work(task, scratch)`` for every task on ``workers`` threads.

    Each thread takes the next task from a shared iterator and owns one
    ``make_scratch()`` (its reused buffers). With one worker everything runs in the
    calling thread and the BLAS keeps its own threads; with more, the BLAS is pinned
    to one thread while they run. The first exception of a worker is re-raised here
    (the other workers stop taking tasks).
    """
    tasks = list(tasks)
    workers = max(1, min(int(workers), len(tasks)))
    next_task = iter(tasks)  # shared; next() on a list iterator is atomic under the GIL
    errors: list = []

    def worker():
        try:
            scratch = make_scratch()
            for task in next_task:
                work(task, scratch)
        except BaseException as exc:  # re-raised in the calling thread
            errors.append(exc)
            for _ in next_task:  # drain the queue so the other workers stop too
                pass

    if workers == 1:
        worker()
    else:
        with blas_one_thread():
            threads = [threading.Thread(target=worker) for _ in range(workers - 1)]
            for t in threads:
                t.start()
            worker()
            for t in threads:
                t.join()
    if errors:
        raise errors[0]

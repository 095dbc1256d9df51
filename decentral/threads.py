"""How many threads a process computes with, set in one place by every entry point.

The CLI's commands, Ray actors and tasks, and the theory's worker processes each call
:func:`limited` (or :func:`limit` for a whole process): BLAS and OpenMP pools through
threadpoolctl, PyTorch's intra-op pool through ``torch.set_num_threads`` (numba's kernels
follow PyTorch's count, see ``kernels._match_threads``). No environment variable is needed.
Counts come from :func:`per_worker`: the ``--threads`` flag when given, else an explicit
``OMP_NUM_THREADS`` (the user's own cap), else the cores this process may use shared out
among its worker processes, so workers x threads <= cores.
"""

from __future__ import annotations

import contextlib
import os
import sys


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def per_worker(threads: int | None, workers: int = 1) -> int:
    """`threads` when given; else $OMP_NUM_THREADS when the user set it; else the available
    cores divided among `workers` processes."""
    if threads:
        return int(threads)
    user = os.environ.get("OMP_NUM_THREADS", "")
    if user.isdigit() and int(user) >= 1:
        return int(user)
    return max(1, available_cores() // max(1, workers))


def _load_pools() -> None:
    """Load the BLAS libraries first: threadpoolctl only limits pools already loaded."""
    import numpy  # noqa: F401  (numpy's OpenBLAS)
    import scipy.linalg  # noqa: F401  (SciPy's own OpenBLAS)


def limit(threads: int) -> None:
    """Limit this whole process to `threads` compute threads (worker processes, actors)."""
    from threadpoolctl import threadpool_limits

    _load_pools()
    threadpool_limits(limits=threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


@contextlib.contextmanager
def limited(threads: int):
    """Compute with `threads` threads inside the block; the previous limits come back after."""
    from threadpoolctl import threadpool_limits

    _load_pools()
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    with threadpool_limits(limits=threads):
        if torch is not None:
            torch.set_num_threads(threads)
        try:
            yield threads
        finally:
            if torch is not None:
                torch.set_num_threads(before)

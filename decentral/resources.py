"""Cheap estimates of what a job will need, checked before it starts (one line if it cannot fit).

The estimates are upper-bound sketches of the large arrays only (parameters and their
gradients, a dense N x N coupling where one is used, the evaluation activations, the
training images); they exist to refuse `--units 100000` in a second instead of failing with
a MemoryError, or swapping, minutes later.
"""

from __future__ import annotations

import os

from .errors import UserInputError

TRAIN_BYTES = 60_000 * 784 * 4 * 2  # MNIST training images as float32, plus the sharded copy
TEST_IMAGES = 10_000


def available_bytes() -> int | None:
    """Memory available to a new job (MemAvailable of /proc/meminfo; None where unknown)."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.3g} GiB"


def check_fits(nbytes: float, what: str, hint: str = "") -> None:
    """UserInputError (one line) when `what` needs more than the memory available now."""
    free = available_bytes()
    if free is not None and nbytes > free:
        raise UserInputError(f"{what} needs about {_gib(nbytes)} of memory but {_gib(free)} is "
                             f"available{'; ' + hint if hint else ''}")


def n_params(depth: int, width: int, n_in: int = 784, n_out: int = 10) -> int:
    """Parameters of one unit (as model.Architecture.n_params, without building it)."""
    if depth == 0:
        return n_in * n_out + n_out
    return (n_in + 1) * width + (depth - 1) * (width + 1) * width + (width + 1) * n_out


def dense_coupling_bytes(n_units: int, replicas: int = 1) -> int:
    """A dense Q, its Laplacian and spectrum workspace, and the [R, N, N] step operator."""
    return n_units * n_units * (8 * 4 + 4 * replicas)


def dense_coupling(topology: str | None, n_units: int) -> bool:
    """Whether a run's Q is held as a dense N x N matrix (see topology.coupling.Coupling)."""
    from .topology.coupling import DENSE_MAX_UNITS

    return topology is not None and n_units <= DENSE_MAX_UNITS


def run_bytes(units: int, depth: int, width: int, test_samples: int | None, replicas: int = 1,
              dense_coupling: bool = True, n_in: int = 784) -> int:
    """Largest arrays of a run (or a sweep ensemble of `replicas` points) on inputs of n_in
    values (784: MNIST; CIFAR-10 3,072, its training images counted as 60,000 too)."""
    params = replicas * units * n_params(depth, width, n_in) * 4 * 4  # theta, gradient, update, copy
    evaluation = replicas * (test_samples or TEST_IMAGES) * units * max(width, 10) * 4 * 3
    coupling = dense_coupling_bytes(units, replicas) if dense_coupling else 0
    return params + evaluation + coupling + TRAIN_BYTES * n_in // 784


def check_run(units: int, depth: int, width: int, test_samples: int | None, replicas: int = 1,
              dense_coupling: bool = True, what: str = "this run", n_in: int = 784) -> None:
    """Refuse (one line) a run whose largest arrays cannot fit in the memory available."""
    need = run_bytes(units, depth, width, test_samples, replicas, dense_coupling, n_in)
    check_fits(need, f"{what} (N={units}, D={depth}, width={width})",
               "use fewer --units, a smaller --depth or --width" + (", or --test-samples" if
                                                                    test_samples is None else ""))


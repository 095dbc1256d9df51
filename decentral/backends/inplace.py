"""Eq. 2's sparse form updated in place: one parameter buffer instead of two.

Unit i's new row needs its neighbours' rows at t, so `kernels.LocalGrad` normally writes the
new rows into a second buffer. Here the units are cut into runs of ``RUN`` consecutive units;
one thread steps a run's units in order and keeps their new rows in a scratch block [RUN, P]
of its own. A unit's new row is written over its old one as soon as every unit of its run that
reads it (an in-neighbour: row j of W holds it) has been stepped (`ready`); a unit read from
another run (`slot` >= 0) is parked in `pending` and written back after every run is done. No
row is ever read after it changed, and each new row is computed by the same operations as in
the two-buffer form, so the numbers are bitwise the same.

On a lattice-like graph (ring, small world, lattice) only the units at a run's two ends are
read from other runs, so `pending` is small, the engine keeps one [R*N, P] buffer (N = 10,000:
636 MB instead of 1.27 GB) and a unit's new row goes over the row the gradient just read.
Graphs with far-reaching edges (scale-free) park most units and keep the two-buffer form
(`plan` returns None), as do graphs under MIN_UNITS units, where threads balance better unit by
unit (the measurements: README, next to bench_scale's table).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .layers import _compiled, _unit_gradient, numba

RUN = 16  # consecutive units stepped by one thread, in order
MAX_PARKED = 0.25  # above this share of units parked, the two-buffer form is used instead
MIN_UNITS = 2048  # below this many units the two buffers are small and per-unit threading balances better


class Plan(NamedTuple):
    """When each unit's new row may replace its old one, for W's CSR structure over U units."""

    runs: np.ndarray  # [ceil(U / RUN)] first unit of each run, in a fixed shuffled order
    ready: np.ndarray  # [U] the unit after whose step unit u's new row is written (>= u, in u's run)
    slot: np.ndarray  # [U] row of `pending` for a unit read from another run, else -1
    parked: np.ndarray  # [S] the units with a slot, in slot order


def plan(crow: np.ndarray, col: np.ndarray) -> Plan | None:
    """The in-place plan of W (crow [U+1], col [E] int64), or None below MIN_UNITS units or when
    more than MAX_PARKED of the units are read from outside their run."""
    units = crow.shape[0] - 1
    if units < max(MIN_UNITS, 1):
        return None
    readers = np.repeat(np.arange(units), np.diff(crow))  # [E] row j of each edge reads unit col
    run_of = np.arange(units) // RUN
    across = run_of[readers] != run_of[col]  # [E] read from another run
    parked = np.unique(col[across])
    if len(parked) > MAX_PARKED * units:
        return None
    ready = np.arange(units)
    np.maximum.at(ready, col[~across], readers[~across])  # the last reader within the run
    slot = np.full(units, -1, dtype=np.int64)
    slot[parked] = np.arange(len(parked))
    runs = np.arange(0, units, RUN)[np.random.default_rng(0).permutation(-(-units // RUN))]
    return Plan(runs, ready, slot, parked.astype(np.int64))


if numba is not None:

    @_compiled(parallel=True)
    def fused_sparse_in_place(source, rows, theta, label_source, label_rows, layout, loss, lr,
                              crow, col, weight, diag, runs, ready, slot, parked, pending):
        """Per run of RUN units, in parallel over runs: each unit's local gradient and its new row
        diag_u theta_u + sum_k weight_k theta_col_k - lr grad_u into the run's scratch block, each
        written over theta (or into pending [S, P]) once `ready`; then the parked rows."""
        n_units, n_params = theta.shape
        for i in numba.prange(runs.shape[0]):
            start = runs[i]
            stop = min(start + RUN, n_units)
            block = np.empty((stop - start, n_params), theta.dtype)  # the run's new rows
            g = np.empty(n_params, theta.dtype)  # the unit's gradient [P]
            for u in range(start, stop):
                loss[u] = _unit_gradient(source, rows, theta, label_source, label_rows, layout, u, g)
                new, own = block[u - start], theta[u]
                for p in range(n_params):
                    new[p] = diag[u] * own[p] - lr * g[p]
                for k in range(crow[u], crow[u + 1]):
                    w, src = weight[k], theta[col[k]]
                    for p in range(n_params):
                        new[p] += w * src[p]
                for v in range(start, u + 1):  # rows no unit of this run reads any more
                    if ready[v] == u:
                        if slot[v] >= 0:
                            pending[slot[v], :] = block[v - start]
                        else:
                            theta[v, :] = block[v - start]
        for s in numba.prange(parked.shape[0]):
            theta[parked[s], :] = pending[s]

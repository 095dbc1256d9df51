"""The order in which the sparse form steps its units: neighbours close together in time.

Unit i's new row (Eq. 2, `kernels.LocalGrad`) reads the rows of its neighbours. When the
parameters far exceed the caches (N = 10,000: 636 MB), a row still in a core's L2 from a
recent unit costs nothing, any other row a 64 KB read from memory. Stepping the units in a
depth-first order of the graph puts a unit next to the neighbour it was reached from, so
consecutive units share rows, and fewer rows are read from memory per unit than in id order
on a scale-free graph (README, "Session 8": the cache model and the measurements). Graphs
already local in id order (ring, lattice, small world) keep it: of the two orders, the one
with more edges whose units are fewer than NEAR places apart.

The order is cut into runs of RUN consecutive units, and the runs are handed to threads in a
fixed shuffled order: each thread's share of hubs (many neighbour rows) evens out, and only a
run's first units start cold. Results do not depend on the order: each unit's row is computed
alone, from rows at t, into a second buffer.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

RUN = 64  # consecutive units of the order kept together on one thread
NEAR = 16  # an edge whose units are fewer places apart than this counts as near


def unit_order(crow: np.ndarray, col: np.ndarray) -> np.ndarray:
    """[U] the units of W's CSR structure (crow [U+1], col [E] int64) in runs of RUN units of
    the depth-first order or of id order, whichever has more near edges (id order on a tie),
    the runs shuffled (fixed seed); read only."""
    units = crow.shape[0] - 1
    ids, search = np.arange(units), depth_first(crow, col)
    visit = search if near_share(search, crow, col) > near_share(ids, crow, col) else ids
    runs = [visit[s:s + RUN] for s in range(0, units, RUN)]
    order = np.concatenate([runs[r] for r in np.random.default_rng(0).permutation(len(runs))] or [visit])
    order.flags.writeable = False
    return order


def near_share(visit: np.ndarray, crow: np.ndarray, col: np.ndarray) -> float:
    """The share of W's edges whose two units are fewer than NEAR places apart in visit [U]."""
    if col.shape[0] == 0:
        return 0.0
    place = np.empty_like(visit)
    place[visit] = np.arange(visit.shape[0])
    readers = np.repeat(np.arange(crow.shape[0] - 1), np.diff(crow))  # [E] the unit of each edge's row
    return float(np.mean(np.abs(place[readers] - place[col]) < NEAR))


def depth_first(crow: np.ndarray, col: np.ndarray) -> np.ndarray:
    """[U] every unit once, depth-first over W's edges taken both ways, each connected part
    entered at its unit of highest degree: one search from an extra root joined to those units."""
    units = crow.shape[0] - 1
    structure = sp.csr_array((np.ones(col.shape[0], np.int8), col, crow), shape=(units, units))
    _, part = csgraph.connected_components(structure, directed=False)
    by_degree = np.argsort(-np.diff(crow), kind="stable")  # [U] highest degree first
    _, first = np.unique(part[by_degree], return_index=True)
    entries = by_degree[first]  # [parts] each part's unit of highest degree
    rooted = sp.csr_array((np.ones(col.shape[0] + entries.shape[0], np.int8), np.concatenate([col, entries]),
                           np.append(crow, crow[-1] + entries.shape[0])), shape=(units + 1, units + 1))
    visit = csgraph.depth_first_order(rooted, units, directed=False, return_predecessors=False)
    return visit[1:].astype(np.int64)  # without the root

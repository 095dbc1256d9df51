"""Pure planning of the distributed run: which actor hosts which units, who reads whom, what
each actor sends, and when units couple. No Ray here: the blocks and the schedule are plain
data, tested alone.

Unit i reads unit j when q_ij != 0 (Eq. 2 sums q_ij (theta_j - theta_i)). An actor hosts a
block of units A and needs, at each coupling step, something from every actor that hosts a
unit j with q_ij != 0 for some i in A: those are its *sources*; it sends to its *readers*.
Messages flow only along the edges of the supra-network, block to block.

Compressed snapshots. A reader needs from source block B only, for each of its units i,
sum_{j in B} q_ij theta_j = Q[i, B] @ theta_B. So B sends R_B @ theta_B, where R_B [k, n_B]
holds the distinct nonzero rows Q[i, B] over every unit i of every reader block, and a
reader A recovers its sums with a 0/1 selection L_AB [n_A, k] (L_AB @ R_B == Q[A, B] exactly:
each unit's row picks its own distinct row, a zero row picks nothing). Under mean field
R_B is the single row of ones: B sends its block sum, one unit's worth of floats. When
k >= n_B this saves nothing and B sends theta_B itself (*raw*; R_B = identity, L_AB = Q[A, B]).
The coupling then no longer carries the row sums of Q, so each block keeps them (`degree`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..errors import UserInputError


@dataclass(frozen=True)
class Block:
    """One actor's share of the system. n: units hosted; k_B: rows source B sends. Every matrix
    is a scipy.sparse CSR array: nothing N x N is ever built (mean field stores no Q at all)."""

    index: int  # actor index a
    units: tuple[int, ...]  # [n] units hosted by this actor, in stacking order
    sources: tuple[int, ...]  # actors whose payloads this actor reads (never itself), stacking order
    readers: tuple[int, ...]  # actors that read this actor's payload (never itself)
    send_rows: sp.csr_array  # R [k, n]: the payload is R @ theta [k, P]; identity when raw
    raw: bool  # k >= n: the payload is theta [n, P] itself (R is the identity, no product)
    source_rows: tuple[int, ...]  # k_B of each source's payload, in `sources` order
    mean_field: bool  # Q is the complete graph: Q[A, A] = 11^T - I, every payload a block sum
    local: sp.csr_array | None  # Q[A, A] [n, n]; None under mean field
    cross: sp.csr_array  # [n, sum k_B]: [C_AB1 | C_AB2 ...] with C_AB @ R_B == Q[A, B]
    #                      (L_AB, or Q[A, B] when B is raw); it multiplies the stacked payloads
    degree: np.ndarray  # [n] float64: sum_j q_ij over the full row of Q (Eq. 2's row sums)

    @property
    def q_rows(self) -> sp.csr_array:
        """[n, n + sum k_B]: [Q[A, A] | cross], the block's rows against [theta; payloads]
        (builds the n x n mean-field block: tests and the PyTorch fallback only)."""
        n = len(self.units)
        local = sp.csr_array(np.ones((n, n)) - np.eye(n)) if self.mean_field else self.local
        return sp.csr_array(sp.hstack([local, self.cross]))


@dataclass(frozen=True)
class Layout:
    """How many units each actor hosts and how many CPUs it requests, and why."""

    units_per_actor: int
    actor_cpus: float
    reason: str  # "as given", "cluster default", or "fitted to C local CPUs"


CLUSTER_DEFAULT = (1, 1.0)  # units per actor and CPUs per actor on a real cluster


def choose_layout(n_units: int, local_cpus: float | None, units_per_actor: int | None,
                  actor_cpus: float | None) -> Layout:
    """Units per actor and actor CPUs. Explicit values are kept. On a cluster (local_cpus
    None) the rest take CLUSTER_DEFAULT; on local Ray they are chosen so every actor fits on
    the machine's `local_cpus` at once: units stacked per actor first (fewer messages), then
    CPU fractions when the units per actor were given."""
    if units_per_actor is not None and actor_cpus is not None:
        return Layout(units_per_actor, actor_cpus, "as given")
    if local_cpus is None:
        return Layout(units_per_actor or CLUSTER_DEFAULT[0], actor_cpus or CLUSTER_DEFAULT[1],
                      "cluster default")
    if units_per_actor is None:
        slots = max(1, int(local_cpus // (actor_cpus or 1.0) + 1e-9))  # actors that fit at once
        units_per_actor = -(-n_units // slots)
    if actor_cpus is None:
        actors = -(-n_units // units_per_actor)
        actor_cpus = min(1.0, int(local_cpus / actors * 1e4) / 1e4)  # Ray's resource precision
    return Layout(units_per_actor, actor_cpus, f"fitted to {local_cpus:g} local CPUs")


def split_units(n_units: int, units_per_actor: int) -> list[tuple[int, ...]]:
    """Consecutive blocks of units_per_actor units (the last one may be smaller)."""
    return [tuple(range(s, min(s + units_per_actor, n_units)))
            for s in range(0, n_units, units_per_actor)]


def _owners(groups: list[tuple[int, ...]], n_units: int) -> np.ndarray:
    owner = np.empty(n_units, dtype=np.int64)  # [N] actor of each unit
    for a, group in enumerate(groups):
        owner[list(group)] = a
    return owner


def source_actors(q: sp.csr_array, groups: list[tuple[int, ...]]) -> list[list[int]]:
    """For each actor, the sorted other actors hosting an in-neighbour of one of its units."""
    owner = _owners(groups, q.shape[0])
    return [sorted(set(owner[q[list(group)].indices].tolist()) - {a}) for a, group in enumerate(groups)]


def _row_key(rows: sp.csr_array, i: int) -> tuple:
    """Row i of a CSR array as a hashable (columns, values) pair; () for an empty row."""
    cut = slice(rows.indptr[i], rows.indptr[i + 1])
    return tuple(zip(rows.indices[cut].tolist(), rows.data[cut].tolist()))


def distinct_rows(rows: sp.csr_array) -> dict[tuple, int]:
    """{row key: k} of the distinct nonzero rows of rows [m, n], in order of first appearance."""
    kept: dict[tuple, int] = {}
    for i in range(rows.shape[0]):
        key = _row_key(rows, i)
        if key and key not in kept:
            kept[key] = len(kept)
    return kept


def _rows_matrix(kept: dict[tuple, int], n: int) -> sp.csr_array:
    """R [k, n] from distinct row keys."""
    entries = [(k, col, val) for key, k in kept.items() for col, val in key]
    k_idx, cols, vals = zip(*entries) if entries else ((), (), ())
    return sp.csr_array((np.array(vals, dtype=np.float64), (np.array(k_idx, dtype=np.int64),
                         np.array(cols, dtype=np.int64))), shape=(len(kept), n))


def send_rows(q: sp.csr_array, group: tuple[int, ...], reader_units: list[int]):
    """(R [k, n], raw, row keys or None) of the block `group` read by `reader_units`."""
    kept = distinct_rows(sp.csr_array(q[reader_units][:, list(group)]))  # k distinct rows
    if len(kept) >= len(group):
        return sp.eye_array(len(group), format="csr"), True, None
    return _rows_matrix(kept, len(group)), False, kept


def selection(q_ab: sp.csr_array, raw: bool, kept: dict | None) -> sp.csr_array:
    """C_AB [n_A, k] with C_AB @ R_B == Q[A, B]: Q[A, B] when raw, else 0/1 row matches."""
    if raw:
        return q_ab
    picks = [(i, kept[key]) for i in range(q_ab.shape[0]) if (key := _row_key(q_ab, i))]
    rows, cols = zip(*picks) if picks else ((), ())
    return sp.csr_array((np.ones(len(rows)), (np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64))),
                        shape=(q_ab.shape[0], len(kept)))


def make_blocks(q, units_per_actor: int) -> list[Block]:
    """The actors' blocks for Q: a topology.Coupling (the complete graph planned without any
    matrix), or a matrix [N, N] (numpy or scipy.sparse, kept sparse)."""
    kind = getattr(q, "kind", None)
    if kind == "complete":
        return mean_field_blocks(q.n_units, units_per_actor)
    q = sp.csr_array(q.csr() if kind is not None else q, dtype=np.float64)
    q.sort_indices()
    groups = split_units(q.shape[0], units_per_actor)
    reads = source_actors(q, groups)
    readers = [tuple(b for b in range(len(groups)) if a in reads[b]) for a in range(len(groups))]
    sends = [send_rows(q, group, [u for b in readers[a] for u in groups[b]]) for a, group in enumerate(groups)]
    degree = np.asarray(q.sum(axis=1)).ravel()  # [N]
    blocks = []
    for a, group in enumerate(groups):
        rows = sp.csr_array(q[list(group)])  # [n, N]
        parts = [selection(sp.csr_array(rows[:, list(groups[b])]), *sends[b][1:]) for b in reads[a]]
        cross = sp.csr_array(sp.hstack(parts)) if parts else sp.csr_array((len(group), 0))
        blocks.append(Block(a, group, tuple(reads[a]), readers[a], sends[a][0], sends[a][1],
                            tuple(sends[b][0].shape[0] for b in reads[a]), False,
                            sp.csr_array(rows[:, list(group)]), cross, degree[list(group)]))
    return blocks


def mean_field_blocks(n_units: int, units_per_actor: int) -> list[Block]:
    """Blocks of the complete graph: every block reads every other one's sum (one row; theta
    itself for a one-unit block), and no Q is stored."""
    groups = split_units(n_units, units_per_actor)
    blocks = []
    for a, group in enumerate(groups):
        others = tuple(b for b in range(len(groups)) if b != a)
        n = len(group)
        blocks.append(Block(a, group, others, others, sp.csr_array(np.ones((1, n))), n == 1,
                            tuple(1 for _ in others), True, None,
                            sp.csr_array(np.ones((n, len(others)))), np.full(n, n_units - 1.0)))
    return blocks


COLLECTIVE, CALLS = "collective", "calls"  # the data planes (docs/ray.md, "Data planes")
PLANE_ENV = "DECENTRAL_RAY_PLANE"  # force one: "collective" or "calls" (benchmarks, tests)


def choose_plane(staleness: int, forced: str | None = None) -> str:
    """The gloo collective for synchronous runs (any tau), Ray actor calls for bounded
    staleness (an actor then steps with whatever snapshots it has, which a collective cannot
    express); `forced` (from $DECENTRAL_RAY_PLANE) overrides, except that staleness needs calls."""
    _check_env(PLANE_ENV, forced, (COLLECTIVE, CALLS))
    if staleness > 0:
        return CALLS
    if forced in (COLLECTIVE, CALLS):
        return forced
    return COLLECTIVE


def _check_env(name: str, value: str | None, allowed: tuple[str, ...]) -> None:
    """A forcing environment variable holds one of `allowed`, "auto" or nothing (a typo is an
    error, not a silent default)."""
    if value not in (None, "", "auto", *allowed):
        raise UserInputError(f"${name}={value!r}: expected {', '.join(allowed)} or auto")


SHM, GLOO = "shm", "gloo"  # the collective plane's exchanges (docs/ray.md, "Data planes")
EXCHANGE_ENV = "DECENTRAL_RAY_EXCHANGE"  # "gloo": never shared memory (benchmarks, tests)


def choose_exchange(n_nodes: int, shm_available: bool, forced: str | None = None) -> str:
    """Shared memory when every actor is on one node (and the node supports it), else gloo;
    `forced` "gloo" (from $DECENTRAL_RAY_EXCHANGE) keeps gloo everywhere."""
    _check_env(EXCHANGE_ENV, forced, (SHM, GLOO))
    if forced == GLOO or n_nodes != 1 or not shm_available:
        return GLOO
    return SHM


def slot_rows(blocks: list[Block]) -> list[int]:
    """Rows each block publishes per coupling step on the shared-memory exchange: its block
    sum under mean field (1), else its payload's k (n when raw)."""
    return [1 if b.mean_field else b.send_rows.shape[0] for b in blocks]


def is_coupling_step(step: int, gossip_period: int) -> bool:
    """Units couple on the last step of each period of tau steps (every step when tau = 1)."""
    return (step + 1) % gossip_period == 0


def coupling_sigma(sigma: float, gossip_period: int) -> float:
    """sigma applied on a coupling step: tau * sigma, so the coupling per unit time is unchanged."""
    return sigma * gossip_period


def acceptable(snapshot_step: int, step: int, staleness: int) -> bool:
    """A neighbour snapshot of `snapshot_step` may serve step `step`: at most `staleness` old."""
    return step - staleness <= snapshot_step <= step


def messages_per_coupling(blocks: list[Block]) -> int:
    """Actor-to-actor payload messages per coupling step (one per source edge)."""
    return sum(len(b.sources) for b in blocks)


def rows_per_coupling(blocks: list[Block]) -> int:
    """Payload rows (each P floats) sent per coupling step, over all messages."""
    return sum(b.send_rows.shape[0] * len(b.readers) for b in blocks)

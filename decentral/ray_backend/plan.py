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


@dataclass(frozen=True)
class Block:
    """One actor's share of the system. n: units hosted; k_B: rows source B sends."""

    index: int  # actor index a
    units: tuple[int, ...]  # [n] units hosted by this actor, in stacking order
    sources: tuple[int, ...]  # actors whose payloads this actor reads (never itself), stacking order
    readers: tuple[int, ...]  # actors that read this actor's payload (never itself)
    send_rows: np.ndarray  # R [k, n] float64: the payload is R @ theta [k, P]; identity when raw
    raw: bool  # k >= n: the payload is theta [n, P] itself (R is the identity, no product)
    source_rows: tuple[int, ...]  # k_B of each source's payload, in `sources` order
    q_rows: np.ndarray  # [n, n + sum k_B] float64: [Q[A, A] | C_AB1 | C_AB2 ...] with
    #                     C_AB @ R_B == Q[A, B] (L_AB, or Q[A, B] when B is raw); it multiplies
    #                     the stack [theta; payload_B1; payload_B2 ...] [n + sum k_B, P]
    degree: np.ndarray  # [n] float64: sum_j q_ij over the full row of Q (Eq. 2's row sums)


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


def source_actors(q: np.ndarray, groups: list[tuple[int, ...]]) -> list[list[int]]:
    """For each actor, the sorted other actors hosting an in-neighbour of one of its units."""
    owner = {u: a for a, group in enumerate(groups) for u in group}
    return [sorted({owner[int(j)] for i in group for j in np.flatnonzero(q[i])} - {a})
            for a, group in enumerate(groups)]


def distinct_rows(rows: np.ndarray) -> np.ndarray:
    """The distinct nonzero rows of rows [m, n], in order of first appearance: [k, n]."""
    kept: list[np.ndarray] = []
    for row in rows:
        if row.any() and not any(np.array_equal(row, d) for d in kept):
            kept.append(row)
    return np.array(kept, dtype=np.float64).reshape(len(kept), rows.shape[1])


def send_rows(q: np.ndarray, group: tuple[int, ...], reader_units: list[int]) -> tuple[np.ndarray, bool]:
    """(R [k, n], raw) of the block `group` read by `reader_units`: see the module docstring."""
    rows = distinct_rows(q[np.ix_(reader_units, group)])  # [k, n]
    if len(rows) >= len(group):
        return np.eye(len(group)), True
    return rows, False


def selection(q_ab: np.ndarray, rows: np.ndarray, raw: bool) -> np.ndarray:
    """C_AB [n_A, k] with C_AB @ R_B == Q[A, B]: Q[A, B] when raw, else 0/1 row matches."""
    if raw:
        return q_ab
    return (q_ab[:, None, :] == rows[None, :, :]).all(axis=2).astype(np.float64)  # [n_A, k]


def make_blocks(q: np.ndarray, units_per_actor: int) -> list[Block]:
    """The actors' blocks for coupling matrix q [N, N]."""
    q = np.asarray(q, dtype=np.float64)
    groups = split_units(q.shape[0], units_per_actor)
    reads = source_actors(q, groups)
    readers = [tuple(b for b in range(len(groups)) if a in reads[b]) for a in range(len(groups))]
    sends = [send_rows(q, group, [u for b in readers[a] for u in groups[b]])
             for a, group in enumerate(groups)]
    blocks = []
    for a, group in enumerate(groups):
        rows, raw = sends[a]
        parts = [q[np.ix_(group, group)]]  # [n, n]
        parts += [selection(q[np.ix_(group, groups[b])], *sends[b]) for b in reads[a]]  # [n, k_B]
        blocks.append(Block(index=a, units=group, sources=tuple(reads[a]), readers=readers[a],
                            send_rows=rows, raw=raw,
                            source_rows=tuple(len(sends[b][0]) for b in reads[a]),
                            q_rows=np.concatenate(parts, axis=1),  # [n, n + sum k_B]
                            degree=q[list(group)].sum(axis=1)))  # [n]
    return blocks


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
    return sum(len(b.send_rows) * len(b.readers) for b in blocks)

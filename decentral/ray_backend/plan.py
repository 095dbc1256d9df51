"""Pure planning of the distributed run: which actor hosts which units, who reads whom, and
when units couple. No Ray here: the blocks and the schedule are plain data, tested alone.

Unit i reads unit j when q_ij != 0 (Eq. 2 sums q_ij (theta_j - theta_i)). An actor hosts a
block of units I and needs, at each coupling step, the snapshots of every actor that hosts a
unit j with q_ij != 0 for some i in I: those are its *sources*; it sends its own snapshot to
its *readers*. Messages flow only along the edges of the supra-network, block to block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Block:
    """One actor's share of the system."""

    index: int  # actor index a
    units: tuple[int, ...]  # units I hosted by this actor, in stacking order
    sources: tuple[int, ...]  # actors whose snapshots this actor reads (never itself)
    readers: tuple[int, ...]  # actors that read this actor's snapshot (never itself)
    source_units: tuple[int, ...]  # own units, then each source actor's units: the stacking order
    q_rows: np.ndarray  # [n, M] Q[I][:, source_units]


def split_units(n_units: int, units_per_actor: int) -> list[tuple[int, ...]]:
    """Consecutive blocks of units_per_actor units (the last one may be smaller)."""
    return [tuple(range(s, min(s + units_per_actor, n_units)))
            for s in range(0, n_units, units_per_actor)]


def make_blocks(q: np.ndarray, units_per_actor: int) -> list[Block]:
    """The actors' blocks for coupling matrix q [N, N]."""
    q = np.asarray(q, dtype=np.float64)
    groups = split_units(q.shape[0], units_per_actor)
    owner = {u: a for a, group in enumerate(groups) for u in group}
    reads = [sorted({owner[int(j)] for i in group for j in np.flatnonzero(q[i])} - {a})
             for a, group in enumerate(groups)]
    blocks = []
    for a, group in enumerate(groups):
        readers = tuple(b for b in range(len(groups)) if a in reads[b])
        source_units = group + tuple(u for b in reads[a] for u in groups[b])
        q_rows = q[np.ix_(group, source_units)]  # [n, M]
        blocks.append(Block(a, group, tuple(reads[a]), readers, source_units, q_rows))
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
    """Actor-to-actor snapshot messages per coupling step (one per source edge)."""
    return sum(len(b.sources) for b in blocks)

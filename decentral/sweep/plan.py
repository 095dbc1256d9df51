"""Which sweep points remain, and how they are stacked into ensembles (groups).

Non-adiabatic: points of one (depth, topology) that share their pending sigma values are
stacked as K seeds x S sigmas (seed-major), at most `max_batch` replicas per group; replicas
of one seed share training batches (see decentral.ensemble). Adiabatic: one chain per
(depth, topology, seed) carried through sigma in increasing order; chains at the same sigma
index run together as replicas (K seeds x 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from .config import SweepConfig
from .store import finished_ids, load_chain_state


@dataclass(frozen=True)
class Group:
    """One stacked ensemble: seeds [K] x sigma indices [S] (adiabatic: a chain, S stages)."""

    protocol: str
    depth: int
    topology: str | None
    seeds: tuple[int, ...]
    sigma_indices: tuple[int, ...]  # into the sweep's sorted sigma list

    @property
    def replicas(self) -> int:
        return len(self.seeds) * (1 if self.protocol == "adiabatic" else len(self.sigma_indices))


def topology_tag(topology: str | None) -> str:
    return "mf" if topology is None else Path(topology).stem


def point_id(protocol: str, depth: int, topology: str | None, seed: int, sigma_index: int) -> str:
    tag = "na" if protocol == "non-adiabatic" else "ad"
    return f"{tag}-D{depth}-{topology_tag(topology)}-s{seed}-i{sigma_index:03d}"


def chain_id(depth: int, topology: str | None, seed: int) -> str:
    return f"ad-D{depth}-{topology_tag(topology)}-s{seed}"


def _chunks(items: list, n_chunks: int) -> list[list]:
    """Split items into n_chunks consecutive chunks of near-equal size."""
    size = math.ceil(len(items) / n_chunks)
    return [items[i : i + size] for i in range(0, len(items), size)]


def _stack(protocol, depth, topology, seeds: list[int], indices: list[int], max_batch: int,
           seeds_batch: bool) -> list[Group]:
    per_seed = 1 if protocol == "adiabatic" else len(indices)
    index_chunks = [indices] if protocol == "adiabatic" else _chunks(indices, math.ceil(per_seed / max_batch))
    groups = []
    for chunk in index_chunks:
        width = 1 if protocol == "adiabatic" else len(chunk)
        k = max(1, max_batch // width) if seeds_batch else 1
        for seed_chunk in _chunks(seeds, math.ceil(len(seeds) / k)):
            groups.append(Group(protocol, depth, topology, tuple(seed_chunk), tuple(chunk)))
    return groups


def plan_groups(cfg: SweepConfig, root: Path) -> list[Group]:
    """The groups still to run, in a deterministic order."""
    done = finished_ids(root)
    n_sigma = len(cfg.sigmas())
    seeds_batch = cfg.partition == "class"  # other partitions give each seed its own shards
    groups = []
    for protocol in cfg.protocols():
        for depth in cfg.protocol_depths(protocol):
            for topology in cfg.topologies():
                pending: dict[tuple[int, ...], list[int]] = {}
                for seed in cfg.seed_list():
                    todo = _pending(protocol, depth, topology, seed, n_sigma, done, root)
                    if todo:
                        pending.setdefault(tuple(todo), []).append(seed)
                for todo, seeds in pending.items():
                    groups += _stack(protocol, depth, topology, seeds, list(todo), cfg.max_batch, seeds_batch)
    return groups


def _pending(protocol, depth, topology, seed, n_sigma, done: set[str], root: Path) -> list[int]:
    if protocol == "adiabatic":
        state = load_chain_state(root, chain_id(depth, topology, seed))
        start = 0 if state is None else int(state["index"]) + 1
        return list(range(start, n_sigma))
    return [i for i in range(n_sigma) if point_id(protocol, depth, topology, seed, i) not in done]


def count_points(groups: list[Group]) -> int:
    return sum(len(g.seeds) * len(g.sigma_indices) for g in groups)

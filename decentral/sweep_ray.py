"""`decentral sweep --backend ray`: sweep groups spread over a Ray cluster as remote tasks.

Each task runs one group (a stacked ensemble of sweep points, or an adiabatic chain) on the
local engine of whichever node it lands on, loading MNIST there ($DECENTRAL_DATA or
--data-root on that node). The driver writes each task's points into the sweep directory as
the task finishes, so resuming works exactly as for local sweeps. Independent of the actor
backend of `decentral run --backend ray`, which splits one run's units over actors.
"""

from __future__ import annotations

import dataclasses

from .sweep_config import SweepConfig
from .sweep_plan import Group, count_points


def _group_task(cfg_values: dict, group: Group, chain_states: dict) -> list:
    """Body of the remote task: run one group, return what its sink received, in order."""
    import torch  # noqa: F401  (loaded before its threads are limited)

    from .data import load_mnist, resolve_data_root
    from .threads import limit as limit_threads
    from .sweep import group_problem, run_group

    cfg = SweepConfig(**cfg_values)
    limit_threads(cfg.threads or 1)  # the CPUs the task requested
    data = load_mnist(resolve_data_root(cfg.data_root), download=cfg.download)
    received: list = []
    run_group(cfg, group, group_problem(cfg, group, data), lambda r, s: received.append((r, s)),
              None, chain_states)
    return received


def run_groups_ray(cfg: SweepConfig, groups: list[Group], sink) -> None:
    """Run every group as a Ray task; hand each task's points to sink as it completes."""
    from .ray_backend.cluster import connected
    from .runner import progress_bar
    from .sweep import load_chain_states
    from .sweep_store import write_results

    values = dataclasses.asdict(cfg)
    with connected(cfg.address) as ray:
        task = ray.remote(num_cpus=cfg.threads or 1)(_group_task)
        pending = {task.remote(values, g, load_chain_states(sink.root, g)): g for g in groups}
        with progress_bar(count_points(groups), "sweep (ray)", enabled=False if cfg.quiet else None) as bar:
            bar.unit = "point"
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                group = pending.pop(done[0])
                for records, states in ray.get(done[0]):
                    sink(records, states)
                bar.update(len(group.seeds) * len(group.sigma_indices))
                write_results(sink.root)

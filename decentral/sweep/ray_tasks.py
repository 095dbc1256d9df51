"""`decentral sweep --backend ray`: sweep groups spread over a Ray cluster as remote tasks.

Each task runs one group (a stacked ensemble of sweep points, or an adiabatic chain) on the
local engine of whichever node it lands on, loading MNIST there ($DECENTRAL_DATA or
--data-root on that node). The driver writes each task's points into the sweep directory as
the task finishes, so resuming works exactly as for local sweeps. Independent of the actor
backend of `decentral run --backend ray`, which splits one run's units over actors.
"""

from __future__ import annotations

import dataclasses
import re

from .config import SweepConfig
from .plan import Group, count_points


def _group_task(cfg_values: dict, group: Group, chain_states: dict, driver_root: str | None) -> tuple:
    """Body of the remote task: run one group; ("ok", what its sink received, in order), or
    ("error", node address, one line) so the driver reports a remote failure as one line.

    The data root is --data-root, else this node's $DECENTRAL_DATA, else the driver's (as
    the actors of `decentral run --backend ray` find theirs, see ray_backend.sources)."""
    import os

    import ray
    import torch

    from ..data import DATA_ENV, load, resolve_data_root
    from .worker import group_problem, run_group

    try:
        cfg = SweepConfig(**cfg_values)
        torch.set_num_threads(cfg.threads or 1)
        root = resolve_data_root(cfg.data_root or os.environ.get(DATA_ENV) or driver_root)
        data = load(cfg.dataset, root, download=cfg.download)
        received: list = []
        run_group(cfg, group, group_problem(cfg, group, data), lambda r, s: received.append((r, s)),
                  None, chain_states)
        return ("ok", received)
    except Exception as err:  # noqa: BLE001 - every failure comes back as one line
        text = " ".join(str(err).split()) or type(err).__name__
        return ("error", ray.util.get_node_ip_address(), f"{type(err).__name__}: {text}"[:300])


def run_groups_ray(cfg: SweepConfig, groups: list[Group], sink) -> None:
    """Run every group as a Ray task; hand each task's points to sink as it completes."""
    import os

    from ..data import DATA_ENV
    from ..ray_backend.cluster import connected
    from ..runner import progress_bar
    from .worker import load_chain_states
    from .store import write_results

    values = dataclasses.asdict(cfg)
    driver_root = os.environ.get(DATA_ENV)
    with connected(cfg.address) as ray:
        task = ray.remote(num_cpus=cfg.threads or 1, max_retries=0)(_group_task)
        pending = {task.remote(values, g, load_chain_states(sink.root, g), driver_root): g for g in groups}
        with progress_bar(count_points(groups), "sweep (ray)", enabled=False if cfg.quiet else None) as bar:
            bar.unit = "point"
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                group = pending.pop(done[0])
                for records, states in _received(ray, done[0], pending):
                    sink(records, states)
                bar.update(len(group.seeds) * len(group.sigma_indices))
                write_results(sink.root)


def _received(ray, ref, pending: dict) -> list:
    """A finished task's points, or one UserInputError line naming the node that failed."""
    from ..errors import UserInputError

    try:
        outcome = ray.get(ref)
    except ray.exceptions.RayError as err:  # the task's worker or node died
        plain = re.sub(r"\x1b\[[0-9;]*m", "", str(err))  # Ray colours its tracebacks
        lines = [ln.strip() for ln in plain.splitlines() if ln.strip()]
        outcome = ("error", "unknown node", (lines[-1] if lines else type(err).__name__)[:300])
    if outcome[0] == "ok":
        return outcome[1]
    for other in pending:
        ray.cancel(other, force=True)
    raise UserInputError(f"sweep task failed on node {outcome[1]}: {outcome[2]} (finished points "
                         "are kept; rerun with --resume)")

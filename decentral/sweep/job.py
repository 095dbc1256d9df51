"""`decentral sweep`: sigma x depth x seed (x topology) under the paper's protocols (Fig. 3).

The job opens (or reopens) the sweep directory (`store`), plans the groups still to run
(`plan`), hands them to an executor, and rebuilds results.parquet, cross_accuracy.npz and
analysis.json from the finished points. Executors: `_run_local` here (groups one after another
in this process) and `ray_tasks` (groups as Ray tasks). Both run a group through `worker`, which
imports neither; each finished point is written atomically as it completes, so `--resume`
skips finished points and continues adiabatic chains from their checkpoint.
"""

from __future__ import annotations

import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from .. import datafiles, resources
from ..data import Split, load, resolve_data_root
from ..datasets import get as get_dataset
from ..eventlog import check_log_dir
from ..runner import progress_bar
from ..threads import limited as limited_threads
from ..threads import per_worker
from ..topology import Coupling, load_coupling
from .analysis import write_analysis
from .config import SweepConfig, config_hash, science_dict
from .plan import Group, count_points, plan_groups
from .store import open_store, save_chain_state, write_point, write_results
from .worker import group_problem, load_chain_states, run_group


class StoreSink:
    """Writes finished points, then chain checkpoints, atomically into the sweep directory."""

    def __init__(self, root: Path):
        self.root = root
        self.written = 0

    def __call__(self, records: list[dict], chain_states: dict[str, dict]) -> None:
        for record in records:
            write_point(self.root, record)
        for chain, payload in chain_states.items():
            save_chain_state(self.root, chain, payload)
        self.written += len(records)


@dataclass
class SweepReport:
    out: Path
    planned_points: int
    finished_points: int
    seconds: float
    rows: int


def load_couplings(cfg: SweepConfig) -> dict[str | None, Coupling]:
    """The Coupling of every topology of the sweep (None: mean field), read and validated once."""
    return {topology: load_coupling(topology, cfg.units) for topology in cfg.topologies()}


def _warn_unstable(cfg: SweepConfig, couplings: dict[str | None, Coupling]) -> None:
    for topology, coupling in couplings.items():
        bad = [s for s in cfg.sigmas() if coupling.stability_number(cfg.lr, s) >= 2]
        if bad:
            warnings.warn(f"unstable coupling for sigma >= {min(bad):g} ({len(bad)} values"
                          f"{'' if topology is None else ', ' + topology}): lr*sigma*lambda_max/N >= 2; "
                          "expect diverged points (recorded with diverged=True)", RuntimeWarning, stacklevel=2)


def topology_digests(couplings: dict[str | None, Coupling]) -> dict[str, str] | None:
    """{graph file name: sha256} of the sweep's topologies (from `Coupling.provenance`), for its
    manifest and hash; None when it runs only the mean field."""
    records = [c.provenance() for c in couplings.values() if c.provenance() is not None]
    return {record["name"]: record["sha256"] for record in records} or None


def _copy_topologies(cfg: SweepConfig, root: Path) -> None:
    """Keep a copy of every graph file beside the results (its hash is in sweep.json)."""
    files = [t for t in cfg.topologies() if t is not None]
    if files:
        (Path(root) / "topologies").mkdir(exist_ok=True)
    for path in files:
        shutil.copyfile(path, Path(root) / "topologies" / Path(path).name)


def run_sweep(cfg: SweepConfig, data: tuple[Split, Split] | None = None) -> SweepReport:
    """Run (or resume) the sweep into cfg.out with --threads (default: all cores); returns
    what was done."""
    with limited_threads(per_worker(cfg.threads)):
        return _run_sweep(cfg, data)


def _run_sweep(cfg: SweepConfig, data: tuple[Split, Split] | None) -> SweepReport:
    start = time.perf_counter()
    resources.check_run(cfg.units, max(cfg.depths()), cfg.width, cfg.test_samples,
                        replicas=min(cfg.max_batch, len(cfg.sigmas()) * cfg.seeds), what="this sweep",
                        dense_coupling=resources.dense_coupling(cfg.topology, cfg.units),
                        n_in=get_dataset(cfg.dataset).n_inputs)
    check_log_dir(cfg.log_tensorboard)  # before any work
    if data is None and cfg.backend == "local" and not cfg.resume:  # a new sweep: its data, before its directory
        datafiles.ensure(resolve_data_root(cfg.data_root), cfg.download, cfg.dataset)
    couplings = load_couplings(cfg)
    science = science_dict(cfg, topology_digests(couplings))
    root = open_store(cfg.out, science, config_hash(science), cfg.resume)
    _warn_unstable(cfg, couplings)
    _copy_topologies(cfg, root)
    groups = plan_groups(cfg, root)
    sink = StoreSink(root)
    if groups and cfg.backend == "ray":
        from .ray_tasks import run_groups_ray

        run_groups_ray(cfg, groups, sink)
    elif groups:
        _run_local(cfg, groups, sink, data)
    rows, _ = write_results(root)
    write_analysis(root)
    return SweepReport(root, count_points(groups), sink.written, time.perf_counter() - start, rows)


def _run_local(cfg: SweepConfig, groups: list[Group], sink: StoreSink, data) -> None:
    if data is None:
        data = load(cfg.dataset, resolve_data_root(cfg.data_root), download=cfg.download)
    total = count_points(groups) * (cfg.transient + cfg.steps)
    with progress_bar(total, "sweep", enabled=False if cfg.quiet else None) as bar:
        bar.unit = "pt-step"
        for group in groups:
            run_group(cfg, group, group_problem(cfg, group, data), sink, bar,
                      load_chain_states(sink.root, group))
            write_results(sink.root)

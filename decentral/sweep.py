"""`decentral sweep`: sigma x depth x seed (x topology) under the paper's protocols (Fig. 3).

Groups of sweep points (see decentral.sweep_plan) run as stacked ensembles on the local
engine (decentral.ensemble), or as Ray tasks (decentral.sweep_ray). Each finished point is
written atomically as it completes; `--resume` skips finished points and continues adiabatic
chains from their checkpoint; results.parquet, cross_accuracy.npz and analysis.json are
rebuilt from the points after every group.
"""

from __future__ import annotations

import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import resources
from .data import Shards, Split, load_mnist, resolve_data_root
from .engine import EngineState, Hyper, run_steps, sigma_tensor
from .ensemble import init_ensemble, make_ensemble_step_fn
from .evaluation import make_evaluator
from .observables import finite_replicas
from .run import Problem, final_cross, prepare, resolve_device
from .runner import Phases, progress_bar, run_phases
from .sweep_analysis import write_analysis
from .sweep_config import SweepConfig, config_hash, science_dict
from .sweep_plan import Group, chain_id, count_points, plan_groups, point_id
from .topology import file_digest, load_coupling
from .sweep_store import load_chain_state, open_store, save_chain_state, write_point, write_results
from .threads import limited as limited_threads
from .threads import per_worker

CONFIG_COLUMNS = ("units", "width", "lr", "weight_decay", "batch_size", "batches", "transient", "steps",
                  "eval_every", "init", "partition", "classes_per_unit", "dirichlet_alpha")

# sink(records, chain_states): called when points finish; chain_states maps chain id -> payload
Sink = Callable[[list[dict], dict[str, dict]], None]


class _ReplicaProgress:
    """Adapts the runner's per-step progress to a bar counting point-steps (steps x replicas)."""

    def __init__(self, bar, replicas: int):
        self.bar, self.replicas, self.count = bar, replicas, 0

    def update(self, n: int) -> None:
        self.count += n
        if self.bar is not None:
            self.bar.update(n * self.replicas)


def _device_problem(problem: Problem, device) -> tuple[Shards, Split]:
    s = problem.shards
    return Shards(s.train.to(device), s.offsets, s.sizes, s.classes), problem.test.to(device)


def _measure(cfg: SweepConfig, problem: Problem, state: EngineState, sigmas: list[float],
             seeds: tuple[int, ...], per_seed: int, bar):
    """Transient + measurement phases for one stacked ensemble; returns (state, Measurement)."""
    device = resolve_device(cfg.device)
    shards, test = _device_problem(problem, device)
    n_rep = len(sigmas)
    step_fn = make_ensemble_step_fn(problem.arch, shards, problem.coupling,
                                    sigma_tensor(sigmas, n_rep, device), seeds, per_seed,
                                    Hyper(cfg.lr, cfg.weight_decay, cfg.batch_size, cfg.batches))
    holder = {"state": state}
    evaluator = make_evaluator(problem.arch, test, cfg.eval_scheme, cfg.eval_folds)  # folds prepared once

    def advance(n: int) -> None:
        holder["state"] = run_steps(step_fn, holder["state"], n)

    def evaluate() -> dict[str, np.ndarray]:
        return evaluator(holder["state"].theta)

    progress = _ReplicaProgress(bar, n_rep)
    meas = run_phases(advance, evaluate, lambda: finite_replicas(holder["state"].theta).cpu().numpy(),
                      Phases(cfg.transient, cfg.steps, cfg.eval_every), progress=progress)
    if bar is not None:  # a fully diverged ensemble stops early: count its skipped steps
        bar.update((cfg.transient + cfg.steps - progress.count) * n_rep)
    return holder["state"], meas


def _records(cfg: SweepConfig, group: Group, problem: Problem, theta, meas, keys, sigma_list) -> list[dict]:
    """One result record per replica; keys[r] = (seed, sigma_index) of replica r."""
    averages = meas.time_average(len(keys))
    cross_loss, cross_acc = final_cross(problem.arch, theta, problem.test)
    common = {name: getattr(cfg, name) for name in CONFIG_COLUMNS}
    if cfg.eval_scheme != "full":  # (tables at the default keep their columns)
        common.update(eval_scheme=cfg.eval_scheme, eval_folds=cfg.eval_folds)
    records = []
    for r, (seed, index) in enumerate(keys):
        sigma = sigma_list[index]
        row = {"point_id": point_id(group.protocol, group.depth, group.topology, seed, index),
               "protocol": group.protocol, "depth": group.depth,
               "topology": None if group.topology is None else Path(group.topology).name,
               "seed": seed, "sigma": sigma, "sigma_over_n": sigma / cfg.units, "sigma_index": index,
               **{k: float(v[r]) for k, v in averages.items()},
               "diverged": bool(meas.diverged[r]), "diverged_at": int(meas.diverged_at[r]),
               "stability_number": problem.coupling.stability_number(cfg.lr, sigma),
               **common, "n_params": problem.arch.n_params, "test_samples": len(problem.test.y),
               "batch_replicas": len(keys), "group_train_seconds": meas.train_seconds,
               "cross_accuracy": cross_acc[r].tolist(), "cross_loss": cross_loss[r].tolist()}
        records.append(row)
    return records


def run_group(cfg: SweepConfig, group: Group, problem: Problem, sink: Sink, bar=None,
              chain_states: dict[str, dict] | None = None) -> None:
    """Run one group on the local engine, handing finished points (and chain states) to sink.

    chain_states: checkpoints an adiabatic chain resumes from (by chain id), if it does not
    start at the first sigma.
    """
    sigma_list = cfg.sigmas()
    if group.protocol == "adiabatic":
        return _run_chain(cfg, group, problem, sink, bar, sigma_list, chain_states or {})
    device = resolve_device(cfg.device)
    per_seed = len(group.sigma_indices)
    state = init_ensemble(problem.arch, group.seeds, per_seed, cfg.units, cfg.init, device)
    keys = [(seed, i) for seed in group.seeds for i in group.sigma_indices]  # seed-major
    state, meas = _measure(cfg, problem, state, [sigma_list[i] for _, i in keys], group.seeds, per_seed, bar)
    sink(_records(cfg, group, problem, state.theta, meas, keys, sigma_list), {})


def _chain_start(cfg: SweepConfig, group: Group, problem: Problem, chain_states: dict, device) -> EngineState:
    """Fresh units at the chain's first sigma, else the checkpointed parameters of each seed."""
    if group.sigma_indices[0] == 0:
        return init_ensemble(problem.arch, group.seeds, 1, cfg.units, cfg.init, device)
    payloads = [chain_states[chain_id(group.depth, group.topology, s)] for s in group.seeds]
    theta = torch.stack([p["theta"] for p in payloads]).to(device)  # [K, N, P]
    return EngineState(theta, int(payloads[0]["step"]))


def _run_chain(cfg, group: Group, problem: Problem, sink: Sink, bar, sigma_list, chain_states) -> None:
    device = resolve_device(cfg.device)
    state = _chain_start(cfg, group, problem, chain_states, device)
    for index in group.sigma_indices:
        sigma = sigma_list[index]
        state, meas = _measure(cfg, problem, state, [sigma] * len(group.seeds), group.seeds, 1, bar)
        keys = [(seed, index) for seed in group.seeds]
        theta = state.theta.detach().cpu()
        states = {chain_id(group.depth, group.topology, seed): {"theta": theta[k].clone(), "step": state.step,
                                                                "index": index, "sigma": sigma}
                  for k, seed in enumerate(group.seeds)}
        sink(_records(cfg, group, problem, state.theta, meas, keys, sigma_list), states)


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


def load_chain_states(root: Path, group: Group) -> dict[str, dict]:
    """The checkpoints an adiabatic group resumes from (empty when it starts afresh)."""
    if group.protocol != "adiabatic" or group.sigma_indices[0] == 0:
        return {}
    ids = [chain_id(group.depth, group.topology, s) for s in group.seeds]
    return {i: load_chain_state(root, i) for i in ids}


def group_problem(cfg: SweepConfig, group: Group, data) -> Problem:
    """Data, shards and Q of a group (shards depend on the seed only for non-class partitions)."""
    sigma = cfg.sigmas()[group.sigma_indices[0]]
    return prepare(cfg.run_config(group.depth, sigma, group.seeds[0], group.topology), data)


@dataclass
class SweepReport:
    out: Path
    planned_points: int
    finished_points: int
    seconds: float
    rows: int


def _warn_unstable(cfg: SweepConfig) -> None:
    for topology in cfg.topologies():
        coupling = load_coupling(topology, cfg.units)
        bad = [s for s in cfg.sigmas() if coupling.stability_number(cfg.lr, s) >= 2]
        if bad:
            warnings.warn(f"unstable coupling for sigma >= {min(bad):g} ({len(bad)} values"
                          f"{'' if topology is None else ', ' + topology}): lr*sigma*lambda_max/N >= 2; "
                          "expect diverged points (recorded with diverged=True)", RuntimeWarning, stacklevel=2)


def topology_digests(cfg: SweepConfig) -> dict[str, str] | None:
    files = [t for t in cfg.topologies() if t is not None]
    return {Path(t).name: file_digest(t) for t in files} or None


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
                        dense_coupling=resources.dense_coupling(cfg.topology, cfg.units))
    science = science_dict(cfg, topology_digests(cfg))
    root = open_store(cfg.out, science, config_hash(science), cfg.resume)
    _warn_unstable(cfg)
    _copy_topologies(cfg, root)
    groups = plan_groups(cfg, root)
    sink = StoreSink(root)
    if groups and cfg.backend == "ray":
        from .sweep_ray import run_groups_ray

        run_groups_ray(cfg, groups, sink)
    elif groups:
        _run_local(cfg, groups, sink, data)
    rows, _ = write_results(root)
    write_analysis(root)
    return SweepReport(root, count_points(groups), sink.written, time.perf_counter() - start, rows)


def _run_local(cfg: SweepConfig, groups: list[Group], sink: StoreSink, data) -> None:
    if data is None:
        data = load_mnist(resolve_data_root(cfg.data_root), download=cfg.download)
    total = count_points(groups) * (cfg.transient + cfg.steps)
    with progress_bar(total, "sweep", enabled=False if cfg.quiet else None) as bar:
        bar.unit = "pt-step"
        for group in groups:
            run_group(cfg, group, group_problem(cfg, group, data), sink, bar,
                      load_chain_states(sink.root, group))
            write_results(sink.root)

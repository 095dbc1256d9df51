"""One sweep group on the local engine: the code every executor (local, Ray tasks) runs.

A group (see `plan`) is a stacked ensemble of sweep points, or an adiabatic chain carried
through increasing sigma; `run_group` measures it and hands each finished point (and chain
checkpoints) to a sink. Nothing here imports the job or the executors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from ..engine import EngineState
from ..ensemble import init_ensemble
from ..problem import Problem, final_cross_scores, prepare, resolve_device
from ..runner import run_phases
from ..simulation import ensemble
from .config import SweepConfig
from .plan import Group, chain_id, point_id
from .store import load_chain_state

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


def _measure(cfg: SweepConfig, problem: Problem, state: EngineState, sigmas: list[float],
             seeds: tuple[int, ...], per_seed: int, bar, log=None):
    """Transient + measurement phases for one stacked ensemble (log: the after_block hook of
    --log-tensorboard, or None); returns (state, Measurement)."""
    sim = ensemble(cfg, problem, sigmas, seeds, per_seed, state, resolve_device(cfg.device))
    progress = _ReplicaProgress(bar, len(sigmas))
    meas = run_phases(sim, cfg.phases(), progress=progress, after_block=log)
    if bar is not None:  # a fully diverged ensemble stops early: count its skipped steps
        bar.update((cfg.transient + cfg.steps - progress.count) * len(sigmas))
    return sim.state, meas


def _records(cfg: SweepConfig, group: Group, problem: Problem, theta, meas, keys, sigma_list) -> list[dict]:
    """One result record per replica; keys[r] = (seed, sigma_index) of replica r."""
    averages = meas.time_average(len(keys))
    cross_loss, cross_acc = final_cross_scores(problem.arch, theta, problem.test)
    common = {name: getattr(cfg, name) for name in CONFIG_COLUMNS}
    if cfg.eval_scheme != "full":  # (tables at the default keep their columns)
        common.update(eval_scheme=cfg.eval_scheme, eval_folds=cfg.eval_folds)
    if cfg.dataset != "mnist":  # (likewise)
        common.update(dataset=cfg.dataset)
    if cfg.model != "mlp":  # (likewise)
        common.update(model=cfg.model)
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
    sigmas = [sigma_list[i] for _, i in keys]
    log = _open_log(cfg, group, keys, sigmas)
    state, meas = _measure(cfg, problem, state, sigmas, group.seeds, per_seed, bar, log)
    records = _records(cfg, group, problem, state.theta, meas, keys, sigma_list)
    _finish_log(log, records, meas)
    sink(records, {})


def _open_log(cfg: SweepConfig, group: Group, keys, sigmas: list[float]):
    """The --log-tensorboard hook of one ensemble (replica r: point keys[r]), or None."""
    if not cfg.log_tensorboard:
        return None
    from ..eventlog import EnsembleLog

    names = [point_id(group.protocol, group.depth, group.topology, seed, index) for seed, index in keys]
    return EnsembleLog(cfg.log_tensorboard, names, sigmas)


def _finish_log(log, records: list[dict], meas) -> None:
    if log is not None:
        log.finish(records, meas.train_steps)


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
        keys = [(seed, index) for seed in group.seeds]
        log = _open_log(cfg, group, keys, [sigma] * len(keys))
        state, meas = _measure(cfg, problem, state, [sigma] * len(group.seeds), group.seeds, 1, bar, log)
        theta = state.theta.detach().cpu()
        states = {chain_id(group.depth, group.topology, seed): {"theta": theta[k].clone(), "step": state.step,
                                                                "index": index, "sigma": sigma}
                  for k, seed in enumerate(group.seeds)}
        records = _records(cfg, group, problem, state.theta, meas, keys, sigma_list)
        _finish_log(log, records, meas)
        sink(records, states)


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

"""Transient and measurement phases over any simulation, as in App. C of the paper.

The runner knows nothing about models or backends: it advances a simulation (the contract of
`decentral.simulation`: `advance(n)`, `evaluate()`, `finite()`) in blocks of `eval_every`
steps, checks for divergence, evaluates observables after every block of the measurement
phase, and times the training steps apart from the evaluation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .config import Phases  # noqa: F401  (the schedule run_phases follows)

OBSERVABLES = ("loss", "accuracy", "magnetization", "mean_sq_param", "consensus_distance")


@dataclass
class Measurement:
    """What a run measured: one time-series row per (evaluation, replica)."""

    records: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0  # wall time inside training steps only
    train_steps: int = 0  # coupled steps taken
    diverged: np.ndarray | None = None  # [R] bool
    diverged_at: np.ndarray | None = None  # [R] first step seen non-finite (-1: never)

    def steps_per_second(self) -> float:
        return self.train_steps / self.train_seconds if self.train_seconds > 0 else float("nan")

    def time_average(self, n_replicas: int) -> dict[str, np.ndarray]:
        """Mean and std over the measurement records of each observable, per replica [R]."""
        out = {}
        for name in OBSERVABLES:
            series = [[r[name] for r in self.records if r["replica"] == k] for k in range(n_replicas)]
            out[name] = np.array([np.mean(s) if s else np.nan for s in series])
            out[name + "_std"] = np.array([np.std(s) if s else np.nan for s in series])
        return out


def _blocks(total: int, size: int):
    done = 0
    while done < total:
        yield min(size, total - done)
        done += size


def run_phases(
    sim,
    phases: Phases,
    step0: int = 0,
    progress=None,
    resumed: Measurement | None = None,
    after_block: Callable[[int, Measurement], None] | None = None,
) -> Measurement:
    """Run the transient, then the measured steps with an evaluation after every block.

    sim meets the contract of `decentral.simulation`: sim.advance(n) takes n coupled steps;
    sim.evaluate() returns observables per replica [R]; sim.finite() returns [R] bool. Stops
    early once every replica has diverged. A run resumed at
    step0 > 0 (from a checkpoint taken at a block boundary) continues the same plan with the
    measurement `resumed` so far; after_block(step, meas) is called after every block.
    """
    meas = resumed if resumed is not None else Measurement()
    step = 0
    plan = [(n, False) for n in _blocks(phases.transient, phases.eval_every)]
    plan += [(n, True) for n in _blocks(phases.steps, phases.eval_every)]
    for n, measured in plan:
        if step < step0:  # done before the checkpoint
            step += n
            continue
        start = time.perf_counter()
        sim.advance(n)
        meas.train_seconds += time.perf_counter() - start
        meas.train_steps += n
        step += n
        ok = np.asarray(sim.finite(), dtype=bool)
        _note_divergence(meas, ok, step)
        if progress is not None:
            progress.update(n)
        if not ok.any():
            break
        if measured:
            _record(meas, sim.evaluate(), step, ok)
        if after_block is not None:
            after_block(step, meas)
    return meas


def _note_divergence(meas: Measurement, ok: np.ndarray, step: int) -> None:
    if meas.diverged is None:
        meas.diverged = np.zeros(len(ok), dtype=bool)
        meas.diverged_at = np.full(len(ok), -1)
    newly = ~ok & ~meas.diverged
    meas.diverged_at[newly] = step
    meas.diverged |= ~ok


def _record(meas: Measurement, values: dict[str, np.ndarray], step: int, ok: np.ndarray) -> None:
    for k in range(len(ok)):
        if ok[k]:
            row = {"step": step, "replica": k}
            row.update({name: float(values[name][k]) for name in OBSERVABLES})
            meas.records.append(row)


def progress_bar(total: int, desc: str, enabled: bool | None = None):
    """A tqdm bar on stderr for long runs (auto-disabled when stderr is not a terminal)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step", disable=True if enabled is False else None,
                leave=False, dynamic_ncols=True, mininterval=0.5)

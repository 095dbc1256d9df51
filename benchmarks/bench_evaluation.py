"""Cost of a Fig. 3 point with the full and the rotating evaluation, and the paper protocol's
estimated wall time with each.

    python benchmarks/bench_evaluation.py [--replicas 10] [--seeds 3] [--folds 10] [--threads N]

Per depth, on one stacked ensemble of `--replicas` couplings (as `decentral sweep --max-batch`
stacks them): time per point-step of training, per point-evaluation on the full test set and
on one rotating fold (alternating windows, medians: the host's speed drifts), and the final
A_x. Scaled to experiments/fig3_paper.toml: 50 couplings x 3 depths x `--seeds` seeds x
(20,000 + 20,000) steps with 1,000 evaluations, plus the adiabatic D = 2 chains (costed as
D = 2 points). `--clock cpu` (the default) times this process's CPU seconds, which a shared,
oversubscribed machine inflates far less than wall time (use it with --threads 1); the wall
time of a run is then about CPU time / the share of a core it gets. `--clock wall` on a quiet
machine.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from decentral.data import load_mnist, resolve_data_root
from decentral.engine import Hyper, sigma_tensor
from decentral.ensemble import init_ensemble, make_ensemble_stepper
from decentral.evaluation import make_evaluator
from decentral.sweep.grids import paper_grid
from decentral.problem import final_cross_scores, prepare
from decentral.sweep.config import load_sweep_config

POINT_STEPS, EVALS = 40_000, 1_000  # 20,000 + 20,000 steps, evaluation every 20 measured steps


CLOCK = {"cpu": time.process_time, "wall": time.perf_counter}
clock = CLOCK["cpu"]


def _timed(fn) -> float:
    with torch.no_grad():
        start = clock()
        fn()
        return clock() - start


def depth_costs(data, depth: int, replicas: int, folds: int, steps: int, rounds: int) -> dict:
    """Seconds per point: training step, full evaluation, rotating evaluation, final A_x."""
    sigmas = list(np.geomspace(1e-2, 300, replicas))
    cfg = load_sweep_config({}, dict(out="unused", sigma=",".join(map(str, sigmas)), depth=str(depth)))
    problem = prepare(cfg.run_config(depth, 1.0, 0, None), data)
    state = {"s": init_ensemble(problem.arch, [0], replicas, cfg.units, cfg.init, "cpu")}
    stepper = make_ensemble_stepper(problem.arch, problem.shards, problem.coupling,
                                    sigma_tensor(sigmas, replicas, "cpu"), [0], replicas, Hyper())
    full = make_evaluator(problem.arch, problem.test, "full", folds)
    rotating = make_evaluator(problem.arch, problem.test, "rotating", folds)
    times: dict[str, list[float]] = {"step": [], "full": [], "rotating": []}
    for _ in range(rounds):
        times["step"].append(_timed(lambda: state.update(s=stepper.advance(state["s"], steps))) / steps)
        for name, evaluate in (("full", full), ("rotating", rotating)):  # a whole rotation each
            times[name].append(np.mean([_timed(lambda: evaluate(state["s"].theta)) for _ in range(folds)]))
    out = {k: float(np.median(v)) / replicas for k, v in times.items()}
    out["cross"] = _timed(lambda: final_cross_scores(problem.arch, state["s"].theta, problem.test)) / replicas
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=10, help="couplings stacked per ensemble")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=40, help="training steps per timed window")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--clock", choices=tuple(CLOCK), default="cpu")
    args = parser.parse_args()
    global clock
    clock = CLOCK[args.clock]
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_mnist(resolve_data_root(None))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}; ensembles of {args.replicas} couplings; {args.clock} time")
    n_sigma = len(paper_grid())
    totals = {"full": 0.0, "rotating": 0.0}
    for depth in (0, 1, 2):
        c = depth_costs(data, depth, args.replicas, args.folds, args.steps, args.rounds)
        points = n_sigma * args.seeds * (2 if depth == 2 else 1)  # D=2 also runs the adiabatic chains
        line = []
        for mode in totals:
            per_point = POINT_STEPS * c["step"] + EVALS * c[mode] + c["cross"]
            totals[mode] += points * per_point
            line.append(f"{mode} {per_point:.0f} s/point")
        print(f"  D={depth}: step {c['step'] * 1e3:.2f} ms, evaluation full {c['full'] * 1e3:.1f} ms / "
              f"rotating {c['rotating'] * 1e3:.1f} ms per point -> {', '.join(line)} ({points} points)")
    for mode, seconds in totals.items():
        print(f"fig3_paper ({args.seeds} seeds), {mode} evaluation: {seconds / 3600:.1f} h")
    print(f"rotating saves {1 - totals['rotating'] / totals['full']:.0%} "
          f"({totals['full'] / totals['rotating']:.2f}x)")


if __name__ == "__main__":
    main()

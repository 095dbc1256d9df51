"""Batched sweep vs point by point, and the estimated time of the full Fig. 3 protocol.

    python benchmarks/bench_sweep.py [--depth 1] [--transient 300] [--steps 300] [--threads N]

Part 1 times a 10-point non-adiabatic sweep (10 couplings, one seed, depth D) in one run:
`decentral sweep` (one stacked ensemble of 10 replicas, written to a scratch sweep directory)
against point by point in the same process on the same loaded MNIST (`decentral run`'s
library call `execute`, once per point: the strict comparison), and also as 10 separate
`decentral run` processes (what a user would otherwise type). All evaluate on the full test
set every 20 steps, as the paper.
It then times the two parts of a point's cost separately (training steps alone and inside
the ensemble, in alternating windows; one evaluation, which both ways do alike).
Part 2 times the pieces of one paper-sized group (50 couplings x 1 seed, as `decentral sweep`
stacks the paper grid) per depth -- training steps, evaluations, the final A_x -- and scales
them to experiments/fig3.toml: 3 depths x 50 couplings x 10 seeds x 40,000 steps with 1,000
evaluations each, non-adiabatic, plus 10 adiabatic D=2 chains (costed like D=2 points).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from decentral.data import load_mnist, resolve_data_root
from decentral.jobs.run import execute
from decentral.sweep import run_sweep
from decentral.sweep.grids import paper_grid
from decentral.sweep.config import load_sweep_config

SIGMAS = ",".join(f"{s:g}" for s in np.logspace(-2, np.log10(300), 10))


def sweep_config(out: str, **values):
    base = dict(out=out, quiet=True, eval_every=20)
    return load_sweep_config({}, {**base, **values})


def batched_vs_points(data, depth: int, transient: int, steps: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = sweep_config(tmp, sigma=SIGMAS, depth=str(depth), transient=transient, steps=steps)
        start = time.perf_counter()
        run_sweep(cfg, data)
        batched = time.perf_counter() - start
    start = time.perf_counter()
    for sigma in cfg.sigmas():
        execute(cfg.run_config(depth, sigma, 0, None), data)
    return batched, time.perf_counter() - start


def points_as_processes(depth: int, transient: int, steps: int, threads: int | None) -> float:
    """The same 10 points as 10 `decentral run` processes (each imports torch, loads MNIST)."""
    start = time.perf_counter()
    for sigma in SIGMAS.split(","):
        argv = [sys.executable, "-m", "decentral", "run", "--depth", str(depth), "--sigma", sigma,
                "--transient", str(transient), "--steps", str(steps), "--eval-every", "20"]
        subprocess.run(argv + (["--threads", str(threads)] if threads else []), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def training_and_evaluation(data, depth: int, steps: int = 100, rounds: int = 5) -> dict:
    """Where the sweep's time goes, per point: one training step of the 10 points as one
    ensemble (per point) against one engine step of a single point, timed in alternating
    windows (the host's speed drifts); and one evaluation on the full test set, which the
    two ways do alike (one wide GEMM per 32 units either way)."""
    from decentral.engine import Hyper, init_state, make_stepper, sigma_tensor
    from decentral.ensemble import init_ensemble, make_ensemble_stepper
    from decentral.observables import replica_observables
    from decentral.problem import prepare

    cfg = sweep_config("unused", sigma=SIGMAS, depth=str(depth))
    sigmas = cfg.sigmas()
    problem = prepare(cfg.run_config(depth, sigmas[-1], 0, None), data)
    n, arch, shards = len(sigmas), problem.arch, problem.shards
    ensemble = make_ensemble_stepper(arch, shards, problem.coupling,
                                     sigma_tensor(sigmas, n, "cpu"), [0], n, Hyper())
    single = make_stepper(arch, shards, problem.coupling,
                          sigma_tensor(sigmas[-1], 1, "cpu"), [0], Hyper())
    states = {"ensemble": init_ensemble(arch, [0], n, cfg.units, cfg.init, "cpu"),
              "single": init_state(arch, [0], cfg.units)}
    fns, per = {"ensemble": ensemble, "single": single}, {"ensemble": n, "single": 1}
    times: dict[str, list[float]] = {"ensemble": [], "single": [], "evaluation": []}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            states[name] = fn.advance(states[name], steps)
            times[name].append((time.perf_counter() - start) / (steps * per[name]))
        times["evaluation"].append(_timed(lambda: replica_observables(arch, states["single"].theta, problem.test)))
    return {k: float(np.median(v)) for k, v in times.items()}


def paper_estimate(data, steps: int) -> float:
    """Seconds for experiments/fig3.toml, from a paper-sized group (50 couplings x 1 seed)
    per depth: time per training step, per evaluation and for the final A_x, scaled to
    20,000 + 20,000 steps with an evaluation every 20 measured steps."""
    from decentral.engine import Hyper, sigma_tensor
    from decentral.ensemble import init_ensemble, make_ensemble_stepper
    from decentral.observables import replica_observables
    from decentral.problem import final_cross_scores, prepare

    grid, seeds, point_steps, evals = paper_grid(), 10, 40_000, 20_000 // 20
    total = 0.0
    for depth in (0, 1, 2):
        cfg = sweep_config("unused", sigma_grid="paper", depth=str(depth))
        problem = prepare(cfg.run_config(depth, 1.0, 0, None), data)
        n = len(grid)
        state = init_ensemble(problem.arch, [0], n, cfg.units, cfg.init, "cpu")
        stepper = make_ensemble_stepper(problem.arch, problem.shards, problem.coupling,
                                        sigma_tensor(grid, n, "cpu"), [0], n, Hyper())
        windows = [_timed(lambda: stepper.advance(state, steps)) for _ in range(3)]
        step = float(np.median(windows)) / (steps * n)  # median of 3 windows: the host drifts
        evaluate = _timed(lambda: replica_observables(problem.arch, state.theta, problem.test)) / n
        cross = _timed(lambda: final_cross_scores(problem.arch, state.theta, problem.test)) / n
        per_point = point_steps * step + evals * evaluate + cross
        points = n * seeds * (2 if depth == 2 else 1)  # D=2 also runs the adiabatic chains
        print(f"  D={depth}: {step * 1e3:.2f} ms per point-step, {evaluate * 1e3:.0f} ms per point "
              f"evaluation -> {per_point:.0f} s per point, {points * per_point / 3600:.1f} h")
        total += points * per_point
    return total


def _timed(fn) -> float:
    with torch.no_grad():
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=1)
    parser.add_argument("--transient", type=int, default=300)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--estimate-steps", type=int, default=100, help="training steps timed in part 2")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_mnist(resolve_data_root(None))
    with tempfile.TemporaryDirectory() as tmp:  # warm-up: one-time imports (pandas, pyarrow) and caches
        run_sweep(sweep_config(tmp, sigma="1", depth=str(args.depth), transient=1, steps=20), data)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    batched, points = batched_vs_points(data, args.depth, args.transient, args.steps)
    print(f"10-point non-adiabatic sweep, D={args.depth}, {args.transient}+{args.steps} steps, "
          f"eval every 20 on 10,000 test images:")
    print(f"  batched (one ensemble of 10): {batched:7.1f} s")
    print(f"  point by point (execute x10): {points:7.1f} s")
    print(f"  speed-up: {points / batched:.2f}x")
    parts = training_and_evaluation(data, args.depth)
    evals = args.steps // 20
    print(f"  per point: training step {parts['single'] * 1e3:.2f} ms alone, "
          f"{parts['ensemble'] * 1e3:.2f} ms in the ensemble ({parts['single'] / parts['ensemble']:.2f}x); "
          f"evaluation {parts['evaluation'] * 1e3:.0f} ms, the same both ways")
    train = (args.transient + args.steps) * parts["single"]
    print(f"  so the {evals} evaluations per point take {evals * parts['evaluation']:.2f} s of the "
          f"{train + evals * parts['evaluation']:.2f} s a point costs alone: that shared, FLOP-bound "
          f"part bounds the sweep's speed-up")
    processes = points_as_processes(args.depth, args.transient, args.steps, args.threads)
    print(f"  point by point as 10 `decentral run` processes: {processes:7.1f} s "
          f"(speed-up {processes / batched:.2f}x; includes start-up and MNIST loading per point)")
    print("full Fig. 3 protocol (experiments/fig3.toml) on this machine, estimated:")
    total = paper_estimate(data, args.estimate_steps)
    print(f"  total: {total / 3600:.1f} h ({total / 86400:.2f} days)")


if __name__ == "__main__":
    main()

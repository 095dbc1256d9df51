"""Batched sweep vs point by point, and the estimated time of the full Fig. 3 protocol.

    python benchmarks/bench_sweep.py [--depth 1] [--transient 300] [--steps 300] [--threads N]

Part 1 times a 10-point non-adiabatic sweep (10 couplings, one seed, depth D) two ways, in
one process on the same loaded MNIST: `decentral sweep` (one stacked ensemble of 10 replicas,
written to a scratch sweep directory) and point by point (`decentral run`'s library call
`execute`, once per point). Both evaluate on the full test set every 20 steps, as the paper.
Part 2 times one paper-sized group (50 couplings x 1 seed, as `decentral sweep` stacks the
paper grid) per depth for a few hundred steps and extrapolates to experiments/fig3.toml:
3 depths x 50 couplings x 10 seeds x 40,000 steps non-adiabatic plus 10 adiabatic D=2 chains.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

from decentral.data import load_mnist, resolve_data_root
from decentral.run import execute
from decentral.sweep import run_sweep
from decentral.sweep_config import load_sweep_config

SIGMAS = ",".join(f"{s:g}" for s in np.logspace(-2, np.log10(300), 10))


def sweep_config(out: str, **values):
    base = dict(out=out, progress=False, eval_every=20)
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


def paper_estimate(data, steps: int) -> float:
    """Seconds for experiments/fig3.toml, from one 50-replica group per depth."""
    grid_points, seeds, point_steps = 50, 10, 40_000
    total = 0.0
    for depth in (0, 1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = sweep_config(tmp, sigma_grid="paper", depth=str(depth), transient=steps, steps=steps)
            start = time.perf_counter()
            run_sweep(cfg, data)
            per_point_step = (time.perf_counter() - start) / (grid_points * 2 * steps)
        chains = seeds if depth == 2 else 0  # adiabatic D=2 chains (rate taken as the same)
        seconds = per_point_step * grid_points * (seeds + chains) * point_steps
        print(f"  D={depth}: {per_point_step * 1e3:.3f} ms per point-step -> {seconds / 3600:.1f} h")
        total += seconds
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=1)
    parser.add_argument("--transient", type=int, default=300)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--estimate-steps", type=int, default=100, help="steps per phase for part 2")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_mnist(resolve_data_root(None))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    batched, points = batched_vs_points(data, args.depth, args.transient, args.steps)
    print(f"10-point non-adiabatic sweep, D={args.depth}, {args.transient}+{args.steps} steps, "
          f"eval every 20 on 10,000 test images:")
    print(f"  batched (one ensemble of 10): {batched:7.1f} s")
    print(f"  point by point (execute x10): {points:7.1f} s")
    print(f"  speed-up: {points / batched:.2f}x")
    print("full Fig. 3 protocol (experiments/fig3.toml) on this machine, estimated:")
    total = paper_estimate(data, args.estimate_steps)
    print(f"  total: {total / 3600:.1f} h ({total / 86400:.2f} days)")


if __name__ == "__main__":
    main()

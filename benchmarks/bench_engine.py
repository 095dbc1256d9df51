"""Coupled steps/s: the vectorized engine against the paper notebook's per-unit loop.

Both run in this process on the same MNIST shards (N=10, unit k owns class k, batch 32,
mean-field coupling): the reference holds 10 nn.Modules and 10 torch.optim.SGD optimizers
and couples them by a Python loop over pairs, as the authors' notebook does. Prints steps/s
of each and their ratio for D=0,1,2.

    python benchmarks/bench_engine.py [--data-root DIR] [--steps 2000] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from decentral.coupling import mean_field
from decentral.data import load_mnist, partition, resolve_data_root
from decentral.engine import Hyper, coupling_tensor, init_state, make_step_fn, run_steps, sigma_tensor
from decentral.model import Architecture
from decentral.streams import BatchIndexer

SIGMA = 30.0


def engine_steps_per_second(arch, shards, n_steps: int) -> float:
    n = shards.n_units
    step_fn = make_step_fn(arch, shards, coupling_tensor(mean_field(n), 1, "cpu"),
                           sigma_tensor(SIGMA, 1, "cpu"), [0], Hyper())
    state = run_steps(step_fn, init_state(arch, [0], n), 50)  # warm-up
    start = time.perf_counter()
    run_steps(step_fn, state, n_steps)
    return n_steps / (time.perf_counter() - start)


def loop_steps_per_second(arch, shards, n_steps: int) -> float:
    n, hyper = shards.n_units, Hyper()
    theta0 = init_state(arch, [0], n).theta[0]
    nets = [arch.to_module(theta0[u]) for u in range(n)]
    opts = [torch.optim.SGD(m.parameters(), lr=hyper.lr, weight_decay=hyper.weight_decay) for m in nets]
    indexer = BatchIndexer([(0, u) for u in range(n)], shards.offsets, shards.sizes, hyper.batch_size)
    x, y = shards.train.x, shards.train.y

    def step(t: int) -> None:
        snapshot = [[p.detach().clone() for p in m.parameters()] for m in nets]
        idx = indexer.indices(t)
        for u in range(n):
            opts[u].zero_grad()
            torch.nn.functional.cross_entropy(nets[u](x[idx[u]]), y[idx[u]]).backward()
            opts[u].step()
        with torch.no_grad():
            for i in range(n):
                for j in range(n):
                    if i != j:
                        for p, pi, pj in zip(nets[i].parameters(), snapshot[i], snapshot[j]):
                            p.add_(pj - pi, alpha=hyper.lr * SIGMA / n)

    for t in range(20):
        step(t)
    start = time.perf_counter()
    for t in range(n_steps):
        step(t)
    return n_steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train, _ = load_mnist(resolve_data_root(args.data_root))
    shards = partition(train, 10, "class", seed=0)
    print(f"N=10, batch 32, mean field, {args.threads} threads, {args.steps} steps per measurement")
    print(f"{'D':>2} {'engine steps/s':>15} {'per-unit loop steps/s':>22} {'ratio':>7}")
    for depth in (0, 1, 2):
        arch = Architecture(depth=depth)
        loop = loop_steps_per_second(arch, shards, max(args.steps // 5, 100))
        engine = engine_steps_per_second(arch, shards, args.steps)
        print(f"{depth:>2} {engine:>15.0f} {loop:>22.0f} {engine / loop:>6.1f}x")


if __name__ == "__main__":
    main()

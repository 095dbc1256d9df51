"""Coupled steps/s: the vectorized engine against the paper notebook's per-unit loop.

Both run in this process on the same MNIST shards (N=10, unit k owns class k, batch 32,
mean-field coupling): the reference holds 10 nn.Modules and 10 torch.optim.SGD optimizers
and couples them by a Python loop over pairs, as the authors' notebook does. Prints steps/s
of each and their ratio for D=0,1,2, and the engine once more on its PyTorch path
(DECENTRAL_KERNELS=torch: batched GEMMs and PyTorch ops, Eq. 2 as one GEMM), to show what the
fused CPU kernels buy.

The machines this runs on are shared and their speed drifts by 2x within minutes, so the
sides are timed in alternating windows (`--rounds` of each) and the table gives the median
window of each side, their ratio, and the engine's best window (what the code does when the
machine is quiet).

    python benchmarks/bench_engine.py [--data-root DIR] [--steps 2000] [--rounds 5] [--threads 2]
                                      [--batches iid|window]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from decentral.backends import kernels
from decentral import backends
from decentral.topology import Coupling, mean_field
from decentral.data import load_mnist, partition, resolve_data_root
from decentral.engine import Hyper, init_state, make_stepper, sigma_tensor
from decentral.model import Architecture
from decentral.streams import SAMPLING, BatchIndexer

SIGMA = 30.0


def engine_windows(arch, shards, batches: str, kernel_mode: str = "fused"):
    """window(n_steps) -> steps/s of the engine over the next n_steps (state carried on), on the
    numba backend ("fused") or on the PyTorch one ("torch", as DECENTRAL_KERNELS=torch)."""
    n = shards.n_units
    backend = backends.NUMBA if kernel_mode == "fused" else backends.TORCH
    stepper = make_stepper(arch, shards, Coupling.from_matrix(mean_field(n)),
                           sigma_tensor(SIGMA, 1, "cpu"), [0], Hyper(batches=batches), backend)
    state = [stepper.advance(init_state(arch, [0], n), 50)]  # warm-up

    def window(n_steps: int) -> float:
        start = time.perf_counter()
        state[0] = stepper.advance(state[0], n_steps)
        return n_steps / (time.perf_counter() - start)

    return window


def loop_windows(arch, shards, batches: str):
    """window(n_steps) -> steps/s of the notebook-style per-unit loop over the next n_steps."""
    n, hyper = shards.n_units, Hyper()
    theta0 = init_state(arch, [0], n).theta[0]
    nets = [arch.to_module(theta0[u]) for u in range(n)]
    opts = [torch.optim.SGD(m.parameters(), lr=hyper.lr, weight_decay=hyper.weight_decay) for m in nets]
    indexer = BatchIndexer([(0, u) for u in range(n)], shards.offsets, shards.sizes, hyper.batch_size,
                           scheme=batches)
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

    clock = [0]
    for _ in range(20):
        step(clock[0])
        clock[0] += 1

    def window(n_steps: int) -> float:
        start = time.perf_counter()
        for _ in range(n_steps):
            step(clock[0])
            clock[0] += 1
        return n_steps / (time.perf_counter() - start)

    return window


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5, help="alternating windows per side")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", choices=SAMPLING, default="iid", help="batch scheme (both sides)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train, _ = load_mnist(resolve_data_root(args.data_root))
    shards = partition(train, 10, "class", seed=0)
    print(f"N=10, batch 32 ({args.batches}), mean field, {args.threads} threads, {args.rounds} alternating windows "
          f"of {args.steps} engine / {max(args.steps // 10, 50)} loop steps")
    print(f"{'D':>2} {'engine steps/s':>15} {'per-unit loop steps/s':>22} {'ratio':>7} {'engine best':>12}"
          f" {'engine, PyTorch path':>21} {'kernel gain':>12}")
    fused = "fused" if kernels.available() else "torch"
    for depth in (0, 1, 2):
        arch = Architecture(depth=depth)
        sides = (engine_windows(arch, shards, args.batches, fused), loop_windows(arch, shards, args.batches),
                 engine_windows(arch, shards, args.batches, "torch"))
        loop_steps = max(args.steps // 10, 50)
        rates = [(sides[0](args.steps), sides[1](loop_steps), sides[2](args.steps)) for _ in range(args.rounds)]
        fast, slow, plain = (statistics.median(side) for side in zip(*rates))
        best = max(r[0] for r in rates)
        print(f"{depth:>2} {fast:>15.0f} {slow:>22.0f} {fast / slow:>6.1f}x {best:>12.0f}"
              f" {plain:>21.0f} {fast / plain:>11.2f}x")


if __name__ == "__main__":
    main()

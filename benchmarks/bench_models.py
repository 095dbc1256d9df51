"""Coupled steps/s of the generic torch.func model path against the MLP's fast path and a
per-unit nn.Module loop, for the MLP and for the small CNN (`--model cnn`).

All sides run in this process on the same MNIST shards (N=10, unit k owns class k, batch 32,
mean-field coupling, sigma 30):

* generic: `engine.make_stepper` on a `functional.ModuleArch` (what `--model cnn` runs: one
  vmapped forward and one reverse pass for all units, Eq. 2 as for the MLP);
* fast path (MLP only): `make_stepper` on `model.Architecture` with its default backend (the
  numba kernel on the CPU: what `decentral run` runs);
* per-unit loop: 10 nn.Modules and 10 torch.optim.SGD, coupled by a Python loop over pairs
  (the reference of benchmarks/bench_engine.py).

The sides are timed in alternating windows (`--rounds` of each) and the table gives each
side's median window (the machine is shared; its speed drifts).

    python benchmarks/bench_models.py [--data-root DIR] [--steps 200] [--rounds 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

from decentral import models
from decentral.data import load_mnist, partition, resolve_data_root
from decentral.engine import Hyper, init_state, make_stepper, sigma_tensor
from decentral.functional import ModuleArch
from decentral.model import Architecture
from decentral.streams import BatchIndexer
from decentral.topology import Coupling, mean_field

SIGMA, N_UNITS = 30.0, 10
FACTORIES = {"mlp": models.mlp_factory(1), "cnn": models.small_cnn}  # the MLP at D = 1


@contextlib.contextmanager
def timed(n_steps: int):
    """Yields a list that holds, after the block, (steps per wall second, steps per CPU second of
    this process): on a shared machine the second is the steadier measure of the code itself."""
    rates: list = []
    wall, cpu = time.perf_counter(), time.process_time()
    yield rates
    rates += [n_steps / (time.perf_counter() - wall), n_steps / (time.process_time() - cpu)]


def engine_windows(arch, shards, theta0):
    """window(n_steps) -> steps/s of the engine (its default backend for `arch`)."""
    stepper = make_stepper(arch, shards, Coupling.from_matrix(mean_field(N_UNITS)),
                           sigma_tensor(SIGMA, 1, "cpu"), [0], Hyper())
    state = [stepper.advance(theta0, 10)]  # warm-up

    def window(n_steps: int) -> tuple[float, float]:
        with timed(n_steps) as rates:
            state[0] = stepper.advance(state[0], n_steps)
        return rates

    return window


def loop_windows(factory, shards, theta0):
    """window(n_steps) -> steps/s of the per-unit loop: N modules, N SGD optimizers, pair coupling."""
    hyper = Hyper()
    nets = [factory((1, 28, 28), 10) for _ in range(N_UNITS)]
    for net, row in zip(nets, theta0.theta[0]):
        torch.nn.utils.vector_to_parameters(row.clone(), net.parameters())
    opts = [torch.optim.SGD(m.parameters(), lr=hyper.lr, weight_decay=hyper.weight_decay) for m in nets]
    indexer = BatchIndexer([(0, u) for u in range(N_UNITS)], shards.offsets, shards.sizes, hyper.batch_size)
    x, y = shards.train.x.view(-1, 1, 28, 28), shards.train.y
    clock = [0]

    def step() -> None:
        snapshot = [[p.detach().clone() for p in m.parameters()] for m in nets]
        idx = indexer.indices(clock[0])
        for u in range(N_UNITS):
            opts[u].zero_grad()
            torch.nn.functional.cross_entropy(nets[u](x[idx[u]]), y[idx[u]]).backward()
            opts[u].step()
        with torch.no_grad():
            for i in range(N_UNITS):
                for j in range(N_UNITS):
                    if i != j:
                        for p, pi, pj in zip(nets[i].parameters(), snapshot[i], snapshot[j]):
                            p.add_(pj - pi, alpha=hyper.lr * SIGMA / N_UNITS)
        clock[0] += 1

    for _ in range(5):
        step()

    def window(n_steps: int) -> tuple[float, float]:
        with timed(n_steps) as rates:
            for _ in range(n_steps):
                step()
        return rates

    return window


def sides(name: str, shards) -> dict:
    """The timed sides of one model: generic, fast path (MLP only), per-unit loop."""
    factory = FACTORIES[name]
    generic = ModuleArch(name, factory, (1, 28, 28), 10)
    theta0 = init_state(generic, [0], N_UNITS)
    out = {"generic": engine_windows(generic, shards, theta0)}
    if name == "mlp":
        out["fast path"] = engine_windows(Architecture(depth=1), shards, theta0)
    out["per-unit loop"] = loop_windows(factory, shards, theta0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--steps", type=int, default=200, help="steps per window")
    parser.add_argument("--rounds", type=int, default=3, help="alternating windows per side")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train, _ = load_mnist(resolve_data_root(args.data_root))
    shards = partition(train, N_UNITS, "class", seed=0)
    print(f"N={N_UNITS}, batch 32, mean field, {args.threads} threads, {args.rounds} alternating windows "
          f"of {args.steps} steps; median steps per wall second (per CPU second of this process)")
    print(f"{'model':>10} {'P':>6} {'generic':>16} {'fast path':>16} {'per-unit loop':>16} {'generic/loop':>14}")
    for name in ("mlp", "cnn"):
        timed_sides = sides(name, shards)
        rates = {k: [] for k in timed_sides}
        for _ in range(args.rounds):
            for key, window in timed_sides.items():
                rates[key].append(window(args.steps))
        med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v)) for k, v in rates.items()}
        cells = {k: f"{w:.1f} ({c:.1f})" for k, (w, c) in med.items()}
        ratio = f"{med['generic'][0] / med['per-unit loop'][0]:.1f}x ({med['generic'][1] / med['per-unit loop'][1]:.1f}x)"
        n_params = ModuleArch(name, FACTORIES[name], (1, 28, 28), 10).n_params
        print(f"{name:>10} {n_params:>6} {cells['generic']:>16} {cells.get('fast path', '-'):>16}"
              f" {cells['per-unit loop']:>16} {ratio:>14}", flush=True)


if __name__ == "__main__":
    main()

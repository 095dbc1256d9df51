"""Coupled steps/s of the generic torch.func model path against the MLP's fast path and a
per-unit nn.Module loop, for the MLP and for the small CNN (`--model cnn`).

The generic and fast-path sides run the engine of `decentral run` with its defaults (N = 10,
unit k owns class k of MNIST, batch 32, mean field, sigma 30, D = 1, seed 0), built as the
command builds it (`problem.prepare`, `simulation.single_run`) and timed on its training steps:

* generic: `--model cnn`, and for the MLP the same nn.Sequential registered as a custom model
  (`models.register`, what the Python API does with a factory): one forward of all units
  (`decentral.stacked`, both being Sequentials of known layers) and one reverse pass, Eq. 2
  as for the MLP;
* fast path (MLP only): `--model mlp`, its default backend (the numba kernel on the CPU);
* per-unit loop: 10 nn.Modules and 10 torch.optim.SGD, coupled by a Python loop over pairs
  (the reference of benchmarks/bench_engine.py).

All three sides compute with the command's default threads (`RunConfig.threads`: all available
cores, or $OMP_NUM_THREADS where the user set it, `threads.per_worker`), applied to the whole
process as the command applies them; the loop runs on torch's defaults under the same limit, as
a user's own loop would. `--threads T` times them as `decentral run --threads T` instead.
The sides are timed in alternating windows (`--rounds` of each) and the table gives each
side's median window (the machine is shared; its speed drifts).

    python benchmarks/bench_models.py [--data-root DIR] [--steps 200] [--rounds 9] [--threads T]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

from decentral import models, threads
from decentral.config import RunConfig
from decentral.data import load_mnist, resolve_data_root
from decentral.engine import Hyper
from decentral.problem import prepare
from decentral.simulation import single_run
from decentral.streams import BatchIndexer

SIGMA, N_UNITS = RunConfig.sigma, RunConfig.units  # the command's defaults: 30, 10
FACTORIES = {"mlp": models.mlp_factory(RunConfig.depth), "cnn": models.small_cnn}  # the MLP at D = 1
GENERIC_NAMES = {"mlp": models.register("mlp-generic", FACTORIES["mlp"]), "cnn": "cnn"}


@contextlib.contextmanager
def timed(n_steps: int):
    """Yields a list that holds, after the block, (steps per wall second, steps per CPU second of
    this process): on a shared machine the second is the steadier measure of the code itself."""
    rates: list = []
    wall, cpu = time.perf_counter(), time.process_time()
    yield rates
    rates += [n_steps / (time.perf_counter() - wall), n_steps / (time.process_time() - cpu)]


def command_windows(model: str, data, n_threads: int):
    """(window(n_steps) -> steps/s, problem): the training steps of `decentral run --model
    MODEL --threads T` with every other flag at its default."""
    cfg = RunConfig(model=model, threads=n_threads).validate()
    problem = prepare(cfg, data)
    sim = single_run(cfg, problem, torch.device(cfg.device))
    sim.advance(10)  # warm-up

    def window(n_steps: int) -> tuple[float, float]:
        with timed(n_steps) as rates:
            sim.advance(n_steps)
        return rates

    return window, problem, sim


def loop_windows(factory, shards, theta0):
    """window(n_steps) -> steps/s of the per-unit loop: N modules, N SGD optimizers, pair coupling,
    from theta0 [N, P]."""
    hyper = Hyper()
    nets = [factory((1, 28, 28), 10) for _ in range(N_UNITS)]
    for net, row in zip(nets, theta0):
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


def sides(name: str, data, n_threads: int) -> tuple[dict, int]:
    """The timed sides of one model (generic, fast path (MLP only), per-unit loop) and its P."""
    generic, problem, sim = command_windows(GENERIC_NAMES[name], data, n_threads)
    out = {"generic": generic}
    if name == "mlp":
        out["fast path"] = command_windows("mlp", data, n_threads)[0]
    out["per-unit loop"] = loop_windows(FACTORIES[name], problem.shards, sim.theta[0].clone())
    return out, problem.arch.n_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--steps", type=int, default=200, help="steps per window")
    parser.add_argument("--rounds", type=int, default=9, help="alternating windows per side (the machine drifts: 9 gives a steadier median)")
    parser.add_argument("--threads", type=int, default=RunConfig.threads,
                        help="compute threads (default: as `decentral run`, all available cores)")
    args = parser.parse_args()
    args.threads = threads.per_worker(args.threads)  # the command's count for its --threads
    threads.limit(args.threads)  # PyTorch, BLAS and OpenMP pools: as `decentral run --threads`
    with contextlib.suppress(ImportError):  # numba's pool too, before any kernel starts it: its idle
        import numba  # workers otherwise took the loaded machine's cores from every side (10-30x slower)

        numba.set_num_threads(args.threads)
    data = load_mnist(resolve_data_root(args.data_root))
    print(f"decentral run defaults (N={N_UNITS}, batch {Hyper.batch_size}, mean field, sigma {SIGMA:g}), "
          f"{args.threads} threads, {args.rounds} alternating windows of {args.steps} steps; median steps "
          f"per wall second (per CPU second of this process)")
    print(f"{'model':>10} {'P':>6} {'generic':>16} {'fast path':>16} {'per-unit loop':>16} {'generic/loop':>14}")
    for name in ("mlp", "cnn"):
        timed_sides, n_params = sides(name, data, args.threads)
        rates = {k: [] for k in timed_sides}
        for _ in range(args.rounds):
            for key, window in timed_sides.items():
                rates[key].append(window(args.steps))
        med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v)) for k, v in rates.items()}
        cells = {k: f"{w:.1f} ({c:.1f})" for k, (w, c) in med.items()}
        ratio = f"{med['generic'][0] / med['per-unit loop'][0]:.1f}x ({med['generic'][1] / med['per-unit loop'][1]:.1f}x)"
        print(f"{name:>10} {n_params:>6} {cells['generic']:>16} {cells.get('fast path', '-'):>16}"
              f" {cells['per-unit loop']:>16} {ratio:>14}", flush=True)


if __name__ == "__main__":
    main()

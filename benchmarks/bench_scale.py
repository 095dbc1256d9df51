"""Coupled steps/s of the local engine as N grows, on the complete graph and sparse graphs.

For N = 10, 100, 1,000, 10,000 and the complete graph (no file, the default), a ring, a
small-world graph (Watts-Strogatz, degree 4, rewire 0.1) and a scale-free graph
(Barabasi-Albert, mean degree 4), D = 1, `--partition k-classes` (2 classes per unit), batch 32:
each graph is written as a file by `topology.generate`/`write_graph` (what `decentral topology
generate` does) and read back by `problem.prepare`, and the step is `engine.make_stepper` on the
run's Coupling with RunConfig's defaults, advanced by `stepper.advance` in blocks of at most
--eval-every steps, each block's state donated to the next, as `decentral run` does
(`simulation.LocalSimulation`; evaluation excluded, as in its steps_per_second).

Prints steps/s, unit-steps/s (steps/s x N) and the share of a step spent in Eq. 2's coupling:
1 - t(gradient only) / t(step), the gradient-only time from the same kernel without coupling on
the same units and batches (which writes every unit's gradient row to memory, where the fused
step keeps it in cache: at N = 10,000 that adds ~a third of the step's traffic, so the share
printed there is a lower bound). Then the targets: at N = 1,000 each sparse graph against the complete
graph, and N = 10,000 against N = 10 (unit-steps/s). Also times one full-test-set evaluation
at N = 1,000 against a training step. Then the same targets paired (--paired rounds): the two
sides of each ratio stepped in alternating blocks, the ratio taken per round, its median
reported: the N = 10 steps last 0.5-0.8 ms and the table's separate medians drift with the
machine by up to 40% between runs.

    python benchmarks/bench_scale.py [--data-root DIR] [--threads 2] [--sizes 10,100,1000,10000] [--paired 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from decentral import topology
from decentral.backends import kernels
from decentral.config import RunConfig
from decentral.data import load_mnist, resolve_data_root
from decentral.engine import Hyper, init_state, make_stepper, sigma_tensor
from decentral.evaluation import make_evaluator
from decentral.problem import prepare
from decentral.streams import BatchIndexer

GRAPHS = {"complete": None, "ring": ("ring", {}), "small_world": ("small_world", {"degree": 4}),
          "scale_free": ("scale_free", {"degree": 4})}  # fmt: skip
SIGMA = 30.0


def graph_file(name: str, n: int, folder: Path) -> str | None:
    if GRAPHS[name] is None:
        return None
    kind, kw = GRAPHS[name]
    return str(topology.write_graph(topology.generate(kind, n, 0, **kw), folder / f"{name}_{n}.edgelist"))


def timed_blocks(stepper, state, block: int, windows: int) -> tuple[float, object]:
    """Median seconds per step over `windows` blocks of `block` steps."""
    times = []
    for _ in range(windows):
        start = time.perf_counter()
        state = stepper.advance(state, block, donate=True)  # as LocalSimulation advances its own state
        times.append((time.perf_counter() - start) / block)
    return statistics.median(times), state


def gradient_only_seconds(problem, cfg, theta, block: int, windows: int) -> float:
    """Seconds per step of the same fused kernel without Eq. 2 (gradients into a second buffer)."""
    train = problem.shards.train
    kernel = kernels.LocalGrad(problem.arch.layer_shapes, train.x, train.y)
    indexer = BatchIndexer([(cfg.seed, u) for u in range(cfg.units)], problem.shards.offsets,
                           problem.shards.sizes, cfg.batch_size, "cpu", cfg.batches)
    flat = theta.reshape(-1, theta.shape[-1]).numpy()
    out = torch.zeros_like(theta).reshape(flat.shape).numpy()  # touched: no page faults in the windows
    times = []
    for w in range(windows):
        start = time.perf_counter()
        for step in range(block):
            kernel.run_rows(flat, out, indexer.host_indices(w * block + step))
        times.append((time.perf_counter() - start) / block)
    return statistics.median(times)


def built(n: int, name: str, data, folder: Path, state0, args):
    """(problem, cfg, stepper, state after two warm-up steps, block): the run's stepper on graph
    `name` with N = n, and a block of about args.block seconds by the second (warm) step (at
    most eval_every steps, as run_phases advances)."""
    cfg = RunConfig(units=n, depth=1, sigma=SIGMA, partition="k-classes", topology=graph_file(name, n, folder),
                    test_samples=100).validate()
    problem = prepare(cfg, data)
    stepper = make_stepper(problem.arch, problem.shards, problem.coupling, sigma_tensor(cfg.sigma, 1, "cpu"),
                           [cfg.seed], Hyper(cfg.lr, cfg.weight_decay, cfg.batch_size, cfg.batches))
    state = stepper.advance(state0, 1)  # cold: page faults of new buffers, caches
    start = time.perf_counter()
    state = stepper.advance(state, 1, donate=True)
    warm = time.perf_counter() - start
    return problem, cfg, stepper, state, max(1, min(cfg.eval_every, round(args.block / warm)))


def measure(n: int, name: str, data, folder: Path, state0, args) -> dict:
    problem, cfg, stepper, state, block = built(n, name, data, folder, state0, args)
    seconds, state = timed_blocks(stepper, state, block, args.windows)
    grad_seconds = gradient_only_seconds(problem, cfg, state.theta, block, args.windows)
    return {"N": n, "graph": name, "kind": problem.coupling.kind, "edges": _edges(problem.coupling),
            "steps_per_s": 1 / seconds, "unit_steps_per_s": n / seconds,
            "coupling_share": max(0.0, 1 - grad_seconds / seconds)}


def paired_ratios(pairs: list[tuple[int, str]], data, folder: Path, args) -> list[float]:
    """Unit-steps/s of pairs[0] over pairs[1], each (N, graph), in args.paired alternating rounds
    of one block each: the machine's drift hits both sides of a round alike."""
    sides = []
    for n, name in pairs:
        _, _, stepper, state, block = built(n, name, data, folder, init_state(_arch(data), [0], n), args)
        sides.append([n, stepper, state, block])
    ratios = []
    for _ in range(args.paired):
        rates = []
        for side in sides:
            seconds, side[2] = timed_blocks(side[1], side[2], side[3], 1)
            rates.append(side[0] / seconds)
        ratios.append(rates[0] / rates[1])
    return ratios


def _edges(coupling) -> int:
    n = coupling.n_units
    return n * (n - 1) // 2 if coupling.kind == "complete" else int(coupling.csr().nnz // 2)


def evaluation_cost(data, n: int = 1000) -> tuple[float, float]:
    """(seconds of one full-test-set evaluation, seconds of one training step) at N = n, complete graph."""
    cfg = RunConfig(units=n, depth=1, sigma=SIGMA, partition="k-classes").validate()
    problem = prepare(cfg, data)
    state = init_state(problem.arch, [cfg.seed], n)
    evaluator = make_evaluator(problem.arch, problem.test, "full", cfg.eval_folds)
    start = time.perf_counter()
    evaluator(state.theta)
    evaluation = time.perf_counter() - start
    stepper = make_stepper(problem.arch, problem.shards, problem.coupling, sigma_tensor(SIGMA, 1, "cpu"),
                           [cfg.seed], Hyper())
    state = stepper.advance(state, 1)
    start = time.perf_counter()
    stepper.advance(state, 5)
    return evaluation, (time.perf_counter() - start) / 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", default="10,100,1000,10000")
    parser.add_argument("--windows", type=int, default=3, help="timed blocks per (N, graph); median")
    parser.add_argument("--block", type=float, default=2.0, help="seconds per timed block (at most eval_every steps)")
    parser.add_argument("--paired", type=int, default=5, help="alternating rounds per target ratio (0: none)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_mnist(resolve_data_root(args.data_root))
    rows, sizes = [], [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            state0 = init_state(_arch(data), [0], n)  # the same initial parameters for every graph
            for name in GRAPHS:
                rows.append(measure(n, name, data, Path(tmp), state0, args))
                _print_row(rows[-1])
            del state0
    _print_targets(rows)
    if args.paired:
        with tempfile.TemporaryDirectory() as tmp:
            _print_paired(data, Path(tmp), args, sizes)
    if 1000 in {r["N"] for r in rows}:
        evaluation, step = evaluation_cost(data)
        print(f"\nN=1,000, full test set (10,000 images): one evaluation {evaluation:.2f} s, one training step "
              f"{step * 1e3:.1f} ms; at --eval-every 20 evaluation is {evaluation / (evaluation + 20 * step):.0%} "
              "of the run's time")


def _arch(data):
    from decentral.model import Architecture

    return Architecture(depth=1, width=20, n_in=data[1].x.shape[1], n_out=10)


def _print_row(row: dict) -> None:
    print(f"N={row['N']:>6} {row['graph']:<12} {row['kind']:<8} edges {row['edges']:>9,}  "
          f"{row['steps_per_s']:>9.2f} steps/s  {row['unit_steps_per_s']:>10,.0f} unit-steps/s  "
          f"coupling {row['coupling_share']:.0%}", flush=True)


def _print_targets(rows: list[dict]) -> None:
    by = {(r["N"], r["graph"]): r["unit_steps_per_s"] for r in rows}
    print("\ntargets (unit-steps/s ratios):")
    for name in list(GRAPHS)[1:]:
        if (1000, name) in by and (1000, "complete") in by:
            ratio = by[(1000, name)] / by[(1000, "complete")]
            print(f"  N=1,000 {name:<12} / complete: {ratio:.2f}x ({'met' if ratio >= 0.8 else 'NOT met'}, >= 0.8x)")
    for name in GRAPHS:
        if (10000, name) in by and (10, name) in by:
            ratio = by[(10000, name)] / by[(10, name)]
            print(f"  N=10,000 / N=10 {name:<12}: {ratio:.2f}x ({'met' if ratio >= 0.7 else 'NOT met'}, >= 0.7x)")


def _print_paired(data, folder: Path, args, sizes: list[int]) -> None:
    print(f"\ntargets, paired ({args.paired} alternating rounds of one block per side; median [min-max]):")
    targets = [((1000, g), (1000, "complete"), 0.8) for g in list(GRAPHS)[1:]] if 1000 in sizes else []
    targets += [((10000, g), (10, g), 0.7) for g in GRAPHS] if {10, 10000} <= set(sizes) else []
    for a, b, goal in targets:
        ratios = paired_ratios([a, b], data, folder, args)
        median = statistics.median(ratios)
        print(f"  N={a[0]:,} {a[1]:<12} / N={b[0]:,} {b[1]:<12}: {median:.2f}x [{min(ratios):.2f}-{max(ratios):.2f}] "
              f"({'met' if median >= goal else 'NOT met'}, >= {goal}x)", flush=True)


if __name__ == "__main__":
    main()

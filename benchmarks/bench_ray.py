"""Coupled steps/s of the Ray backend beside the local engine, measured in one run.

Eq. 2 with sigma=30, D=1 (P = 15,910 floats, 63.6 KB per unit), synchronous gossip, training
time only (actor start-up and evaluation excluded, as in `Measurement.steps_per_second`):

* N = 10 mean field (synthetic data, or MNIST with --mnist): 1 and 5 units per actor, tau 1 and 10;
* N = 1,000 (MNIST from $DECENTRAL_DATA, class partition) in 2 actors of 500 units: mean field
  and a ring.

Each Ray row prints the data plane, the actors and the nodes that hosted them, steps/s and the
ratio to the local engine on the same problem (the local engine at its defaults: all cores),
and per coupled step the bytes the actors sent and the milliseconds an actor spent in exchanges
(waiting for its peers included). --address joins a running cluster (e.g. the two loopback
nodes of docs/ray.md); without it, local Ray on loopback. The collective plane is timed with its
default exchange (shared memory when every actor is on one node, else gloo) and with gloo forced,
side by side; --plane calls adds the actor-call plane's rows for comparison.

    python benchmarks/bench_ray.py [--steps 1000] [--big-steps 20] [--address 127.0.0.2:6379] [--skip-big]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np
import torch

from decentral import topology
from decentral.config import RunConfig
from decentral.data import Split, make_shards
from decentral.model import Architecture
from decentral.problem import Problem, prepare
from decentral.jobs.run import run_local

HEADER = (f"{'N':>5} {'graph':<11}{'backend':<11}{'upa':>4}{'tau':>4}{'actors':>7}{'nodes':>6}"
          f"{'steps/s':>9}{'x local':>9}{'KB sent/step':>13}{'comm ms/step':>13}")


def synthetic_problem(n: int = 10, per_unit: int = 600) -> Problem:
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(n).repeat_interleave(per_unit)
    x = (torch.rand(n, 784, generator=gen)[y] + 0.3 * torch.randn(len(y), 784, generator=gen)).clamp(0, 1)
    shards = make_shards(Split(x, y), [np.flatnonzero(y.numpy() == u) for u in range(n)])
    test = Split(x[::10].clone(), y[::10].clone())
    return Problem(Architecture(1, 20), shards, test, topology.Coupling.complete(n))


def config(n: int, steps: int, **kw) -> RunConfig:
    return RunConfig(units=n, sigma=30.0, transient=steps, steps=20, test_samples=100,
                     **kw).validate()  # eval_every at its default (20), as `decentral run`


def bench_local(cfg, problem) -> float:
    _, meas = run_local(cfg, problem)
    return meas.steps_per_second()


def bench_ray(cfg, problem, source, plane: str, exchange: str = "auto") -> tuple[float, dict]:
    """Steps/s of `run_ray` on one data plane (and, for the collective, exchange: "auto" is the
    default choice, "gloo" forces gloo's process group)."""
    from decentral.ray_backend import run_ray

    os.environ["DECENTRAL_RAY_PLANE"] = plane
    os.environ["DECENTRAL_RAY_EXCHANGE"] = exchange
    _, meas, extra = run_ray(cfg, problem, source=source)
    return meas.steps_per_second(), extra


def variants(planes, exchanges) -> list[tuple[str, str]]:
    """(plane, exchange) pairs to time: each collective exchange asked for, then the others."""
    return [(plane, ex) for plane in planes for ex in (exchanges if plane == "collective" else ["auto"])]


def label(plane: str, extra: dict) -> str:
    return f"ray {extra['exchange']}" if plane == "collective" and extra.get("exchange") else f"ray {plane}"


def row(n, graph, backend, upa, tau, rate, local, extra=None) -> str:
    if extra is None:
        return f"{n:>5} {graph:<11}{backend:<11}{'-':>4}{'-':>4}{'-':>7}{'-':>6}{rate:>9.1f}{1.0:>9.2f}"
    steps = extra["total_steps"]
    kb = extra["bytes"] / steps / 1024
    comm = 1e3 * extra["comm_seconds"] / extra["actors"] / steps
    return (f"{n:>5} {graph:<11}{backend:<11}{upa:>4}{tau:>4}{extra['actors']:>7}{extra['nodes']:>6}"
            f"{rate:>9.1f}{rate / local:>9.3f}{kb:>13.1f}{comm:>13.2f}")


def small_cases(args, cpus: float, planes) -> None:
    from decentral.ray_backend.sources import InlineSource, mnist_source

    base = config(10, args.steps)
    problem = prepare(base) if args.mnist else synthetic_problem()
    source = mnist_source(base) if args.mnist else InlineSource(problem.shards, problem.test)
    local = bench_local(base, problem)
    print(row(10, "mean field", "local", 0, 0, local, local), flush=True)
    for upa in args.upa or (1, 5):
        for tau in (1, 10):
            for plane, exchange in variants(planes, args.exchange or ["auto", "gloo"]):
                actors = -(-10 // upa)
                cfg = config(10, args.steps, backend="ray", units_per_actor=upa, gossip_period=tau,
                             actor_cpus=int(100 * cpus / actors) / 100, address=args.address)
                rate, extra = bench_ray(cfg, problem, source, plane, exchange)
                extra["total_steps"] = args.steps + 20
                print(row(10, "mean field", label(plane, extra), upa, tau, rate, local, extra), flush=True)


def big_cases(args, cpus: float) -> None:
    from decentral.ray_backend.sources import mnist_source

    for graph in ("mean field", "ring"):
        kw = {} if graph == "mean field" else {"topology": args.ring}
        base = config(1000, args.big_steps, **kw)
        problem = prepare(base)
        local = bench_local(base, problem)
        print(row(1000, graph, "local", 0, 0, local, local), flush=True)
        cfg = config(1000, args.big_steps, backend="ray", units_per_actor=500, actor_cpus=cpus / 2,
                     address=args.address, **kw)
        rate, extra = bench_ray(cfg, problem, mnist_source(cfg), "collective")
        extra["total_steps"] = args.big_steps + 20
        print(row(1000, graph, label("collective", extra), 500, 1, rate, local, extra), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000,
                        help="timed steps per N=10 configuration (each run includes its start: 300 steps amortise it poorly)")
    parser.add_argument("--big-steps", type=int, default=20, help="timed steps per N=1000 configuration")
    parser.add_argument("--mnist", action="store_true", help="real MNIST for N=10 too")
    parser.add_argument("--address", default=None, help="a running Ray cluster (default: local Ray)")
    parser.add_argument("--plane", action="append", default=None, help="collective (default) and/or calls")
    parser.add_argument("--exchange", action="append", default=None,
                        help="collective exchanges to time: auto (shm on one node, else gloo) and/or gloo "
                             "(default: both, side by side)")
    parser.add_argument("--upa", action="append", type=int, default=None, help="units per actor (default: 1 and 5)")
    parser.add_argument("--ring", default="/tmp/decentral-bench-ring1000.edgelist", help="ring graph file")
    parser.add_argument("--skip-big", action="store_true", help="only the N=10 cases")
    args = parser.parse_args()
    from decentral.ray_backend import cluster

    if not args.skip_big and not os.path.exists(args.ring):
        subprocess.run([sys.executable, "-m", "decentral", "topology", "generate", "ring", "--nodes", "1000",
                        "--out", args.ring], check=True, capture_output=True)
    start = time.perf_counter()
    with cluster.connected(args.address) as ray:
        cpus = ray.cluster_resources().get("CPU", 1.0)
        nodes = len([n for n in ray.nodes() if n["Alive"]])
        print(f"ray: {time.perf_counter() - start:.1f} s to connect; {nodes} node(s), {cpus:g} CPUs; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print(HEADER)
        small_cases(args, cpus, args.plane or ["collective"])
        if not args.skip_big:
            big_cases(args, cpus)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

"""Coupled steps/s of the Ray backend beside the local engine, measured in one run.

N=10 mean field (Eq. 2, sigma=30, D=1), synchronous gossip, tau in {1, 10}, units per actor in
{1, 5}, on local Ray bound to loopback. Training time only (actor start-up and evaluation are
excluded, as in `Measurement.steps_per_second`). Prints a table, the ratio to the local engine,
the payload per message (compressed block snapshots, see docs/ray.md) and the per-step
overhead with its per-message share.

    python benchmarks/bench_ray.py [--steps 300] [--mnist]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from decentral import topology
from decentral.config import RunConfig
from decentral.data import Split, make_shards
from decentral.model import Architecture
from decentral.problem import Problem, prepare
from decentral.jobs.run import run_local

N = 10


def synthetic_problem(per_unit: int = 600) -> Problem:
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(N).repeat_interleave(per_unit)
    x = (torch.rand(N, 784, generator=gen)[y] + 0.3 * torch.randn(len(y), 784, generator=gen)).clamp(0, 1)
    shards = make_shards(Split(x, y), [np.flatnonzero(y.numpy() == u) for u in range(N)])
    test = Split(x[::10].clone(), y[::10].clone())
    return Problem(Architecture(1, 20), shards, test, topology.Coupling.complete(N))


def config(steps: int, **kw) -> RunConfig:
    return RunConfig(units=N, sigma=30.0, transient=steps, steps=20, eval_every=20, test_samples=500,
                     threads=1, **kw).validate()


def bench_local(problem, steps: int) -> float:
    torch.set_num_threads(1)
    _, meas = run_local(config(steps), problem)
    return meas.steps_per_second()


def bench_ray(problem, steps: int, upa: int, tau: int, source, cpus: float) -> tuple[float, dict]:
    from decentral.ray_backend import run_ray

    actors = -(-N // upa)
    cfg = config(steps, backend="ray", units_per_actor=upa, gossip_period=tau,
                 actor_cpus=int(100 * cpus / actors) / 100)  # the cluster's CPUs shared evenly
    _, meas, extra = run_ray(cfg, problem, source=source)
    return meas.steps_per_second(), extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="timed steps per configuration")
    parser.add_argument("--mnist", action="store_true", help="real MNIST from $DECENTRAL_DATA")
    args = parser.parse_args()
    import ray

    from decentral.ray_backend.sources import InlineSource, mnist_source

    if args.mnist:
        problem = prepare(config(args.steps))
        source = mnist_source(config(args.steps))
    else:
        problem = synthetic_problem()
        source = InlineSource(problem.shards, problem.test)
    start = time.perf_counter()
    ray.init(_node_ip_address=os.environ.get("DECENTRAL_RAY_NODE_IP", "127.0.0.2"),
             include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    cpus = ray.cluster_resources().get("CPU", 1.0)
    print(f"ray.init: {time.perf_counter() - start:.1f} s; CPUs {cpus:g}; {args.steps} timed steps each")
    local = bench_local(problem, args.steps)
    print(f"{'backend':<10}{'upa':>4}{'tau':>5}{'actors':>7}{'msgs/step':>10}{'steps/s':>9}"
          f"{'KB/msg':>8}{'x local':>9}{'ms/step':>9}{'overhead ms':>12}{'ms/msg':>8}")
    print(f"{'local':<10}{'-':>4}{'-':>5}{'-':>7}{0:>10}{local:>9.1f}{'-':>8}{1.0:>9.2f}{1e3 / local:>9.2f}")
    for upa in (1, 5):
        for tau in (1, 10):
            rate, extra = bench_ray(problem, args.steps, upa, tau, source, cpus)
            per_step = extra["messages_per_coupling"] / tau
            overhead = 1e3 / rate - 1e3 / local
            per_msg = overhead / per_step if per_step else float("nan")
            kb = extra["bytes"] / max(extra["messages"], 1) / 1024
            print(f"{'ray':<10}{upa:>4}{tau:>5}{extra['actors']:>7}{per_step:>10.1f}{rate:>9.1f}{kb:>8.1f}"
                  f"{rate / local:>9.3f}{1e3 / rate:>9.2f}{overhead:>12.2f}{per_msg:>8.2f}", flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()

"""Time the full Fig. 2 protocol as a user runs it, the CLI's default command

    decentral theory --depth 0,1,2 --sigma-grid paper --realizations 200 --protocol both

(no other flags, no thread variables in its environment), against the per-realization
solve_ivp loop the authors ran (estimated from a measured subset), and print the ratio.

    python benchmarks/bench_theory.py [--realizations 200] [--loop-sample 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

from scipy.integrate import solve_ivp

from decentral.theory import TheoryConfig
from decentral.theory.protocols import disorder, initial_state, worker_count
from decentral.threads import available_cores, limited

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def _rhs(delta, sigma, depth, gamma):
    """Eq. 4, mean field, one realization, vectorized over units (the authors' loop body)."""
    def fun(t, m):
        return delta * m**depth - m ** (2 * depth + 1) - gamma * m + sigma * (m.mean() - m)
    return fun


def _solve(cfg, delta, sigma, depth, m0):
    sol = solve_ivp(_rhs(delta, sigma, depth, cfg.gamma), (0, cfg.t_end), m0, method="RK45",
                    t_eval=cfg.t_eval)
    return sol.y[:, -1]


def loop_estimate(cfg: TheoryConfig, per_sigma: int, sigma_stride: int) -> tuple[float, float]:
    """Seconds the solve_ivp loop would take for the full protocol, and seconds measured.

    Non-adiabatic: ``per_sigma`` realizations at every ``sigma_stride``-th coupling, scaled
    to all couplings and realizations. Adiabatic: one realization carried through the whole
    grid per depth, scaled to all realizations.
    """
    n_sigma, total, measured = cfg.sigmas.size, 0.0, 0.0
    for depth in cfg.depths:
        delta = disorder(cfg, depth)
        if "non-adiabatic" in cfg.protocols:
            picked = range(0, n_sigma, sigma_stride)
            start = time.perf_counter()
            for k in picked:
                m0 = initial_state(cfg, depth, k)
                for r in range(per_sigma):
                    _solve(cfg, delta[r], cfg.sigmas[k], depth, m0[r])
            spent = time.perf_counter() - start
            measured += spent
            total += spent / (len(picked) * per_sigma) * n_sigma * cfg.realizations
        if "adiabatic" in cfg.protocols:
            start = time.perf_counter()
            m = initial_state(cfg, depth, 0)[0]
            for sigma in cfg.sigmas:
                m = _solve(cfg, delta[0], sigma, depth, m)
            spent = time.perf_counter() - start
            measured += spent
            total += spent * cfg.realizations
    return total, measured


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # waited-for descendants, workers included
    return usage.ru_utime + usage.ru_stime


def time_cli(realizations: int) -> tuple[float, float]:
    """Wall and CPU seconds of the default `decentral theory` command, in a fresh process."""
    command = [sys.executable, "-m", "decentral", "theory", "--depth", "0,1,2", "--sigma-grid",
               "paper", "--realizations", str(realizations), "--protocol", "both"]
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    start, cpu = time.perf_counter(), _children_cpu()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start, _children_cpu() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realizations", type=int, default=200)
    parser.add_argument("--loop-sample", type=int, default=2,
                        help="solve_ivp realizations per sampled coupling")
    parser.add_argument("--sigma-stride", type=int, default=6,
                        help="sample every k-th coupling for the loop estimate")
    args = parser.parse_args()
    cfg = TheoryConfig(realizations=args.realizations)
    print(f"full Fig. 2 protocol: D={list(cfg.depths)}, {cfg.sigmas.size} sigma, "
          f"{cfg.realizations} realizations, N={cfg.n_units}, protocols {list(cfg.protocols)}, "
          f"{available_cores()} available cores")
    batched, batched_cpu = time_cli(args.realizations)
    print(f"`decentral theory` defaults ({worker_count(cfg)} worker process(es), 1 BLAS thread "
          f"each): {batched:8.1f} s wall, {batched_cpu:.1f} s CPU (process start included)")
    with limited(1):  # the loop at its best: one process, one BLAS thread
        cpu = time.process_time()
        loop, measured = loop_estimate(cfg, args.loop_sample, args.sigma_stride)
        loop_cpu = loop * (time.process_time() - cpu) / measured
    print(f"solve_ivp loop (estimated from {measured:.1f} s measured): {loop:8.1f} s wall, "
          f"{loop_cpu:.1f} s CPU")
    print(f"speed-up: {loop / batched:.1f}x wall; CPU time {loop_cpu / batched_cpu:.1f}x "
          "(less sensitive to other jobs on a shared machine)")


if __name__ == "__main__":
    main()

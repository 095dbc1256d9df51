"""Time the full Fig. 2 protocol with the batched integrator against the per-realization
solve_ivp loop the authors ran (estimated from a measured subset), and print the ratio.

    python benchmarks/bench_theory.py [--realizations 200] [--workers 2] [--loop-sample 2]

Full protocol: D = 0, 1, 2; the paper's 60 couplings; 200 realizations; both protocols.
"""

from __future__ import annotations

import os

for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")  # before NumPy loads BLAS: one thread per process

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from scipy.integrate import solve_ivp  # noqa: E402

from decentral.theory import TheoryConfig, run_theory  # noqa: E402
from decentral.theory.protocols import disorder, initial_state  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realizations", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--loop-sample", type=int, default=2,
                        help="solve_ivp realizations per sampled coupling")
    parser.add_argument("--sigma-stride", type=int, default=6,
                        help="sample every k-th coupling for the loop estimate")
    args = parser.parse_args()
    cfg = TheoryConfig(realizations=args.realizations, workers=args.workers)
    print(f"full Fig. 2 protocol: D={list(cfg.depths)}, {cfg.sigmas.size} sigma, "
          f"{cfg.realizations} realizations, N={cfg.n_units}, protocols {list(cfg.protocols)}, "
          f"{os.cpu_count()} CPUs")
    start = time.perf_counter()
    table = run_theory(cfg)
    batched = time.perf_counter() - start
    print(f"batched RK45 ({args.workers} worker(s)): {batched:8.1f} s  "
          f"({table.steps_mean.mean():.0f} steps per integration on average)")
    loop, measured = loop_estimate(cfg, args.loop_sample, args.sigma_stride)
    print(f"solve_ivp loop (estimated from {measured:.1f} s measured): {loop:8.1f} s")
    print(f"speed-up: {loop / batched:.1f}x")


if __name__ == "__main__":
    main()

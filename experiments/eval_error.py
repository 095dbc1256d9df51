"""Error of the rotating evaluation against the exact full-set time average, on real trajectories.

    python experiments/eval_error.py [--points 0:1.4678,1:25.2,2:101.2] [--transient 20000]
        [--steps 20000] [--folds 10] [--out experiments/results/fig3_paper/eval_error.json]

Each point (depth:sigma) trains like a Fig. 3 point (seed 0); at every evaluation of the
measurement phase every unit is scored on every fold (one full-set pass), so the same
trajectory gives the exact time average, the rotating estimate that `--eval-scheme rotating`
records, the exact error formula and the bound of decentral/evaluation.py.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from decentral.config import RunConfig
from decentral.data import load_mnist, resolve_data_root
from decentral.engine import Hyper, sigma_tensor
from decentral.ensemble import init_ensemble, make_ensemble_stepper
from decentral.evaluation import fold_scores, rotation_error
from decentral.problem import prepare
from decentral.runner import OBSERVABLES, Phases, run_phases
from decentral.simulation import LocalSimulation


def depth_trajectories(data, depth: int, sigmas: list[float], phases: Phases, folds: int) -> list[dict]:
    """Fold scores [M, K] of each sigma's trajectory (one ensemble), reduced to errors."""
    problem = prepare(RunConfig(depth=depth, sigma=sigmas[0]), data)
    n = len(sigmas)
    stepper = make_ensemble_stepper(problem.arch, problem.shards, problem.coupling,
                                    sigma_tensor(sigmas, n, "cpu"), [0], n, Hyper())
    series = []

    def record(theta) -> dict:
        series.append(fold_scores(problem.arch, theta, problem.test, folds))
        return {k: np.zeros(n) for k in OBSERVABLES}

    sim = LocalSimulation(stepper, init_ensemble(problem.arch, [0], n, 10, "pytorch", "cpu"), record)
    run_phases(sim, phases)
    sizes = series[0]["sizes"]
    rows = []
    for r, sigma in enumerate(sigmas):
        row = {"depth": depth, "sigma": sigma}
        for name in ("accuracy", "loss"):
            scores = np.array([s[name][r] for s in series])  # [M, K]
            row[name] = rotation_error(scores, sizes)
            share = sizes / sizes.sum()  # [K]
            folds_k = np.arange(len(scores)) % len(sizes)
            picked = scores[np.arange(len(scores)), folds_k] * len(sizes) * share[folds_k]  # [M]
            row[name]["single_eval_rms"] = float(np.sqrt(np.mean((picked - scores @ share) ** 2)))
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", default="0:1.4677992676220706,1:25.2,2:101.19999999999999",
                        help="comma-separated depth:sigma")
    parser.add_argument("--transient", type=int, default=20000)
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--eval-every", type=int, default=20)
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="experiments/results/fig3_paper/eval_error.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    by_depth: dict[int, list[float]] = {}
    for item in args.points.split(","):
        depth, sigma = item.split(":")
        by_depth.setdefault(int(depth), []).append(float(sigma))
    data = load_mnist(resolve_data_root(None))
    phases = Phases(args.transient, args.steps, args.eval_every)
    start, rows = time.perf_counter(), []
    for depth, sigmas in sorted(by_depth.items()):
        rows += depth_trajectories(data, depth, sigmas, phases, args.folds)
        for row in rows[-len(sigmas):]:
            a, l = row["accuracy"], row["loss"]
            print(f"D={depth} sigma={row['sigma']:g}: <A> exact {a['exact']:.5f} rotating {a['rotating']:.5f} "
                  f"error {a['error']:+.2e} (bound {a['bound']:.2e}); <L> exact {l['exact']:.5f} "
                  f"error {l['error']:+.2e} (bound {l['bound']:.2e})", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"transient": args.transient, "steps": args.steps, "eval_every": args.eval_every,
                               "folds": args.folds, "seed": 0, "seconds": time.perf_counter() - start,
                               "points": rows}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

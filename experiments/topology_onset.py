"""Onset of collective learning across topologies: effective theory vs the MNIST engine.

Compares supra-networks Q of N units (10 by default; ``--units 200``, the paper's theory N) at
**equal mean degree** (4: ring lattice, Watts-Strogatz, Erdos-Renyi with exactly 2N edges; the
complete graph is the reference) and at **equal lambda_max** (the same three graphs with all
weights x N / lambda_max, plus the star, whose lambda_max is N). Every graph is written under
``OUT/graphs/`` and read back with :func:`decentral.topology.read_coupling_matrix` (sparse
above N = 10), so the theory (Eq. 4) and the MNIST engine (Eq. 2) run on the same Q.

* **Theory**: :func:`decentral.theory.run_theory`, non-adiabatic protocol, N units, the same
  disorder draws and initial states for every topology; curve = accuracy_eff.
* **MNIST**: partition ``class`` (unit u trains on class u mod 10: at N = 200 each class is
  split among 20 units), one ensemble per topology over its sigmas and seeds on the engine's
  fused kernel (mean field on the complete graph, sparse Eq. 2 elsewhere); curve = time-averaged
  test accuracy <A>, averaged over seeds. Above N = 10 each evaluation scores one of 10 folds
  of the test set (``--eval-scheme rotating``, decentral.evaluation).

**Couplings per topology**: the largest ``mnist_points`` of the MNIST grid whose stability
number lr * sigma * lambda_max / N (Euler on Eq. 2 is stable below 2) is at most
``max_stability`` (recorded per point; a point at 2 or more is warned about), and the largest
``theory_points`` of the theory grid with sigma_hat * lambda_max / N <= ``theory_max_rate``.
At N = 10 the grids are used whole (every point is stable).

**Onset** (:func:`onset_sigma`): with b the curve at the smallest sigma and M its maximum, the
smallest sigma where it first reaches b + (M - b) / 2, interpolated linearly in log sigma; NaN
if it never rises ``min_rise`` (0.02) above b. Theory sigma_hat and MNIST sigma agree only up
to an unknown scale: compare onsets *relative to the complete graph's* (``*_onset_rel``).

    python experiments/topology_onset.py --out runs/topology_onset --quick --threads 1
    python experiments/topology_onset.py --units 200 --out runs/topology_onset_n200 --threads 1

Writes ``onset.csv`` (one row per topology), ``curves.csv`` (every point), ``onset.png``,
``graphs/`` (the graph files used), ``graphs.sha256`` and ``mnist_points.csv`` (every MNIST replica).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from decentral import threads
from decentral.config import RunConfig
from decentral.data import load_mnist, resolve_data_root
from decentral.engine import Hyper, sigma_tensor
from decentral.ensemble import init_ensemble, make_ensemble_stepper
from decentral.errors import UserInputError
from decentral.evaluation import make_evaluator
from decentral.problem import prepare
from decentral.runner import run_phases
from decentral.simulation import LocalSimulation
from decentral.theory import TheoryConfig, run_theory
from decentral.topology import Coupling


def _sibling(name: str):
    """A sibling script of experiments/ as a module (these scripts are run by path)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_graphs = _sibling("topology_graphs")
N_UNITS, DEGREE, write_graphs = _graphs.N_UNITS, _graphs.DEGREE, _graphs.write_graphs


@dataclass(frozen=True)
class Settings:
    """Everything the experiment runs with (the full N = 10 defaults; see QUICK, LARGE)."""

    units: int = N_UNITS
    depth: int = 1
    mnist_sigmas: tuple = tuple(np.logspace(-1, 2.5, 15))  # below 2N/(lr*10) = 400: all stable
    theory_sigmas: tuple = tuple(np.logspace(-2, 2.5, 28))
    mnist_points: int | None = None  # per topology, the largest this many stable sigmas (None: all)
    theory_points: int | None = None  # per topology, the largest this many sigma_hat (None: all)
    max_stability: float = 2.0  # MNIST sigmas kept while lr * sigma * lambda_max / N <= this
    theory_max_rate: float = np.inf  # theory sigma_hat kept while sigma_hat * lambda_max / N <= this
    seeds: tuple = (0, 1, 2)
    transient: int = 5000
    steps: int = 5000
    eval_every: int = 100
    eval_scheme: str = "full"  # or "rotating" (one fold of the test set per evaluation)
    test_samples: int | None = None
    realizations: int = 200
    lr: float = Hyper.lr


QUICK = Settings(depth=0, mnist_sigmas=tuple(np.logspace(-1, 2.4, 9)),
                 theory_sigmas=tuple(np.logspace(-2, 2.4, 19)), seeds=(0,), transient=1500,
                 steps=500, eval_every=100, test_samples=2000, realizations=40)

# N = 200 (minutes on 2 cores): 6 couplings per topology, a factor 10**0.425 = 2.66 apart (as
# QUICK), the largest with lr * sigma * lambda_max / N <= 1.3 (QUICK's largest is 1.26); 18 theory
# couplings a factor 10**0.2 apart up to sigma_hat * lambda_max / N = 100 (3.4 decades below it).
LARGE = Settings(units=200, depth=0, mnist_sigmas=tuple(10 ** np.arange(-1, 4.5, 0.425)),
                 theory_sigmas=tuple(10 ** np.arange(-3, 5, 0.2)), mnist_points=6, theory_points=18,
                 max_stability=1.3, theory_max_rate=100.0, seeds=(0,), transient=400, steps=200,
                 eval_every=20, eval_scheme="rotating", realizations=100)
LARGE_QUICK = replace(LARGE, mnist_points=4, theory_points=8, transient=100, steps=100, eval_every=10,
                      test_samples=2000, realizations=20)


# --- onset ----------------------------------------------------------------------------------


def onset_sigma(sigmas, values, baseline: float | None = None, fraction: float = 0.5,
                min_rise: float = 0.02, top: float | None = None) -> float:
    """Smallest sigma where ``values`` first reaches baseline + fraction * (top - baseline).

    top defaults to the curve's maximum (given, e.g. the complete graph's, the level may never
    be reached: NaN). Linear interpolation in log sigma between the bracketing grid points; NaN
    values are ignored; baseline defaults to the value at the smallest sigma. Returns NaN when
    the curve never rises more than ``min_rise`` above the baseline.
    """
    s, v = np.asarray(sigmas, dtype=float), np.asarray(values, dtype=float)
    keep = np.isfinite(v) & (s > 0)
    order = np.argsort(s[keep])
    s, v = s[keep][order], v[keep][order]
    if len(v) < 2:
        return float("nan")
    base = v[0] if baseline is None else float(baseline)
    top = v.max() if top is None else float(top)
    if not v.max() - base > min_rise or not top - base > min_rise:
        return float("nan")
    level = base + fraction * (top - base)
    if not np.any(v >= level):
        return float("nan")
    k = int(np.argmax(v >= level))
    if k == 0:
        return float(s[0])
    x0, x1 = np.log(s[k - 1]), np.log(s[k])
    t = (level - v[k - 1]) / (v[k] - v[k - 1])
    return float(np.exp(x0 + t * (x1 - x0)))


def largest_below(grid, rate_per_sigma: float, cap: float, points: int | None) -> np.ndarray:
    """The largest ``points`` values of ``grid`` (all when None) with sigma * rate_per_sigma <= cap,
    increasing."""
    grid = np.sort(np.asarray(grid, dtype=float))
    kept = grid[grid * rate_per_sigma <= cap * (1 + 1e-12)]
    return kept if points is None else kept[-points:]


def mnist_sigmas(coupling: Coupling, settings: Settings) -> np.ndarray:
    """The MNIST couplings of one topology: stability number lr * sigma * lambda_max / N <= max."""
    per_sigma = coupling.stability_number(settings.lr, 1.0)
    return largest_below(settings.mnist_sigmas, per_sigma, settings.max_stability, settings.mnist_points)


def theory_sigmas(coupling: Coupling, settings: Settings) -> np.ndarray:
    """The theory couplings of one topology: sigma_hat * lambda_max / N <= theory_max_rate."""
    per_sigma = coupling.lambda_max / coupling.n_units
    return largest_below(settings.theory_sigmas, per_sigma, settings.theory_max_rate, settings.theory_points)


# --- theory ---------------------------------------------------------------------------------


def theory_curves(topos: pd.DataFrame, settings: Settings, workers: int | None = None) -> pd.DataFrame:
    """accuracy_eff(sigma-hat) of Eq. 4 on each topology's Q (same disorder for all); workers:
    the theory's processes (default one per core)."""
    tables = []
    for row in topos.itertuples():
        sigmas = theory_sigmas(row.coupling, settings)
        cfg = TheoryConfig(depths=(settings.depth,), sigmas=sigmas, protocols=("non-adiabatic",),
                           n_units=settings.units, realizations=settings.realizations, q=row.q, seed=0,
                           workers=workers)
        table = run_theory(cfg)
        tables.append(pd.DataFrame({"source": "theory", "topology": row.topology,
                                    "sigma": table["sigma"], "accuracy": table["accuracy_eff"],
                                    "accuracy_std": np.nan, "m_abs": table["m_abs_mean"],
                                    "rate": table["sigma"] * row.lambda_max / settings.units}))
    return pd.concat(tables, ignore_index=True)


# --- MNIST ----------------------------------------------------------------------------------


def make_ensemble(arch, shards, qs, sigmas, seeds, hyper: Hyper, scheme: str = "pytorch",
                  device="cpu"):
    """One stacked ensemble of every (seed, topology, sigma): returns (state, stepper, keys).

    qs: [T] Couplings or matrices [N, N]; sigmas: [S]. Replica r = (k*T + t)*S + s (seed-major),
    with keys[r] = (seed, t, s). Each replica equals running that point alone (decentral.engine).
    """
    keys = [(seed, t, s) for seed in seeds for t in range(len(qs)) for s in range(len(sigmas))]
    per_seed = len(qs) * len(sigmas)
    couplings = [q if isinstance(q, Coupling) else Coupling.from_matrix(q) for q in qs]
    sigma_rep = [float(sigmas[s]) for _, _, s in keys]
    state = init_ensemble(arch, list(seeds), per_seed, shards.n_units, scheme, device)
    stepper = make_ensemble_stepper(arch, shards, [couplings[t] for _, t, _ in keys],
                                    sigma_tensor(sigma_rep, len(keys), device), list(seeds),
                                    per_seed, hyper)
    return state, stepper, keys


def check_stable(name: str, coupling: Coupling, sigmas, lr: float, log=print) -> np.ndarray:
    """Stability numbers lr * sigma * lambda_max / N of one topology's sigmas [S]; warns at >= 2."""
    numbers = np.array([coupling.stability_number(lr, s) for s in sigmas])
    for sigma in np.asarray(sigmas)[numbers >= 2]:
        warnings.warn(f"{name}: {coupling.stability_warning(lr, float(sigma))}", RuntimeWarning, stacklevel=2)
    log(f"  {name}: sigma {min(sigmas):.3g} .. {max(sigmas):.3g}, stability number <= {numbers.max():.3g}")
    return numbers


def mnist_curves(topos: pd.DataFrame, settings: Settings, data, log=print, save=None) -> pd.DataFrame:
    """<A>(sigma) on MNIST for every topology: one ensemble per topology (its sigmas x seeds);
    save(points) receives every point so far after each topology."""
    cfg = RunConfig(units=settings.units, depth=settings.depth, test_samples=settings.test_samples,
                    lr=settings.lr, partition="class", transient=settings.transient, steps=settings.steps,
                    eval_every=settings.eval_every, eval_scheme=settings.eval_scheme).validate()
    problem = prepare(cfg, data)
    frames = []
    for row in topos.itertuples():
        sigmas = list(mnist_sigmas(row.coupling, settings))
        numbers = check_stable(row.topology, row.coupling, sigmas, settings.lr, log)
        state, stepper, keys = make_ensemble(problem.arch, problem.shards, [row.coupling], sigmas,
                                             settings.seeds, Hyper(lr=settings.lr))
        evaluator = make_evaluator(problem.arch, problem.test, cfg.eval_scheme, cfg.eval_folds)
        sim, t0 = LocalSimulation(stepper, state, evaluator), time.perf_counter()
        meas = run_phases(sim, cfg.phases(), after_block=lambda step, _: step % 500 or log(
            f"  mnist step {step}/{cfg.transient + cfg.steps} ({time.perf_counter() - t0:.0f} s)"))
        averages, diverged = meas.time_average(len(keys)), meas.diverged
        frames.append(pd.DataFrame({"topology": row.topology, "sigma": [sigmas[s] for _, _, s in keys],
                                    "stability": [numbers[s] for _, _, s in keys],
                                    "seed": [k for k, _, _ in keys], "accuracy": averages["accuracy"],
                                    "diverged": diverged, "m_abs": np.abs(averages["magnetization"])}))
        log(f"  {row.topology} done: {len(keys)} replicas x {settings.units} units")
        if save is not None:
            save(pd.concat(frames, ignore_index=True))
    points = pd.concat(frames, ignore_index=True)
    points.loc[points["diverged"], "accuracy"] = np.nan
    curves = points.groupby(["topology", "sigma"], sort=False).agg(
        accuracy=("accuracy", "mean"), accuracy_std=("accuracy", "std"), m_abs=("m_abs", "mean"),
        diverged=("diverged", "sum"), stability=("stability", "first")).reset_index()
    return curves.assign(source="mnist")


# --- table and plot -------------------------------------------------------------------------


def onset_table(topos: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """One row per topology: its spectrum, theory and MNIST onsets, onsets / complete's; and
    ``*_onset_common``: where the curve reaches the complete graph's half-rise level (NaN if
    never, e.g. a curve that does not saturate within its stable couplings)."""
    table = topos.drop(columns=["q", "coupling"], errors="ignore").copy()
    for source in ("theory", "mnist"):
        mine = {name: c for name, c in curves[curves["source"] == source].groupby("topology")}
        top = float(mine["complete"]["accuracy"].max())
        for kind, level in (("", None), ("_common", top)):
            table[f"{source}_onset{kind}"] = [onset_sigma(mine[name]["sigma"], mine[name]["accuracy"], top=level)
                                              for name in table["topology"]]
            reference = table.loc[table["topology"] == "complete", f"{source}_onset{kind}"].iloc[0]
            table[f"{source}_onset{kind}_rel"] = table[f"{source}_onset{kind}"] / reference
        table[f"{source}_max_accuracy"] = [float(mine[name]["accuracy"].max()) for name in table["topology"]]
    return table


def plot(curves: pd.DataFrame, table: pd.DataFrame, path: Path, depth: int, n_units: int = N_UNITS) -> None:
    """onset.png, drawn by the sibling experiments/topology_onset_plot.py (loaded by path, as
    this script is run by path)."""
    _sibling("topology_onset_plot").plot(curves, table, path, depth, n_units)


# --- main -----------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", default=None, help="MNIST root (default: $DECENTRAL_DATA)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--units", type=int, default=N_UNITS,
                        help="N: 10 (default) or a multiple of 10 above it (e.g. 200, the paper's theory)")
    parser.add_argument("--quick", action="store_true",
                        help="N=10: D=0, 9 couplings, 1,500 + 500 steps, 2,000 test images, 40 realizations; "
                             "N>10: 4 couplings per topology, 100 + 100 steps, 20 realizations (a smoke run)")
    parser.add_argument("--depth", type=int, default=None, help="override the depth D")
    parser.add_argument("--replot", action="store_true",
                        help="recompute onset.csv and onset.png from OUT/curves.csv (graphs rewritten)")
    parser.add_argument("--threads", type=int, default=None,
                        help="compute threads (and theory worker processes; default: all cores)")
    return parser.parse_args(argv)


def settings_for(units: int, quick: bool) -> Settings:
    """QUICK or the full defaults at N = 10; LARGE (or LARGE_QUICK) with N = units above."""
    if units == N_UNITS:
        return QUICK if quick else Settings()
    if units < N_UNITS or units % N_UNITS:
        raise UserInputError(f"--units must be {N_UNITS} or a multiple of {N_UNITS} above it, got {units}")
    return replace(LARGE_QUICK if quick else LARGE, units=units)


def main(argv=None) -> int:
    args = parse_args(argv)
    settings = settings_for(args.units, args.quick)
    if args.depth is not None:
        settings = replace(settings, depth=args.depth)
    threads.limit(threads.per_worker(args.threads))  # --threads, else $OMP_NUM_THREADS, else all cores
    out = Path(args.out)
    data = load_mnist(resolve_data_root(args.data_root))  # fail fast on a missing data root
    start = time.perf_counter()
    log = lambda text: print(f"[{time.perf_counter() - start:6.0f} s] {text}", file=sys.stderr)
    topos = write_graphs(out, settings.units)
    log(f"{len(topos)} topologies written to {out / 'graphs'}")
    if args.replot:  # the tables and figure again, from the curves of an earlier run
        curves = pd.read_csv(out / "curves.csv")
    else:
        curves = [theory_curves(topos, settings, workers=args.threads)]
        curves[0].to_csv(out / "curves.csv", index=False)  # the theory half, while MNIST runs
        log("theory done")
        save = lambda points: points.to_csv(out / "mnist_points.csv", index=False)
        curves.append(mnist_curves(topos, settings, data, log, save))
        log("mnist done")
        curves = pd.concat(curves, ignore_index=True)
        curves.to_csv(out / "curves.csv", index=False)
    table = onset_table(topos, curves)
    table.to_csv(out / "onset.csv", index=False)
    plot(curves, table, out / "onset.png", settings.depth, settings.units)
    columns = ["topology", "mean_degree", "lambda_max", "spectral_gap", "theory_onset",
               "mnist_onset", "theory_onset_rel", "mnist_onset_rel", "theory_onset_common_rel",
               "mnist_onset_common_rel"]
    print(table[columns].to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    log(f"wall time {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserInputError as err:
        print(f"topology_onset: error: {err}", file=sys.stderr)
        sys.exit(2)

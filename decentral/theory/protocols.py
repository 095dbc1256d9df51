"""The Fig. 2 protocols: integrate Eq. 4 at every (depth, sigma, realization), summarize.

* non-adiabatic: every sigma starts from a fresh initial state m ~ U[-2+eps, 2+eps];
* adiabatic: each sigma starts from the final state of the previous (smaller) sigma.

Random draws follow the authors: delta is drawn afresh per realization and depth (the same
quenched sequence at every sigma and in both protocols); the non-adiabatic initial state is
drawn afresh per sigma; the adiabatic run starts from the non-adiabatic state of sigma_min.
"""

from __future__ import annotations

import multiprocessing
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import threads
from ..errors import UserInputError
from .config import TheoryConfig
from .model import EffectiveRHS, check_coupling, moments
from . import compiled
from .rk45 import integrate

COLUMNS = ["depth", "protocol", "sigma", "m_abs_mean", "m_abs_std", "loss_mean", "loss_std",
           "accuracy_eff", "m_mean", "loss_raw_mean", "loss_raw_std", "steps_mean"]


@dataclass
class _Observed:
    """Per-realization observables of one (depth, protocol), each [S, R]."""

    m_time_mean: np.ndarray  # <m> over units and the averaging window, signed
    loss: np.ndarray  # Eq. 5 averaged over the window
    steps: np.ndarray  # accepted + rejected RK45 steps


def disorder(cfg: TheoryConfig, depth: int) -> np.ndarray:
    """The quenched delta of every realization at this depth. [R, N]"""
    if cfg.delta is not None:
        return np.broadcast_to(cfg.delta, (cfg.realizations, cfg.n_units)).copy()
    rng = np.random.default_rng([cfg.seed, depth, 0])
    return rng.normal(0.0, cfg.delta_std, size=(cfg.realizations, cfg.n_units))


def initial_state(cfg: TheoryConfig, depth: int, sigma_index: int) -> np.ndarray:
    """Fresh m(0) ~ U[low + eps, high + eps] for one sigma of the grid. [R, N]"""
    rng = np.random.default_rng([cfg.seed, depth, 1, sigma_index])
    low, high = cfg.init_low + cfg.init_eps, cfg.init_high + cfg.init_eps
    return rng.uniform(low, high, size=(cfg.realizations, cfg.n_units))


def _integrate_rows(cfg, depth, delta, sigma, m0):
    """Integrate rows (delta [M, N], sigma [M], m0 [M, N]); features [M, T, 3], y_final, steps.
    Mean field runs the compiled per-row RK45, any other Q the batched NumPy one (the same
    algorithm; the tests hold them to each other)."""
    if _compiled_rows(cfg):
        sol = compiled.integrate_mean_field(depth, delta, sigma, cfg.gamma, m0, cfg.t_end,
                                            cfg.t_eval, cfg.sample_from, cfg.rtol, cfg.atol)
        return sol.samples, sol.y_final, sol.n_steps + sol.n_rejected
    rhs = EffectiveRHS(depth, delta, sigma, cfg.gamma, cfg.q)
    sol = integrate(rhs, m0, (0.0, cfg.t_end), cfg.t_eval, cfg.rtol, cfg.atol,
                    reduce=lambda m: moments(m, depth), sample_from=cfg.sample_from,
                    chunk_rows=cfg.chunk_rows)
    return sol.samples, sol.y_final, sol.n_steps + sol.n_rejected


def _window_observables(samples, delta_mean):
    """Time averages over the window. samples [M, T, 3], delta_mean [M] -> ([M], [M])"""
    loss = samples[..., 2] - 2.0 * delta_mean[:, None] * samples[..., 1]  # Eq. 5, [M, T]
    return samples[..., 0].mean(axis=1), loss.mean(axis=1)


def _non_adiabatic_task(cfg, depth, sigma_indices, delta):
    """All realizations at some sigmas, each from a fresh state. Returns [k, 3, R]."""
    n_real = cfg.realizations
    sigma = np.repeat(cfg.sigmas[sigma_indices], n_real)  # [k*R]
    m0 = np.concatenate([initial_state(cfg, depth, k) for k in sigma_indices])  # [k*R, N]
    delta_rows = np.tile(delta, (len(sigma_indices), 1))  # [k*R, N]
    samples, _, steps = _integrate_rows(cfg, depth, delta_rows, sigma, m0)
    m_mean, loss = _window_observables(samples, delta_rows.mean(axis=1))
    return np.stack([m_mean, loss, steps]).reshape(3, len(sigma_indices), n_real).transpose(1, 0, 2)


MIN_SIGMA_TASKS = 8  # non-adiabatic tasks per depth, at least (while the grid allows)
ADIABATIC_BLOCK_ROWS = 64  # realizations carried together through the grid, at least
COMPILED_BLOCK_ROWS = 16  # the same for the compiled integrator (no batches to keep large)


def _compiled_rows(cfg) -> bool:
    """True where the compiled per-row integrator runs (mean field): tasks may then be small,
    which evens out the workers' shares, and rows give the same numbers in any grouping."""
    return cfg.q is None and compiled.available()


def _sigma_blocks(cfg) -> list[np.ndarray]:
    """Consecutive sigma indices per task: about two batches of rows each, and enough tasks
    to keep workers busy. Independent of the worker count: rows are batched the same way
    (and so rounded the same way) whichever process integrates them."""
    if _compiled_rows(cfg):  # rows are integrated one by one: one coupling per task
        return np.array_split(np.arange(cfg.sigmas.size), cfg.sigmas.size)
    per_task = max(1, -(-2 * cfg.chunk_rows // cfg.realizations))
    per_task = min(per_task, max(1, cfg.sigmas.size // MIN_SIGMA_TASKS))
    return np.array_split(np.arange(cfg.sigmas.size), -(-cfg.sigmas.size // per_task))


def _realization_blocks(cfg) -> list[np.ndarray]:
    """Realizations per adiabatic task (sequential in sigma): split only while batches stay
    large; independent of the worker count, as :func:`_sigma_blocks`."""
    rows = COMPILED_BLOCK_ROWS if _compiled_rows(cfg) else ADIABATIC_BLOCK_ROWS
    n_blocks = max(1, cfg.realizations // rows)
    return np.array_split(np.arange(cfg.realizations), n_blocks)


def n_tasks(cfg) -> int:
    """Tasks the whole table takes (more worker processes than this would idle)."""
    per_depth = (len(_sigma_blocks(cfg)) * ("non-adiabatic" in cfg.protocols)
                 + len(_realization_blocks(cfg)) * ("adiabatic" in cfg.protocols))
    return per_depth * len(cfg.depths)


def _adiabatic_task(cfg, depth, rows, delta):
    """Realizations ``rows`` carried through the increasing sigma grid. Three [S, r] arrays."""
    m = initial_state(cfg, depth, 0)[rows]
    out = np.empty((3, cfg.sigmas.size, len(rows)))
    for k, sigma in enumerate(cfg.sigmas):
        samples, m, steps = _integrate_rows(cfg, depth, delta, np.full(len(rows), sigma), m)
        out[0, k], out[1, k] = _window_observables(samples, delta.mean(axis=1))
        out[2, k] = steps
    return out


def worker_count(cfg: TheoryConfig) -> int:
    """cfg.workers, or one per available core; never more than there are tasks."""
    wanted = cfg.workers or threads.available_cores()
    return max(1, min(wanted, n_tasks(cfg)))


def _pool(cfg: TheoryConfig):
    """Worker processes (spawned: no state inherited), each limiting its own threads, or this
    process alone when one worker is enough."""
    workers, per_process = worker_count(cfg), cfg.threads or 1
    if workers == 1:
        return _Inline(per_process)
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=threads.limit, initargs=(per_process,))


class _Inline:
    """The executor interface, run in this process (one worker) with `n_threads` threads."""

    def __init__(self, n_threads: int):
        self.limits = threads.limited(n_threads)

    def submit(self, function, *args):
        return _Done(function(*args))

    def __enter__(self):
        self.limits.__enter__()
        return self

    def __exit__(self, *exc):
        return self.limits.__exit__(*exc)


@dataclass
class _Done:
    value: object

    def result(self):
        return self.value


def _submit(cfg: TheoryConfig, pool, depth: int, protocol: str):
    """Queue the tasks of one (depth, protocol); returns a function that gathers them."""
    delta = disorder(cfg, depth)
    if protocol == "non-adiabatic":
        blocks = _sigma_blocks(cfg)  # queued largest sigma first: the costliest start early
        futures = {k: pool.submit(_non_adiabatic_task, cfg, depth, blocks[k], delta)
                   for k in reversed(range(len(blocks)))}
        return lambda: _Observed(*np.concatenate([futures[k].result() for k in range(len(blocks))])
                                 .transpose(1, 0, 2))
    futures = [pool.submit(_adiabatic_task, cfg, depth, rows, delta[rows])
               for rows in _realization_blocks(cfg)]
    return lambda: _Observed(*np.concatenate([f.result() for f in futures], axis=2))


def integrate_protocol(cfg: TheoryConfig, depth: int, protocol: str) -> _Observed:
    """Integrate one (depth, protocol) over the whole sigma grid and all realizations."""
    with _pool(cfg) as pool:
        return _submit(cfg, pool, depth, protocol)()


def protocol_table(cfg: TheoryConfig, depth: int, protocol: str, obs: _Observed) -> pd.DataFrame:
    """Mean and std over realizations; loss normalized by its mean at sigma_min."""
    m_abs = np.abs(obs.m_time_mean)  # [S, R]
    loss_mean, loss_std = obs.loss.mean(axis=1), obs.loss.std(axis=1)  # [S]
    reference = loss_mean[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        loss_norm, loss_norm_std = loss_mean / reference, loss_std / abs(reference)
    return pd.DataFrame({
        "depth": depth, "protocol": protocol, "sigma": cfg.sigmas,
        "m_abs_mean": m_abs.mean(axis=1), "m_abs_std": m_abs.std(axis=1),
        "loss_mean": loss_norm, "loss_std": loss_norm_std, "accuracy_eff": 1.0 - loss_norm,
        "m_mean": obs.m_time_mean.mean(axis=1), "loss_raw_mean": loss_mean,
        "loss_raw_std": loss_std, "steps_mean": obs.steps.mean(axis=1),
    })[COLUMNS]


RK45_STABLE_STEP = 3.3  # explicit RK45 (Dormand-Prince) is stable for h * rate up to ~3.3
WARN_STEPS, REFUSE_STEPS = 2e5, 5e7  # batched RK45 steps: a minute or more; hours


def estimated_steps(cfg: TheoryConfig) -> float:
    """RK45 steps the batches will take, at least: coupling makes Eq. 4 stiff with rate
    gamma + sigma lambda_max / N, so an explicit step is at most ~3.3 / rate and the steps per
    sigma grow like sigma * t_end (lambda_max bounded by Gershgorin, 2 max_i sum_j q_ij)."""
    if cfg.q is None:
        lam = float(cfg.n_units)
    else:
        lam = 2.0 * float(np.max(np.asarray(abs(cfg.q).sum(axis=1)))) if cfg.n_units else 0.0
    rates = cfg.gamma + np.asarray(cfg.sigmas, dtype=float) * lam / max(cfg.n_units, 1)
    per_row = np.maximum(50.0, cfg.t_end * rates / RK45_STABLE_STEP)  # [S] steps per integration
    chunks = -(-cfg.realizations // cfg.chunk_rows)
    return float(per_row.sum()) * chunks * len(cfg.depths) * len(cfg.protocols)


def check_cost(cfg: TheoryConfig) -> None:
    """Refuse (one line) or warn before an integration whose step count grows without bound."""
    steps = estimated_steps(cfg)
    if steps <= WARN_STEPS:
        return
    what = (f"the theory at sigma up to {max(cfg.sigmas):g} (t_end {cfg.t_end:g}) takes about "
            f"{steps:.2g} RK45 steps: explicit steps shrink like 1/sigma")
    if steps > REFUSE_STEPS:
        raise UserInputError(f"{what}; lower --sigma or --t-end")
    warnings.warn(f"{what}; this may take a long time", RuntimeWarning, stacklevel=3)


def run_theory(cfg: TheoryConfig | None = None) -> pd.DataFrame:
    """The Fig. 2 a-b table: one row per (depth, protocol, sigma), columns :data:`COLUMNS`."""
    cfg = cfg or TheoryConfig()
    cfg.q = check_coupling(cfg.q, cfg.n_units)
    check_cost(cfg)
    keys = [(depth, protocol) for depth in cfg.depths for protocol in cfg.protocols]
    with _pool(cfg) as pool:
        # Adiabatic runs are sequential in sigma: queue them first so they start early.
        order = sorted(keys, key=lambda key: (key[1] != "adiabatic", -key[0]))
        gather = {key: _submit(cfg, pool, *key) for key in order}
        tables = [protocol_table(cfg, *key, gather[key]()) for key in keys]
    return pd.concat(tables, ignore_index=True)

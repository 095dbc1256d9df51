"""The Python API for notebooks and scripts: run one point, a sweep, the theory; load results.

    from decentral import api

    result = api.run(units=4, sigma=30, transient=200, steps=200, test_samples=1000)
    result.summary["accuracy"]     # the summary `decentral run --json` prints (a dict)
    result.timeseries              # one row per evaluation (pandas DataFrame)
    result.cross_accuracy          # A_x: units x classes (pandas DataFrame)
    table = api.sweep(sigma=[0, 10, 100], depth=[0, 1], steps=200, out="sweeps/s1")
    curves = api.theory(depths=[1], sigmas=[0, 10, 100], realizations=20)
    again = api.load("runs/p1")    # a RunResult, or a SweepResult for a sweep directory

(`decentral.run` and `decentral.load` are `api.run` and `api.load`.) Configs are given as the
typed config (`RunConfig`, `SweepConfig`, `TheoryConfig`), a mapping, a TOML/YAML config file
path, or keywords (the config keys of the CLI; keywords win). They go through the CLI's own
coercion and validation: bad input raises `decentral.UserInputError` (a ValueError) with the
message the CLI prints, never exits. `decentral run` and `decentral sweep` call the same
functions (`jobs.run.run_job`, `sweep.run_sweep`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import torch

from .config import RunConfig, merge, read_config_file, to_dict
from .errors import UserInputError

__all__ = ["RunResult", "SweepResult", "run", "sweep", "theory", "load", "run_config", "sweep_config"]


@dataclass
class RunResult:
    """One run: its summary, time series, A_x / L_x and (when known) final parameters."""

    summary: dict  # every key of `decentral run --json`
    timeseries: pd.DataFrame  # one row per evaluation: step, replica, loss, accuracy, ...
    cross_accuracy: pd.DataFrame  # A_x [N units, C classes] of the final parameters
    cross_loss: pd.DataFrame  # L_x [N, C]
    config: RunConfig  # the exact config
    params: torch.Tensor | None = None  # final parameters [N, P] (see decentral.params)
    out: Path | None = None  # the run directory, when saved


@dataclass
class SweepResult:
    """A sweep directory read back."""

    table: pd.DataFrame  # one row per finished point (results.parquet)
    cross_accuracy: np.ndarray  # A_x [rows, N, C], in the table's row order
    manifest: dict  # the sweep's config (science values) and hash
    out: Path


def _values(config, kwargs: dict) -> dict:
    """Config values from a typed config, a mapping, a config file path or None, then kwargs."""
    if config is None:
        values = {}
    elif isinstance(config, (str, Path)):
        values = read_config_file(config)
    elif dataclasses.is_dataclass(config) and not isinstance(config, type):
        values = {k: v for k, v in to_dict(config).items() if v is not None}
    elif isinstance(config, Mapping):
        values = dict(config)
    else:
        raise UserInputError(f"a config is a RunConfig/SweepConfig, a mapping or a file path, got "
                             f"{type(config).__name__}")
    return {**values, **kwargs}


def _with_model(values: dict) -> dict:
    """A callable `model` (an nn.Module factory, `factory(input_shape, n_classes)`) registered
    under its function name (`decentral.models.register`) and named in the config instead."""
    model = values.get("model")
    if callable(model):
        from .models import register

        name = getattr(model, "__name__", "")
        values["model"] = register(name if name.isidentifier() and name != "mlp" else "custom", model)
    return values


def run_config(config=None, /, **kwargs) -> RunConfig:
    """The validated RunConfig of these values (as `decentral run` builds it from flags)."""
    return merge(RunConfig, {}, _with_model(_values(config, kwargs)))


def sweep_config(config=None, /, **kwargs):
    """The validated SweepConfig of these values (lists may be Python lists)."""
    from .sweep.config import load_sweep_config

    return load_sweep_config(_with_model(_values(config, kwargs)), {})


def _matrix(rows) -> pd.DataFrame:
    values = np.array(rows, dtype=float)  # [N, C]; None (a diverged unit) becomes NaN
    return pd.DataFrame(values, index=pd.RangeIndex(values.shape[0], name="unit"),
                        columns=pd.RangeIndex(values.shape[1], name="class"))


def _result(summary: dict, series: pd.DataFrame, cfg: RunConfig, theta, out) -> RunResult:
    return RunResult(summary, series, _matrix(summary["cross_accuracy"]),
                     _matrix(summary["cross_loss"]), cfg, theta, Path(out) if out else None)


def run(config=None, /, *, data=None, **kwargs) -> RunResult:
    """Train one point (`decentral run`) and return its RunResult. `data`: an optional
    (train, test) pair of `decentral.data.Split` instead of MNIST from the data root.
    `model`: "mlp" (default), "cnn", a registered name, or any nn.Module factory
    `factory(input_shape, n_classes)` (registered under its function name)."""
    from .jobs.run import run_job

    cfg = run_config(config, **kwargs)
    summary, meas, theta = run_job(cfg, data)
    series = pd.DataFrame(meas.records)
    return _result(summary, series, cfg, theta[0].detach().cpu(), cfg.out)


def sweep(config=None, /, *, data=None, **kwargs) -> pd.DataFrame:
    """Run (or, with resume=True, continue) a sweep into `out` and return its results table
    (one row per point; A_x of each point: `load(out).cross_accuracy`)."""
    from .sweep import run_sweep
    from .sweep.store import load_results

    report = run_sweep(sweep_config(config, **kwargs), data)
    return load_results(report.out)[0]


def theory(config=None, /, *, topology: str | None = None, **kwargs) -> pd.DataFrame:
    """Integrate the effective theory (Eq. 4-8) and return its table (`decentral theory`).
    Keywords are TheoryConfig fields (depths, sigmas, protocols, n_units, realizations, gamma,
    ...); `topology` a graph file for Q (default: mean field)."""
    from .theory import TheoryConfig, run_theory

    values = _values(config, kwargs) if not isinstance(config, TheoryConfig) else \
        {**{f.name: getattr(config, f.name) for f in dataclasses.fields(config)}, **kwargs}
    known = {f.name for f in dataclasses.fields(TheoryConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserInputError(f"unknown theory key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    if topology:
        from .topology import Coupling

        values["q"] = Coupling.from_file(topology, int(values.get("n_units", TheoryConfig.n_units))).matrix()
    try:
        cfg = TheoryConfig(**values)
    except (TypeError, ValueError) as err:
        if isinstance(err, UserInputError):
            raise
        raise UserInputError(f"theory: {err}") from None
    return run_theory(cfg)


def load(directory: str | Path) -> RunResult | SweepResult:
    """A `run --out` directory (RunResult) or a `sweep --out` directory (SweepResult) read back;
    a missing or damaged file is one UserInputError line naming it."""
    from .config import from_mapping

    root = Path(directory)
    if (root / "summary.json").is_file():
        from . import params
        from .jobs.run import load_run

        summary, series, values = load_run(root)
        cfg = from_mapping(RunConfig, values, "run config")
        theta = params.load(root, flag="load").theta if (root / params.FILE).is_file() else None
        return _result(summary, series, cfg, theta, root)
    from .sweep.store import MANIFEST, load_results, read_manifest

    if (root / MANIFEST).is_file():
        table, cross = load_results(root)
        return SweepResult(table, cross, read_manifest(root), root)
    raise UserInputError(f"{directory}: neither a run directory (summary.json) nor a sweep "
                         f"directory ({MANIFEST})")

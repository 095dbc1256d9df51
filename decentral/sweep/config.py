"""Typed configuration of `decentral sweep`: the shared run fields plus the sweep's axes.

SweepConfig is `config.SharedConfig` (units, lr, transient, steps, test_samples, ...: each
default in that one place) plus the axes sigma, depth, seed and topology as comma-separated
lists and the sweep's own options, so a sweep point is exactly a `decentral run` job
(`run_config`). Config files may give lists as TOML or YAML arrays (`sigma = [0.1, 1, 10]`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

from ..config import RunConfig, SharedConfig, _f, _flag, merge, parse_list, to_dict
from ..errors import UserInputError
from ..models import BUILTIN as BUILTIN_MODELS
from .grids import named_grid

PROTOCOLS = ("non-adiabatic", "adiabatic", "both")
LIST_FIELDS = ("sigma", "depth", "topology", "adiabatic_depths")
# fields that do not change any measured number, hence left out of the config hash
RUNTIME_FIELDS = ("out", "resume", "max_batch", "threads", "device", "backend", "address",
                  "data_root", "download", "quiet", "log_tensorboard")
# `decentral run` options a sweep has no use for: sweeps run each point on the local engine
# (or as Ray tasks running it) and start fresh units. A config file or mapping may still carry
# them at the values a sweep always used (None is RunConfig's default); any other value is refused.
RAY_ACTOR_FIELDS = {"units_per_actor": 1, "gossip_period": 1, "staleness": 0, "checkpoint_every": 0,
                    "actor_cpus": 1.0}
RUN_ONLY_FIELDS = {"overwrite": False, "init_from": None}
RUN_ONLY_MESSAGES = {
    "overwrite": "sweep: there is no --overwrite; use another --out, or --resume to continue one",
    "init_from": "sweep: init_from is an option of `decentral run`; sweeps start fresh units",
}


@dataclass
class SweepConfig(SharedConfig):
    """A sweep over sigma x depth x seed (x topology), under one or both protocols."""

    sigma: str | None = _f(None, "comma-separated coupling values (or use --sigma-grid)")
    depth: str = _f("0,1,2", "comma-separated depths D")
    topology: str | None = _f(None, "comma-separated graph files, one sweep axis (default: mean field)")
    seed: int = _f(0, "first seed; the sweep runs seeds seed, seed+1, ..., seed+seeds-1")
    out: str | None = _f(None, "sweep directory: manifest, points/, results.parquet (required)")
    sigma_grid: str | None = _f(None, "named sigma grid: paper (Fig. 3, 50 values), quick, tiny")
    seeds: int = _f(1, "K independent runs per point: seeds seed..seed+K-1 (paper: 10)")
    protocol: str = _f("non-adiabatic", "non-adiabatic (fresh units per sigma), adiabatic "
                       "(carried through increasing sigma) or both", choices=PROTOCOLS)
    adiabatic_depths: str | None = _f(None, "depths run adiabatically when protocol is both "
                                      "(default: all; the paper: 2)")
    resume: bool = _f(False, "skip points already finished in --out (same config only)")
    max_batch: int = _f(64, "most replicas (sweep points) stacked in one ensemble")
    quiet: bool = _f(False, "no progress bar (shown with its ETA on stderr when it is a terminal)")
    log_tensorboard: str | None = _f(None, "stream each point's evaluations, then its averages and A_x, "
                                     "L_x heat maps, to TensorBoard event files in DIR/<point id> "
                                     "(local backend)")

    # --- parsed views ---------------------------------------------------------------------
    def sigmas(self) -> list[float]:
        """The sweep's sigma values, unique and increasing."""
        if (self.sigma is None) == (self.sigma_grid is None):
            raise UserInputError("sweep: give exactly one of --sigma LIST and --sigma-grid NAME")
        values = named_grid(self.sigma_grid) if self.sigma_grid else parse_list(self.sigma, float, "--sigma")
        return sorted({float(v) for v in values})

    def depths(self) -> list[int]:
        return sorted(set(parse_list(self.depth, int, "--depth")))

    def topologies(self) -> list[str | None]:
        return [None] if not self.topology else parse_list(self.topology, str, "--topology")

    def seed_list(self) -> list[int]:
        return list(range(self.seed, self.seed + self.seeds))

    def protocols(self) -> list[str]:
        return ["non-adiabatic", "adiabatic"] if self.protocol == "both" else [self.protocol]

    def protocol_depths(self, protocol: str) -> list[int]:
        if protocol == "adiabatic" and self.protocol == "both" and self.adiabatic_depths:
            return sorted(set(parse_list(self.adiabatic_depths, int, "--adiabatic-depths")))
        return self.depths()

    def run_config(self, depth: int, sigma: float, seed: int, topology: str | None) -> RunConfig:
        """The `decentral run` config of one sweep point (runs on the local engine)."""
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(SharedConfig)}
        shared.update(backend="local")
        return RunConfig(**shared, depth=depth, sigma=sigma, seed=seed, topology=topology)

    def validate(self) -> "SweepConfig":
        self.check_shared()
        if self.out is None:
            raise UserInputError("sweep: --out DIR is required")
        for name in ("seeds", "max_batch"):
            if getattr(self, name) < 1:
                raise UserInputError(f"{_flag(name)} must be >= 1, got {getattr(self, name)}")
        if self.log_tensorboard is not None and self.backend == "ray":
            raise UserInputError("sweep: --log-tensorboard logs the points of a local sweep; with --backend "
                                 "ray they run in remote tasks (their results are in the sweep directory)")
        self.sigmas(), self.depths(), self.topologies()
        if self.backend == "ray" and self.model not in BUILTIN_MODELS:
            raise UserInputError(f"sweep: --model {self.model} is registered in this process only; Ray sweep "
                                 f"tasks know {', '.join(BUILTIN_MODELS)} (run this sweep locally)")
        if self.model != "mlp" and len(self.depths()) > 1:
            raise UserInputError(f"sweep: --model {self.model} has no depth; give one --depth (e.g. --depth 1) "
                                 f"instead of the list {self.depth}")
        if self.protocol == "both":
            self.protocol_depths("adiabatic")
        self.run_config(self.depths()[0], self.sigmas()[0], self.seed, None).validate()
        return self


def normalize_lists(values: dict) -> dict:
    """Config-file arrays for list fields become the comma-separated strings the flags use."""
    out = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name in LIST_FIELDS and isinstance(value, (list, tuple)):
            if not all(isinstance(v, (int, float, str)) and not isinstance(v, bool) for v in value):
                raise UserInputError(f"--{name.replace('_', '-')}: expected a list of numbers or names")
            value = ",".join(str(v) for v in value)
        out[key] = value
    return out


def drop_run_only(values: dict) -> dict:
    """`values` without the `decentral run` options a sweep has no use for; refused (one line)
    unless at a value a sweep always used."""
    out = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name in RAY_ACTOR_FIELDS or name in RUN_ONLY_FIELDS:
            if value is not None and value != {**RAY_ACTOR_FIELDS, **RUN_ONLY_FIELDS}[name]:
                raise UserInputError(RUN_ONLY_MESSAGES.get(name) or f"sweep: {_flag(name)} is a Ray actor "
                                     "option of `decentral run`; sweeps run each point on the local engine")
            continue
        out[key] = value
    return out


def load_sweep_config(file_values: dict, flag_values: dict) -> SweepConfig:
    """Defaults < config file < flags, validated."""
    return merge(SweepConfig, drop_run_only(normalize_lists(file_values)), flag_values)


# Fields added after sweeps were first written: at these defaults they stay out of the hash, so
# a sweep directory written before them still resumes.
LATER_FIELDS = {"batches": "iid", "eval_scheme": "full", "kernels": "auto", "dataset": "mnist",
                "model": "mlp"}


def science_dict(cfg: SweepConfig, topology_digests: dict[str, str] | None = None) -> dict:
    """The config values that determine the results (for the manifest and its hash).

    The Ray actor options are hashed at the values sweeps always ran with (RAY_ACTOR_FIELDS):
    sweep directories written while SweepConfig carried them keep their hash."""
    values = {k: v for k, v in to_dict(cfg).items() if k not in RUNTIME_FIELDS}
    values.update(RAY_ACTOR_FIELDS)
    if values.get("eval_scheme") == "full":  # K means nothing for the full scheme (kept when rotating)
        values.pop("eval_folds", None)
    for name, default in LATER_FIELDS.items():  # at their defaults, they leave older hashes alone
        if values.get(name) == default:
            values.pop(name, None)
    values.update(sigma=cfg.sigmas(), depth=cfg.depths(), seeds=cfg.seed_list(),
                  sigma_grid=None, adiabatic_depths=cfg.protocol_depths("adiabatic"))
    values["topology"] = topology_digests or None
    return values


def config_hash(values: dict) -> str:
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]

"""Typed run configuration, its validation, and the bridge to flags and config files.

Every field of :class:`RunConfig` is a `decentral run` flag (`--eval-every` for `eval_every`)
and a config-file key (either spelling). Precedence: defaults < `--config FILE` < flags.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .datasets import DEFAULT as DEFAULT_DATASET
from .datasets import NAMES as DATASET_NAMES
from .errors import UserInputError
from .models import NAMES as MODEL_NAMES  # the model registry (a live read-only view)
from .storage import tomllib  # tomllib, or tomli before Python 3.11


KERNELS = ("auto", "numba", "torch")  # gradient backends of the `kernels` field (decentral.backends)

# A run with --out and no --checkpoint-every checkpoints into it at the end of the first block
# (--eval-every steps) that ends at least this many seconds of wall time after its last checkpoint:
# a killed driver loses about a minute, and one write a minute costs nothing measurable (README,
# "Durable runs"); a cadence in time, not steps, fits any N and any machine.
CHECKPOINT_SECONDS = 60.0


def _f(default, help: str, **meta):
    """A dataclass field whose help text documents its default (shown by --help)."""
    return field(default=default, metadata={"help": help, **meta})


@dataclass(frozen=True)
class Hyper:
    """Local-learning hyper-parameters shared by all units (the paper's values); the run's flags
    of the same names take their defaults from here."""

    lr: float = 0.005  # SGD learning rate eta
    weight_decay: float = 1e-3  # L2 weight decay gamma, inside the local gradient
    batch_size: int = 32  # images per batch from the unit's own shard
    batches: str = "iid"  # batch scheme: iid draws, or "window" (consecutive, the authors' notebook)


@dataclass(frozen=True)
class Phases:
    """Lengths of the two phases and the evaluation period (in coupled steps); the run's flags of
    the same names take their defaults from here."""

    transient: int = 5000  # steps discarded before measuring
    steps: int = 5000  # measured steps
    eval_every: int = 20  # evaluate every this many measured steps

    def evaluations_before(self, step: int) -> int:
        """Evaluations run_phases makes in its first `step` steps (`step` a block boundary)."""
        return max(0, -(-(step - self.transient) // self.eval_every))


@dataclass
class SharedConfig:
    """The fields `decentral run` and `decentral sweep` share, each with one meaning and its
    default here: the problem (N, architecture, shards), the local learning (`Hyper`), the
    schedule (`Phases`), the evaluation, and where the work runs. RunConfig adds one point
    (sigma, depth, seed, topology) and its output and Ray actor options; SweepConfig
    (`decentral.sweep.config`) adds the sweep's axes and options."""

    backend: str = _f("local", "local (vectorized engine, no Ray) or ray", choices=("local", "ray"))
    units: int = _f(10, "N, number of coupled units (paper: 10, one MNIST class each)")
    width: int = _f(20, "neurons per hidden layer (paper: 20)")
    model: str = _f("mlp", "unit model: mlp (the paper's, D hidden layers of --width; fast kernels) or cnn "
                    "(2 conv layers + linear head, stepped with torch.func; --depth, --width unused)",
                    choices=MODEL_NAMES)
    lr: float = _f(Hyper.lr, "SGD learning rate eta (paper: 0.005)")
    weight_decay: float = _f(Hyper.weight_decay, "L2 weight decay gamma, in the local gradient only (paper: 1e-3)")
    batch_size: int = _f(Hyper.batch_size, "images per SGD batch, drawn from the unit's own shard (paper: 32)")
    batches: str = _f(Hyper.batches, "batch sampling from the unit's shard: iid draws, or window: consecutive "
                      "images at a random offset (the authors' notebook)", choices=("iid", "window"))
    transient: int = _f(Phases.transient, "steps discarded before measuring (paper: 5,000 or 20,000)")
    steps: int = _f(Phases.steps, "measured steps after the transient (paper: 5,000 or 20,000)")
    eval_every: int = _f(Phases.eval_every, "evaluate observables every this many measured steps (paper: 20)")
    eval_scheme: str = _f("full", "test loss/accuracy of each evaluation on the full test set, or on "
                          "a rotating class-stratified fold (1/K of the cost; the time average equals "
                          "the full one up to the parameters' drift within a rotation, see "
                          "decentral.evaluation)", choices=("full", "rotating"))
    eval_folds: int = _f(10, "K folds of the rotating scheme; evaluations per phase must be a multiple")
    init: str = _f("pytorch", "initial parameters: pytorch default or normal N(0,1)",
                   choices=("pytorch", "normal"))
    partition: str = _f("class", "private shards: class (unit k owns class k), k-classes, dirichlet",
                        choices=("class", "k-classes", "dirichlet"))
    classes_per_unit: int = _f(2, "classes per unit for partition k-classes")
    dirichlet_alpha: float = _f(0.5, "concentration for partition dirichlet")
    test_samples: int | None = _f(None, "evaluate on this many test images (default: all 10,000)")
    dataset: str = _f(DEFAULT_DATASET, "the units' images: mnist (the paper's), fashion-mnist, kmnist or "
                      "cifar10, read from the data root in torchvision's layout", choices=DATASET_NAMES)
    data_root: str | None = _f(None, "data root in torchvision's layout (default: $DECENTRAL_DATA, else "
                               "the user cache folder, e.g. ~/.cache/decentral/data, filled on first use)")
    download: bool = _f(False, "download the dataset's missing files into the data root (always for the "
                        "default folder)")
    device: str = _f("cpu", "torch device: cpu, cuda or cuda:K")
    threads: int | None = _f(None, "compute threads: PyTorch, BLAS, OpenMP, numba (default: all available cores)")
    address: str | None = _f(None, "Ray cluster address (auto or host:port); local Ray if absent")
    kernels: str = _f("auto", "gradient backend: auto (numba for float32 CPU work when it imports, else "
                      "PyTorch; DECENTRAL_KERNELS=torch makes auto mean torch), numba or torch; the same "
                      "numbers up to float rounding (decentral.backends)", choices=KERNELS)

    def hyper(self) -> Hyper:
        """The local-learning component: lr, weight decay, batch size and scheme."""
        return Hyper(self.lr, self.weight_decay, self.batch_size, self.batches)

    def phases(self) -> Phases:
        """The schedule component: transient, measured steps, evaluation period."""
        return Phases(self.transient, self.steps, self.eval_every)

    def check_shared(self) -> None:
        """Signs and ranges of the shared fields (UserInputError naming the flag)."""
        validate_fields(self)
        for name in ("units", "width", "batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise UserInputError(f"{_flag(name)} must be >= 1, got {getattr(self, name)}")
        if self.steps < 1:
            raise UserInputError(f"--steps must be >= 1, got {self.steps}")
        self._check_rotations()
        if self.test_samples is not None and self.test_samples < 1:
            raise UserInputError(f"--test-samples must be >= 1, got {self.test_samples}")
        if self.lr <= 0:
            raise UserInputError(f"--lr must be > 0, got {self.lr}")

    def _check_rotations(self) -> None:
        """The rotating scheme needs whole rotations: evaluations per phase a multiple of K."""
        if self.eval_folds < 1:
            raise UserInputError(f"--eval-folds must be >= 1, got {self.eval_folds}")
        n_evals = -(-self.steps // self.eval_every)
        if self.eval_scheme == "rotating" and n_evals % self.eval_folds:
            raise UserInputError(f"--eval-scheme rotating: the measurement phase has {n_evals} evaluations "
                                 f"(--steps {self.steps} / --eval-every {self.eval_every}), not a multiple "
                                 f"of --eval-folds {self.eval_folds}")


@dataclass
class RunConfig(SharedConfig):
    """One coupled-training run: N units, one sigma, one depth, one seed. Flat, as its flags and
    config-file keys are; `hyper()` and `phases()` give its components."""

    depth: int = _f(1, "D, hidden layers per unit; 0 is linear softmax regression")
    sigma: float = _f(30.0, "coupling strength sigma of Eq. 2 (sigma/N is stored beside it)")
    seed: int = _f(0, "run seed; unit u draws init and batches from streams seeded by (seed, u)")
    topology: str | None = _f(None, "graph file of the supra-network (default: mean field)")
    out: str | None = _f(None, "directory for summary, time series and the exact config")
    overwrite: bool = _f(False, "replace an existing --out directory (refused otherwise)")
    log_tensorboard: str | None = _f(None, "stream every evaluation's observables and the final A_x, "
                                     "L_x heat maps to TensorBoard event files in this directory")
    init_from: str | None = _f(None, "start from the parameters a `run --out DIR` saved in "
                               "DIR/params.safetensors (same --units and architecture; local engine); "
                               "the step counter, hence the batch stream, continues from their step")
    # --- Ray backend (issue "Distributed backend") ---
    units_per_actor: int | None = _f(None, "units stacked in each Ray actor (default: 1 on a cluster; "
                                     "on local Ray, enough that all actors fit the machine's CPUs)")
    gossip_period: int = _f(1, "tau: couple every tau steps with tau*sigma (1 is Eq. 2 exactly)")
    staleness: int = _f(0, "async gossip: neighbours' snapshots may lag this many steps (0: sync)")
    checkpoint_every: int | None = _f(None, "checkpoint every K steps: into --out DIR (for --resume DIR), "
                                      "and Ray actors in memory (0: none; a Ray restart replays from step "
                                      f"0; default: into --out every ~{CHECKPOINT_SECONDS:g} s of wall time)")
    actor_cpus: float | None = _f(None, "CPUs each Ray actor requests, fractions share a core (default: "
                                  "1; on local Ray with --units-per-actor, what fits the machine)")

    @property
    def sigma_over_n(self) -> float:
        return self.sigma / self.units

    def validate(self) -> "RunConfig":
        self.check_shared()
        for name in ("units_per_actor", "gossip_period"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UserInputError(f"{_flag(name)} must be >= 1, got {getattr(self, name)}")
        if self.backend == "ray" and self.eval_scheme != "full":
            raise UserInputError("--eval-scheme rotating runs on the local engine (and in sweeps); "
                                 "the Ray backend of `decentral run` evaluates the full test set")
        if self.init_from is not None and self.backend == "ray":
            raise UserInputError("--init-from starts a run on the local engine; leave out --backend ray")
        if self.actor_cpus is not None and self.actor_cpus <= 0:
            raise UserInputError(f"--actor-cpus must be > 0, got {self.actor_cpus}")
        return self


@dataclass
class TopologyFlags:
    """`decentral topology`'s options (FILE|generate and KIND are positional). Validated by the
    command, which knows what goes with inspecting and what with generating."""

    lr: float = _f(Hyper.lr, "learning rate for sigma_max")
    nodes: int | None = _f(None, "generate: number of nodes; inspect: require exactly N")
    seed: int | None = _f(None, "generate: random seed (default 0)")
    out: str | None = _f(None, "generate: output file, format by extension (default: edge list on stdout)")
    overwrite: bool | None = _f(None, "generate: replace an existing --out file")
    degree: float | None = _f(None, "generate: mean degree of random kinds (default 4)")
    rewire: float | None = _f(None, "generate: small_world rewiring probability (default 0.1)")
    periodic: bool | None = _f(None, "generate: lattice wraps around (torus)")
    weights: str | None = _f(None, "generate: i.i.d. uniform edge weights in [LOW, HIGH], given as LOW,HIGH")

    def validate(self) -> "TopologyFlags":
        return self


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def parse_list(text: str, kind, flag: str) -> list:
    """Comma-separated values ("0.1,1,10") of `kind` (float or int); fails with a one-line error."""
    items = [item.strip() for item in str(text).strip("[] ").split(",") if item.strip()]
    try:
        values = [kind(float(item)) if kind is int and float(item).is_integer() else kind(item) for item in items]
    except ValueError:
        raise UserInputError(f"{flag}: expected comma-separated {kind.__name__} values, got {text!r}") from None
    if not values:
        raise UserInputError(f"{flag}: empty list")
    return values


def validate_fields(cfg) -> None:
    """Types and signs common to all configs: numbers finite and non-negative, choices kept."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise UserInputError(f"{_flag(f.name)} must be one of {', '.join(choices)}; got {value!r}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value) or value < 0:
                raise UserInputError(f"{_flag(f.name)} must be a finite number >= 0, got {value!r}")


def _base_type(tp):
    """The non-None type of an annotation such as `int | None`."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return args[0]
    return tp


INT_LIMIT = 2**63 - 1  # integers beyond int64 fit no counter, seed or size here


def _type_error(name: str, tp, value) -> UserInputError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return UserInputError(f"{_flag(name)}: expected {tp.__name__}, got {shown}")


def coerce(cls, name: str, value):
    """Convert a flag string or config-file value to field `name`'s type, or fail clearly.

    Strict: a bool is not a number (TOML `units = true` is refused, not N = 1), a number or
    a list is not a bool, lists and tables are not scalars, and integers beyond int64 are
    refused before any use.
    """
    hints = typing.get_type_hints(cls)
    tp = _base_type(hints[name])
    if value is None:
        return None
    if isinstance(value, (list, tuple, dict, set, bytes)) or (isinstance(value, bool) and tp is not bool):
        raise _type_error(name, tp, value)
    try:
        if tp is bool:
            return _as_bool(value)
        if tp is int:
            try:
                number = _as_int(value)
            except UserInputError as err:
                raise UserInputError(f"{_flag(name)}: {err}") from None
            if abs(number) > INT_LIMIT:
                raise UserInputError(f"{_flag(name)}: {str(number)[:30]}... is too large")
            return number
        if tp is float:
            number = float(value)
            return number
        return tp(value)
    except (TypeError, ValueError, OverflowError) as err:
        if isinstance(err, UserInputError):
            raise
        raise _type_error(name, tp, value) from None


def _as_bool(value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    raise ValueError(value)


def _as_int(value) -> int:
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(value)
        return int(value)
    if isinstance(value, str) and len(value.strip()) > 40:  # int() of a huge string is slow
        raise UserInputError(f"{value.strip()[:30]}... is too large")
    return int(value)


MAX_CONFIG_BYTES = 1 << 20  # a config file is a few lines; anything this large is not one


def read_config_file(path: str | Path) -> dict:
    """Keys and values of a TOML or YAML config file (flat mapping); one line if malformed."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"config file {str(path)!r} not found")
    if path.suffix not in (".toml", ".yaml", ".yml"):
        raise UserInputError(f"config file {str(path)!r}: use .toml, .yaml or .yml")
    try:
        raw = path.read_bytes()
        if len(raw) > MAX_CONFIG_BYTES:
            raise ValueError(f"larger than {MAX_CONFIG_BYTES} bytes")
        data = _parse_config(raw.decode("utf-8"), path.suffix)
    except (OSError, ValueError, RecursionError) as err:  # decode, TOML and YAML errors included
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserInputError(f"config file {str(path)!r} is malformed: {reason[:200]}") from None
    if not isinstance(data, dict):
        raise UserInputError(f"config file {str(path)!r} must hold a mapping of keys to values")
    return data


def _parse_config(text: str, suffix: str):
    if suffix == ".toml":
        return tomllib.loads(text)
    import yaml

    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as err:  # malformed YAML, python/* tags (safe_load refuses them)
        raise ValueError(" ".join(str(err).split())) from None


def from_mapping(cls, values: dict, source: str):
    """Build config `cls` from a mapping; unknown keys are an error naming the key."""
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in names:
            raise UserInputError(f"unknown {source} key {key!r} (known: {', '.join(sorted(names))})")
        kwargs[name] = coerce(cls, name, value)
    return cls(**kwargs)


def merge(cls, file_values: dict, flag_values: dict):
    """Defaults < config file < flags, validated."""
    cfg = from_mapping(cls, {**file_values, **flag_values}, "config")
    return cfg.validate()


def add_flags(parser, cls, skip: tuple[str, ...] = ()) -> None:
    """One argparse flag per field of `cls`; absent flags stay absent (argparse.SUPPRESS)."""
    import argparse

    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        kwargs = dict(dest=f.name, default=argparse.SUPPRESS, help=f"{f.metadata.get('help', '')}"
                      f" [default: {f.default}]")
        if _base_type(typing.get_type_hints(cls)[f.name]) is bool:
            parser.add_argument(_flag(f.name), action="store_const", const=True, **kwargs)
        else:
            parser.add_argument(_flag(f.name), metavar=f.name.upper(), **kwargs)


def to_dict(cfg) -> dict:
    """Plain dict of a config (for JSON/TOML provenance)."""
    return dataclasses.asdict(cfg)

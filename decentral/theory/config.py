"""TheoryConfig: every knob of the Fig. 2 protocol, with the paper's App. B values as defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..config import _f, validate_fields
from ..errors import UserInputError

PROTOCOLS = ("non-adiabatic", "adiabatic")


def paper_sigma_grid() -> np.ndarray:
    """The authors' 60 couplings: logspace(-2.2,-1,15), logspace(-1,1,30), logspace(1,2.2,15)."""
    return np.concatenate([np.logspace(-2.2, -1, 15), np.logspace(-1, 1, 30),
                           np.logspace(1, 2.2, 15)])


@dataclass
class TheoryConfig:
    """One run of the effective theory (Eq. 4) over depths x protocols x couplings."""

    depths: tuple[int, ...] = (0, 1, 2)  # network depths D (hidden layers), each >= 0
    sigmas: np.ndarray = field(default_factory=paper_sigma_grid)  # couplings, increasing
    protocols: tuple[str, ...] = PROTOCOLS  # fresh state per sigma and/or carried state
    n_units: int = 200  # N, units of the supra-network (App. B)
    realizations: int = 200  # quenched (delta, initial m) draws averaged over (App. B)
    gamma: float = 1e-3  # effective weight decay gamma-hat (App. B)
    delta_std: float = 2.0  # delta_i ~ N(0, delta_std), drawn per realization and depth
    delta: np.ndarray | None = None  # explicit disorder [N] or [realizations, N]; else Gaussian
    init_low: float = -2.0  # initial m_i ~ U[init_low + eps, init_high + eps] (App. B)
    init_high: float = 2.0
    init_eps: float = 0.3  # the symmetry-breaking shift eps of App. B
    t_end: float = 10.0  # integrate each sigma over t in [0, t_end]
    n_eval: int = 100  # output times linspace(0, t_end, n_eval), as the authors' t_eval
    n_average: int = 50  # observables averaged over the last n_average output times
    rtol: float = 1e-3  # solve_ivp RK45 default tolerances
    atol: float = 1e-6
    q: object = None  # coupling matrix: None = mean field, dense [N, N] or scipy sparse
    seed: int = 0  # every random draw derives from (seed, depth, purpose)
    chunk_rows: int = 256  # rows integrated together (cache-sized batches)
    workers: int | None = None  # worker processes; None: one per available core
    threads: int | None = None  # BLAS threads per process; None: 1 (the arrays are small)

    def __post_init__(self):
        self.depths = tuple(int(d) for d in self.depths)
        self.sigmas = np.asarray(self.sigmas, dtype=float).reshape(-1)
        self.protocols = tuple(self.protocols)
        if self.delta is not None:
            self.delta = np.asarray(self.delta, dtype=float)
            if self.delta.ndim == 1:
                self.n_units = self.delta.size
        self.validate()

    def validate(self) -> None:
        """Raise UserInputError (one line) on any value the protocol cannot run with."""
        if not self.depths or min(self.depths) < 0:
            raise UserInputError(
                f"depths must be a non-empty list of integers >= 0, got {self.depths}")
        if self.sigmas.size == 0:
            raise UserInputError("the sigma list is empty")
        if not np.all(np.isfinite(self.sigmas)) or np.any(self.sigmas < 0):
            raise UserInputError("sigma values must be finite and >= 0")
        if "adiabatic" in self.protocols and np.any(np.diff(self.sigmas) < 0):
            raise UserInputError("the adiabatic protocol needs non-decreasing sigma values")
        bad = [p for p in self.protocols if p not in PROTOCOLS]
        if bad or not self.protocols:
            raise UserInputError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {bad}")
        if self.n_units < 1:
            raise UserInputError(f"number of units N must be >= 1, got {self.n_units}")
        if self.realizations < 1:
            raise UserInputError(f"realizations must be >= 1, got {self.realizations}")
        for name in ("workers", "threads"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UserInputError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("gamma", "delta_std", "t_end", "rtol", "atol"):
            value = getattr(self, name)
            strictly = name in ("t_end", "rtol", "atol")
            if not np.isfinite(value) or value < 0 or (strictly and value == 0):
                raise UserInputError(f"{name} must be finite and positive, got {value}")
        if not 1 <= self.n_average <= self.n_eval:
            raise UserInputError(
                f"n_average must be in [1, n_eval={self.n_eval}], got {self.n_average}")
        self._validate_delta()

    def _validate_delta(self) -> None:
        if self.delta is None:
            return
        if not np.all(np.isfinite(self.delta)):
            raise UserInputError("delta contains non-finite values")
        shape = self.delta.shape
        if self.delta.ndim == 2 and shape != (self.realizations, self.n_units):
            raise UserInputError(f"delta has shape {shape}, expected ({self.realizations}, "
                                 f"{self.n_units}) or ({self.n_units},)")
        if self.delta.ndim not in (1, 2) or self.delta.size == 0:
            raise UserInputError(f"delta must be a non-empty vector or matrix, got shape {shape}")

    @property
    def t_eval(self) -> np.ndarray:
        """The output times. [n_eval]"""
        return np.linspace(0.0, self.t_end, self.n_eval)

    @property
    def sample_from(self) -> float:
        """First output time inside the averaging window (the last n_average times)."""
        return float(self.t_eval[self.n_eval - self.n_average])


def load_delta(spec: str) -> np.ndarray:
    """Disorder given explicitly: a file (.npy, or text/.csv with numbers separated by commas
    or whitespace; one row per realization) or an inline comma-separated list."""
    from pathlib import Path

    path = Path(spec)
    try:
        if path.suffix == ".npy" and path.exists():
            values = np.load(path, allow_pickle=False)
        elif path.exists():
            text = path.read_text().replace(",", " ")
            values = np.array([[float(v) for v in line.split()]
                               for line in text.splitlines() if line.strip()
                               and not line.lstrip().startswith("#")])
            values = values[0] if len(values) == 1 else values
        else:
            values = np.array([float(v) for v in spec.split(",") if v.strip()])
    except (ValueError, OSError) as err:
        raise UserInputError(f"cannot read delta from {spec!r}: {err}") from None
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        raise UserInputError(f"delta from {spec!r} is empty")
    if not np.all(np.isfinite(values)):
        raise UserInputError(f"delta from {spec!r} contains non-finite values")
    return values


@dataclass
class TheoryFlags:
    """`decentral theory`'s flags (the same dataclass-to-flags machinery as `decentral run`);
    the CLI turns them into a TheoryConfig, whose defaults they share."""

    depth: str = _f(",".join(map(str, TheoryConfig.depths)), "comma-separated depths D")
    sigma: str | None = _f(None, "comma-separated couplings sigma (default: the --sigma-grid)")
    sigma_grid: str = _f("paper", "the authors' 60-value grid, unless --sigma is given", choices=("paper",))
    realizations: int = _f(TheoryConfig.realizations, "quenched realizations averaged over")
    protocol: str = _f("non-adiabatic", "sigma protocol", choices=("adiabatic", "non-adiabatic", "both"))
    units: int | None = _f(None, f"N units (default {TheoryConfig.n_units}, or the length of --delta)")
    gamma: float = _f(TheoryConfig.gamma, "regularization gamma-hat")
    delta_std: float = _f(TheoryConfig.delta_std, "std of the Gaussian delta")
    delta: str | None = _f(None, "explicit delta: a file (.npy/.csv/.txt) or a comma list")
    t_end: float = _f(TheoryConfig.t_end, "time per sigma")
    topology: str | None = _f(None, "supra-network file (default: mean field)")
    seed: int = _f(TheoryConfig.seed, "seed of every random draw")
    workers: int | None = _f(None, "worker processes (default: one per available core)")
    threads: int | None = _f(None, "BLAS threads per worker process (default 1: the arrays are small)")
    out: str | None = _f(None, "write the table to FILE (.csv or .parquet)")
    plot: str | None = _f(None, "draw Fig. 2 a-e style PNGs into this folder")
    overwrite: bool = _f(False, "replace an existing --out file or --plot folder")

    def validate(self) -> "TheoryFlags":
        validate_fields(self)
        return self

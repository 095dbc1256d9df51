"""Saved parameters: the final parameters of every unit of a `decentral run --out DIR`.

``DIR/params.safetensors`` (safetensors: a plain tensor format, no pickle) holds one tensor,
``theta`` [N, P] float32, row u the parameter vector of unit u, and string metadata:

* ``format``: ``decentral-params/1``;
* ``architecture``: JSON ``{"kind": "mlp", "depth", "width", "n_in", "n_out", "n_params"}``;
* ``layers``: JSON list of ``{"name", "shape", "offset"}``: where each layer's tensor sits in a
  row (per Linear layer, input to output: weight [fan_out, fan_in] row-major, then bias
  [fan_out]; ``Architecture.to_module`` rebuilds a unit as ``torch.nn.Sequential``);
* ``seed``, ``units``, ``step`` (the engine's step count at the end: transient + steps, or
  where the run stopped when every unit diverged), ``config_hash`` (checkpoint.config_hash
  of the run's config).

`decentral run --init-from DIR` starts from these parameters. The step counter continues:
the new run's engine starts at the saved ``step``, so with the same seed unit u draws the
batches of steps step, step+1, ... (batches are a pure function of (seed, unit, step),
`streams.py`), exactly those an undisturbed longer run draws. The new run's own transient and
measured steps follow; its time series counts steps from its own start (summary:
``start_step``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import UserInputError

FILE = "params.safetensors"
FORMAT = "decentral-params/1"


def save(directory: str | Path, theta: torch.Tensor, arch, seed: int, step: int,
         config_hash: str) -> Path:
    """Write DIR/params.safetensors from theta [N, P] (DIR: a run's atomic temporary directory)."""
    from safetensors.torch import save_file

    rows = theta.detach().to("cpu", torch.float32).contiguous()  # [N, P]
    meta = {"format": FORMAT, "architecture": json.dumps(arch.describe()),
            "layers": json.dumps(arch.layout()), "seed": str(int(seed)),
            "units": str(rows.shape[0]), "step": str(int(step)), "config_hash": config_hash}
    path = Path(directory) / FILE
    save_file({"theta": rows}, str(path), metadata=meta)
    return path


@dataclass
class SavedParams:
    """The parameters of a finished run and what they belong to."""

    theta: torch.Tensor  # [N, P] float32
    step: int  # the engine step they were taken at
    seed: int
    architecture: dict  # the run's `arch.describe()`
    metadata: dict  # every metadata string, as stored


def load(directory: str | Path, flag: str = "--init-from") -> SavedParams:
    """The saved parameters of run DIR; one line if missing or damaged."""
    from safetensors import SafetensorError, safe_open

    path = Path(directory) / FILE
    if not path.is_file():
        raise UserInputError(f"{flag} {directory}: no saved parameters ({FILE}) there")
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = dict(handle.metadata() or {})
            theta = handle.get_tensor("theta")
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT!r}")
        saved = SavedParams(theta, int(meta["step"]), int(meta["seed"]), json.loads(meta["architecture"]), meta)
        if theta.dim() != 2 or theta.dtype != torch.float32 or theta.shape[1] != saved.architecture["n_params"]:
            raise ValueError(f"theta is {list(theta.shape)} {theta.dtype}, expected [N, "
                             f"{saved.architecture['n_params']}] float32")
        return saved
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as err:
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise UserInputError(f"{flag} {directory}: {FILE} is damaged ({reason})") from None


def check_fits(saved: SavedParams, arch, units: int, directory: str) -> None:
    """Refuse saved parameters of another N or architecture (one line)."""
    want = arch.describe()
    if saved.theta.shape[0] != units:
        raise UserInputError(f"--init-from {directory}: it holds {saved.theta.shape[0]} units, "
                             f"this run has --units {units}")
    differ = [f"{k} {saved.architecture.get(k)} (this run: {v})" for k, v in want.items()
              if saved.architecture.get(k) != v]
    if differ:
        raise UserInputError(f"--init-from {directory}: another architecture: " + ", ".join(differ))

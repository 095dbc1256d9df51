"""Durable runs: the checkpoint a `decentral run --out DIR` keeps in DIR, and resuming from it.

A checkpoint is one file, ``DIR/checkpoint.npz``, replaced atomically (storage.atomic_write_bytes)
every `--checkpoint-every K` steps (by default, at the first block boundary
``config.CHECKPOINT_SECONDS`` of wall time after the last one) and when the run is interrupted
(Ctrl-C). It holds:

* ``theta``: the parameters of every unit [1, N, P] at a block boundary of the runner's plan;
* ``meta`` (JSON): the step, the measurement so far (every evaluation row, divergence marks,
  training time), the exact config and its hash.

No random-generator state is needed: initial parameters come from the seed, and the batch
indices of unit u at step t are a pure function of (seed, u, t) (`streams.py`), so a run
restored at step t draws exactly the batches an undisturbed run draws from t on.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .config import CHECKPOINT_SECONDS, RunConfig, merge, to_dict
from .errors import Interrupted, UserInputError
from .runner import Measurement
from .storage import atomic_write_bytes, read_npz

FILE = "checkpoint.npz"
# config keys that change no number (kernels: none beyond float rounding): a resumed run may give them anew
RUNTIME_KEYS = ("out", "overwrite", "threads", "data_root", "download", "address", "actor_cpus",
                "units_per_actor", "checkpoint_every", "log_tensorboard", "kernels")


# keys added after checkpoints were first written: at these defaults they stay out of the
# hash, so a checkpoint (and params.safetensors) written before them keeps its hash and resumes
LATER_KEYS = {"dataset": "mnist", "model": "mlp"}


def science(values: dict) -> dict:
    """The config values that determine the numbers (everything but RUNTIME_KEYS, and
    LATER_KEYS at their defaults)."""
    return {k: v for k, v in values.items()
            if k not in RUNTIME_KEYS and not (k in LATER_KEYS and v == LATER_KEYS[k])}


def config_hash(values: dict) -> str:
    text = json.dumps(science(values), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Checkpoint:
    """A run stopped at `step`, with what it had measured and the config it ran with."""

    step: int
    theta: torch.Tensor  # [1, N, P]
    meas: Measurement
    config: dict  # to_dict(RunConfig) of the run


def save(out: str | Path, step: int, theta: torch.Tensor, meas: Measurement, cfg: RunConfig) -> Path:
    """Write DIR/checkpoint.npz atomically (the previous one stays until the new one is whole)."""
    values = to_dict(cfg)
    meta = {"step": int(step), "config": values, "config_hash": config_hash(values),
            "records": meas.records, "train_seconds": meas.train_seconds,
            "train_steps": meas.train_steps,
            "diverged": None if meas.diverged is None else meas.diverged.tolist(),
            "diverged_at": None if meas.diverged_at is None else meas.diverged_at.tolist()}
    buffer = io.BytesIO()
    np.savez(buffer, theta=theta.detach().cpu().numpy(),
             meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    path = Path(out) / FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def load(out: str | Path) -> Checkpoint:
    """The checkpoint of DIR; one line if there is none, or it is damaged."""
    path = Path(out) / FILE
    if not path.is_file():
        done = (Path(out) / "summary.json").is_file()
        raise UserInputError(f"--resume {out}: " + ("that run has finished (summary.json is there)"
                                                     if done else f"no checkpoint ({FILE}) there"))
    arrays = read_npz(path, "checkpoint", keys=("theta", "meta"))
    try:
        meta = json.loads(arrays["meta"].tobytes().decode())
        meas = Measurement(meta["records"], meta["train_seconds"], meta["train_steps"],
                           _array(meta["diverged"], bool), _array(meta["diverged_at"], np.int64))
        if meta["config_hash"] != config_hash(meta["config"]):
            raise ValueError("config hash does not match its config")
        return Checkpoint(int(meta["step"]), torch.from_numpy(arrays["theta"]), meas, meta["config"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise UserInputError(f"checkpoint {path} is damaged ({err})") from None


def _array(values, dtype):
    return None if values is None else np.asarray(values, dtype=dtype)


def resumed_config(out: str, stored: dict, given: dict) -> RunConfig:
    """The stored config with the given (explicit) values on top; refused, naming the keys,
    when a given value changes the numbers."""
    given = {k.replace("-", "_"): v for k, v in given.items()}
    cfg = merge(RunConfig, stored, {**given, "out": out})
    new = to_dict(cfg)
    differ = sorted(k for k, v in science(new).items() if stored.get(k, LATER_KEYS.get(k)) != v)
    if differ:
        changes = ", ".join(f"{k} ({stored.get(k)!r} -> {new[k]!r})" for k in differ)
        raise UserInputError(f"--resume {out}: the run there has another config: {changes}; "
                             "resume without flags that change it")
    return cfg


class Keeper:
    """The runner's after_block hook: a checkpoint into cfg.out every cfg.checkpoint_every steps
    (None: once CHECKPOINT_SECONDS of wall time have passed since the last one; 0: never), and on
    Ctrl-C one at the end of the current block, then `Interrupted`."""

    def __init__(self, cfg: RunConfig, theta: Callable[[], torch.Tensor], step0: int = 0,
                 clock: Callable[[], float] = time.monotonic):
        self.cfg, self.theta, self.last, self.interrupted = cfg, theta, step0, False
        self.clock = clock
        self.last_time = clock()

    def due(self, step: int) -> bool:
        """Whether the block ending at `step` ends with a periodic checkpoint."""
        every = self.cfg.checkpoint_every
        if every is None:
            return self.clock() - self.last_time >= CHECKPOINT_SECONDS
        return every > 0 and step - self.last >= every

    def __call__(self, step: int, meas: Measurement) -> None:
        if self.interrupted or self.due(step):
            save(self.cfg.out, step, self.theta(), meas, self.cfg)
            self.last, self.last_time = step, self.clock()
        if self.interrupted:
            raise Interrupted(f"interrupted at step {step}; checkpoint in {self.cfg.out}; "
                              f"continue with: decentral run --resume {self.cfg.out}")

    @contextlib.contextmanager
    def catching_sigint(self):
        """A first Ctrl-C finishes the current block and checkpoints; a second one stops at once."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def first(signum, frame):
            self.interrupted = True
            signal.signal(signal.SIGINT, signal.default_int_handler)

        previous = signal.signal(signal.SIGINT, first)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)

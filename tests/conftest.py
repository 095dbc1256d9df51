"""Shared fixtures: small synthetic data made by the tests, and the real MNIST root."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from decentral.data import Split

REPO = Path(__file__).resolve().parents[1]
MNIST_CANDIDATES = [os.environ.get("DECENTRAL_DATA"), str(REPO.parent / "shared" / "data")]


def synthetic_split(n_classes: int, per_class: int, n_in: int = 784, seed: int = 0) -> Split:
    """Images whose pixels carry a class-dependent mean, so that learning is possible."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.rand(n_classes, n_in, generator=gen)
    y = torch.arange(n_classes).repeat_interleave(per_class)
    x = (centres[y] + 0.3 * torch.randn(len(y), n_in, generator=gen)).clamp(0, 1)
    return Split(x.float(), y)


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def run_example(mnist_root):
    """run_example(name, out): experiments/<name> run with OUT as its argument, as a user would,
    on the test MNIST; asserts it exits 0 and returns the completed process."""
    def run(name: str, out: Path) -> subprocess.CompletedProcess:
        env = {**os.environ, "PYTHONPATH": str(REPO), "DECENTRAL_DATA": mnist_root, "OMP_NUM_THREADS": "1"}
        done = subprocess.run([sys.executable, str(REPO / "experiments" / name), str(out)],
                              env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return done
    return run


@pytest.fixture(scope="session")
def synthetic_data():
    """(train, test) with 10 classes: 40 train and 10 test images per class."""
    return synthetic_split(10, 40, seed=1), synthetic_split(10, 10, seed=2)


@pytest.fixture(scope="session")
def mnist_root() -> str:
    for candidate in MNIST_CANDIDATES:
        if candidate and (Path(candidate) / "MNIST" / "raw").is_dir():
            return candidate
    pytest.skip("real MNIST not found (set DECENTRAL_DATA)")


@pytest.fixture(scope="session")
def mnist(mnist_root):
    from decentral.data import load_mnist

    return load_mnist(mnist_root)


class Killed(Exception):
    """The simulated kill of `kill_run`."""


@pytest.fixture
def default_data_folder(monkeypatch, tmp_path) -> Path:
    """No $DECENTRAL_DATA, and the default data folder (filled on first use) in tmp_path."""
    from decentral import datafiles

    monkeypatch.delenv("DECENTRAL_DATA", raising=False)
    default = tmp_path / "cache" / "decentral" / "data"
    monkeypatch.setattr(datafiles, "default_root", lambda: default)
    return default


@pytest.fixture
def kill_run():
    """`with kill_run(): run(...)` kills that run (raises Killed, expected) right after it saves
    its first checkpoint; `kill_run(at_step=S)` once the checkpoint keeper has seen step S."""
    from decentral import checkpoint

    keep = checkpoint.Keeper.__call__

    @contextlib.contextmanager
    def killed(at_step: int | None = None):
        def keep_then_kill(self, step, meas):
            keep(self, step, meas)
            if (self.last if at_step is None else step == at_step):
                raise Killed

        with pytest.MonkeyPatch.context() as patch, pytest.raises(Killed):
            patch.setattr(checkpoint.Keeper, "__call__", keep_then_kill)
            yield

    return killed

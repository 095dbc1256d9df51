"""Durable runs: a driver killed with SIGKILL resumes from its checkpoint to the same numbers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from decentral import checkpoint
from decentral.cli import main

REPO = Path(__file__).resolve().parents[1]
# the first checkpoint (step 20) comes well before the end (step 420)
RUN = ["run", "--depth", "1", "--sigma", "30", "--transient", "20", "--steps", "400",
       "--eval-every", "20", "--test-samples", "50", "--checkpoint-every", "20", "--json"]
TIMINGS = ("train_seconds", "steps_per_second")


def decentral(*args, mnist_root, **kw):
    env = {**os.environ, "DECENTRAL_DATA": mnist_root, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "decentral", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def summary(process) -> dict:
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err
    return without_timings(out)


def without_timings(stdout: str) -> dict:
    return {k: v for k, v in json.loads(stdout.splitlines()[-1]).items() if k not in TIMINGS}


def kill_at_first_checkpoint(process, out: Path) -> None:
    deadline = time.monotonic() + 300
    while not (out / checkpoint.FILE).exists():
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.mark.parametrize("backend", ["local", pytest.param("ray", marks=pytest.mark.ray)])
def test_killed_driver_resumes_to_the_same_numbers(backend, tmp_path, mnist_root, capsys, monkeypatch):
    extra = ["--backend", backend, "--units", "4"] if backend == "ray" else []
    killed = decentral(*RUN, *extra, "--out", str(tmp_path / "run"), mnist_root=mnist_root)
    kill_at_first_checkpoint(killed, tmp_path / "run")
    assert killed.returncode == -signal.SIGKILL
    stopped_at = checkpoint.load(tmp_path / "run").step
    assert 0 < stopped_at < 420 and not (tmp_path / "run" / "summary.json").exists()
    resumed = summary(decentral("run", "--resume", str(tmp_path / "run"), "--json", mnist_root=mnist_root))
    monkeypatch.setenv("DECENTRAL_DATA", mnist_root)
    capsys.readouterr()
    assert main([*RUN, *extra]) == 0  # undisturbed, in this process
    expected = without_timings(capsys.readouterr().out)
    if backend == "local":
        assert resumed == expected  # bitwise
    else:
        assert resumed.keys() == expected.keys()
        assert resumed["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-4)
        assert resumed["loss"] == pytest.approx(expected["loss"], rel=1e-4)
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["accuracy"] == resumed["accuracy"]
    assert not (tmp_path / "run" / checkpoint.FILE).exists()


def test_resume_with_another_config_is_refused(tmp_path, mnist_root, capsys, monkeypatch):
    monkeypatch.setenv("DECENTRAL_DATA", mnist_root)
    out = tmp_path / "run"
    from decentral.config import RunConfig
    from decentral.runner import Measurement
    import torch

    cfg = RunConfig(sigma=30.0, out=str(out), transient=0, steps=40, eval_every=20).validate()
    checkpoint.save(out, 20, torch.zeros(1, 10, 15910), Measurement(), cfg)
    assert main(["run", "--resume", str(out), "--sigma", "50", "--depth", "2", "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "another config: depth (1 -> 2), sigma (30.0 -> 50.0)" in err
    assert main(["run", "--resume", str(tmp_path / "nothing")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["run", "--out", str(out)]) == 2  # a fresh run would lose it
    assert f"continue it with `decentral run --resume {out}`" in capsys.readouterr().err


def test_ctrl_c_stops_at_a_checkpoint_with_exit_130(tmp_path, mnist_root, capsys, monkeypatch):
    import threading

    monkeypatch.setenv("DECENTRAL_DATA", mnist_root)
    out = tmp_path / "run"

    def press_ctrl_c():
        while not (out / checkpoint.FILE).exists():
            time.sleep(0.002)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=press_ctrl_c, daemon=True).start()
    assert main([*RUN, "--out", str(out)]) == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]
    step = checkpoint.load(out).step
    assert err == (f"decentral: interrupted at step {step}; checkpoint in {out}; "
                   f"continue with: decentral run --resume {out}")
    assert 20 <= step < 420 and not (out / "summary.json").exists()


@pytest.mark.parametrize("scheme", ["full", "rotating"])
def test_resumed_engine_run_equals_undisturbed_in_process(scheme, synthetic_data, tmp_path, kill_run):
    """run_local stopped right after a checkpoint (mid-measurement) and resumed from it."""
    import numpy as np
    import torch

    from decentral.config import RunConfig
    from decentral.problem import prepare
    from decentral.jobs.run import run_local

    cfg = RunConfig(units=4, transient=40, steps=100, eval_every=10, checkpoint_every=70,
                    eval_scheme=scheme, eval_folds=5, seed=2).validate()
    problem = prepare(cfg, synthetic_data)
    theta, meas = run_local(cfg, problem)
    durable = RunConfig(**{**cfg.__dict__, "out": str(tmp_path / "run")})
    with kill_run():
        run_local(durable, problem)
    saved = checkpoint.load(tmp_path / "run")
    assert saved.step == 70  # in the measurement phase, 3 evaluations done
    theta_resumed, meas_resumed = run_local(durable, problem, resume=saved)
    assert torch.equal(theta_resumed, theta)
    assert meas_resumed.records == meas.records
    assert np.array_equal(meas_resumed.diverged, meas.diverged)


def test_default_checkpoints_come_once_a_minute_of_wall_time_has_passed(tmp_path):
    """No --checkpoint-every: with --out, a checkpoint at the first block boundary CHECKPOINT_SECONDS
    after the last one (0: none; K: every K steps, whatever the clock)."""
    import torch

    from decentral.config import CHECKPOINT_SECONDS, RunConfig
    from decentral.runner import Measurement

    now = [100.0]
    theta = lambda: torch.zeros(1, 2, 3)

    def keeper(name, **kw):
        cfg = RunConfig(units=2, out=str(tmp_path / name), **kw).validate()
        return checkpoint.Keeper(cfg, theta, clock=lambda: now[0])

    auto, never, every = keeper("auto"), keeper("never", checkpoint_every=0), keeper("every", checkpoint_every=20)
    saved = {k: [] for k in ("auto", "never", "every")}
    for step, seconds in ((20, 10.0), (40, CHECKPOINT_SECONDS - 11.0), (60, 2.0), (80, 30.0), (100, 31.0)):
        now[0] += seconds
        for name, hook in (("auto", auto), ("never", never), ("every", every)):
            hook(step, Measurement())
            if (Path(hook.cfg.out) / checkpoint.FILE).is_file():
                saved[name].append(checkpoint.load(hook.cfg.out).step)
    assert saved["auto"] == [60, 60, 100]  # 61 s in at step 60, then 61 s later at step 100
    assert saved["never"] == [] and saved["every"] == [20, 40, 60, 80, 100]
    assert RunConfig().checkpoint_every is None

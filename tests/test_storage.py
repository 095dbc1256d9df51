"""Outputs checked before work, written atomically (also under SIGKILL), damaged files read as one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from decentral import storage
from decentral.errors import UserInputError
from tests.contract import assert_one_line_error, run_cli

REPO = Path(__file__).resolve().parents[1]
UNWRITABLE = "/proc/decentral-no-such-dir/out"  # /proc refuses new files, even to root
SMALL_RUN = ["--units", "4", "--steps", "50", "--transient", "0", "--eval-every", "50", "--test-samples", "200"]
THEORY = ["theory", "--depth", "0", "--sigma", "1", "--realizations", "2", "--units", "3", "--t-end", "0.1"]


def test_output_dir_checks(tmp_path):
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(UserInputError, match="exists and is not a directory"):
        storage.check_output_dir(afile)
    with pytest.raises(UserInputError, match="is not a directory"):
        storage.check_output_dir(afile / "sub" / "out")
    with pytest.raises(UserInputError, match="cannot write into"):
        storage.check_output_dir(UNWRITABLE)
    (tmp_path / "old").mkdir()
    with pytest.raises(UserInputError, match="--overwrite"):
        storage.check_output_dir(tmp_path / "old")
    assert storage.check_output_dir(tmp_path / "old", overwrite=True) == tmp_path / "old"
    assert storage.check_output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    with pytest.raises(UserInputError, match="already exists"):
        storage.check_output_file(afile)
    with pytest.raises(UserInputError, match="is a directory"):
        storage.check_output_file(tmp_path / "old", overwrite=True)


def test_atomic_dir_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "run"
    with storage.atomic_dir(target) as tmp:
        (tmp / "a").write_text("old")
    with pytest.raises(RuntimeError), storage.atomic_dir(target, overwrite=True) as tmp:
        (tmp / "b").write_text("new")
        raise RuntimeError("killed")
    assert sorted(p.name for p in target.iterdir()) == ["a"]
    with storage.atomic_dir(target, overwrite=True) as tmp:
        (tmp / "b").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temporary siblings left


@pytest.mark.parametrize("content", [b"", b"{\"a\": ", b"\xff\xfe\x00binary"])
def test_readers_name_the_damaged_file(tmp_path, content):
    path = tmp_path / "x"
    path.write_bytes(content)
    for reader in (storage.read_json, storage.read_toml, storage.read_parquet, storage.read_npz,
                   storage.read_torch):
        with pytest.raises(UserInputError, match=str(path)):
            reader(path)


def test_run_out_paths_checked_before_any_work(tmp_path, capsys):
    afile = tmp_path / "file"
    afile.write_text("x")
    run = ["run", "--data-root", "/nonexistent-data-root", *SMALL_RUN]  # would fail later if reached
    assert_one_line_error([*run, "--out", afile], capsys, "exists and is not a directory")
    assert_one_line_error([*run, "--out", UNWRITABLE], capsys, "cannot write into")
    assert_one_line_error([*run, "--out", afile / "x"], capsys, "is not a directory")
    (tmp_path / "old").mkdir()
    assert_one_line_error([*run, "--out", tmp_path / "old"], capsys, "--overwrite")


def test_theory_topology_outputs_checked_before_work(tmp_path, capsys):
    afile = tmp_path / "file.csv"
    afile.write_text("x")
    assert_one_line_error([*THEORY, "--out", afile], capsys, "already exists")
    assert_one_line_error([*THEORY, "--out", UNWRITABLE + ".csv"], capsys, "cannot write into")
    assert_one_line_error([*THEORY, "--plot", afile], capsys, "not a directory")
    assert_one_line_error([*THEORY, "--plot", UNWRITABLE], capsys, "cannot write into")
    gen = ["topology", "generate", "ring", "--nodes", "5", "--out"]
    assert_one_line_error([*gen, tmp_path], capsys, "is a directory")
    assert_one_line_error([*gen, afile / "g.edgelist"], capsys, "not a directory")
    assert_one_line_error([*gen, UNWRITABLE + ".edgelist"], capsys, "cannot write into")
    out = tmp_path / "new" / "ring.edgelist"  # missing parents are created
    assert run_cli([*gen, out], capsys)[0] == 0 and out.is_file()
    assert_one_line_error([*gen, out], capsys, "--overwrite")
    assert run_cli([*gen, out, "--overwrite"], capsys)[0] == 0


def test_run_out_refuses_then_overwrites_whole(tmp_path, capsys, mnist_root):
    out, ring = tmp_path / "run", tmp_path / "ring.edgelist"
    assert run_cli(["topology", "generate", "ring", "--nodes", "4", "--out", ring], capsys)[0] == 0
    args = ["run", "--data-root", mnist_root, *SMALL_RUN, "--out", out]
    assert run_cli([*args, "--topology", ring], capsys)[0] == 0
    assert (out / "topology.edgelist").is_file()
    assert_one_line_error(args, capsys, "--overwrite")
    assert run_cli([*args, "--overwrite", "--seed", "5"], capsys)[0] == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["config.toml", "params.safetensors", "summary.json", "timeseries.parquet"]  # nothing old
    assert json.loads((out / "summary.json").read_text())["seed"] == 5


KILL_LOOP = textwrap.dedent("""
    import json, os, random, signal, sys, time, tomllib
    from pathlib import Path
    from decentral.config import RunConfig
    from decentral.jobs.run import save_run
    from decentral.runner import Measurement
    out, kills = Path(sys.argv[1]), int(sys.argv[2])
    cfg = RunConfig(out=str(out), overwrite=True, units=4)
    meas = Measurement(records=[{"step": i, "accuracy": 0.5} for i in range(200)])
    rng = random.Random(18)
    for k in range(kills):
        child = os.fork()
        if child == 0:  # saves runs over each other until killed
            while True:
                save_run(out, cfg, {"seed": k, "cross_accuracy": [[0.1] * 10] * 4}, meas)
        time.sleep(rng.uniform(0.01, 0.3))
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        if out.exists():  # complete: all three files, each whole (no pyarrow here, forks follow)
            assert sorted(os.listdir(out)) == ["config.toml", "summary.json", "timeseries.parquet"]
            assert json.loads((out / "summary.json").read_text())["cross_accuracy"]
            assert tomllib.loads((out / "config.toml").read_text())["units"] == 4
            data = (out / "timeseries.parquet").read_bytes()
            assert data[:4] == data[-4:] == b"PAR1"
    print("survived", kills, flush=True)
""")


def test_sigkill_during_save_never_leaves_a_partial_run(tmp_path):
    """SIGKILL at random moments while runs are saved over each other: `out` is absent or complete."""
    from decentral.jobs.run import load_run

    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", KILL_LOOP, str(out), "12"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0 and "survived 12" in proc.stdout, proc.stderr[-3000:]
    if out.exists():
        summary, series, config = load_run(out)
        assert len(series) == 200 and config["units"] == 4
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] in ([], ["run"])


def test_load_run_refuses_a_partial_directory(tmp_path):
    from decentral.jobs.run import load_run

    (tmp_path / "summary.json").write_text("")
    with pytest.raises(UserInputError, match="summary.json"):
        load_run(tmp_path)
    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(UserInputError, match="not found"):
        load_run(tmp_path)


def test_npz_reader_refuses_pickles(tmp_path):
    path = tmp_path / "a.npz"
    np.savez(path, x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(UserInputError, match="a.npz"):
        storage.read_npz(path)


@pytest.mark.slow
def test_sigkill_during_cli_runs_never_leaves_a_partial_run(tmp_path, mnist_root):
    """`decentral run --out DIR --overwrite` killed at random moments (training or saving):
    DIR is absent or a complete run."""
    import random
    import time

    from decentral.jobs.run import load_run

    rng, out = random.Random(7), tmp_path / "run"
    env = {**os.environ, "DECENTRAL_DATA": mnist_root, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "decentral", "run", *SMALL_RUN, "--out", str(out), "--overwrite"]
    for _ in range(4):
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(2.0, 12.0))
        proc.kill()
        proc.wait(timeout=30)
        if out.exists():
            summary, series, config = load_run(out)
            assert summary["units"] == 4 and config["units"] == 4 and len(series) >= 1


def test_sweep_manifest_without_points_never_blocks(tmp_path):
    """A sweep that stopped before its first point leaves a manifest any config may take over;
    once a point is finished, a different config is refused and the same one needs --resume."""
    from decentral.sweep.store import open_store, write_point

    root = tmp_path / "s"
    open_store(root, {"sigma": [1]}, "aaaa", resume=False)
    open_store(root, {"sigma": [2]}, "bbbb", resume=False)  # taken over: nothing to lose
    write_point(root, {"point_id": "p0", "protocol": "non-adiabatic", "depth": 0, "seed": 0, "sigma": 2.0,
                       "diverged": False, "cross_accuracy": [[0.5]], "cross_loss": [[1.0]]})
    with pytest.raises(UserInputError, match="different config"):
        open_store(root, {"sigma": [3]}, "cccc", resume=False)
    with pytest.raises(UserInputError, match="--resume"):
        open_store(root, {"sigma": [2]}, "bbbb", resume=False)
    assert open_store(root, {"sigma": [2]}, "bbbb", resume=True) == root
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserInputError, match="not a directory"):
        open_store(tmp_path / "f", {}, "dddd", resume=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "other.txt").write_text("x")
    with pytest.raises(UserInputError, match="non-empty directory"):
        open_store(tmp_path / "busy", {}, "dddd", resume=False)

"""Saved parameters (`run --out DIR` writes DIR/params.safetensors) and `run --init-from DIR`."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from safetensors import safe_open

from decentral import params
from decentral.cli import main
from decentral.config import RunConfig
from decentral.errors import UserInputError
from decentral.jobs.run import execute

TINY = dict(units=4, eval_every=20, seed=3, test_samples=200)


def _theta(out) -> tuple[torch.Tensor, dict]:
    with safe_open(str(out / params.FILE), framework="pt") as handle:
        return handle.get_tensor("theta"), handle.metadata()


def test_params_file_holds_every_unit_and_its_provenance(synthetic_data, tmp_path):
    cfg = RunConfig(**TINY, depth=2, width=8, transient=20, steps=40, out=str(tmp_path / "a")).validate()
    execute(cfg, synthetic_data)
    theta, meta = _theta(tmp_path / "a")
    arch = json.loads(meta["architecture"])
    assert theta.dtype == torch.float32 and list(theta.shape) == [4, arch["n_params"]]
    assert arch == {"kind": "mlp", "depth": 2, "width": 8, "n_in": 784, "n_out": 10,
                    "n_params": 784 * 8 + 8 + 8 * 8 + 8 + 8 * 10 + 10}
    assert (meta["seed"], meta["step"], meta["units"]) == ("3", "60", "4")
    layers = json.loads(meta["layers"])
    assert [l["name"] for l in layers[:2]] == ["layers.0.weight", "layers.0.bias"]
    assert layers[-1]["offset"] + layers[-1]["shape"][0] == arch["n_params"]
    saved = params.load(tmp_path / "a")
    assert saved.step == 60 and torch.equal(saved.theta, theta)


def test_init_from_continues_a_run_bitwise(synthetic_data, tmp_path):
    """T1 steps saved, then --init-from them for T2 more equals one run of T1 + T2 steps:
    the engine continues at the saved step, so every unit draws the same batches."""
    first = RunConfig(**TINY, transient=20, steps=40, out=str(tmp_path / "first")).validate()
    execute(first, synthetic_data)
    more = RunConfig(**TINY, transient=0, steps=60, init_from=str(tmp_path / "first"),
                     out=str(tmp_path / "more")).validate()
    summary = execute(more, synthetic_data)
    whole = RunConfig(**TINY, transient=20, steps=100, out=str(tmp_path / "whole")).validate()
    execute(whole, synthetic_data)
    (theta_more, meta_more), (theta_whole, meta_whole) = _theta(tmp_path / "more"), _theta(tmp_path / "whole")
    assert torch.equal(theta_more, theta_whole) and meta_more["step"] == meta_whole["step"] == "120"
    assert summary["start_step"] == 60 and summary["init_from"] == str(tmp_path / "first")
    series_more = pd.read_parquet(tmp_path / "more" / "timeseries.parquet")
    series_whole = pd.read_parquet(tmp_path / "whole" / "timeseries.parquet")
    series_more["step"] += summary["start_step"]  # its steps count from its own start
    tail = series_whole[series_whole.step > 60].reset_index(drop=True)
    pd.testing.assert_frame_equal(series_more, tail, check_exact=True)


def test_init_from_refuses_another_n_or_architecture(synthetic_data, tmp_path):
    execute(RunConfig(**TINY, transient=0, steps=20, out=str(tmp_path / "a")).validate(), synthetic_data)
    base = {**TINY, "transient": 0, "steps": 20, "init_from": str(tmp_path / "a")}
    with pytest.raises(UserInputError, match="holds 4 units, this run has --units 5"):
        execute(RunConfig(**{**base, "units": 5}).validate(), synthetic_data)
    with pytest.raises(UserInputError, match="another architecture: depth 1 \\(this run: 2\\)"):
        execute(RunConfig(**{**base, "depth": 2}).validate(), synthetic_data)
    with pytest.raises(UserInputError, match="width 20 \\(this run: 7\\)"):
        execute(RunConfig(**{**base, "width": 7}).validate(), synthetic_data)


def test_init_from_bad_directory_is_one_line_exit_2(tmp_path, capsys):
    assert main(["run", "--init-from", str(tmp_path), "--steps", "20"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"decentral: error: --init-from {tmp_path}: no saved parameters (params.safetensors) there"
    (tmp_path / params.FILE).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    assert main(["run", "--init-from", str(tmp_path), "--steps", "20"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"decentral: error: --init-from {tmp_path}: params.safetensors is damaged (")
    assert "\n" not in err
    assert main(["run", "--init-from", str(tmp_path), "--backend", "ray"]) == 2
    assert "--init-from starts a run on the local engine" in capsys.readouterr().err


def test_sweeps_refuse_init_from_and_keep_their_hash():
    from decentral.sweep.config import load_sweep_config, science_dict

    cfg = load_sweep_config({}, {"sigma": "1", "depth": "1", "out": "x"})
    assert "init_from" not in science_dict(cfg)
    with pytest.raises(UserInputError, match="init_from is an option of `decentral run`"):
        load_sweep_config({"init_from": "y"}, {"sigma": "1", "depth": "1", "out": "x"})


def test_an_init_from_run_killed_and_resumed_equals_it_undisturbed(synthetic_data, tmp_path, kill_run):
    """Checkpoints of an --init-from run count steps in its own plan; resuming adds the saved step."""
    from decentral import checkpoint
    from decentral.problem import prepare
    from decentral.jobs.run import run_local

    execute(RunConfig(**TINY, transient=20, steps=40, out=str(tmp_path / "first")).validate(), synthetic_data)
    cfg = RunConfig(**TINY, transient=0, steps=60, init_from=str(tmp_path / "first"),
                    checkpoint_every=20, out=str(tmp_path / "more")).validate()
    problem = prepare(cfg, synthetic_data)
    theta, meas = run_local(cfg, problem)
    with kill_run():
        run_local(cfg, problem)
    saved = checkpoint.load(tmp_path / "more")
    assert saved.step == 20
    theta_resumed, meas_resumed = run_local(cfg, problem, resume=saved)
    assert torch.equal(theta_resumed, theta) and meas_resumed.records == meas.records

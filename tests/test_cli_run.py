"""`decentral run` end to end: JSON summary, config files, outputs, bad input, divergence."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from decentral.cli import main

FAST = ["--steps", "40", "--transient", "20", "--eval-every", "20", "--test-samples", "500"]
TIMING_KEYS = {"train_seconds", "steps_per_second"}


def _run_json(capsys, *args):
    assert main(["run", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_summary_has_the_promised_keys(capsys, mnist_root):
    s = _run_json(capsys, "--data-root", mnist_root, "--depth", "2", *FAST)
    for key in ("backend", "units", "depth", "sigma", "steps", "accuracy", "loss", "magnetization",
                "consensus_distance", "cross_accuracy", "steps_per_second", "diverged", "sigma_over_n"):
        assert key in s
    assert s["backend"] == "local" and s["units"] == 10 and s["sigma_over_n"] == s["sigma"] / 10
    assert len(s["cross_accuracy"]) == 10 and all(len(row) == 10 for row in s["cross_accuracy"])
    assert s["diverged"] is False and 0 <= s["accuracy"] <= 1


def test_same_seed_same_summary(capsys, mnist_root):
    a = _run_json(capsys, "--data-root", mnist_root, "--seed", "3", *FAST)
    b = _run_json(capsys, "--data-root", mnist_root, "--seed", "3", *FAST)
    c = _run_json(capsys, "--data-root", mnist_root, "--seed", "4", *FAST)
    strip = lambda s: {k: v for k, v in s.items() if k not in TIMING_KEYS}
    assert strip(a) == strip(b)
    assert strip(a) != strip(c)


def test_window_batches_run_and_differ_from_iid(capsys, mnist_root):
    window = _run_json(capsys, "--data-root", mnist_root, "--batches", "window", *FAST)
    iid = _run_json(capsys, "--data-root", mnist_root, *FAST)
    assert window["diverged"] is False and window["accuracy"] != iid["accuracy"]


def test_config_file_keys_match_flags_and_flags_win(capsys, tmp_path, monkeypatch, mnist_root):
    monkeypatch.setenv("DECENTRAL_DATA", mnist_root)
    toml = tmp_path / "c.toml"
    toml.write_text('depth = 0\nsigma = 5.0\neval-every = 20\nsteps = 40\ntransient = 0\ntest_samples = 300\n')
    s = _run_json(capsys, "--config", str(toml), "--sigma", "7")
    assert (s["depth"], s["sigma"], s["steps"], s["test_samples"]) == (0, 7.0, 40, 300)
    yaml = tmp_path / "c.yaml"
    yaml.write_text("depth: 2\nsteps: 20\ntransient: 0\ntest-samples: 300\n")
    s = _run_json(capsys, "--config", str(yaml))
    assert (s["depth"], s["steps"]) == (2, 20)


def test_out_dir_holds_summary_series_and_exact_config(tmp_path, mnist_root, capsys):
    out = tmp_path / "run"
    assert main(["run", "--data-root", mnist_root, *FAST, "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    series = pd.read_parquet(out / "timeseries.parquet")
    assert list(series["step"]) == [40, 60]  # measured evaluations after a 20-step transient
    assert summary["accuracy"] == pytest.approx(series["accuracy"].mean())
    config_text = (out / "config.toml").read_text()
    assert "sigma = 30.0" in config_text and f'data_root = "{mnist_root}"' in config_text
    assert "30 coupled steps/s" not in capsys.readouterr().out  # human summary printed instead


def test_divergence_is_a_result_not_a_crash(capsys, mnist_root):
    with pytest.warns(RuntimeWarning, match="unstable coupling"):
        s = _run_json(capsys, "--data-root", mnist_root, "--sigma", "1000", *FAST)
    assert s["diverged"] is True and "diverged" in s["message"]
    assert s["stability_number"] == pytest.approx(0.005 * 1000 * 10 / 10)


def test_unstable_sigma_is_warned_before_training(mnist_root):
    with pytest.warns(RuntimeWarning, match="unstable coupling.*largest stable sigma 400"):
        assert main(["run", "--data-root", mnist_root, "--sigma", "500", *FAST]) == 0


BAD = [
    (["--units", "-3"], "--units must be a finite number >= 0"),
    (["--units", "0"], "--units must be >= 1"),
    (["--sigma", "abc"], "--sigma: expected float, got 'abc'"),
    (["--steps", "1.5"], "--steps: expected int"),
    (["--sigma", "nan"], "--sigma must be a finite number"),
    (["--init", "xavier"], "--init must be one of pytorch, normal"),
    (["--batches", "random"], "--batches must be one of iid, window"),
    (["--bogus", "1"], "unrecognized arguments: --bogus"),
    (["--data-root", "/nonexistent/dir"], "data root '/nonexistent/dir' does not exist"),
    (["--device", "tpu9"], "--device"),
]


@pytest.mark.parametrize("args,message", BAD)
def test_bad_input_is_one_line_and_exit_2(args, message, capsys, tmp_path):
    assert main(["run", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_bad_config_files(tmp_path, capsys):
    unknown = tmp_path / "u.toml"
    unknown.write_text("sigmaa = 3\n")
    broken = tmp_path / "b.toml"
    broken.write_text("sigma = = 3\n")
    for path, message in [(unknown, "unknown config key 'sigmaa'"), (broken, "is malformed"),
                          (tmp_path / "missing.toml", "not found"), (tmp_path, "not found")]:
        assert main(["run", "--config", str(path)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1

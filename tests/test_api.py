"""The Python API (`decentral.api`: run/sweep/theory/load): pandas results, CLI validation as
exceptions, round trips through the run directory, and the example script."""

from __future__ import annotations


import pandas as pd
import pytest
import torch

import decentral
from decentral.cli import main

TINY = dict(units=4, transient=20, steps=40, eval_every=20, test_samples=200, seed=2)


def test_run_returns_pandas_objects_and_the_summary_the_cli_saves(synthetic_data, tmp_path):
    result = decentral.run(TINY, data=synthetic_data, out=str(tmp_path / "run"))
    assert isinstance(result.config, decentral.RunConfig) and result.config.units == 4
    assert list(result.timeseries.step) == [40, 60] and result.out == tmp_path / "run"
    assert result.cross_accuracy.shape == (4, 10) and result.cross_accuracy.index.name == "unit"
    assert result.cross_accuracy.values.tolist() == result.summary["cross_accuracy"]
    loaded = decentral.load(tmp_path / "run")
    pd.testing.assert_frame_equal(loaded.timeseries, result.timeseries)
    pd.testing.assert_frame_equal(loaded.cross_accuracy, result.cross_accuracy)
    assert torch.equal(loaded.params, result.params) and loaded.config == result.config
    assert loaded.summary["accuracy"] == result.summary["accuracy"]


def test_configs_as_mapping_file_or_typed_config_agree(synthetic_data, tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text("".join(f"{k} = {v}\n" for k, v in TINY.items()))
    by_file = decentral.run(str(toml), data=synthetic_data).summary
    by_config = decentral.run(decentral.run_config(**TINY), data=synthetic_data).summary
    timing = ("train_seconds", "steps_per_second")
    assert {k: v for k, v in by_file.items() if k not in timing} == \
        {k: v for k, v in by_config.items() if k not in timing}


@pytest.mark.parametrize("call, cli, message", [
    (lambda: decentral.run(units=0), ["run", "--units", "0"], "--units must be >= 1, got 0"),
    (lambda: decentral.run(unit=3), ["run", "--config", "{toml}"], "unknown config key 'unit'"),
    (lambda: decentral.run(units="four"), ["run", "--units", "four"], "--units: expected int, got 'four'"),
    (lambda: decentral.api.sweep(sigma=[1], depth=[1]), ["sweep", "--sigma", "1", "--depth", "1"],
     "sweep: --out DIR is required"),
])
def test_bad_input_raises_the_cli_message(call, cli, message, tmp_path, capsys):
    (tmp_path / "c.toml").write_text("unit = 3\n")
    with pytest.raises(decentral.UserInputError) as err:
        call()
    assert message in str(err.value)
    assert main([a.format(toml=tmp_path / "c.toml") for a in cli]) == 2
    assert capsys.readouterr().err.strip() == f"decentral: error: {err.value}"


def test_theory_and_load_refuse_bad_input(tmp_path):
    with pytest.raises(decentral.UserInputError, match="depths must be a non-empty list"):
        decentral.api.theory(depths=[-1], sigmas=[1.0])
    with pytest.raises(decentral.UserInputError, match="unknown theory key 'sigma'"):
        decentral.api.theory(sigma=[1.0])
    with pytest.raises(decentral.UserInputError, match="neither a run directory"):
        decentral.load(tmp_path)


def test_theory_returns_its_table():
    table = decentral.api.theory(depths=[0], sigmas=[0.0, 5.0], n_units=10, realizations=3,
                             protocols=["non-adiabatic"], workers=1)
    assert isinstance(table, pd.DataFrame) and list(table.sigma) == [0.0, 5.0]


def test_api_names_and_packages_are_plain():
    """decentral.run and .load are the API's functions; .sweep and .theory stay the packages,
    whose API calls are decentral.api.sweep and .theory; the jobs are plain modules."""
    from decentral import api
    from decentral.jobs.run import execute
    from decentral.sweep.config import SweepConfig

    assert decentral.run is api.run and decentral.load is api.load and decentral.api is api
    assert decentral.sweep.config.SweepConfig is SweepConfig and callable(execute)
    assert decentral.theory.TheoryConfig is decentral.TheoryConfig and not callable(decentral.sweep)


def test_the_api_example_runs(run_example, tmp_path):
    done = run_example("api_example.py", tmp_path)
    assert "refused: --units must be >= 1, got 0" in done.stdout and "continued from step 60" in done.stdout
    assert (tmp_path / "run" / "params.safetensors").is_file() and (tmp_path / "sweep" / "results.parquet").is_file()

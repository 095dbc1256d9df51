"""`decentral run --log-tensorboard DIR`: event files read back by TensorBoard's own reader."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util import tensor_util

from decentral import checkpoint
from decentral.cli import main
from decentral.config import RunConfig
from decentral.jobs.run import execute, run_local
from decentral.runner import OBSERVABLES

TINY = dict(units=4, transient=20, steps=60, eval_every=20, seed=1, test_samples=200)


def _events(log_dir) -> EventAccumulator:
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    return events.Reload()


def _logged_run(tmp_path, summary: dict) -> EventAccumulator:
    """The events of a TINY run with --out tmp_path/run --log-tensorboard tmp_path/tb, checked:
    every evaluation of its time series at its step, and the summary's time averages."""
    series = pd.read_parquet(tmp_path / "run" / "timeseries.parquet")
    events = _events(tmp_path / "tb")
    for name in OBSERVABLES:
        logged = events.Scalars(f"observables/{name}")
        assert [e.step for e in logged] == series.step.tolist() == [40, 60, 80]
        np.testing.assert_allclose([e.value for e in logged], series[name], rtol=1e-6)
        assert events.Scalars(f"summary/{name}")[0].value == pytest.approx(summary[name], rel=1e-6)
    return events


def test_event_files_hold_every_evaluation_and_the_heat_maps(synthetic_data, tmp_path):
    cfg = RunConfig(**TINY, out=str(tmp_path / "run"), log_tensorboard=str(tmp_path / "tb")).validate()
    summary = execute(cfg, synthetic_data)
    events = _logged_run(tmp_path, summary)
    image = events.Images("cross_accuracy")[0]
    assert (image.step, image.height, image.width) == (80, 4, 10)
    values = events.Tensors("cross_accuracy/values")[0]
    shape = [d.size for d in values.tensor_proto.tensor_shape.dim]
    assert shape == [4, 10]
    stored = tensor_util.make_ndarray(values.tensor_proto)
    np.testing.assert_allclose(stored, summary["cross_accuracy"], rtol=1e-6)
    assert "cross_loss" in events.Tags()["images"]


def test_init_from_logs_at_engine_steps(synthetic_data, tmp_path):
    execute(RunConfig(**TINY, out=str(tmp_path / "a")).validate(), synthetic_data)
    cfg = RunConfig(**{**TINY, "transient": 0, "steps": 40}, init_from=str(tmp_path / "a"),
                    log_tensorboard=str(tmp_path / "tb")).validate()
    execute(cfg, synthetic_data)
    assert [e.step for e in _events(tmp_path / "tb").Scalars("observables/loss")] == [100, 120]


def test_a_resumed_run_logs_every_evaluation_once(synthetic_data, tmp_path, kill_run):
    from decentral.problem import prepare

    cfg = RunConfig(**TINY, checkpoint_every=40, out=str(tmp_path / "run"),
                    log_tensorboard=str(tmp_path / "tb")).validate()
    problem = prepare(cfg, synthetic_data)
    from decentral.jobs.run import open_log

    log = open_log(cfg, 0, None)
    with kill_run(at_step=60):  # one evaluation (60) logged after the checkpoint at 40
        run_local(cfg, problem, after_block=log)
    log.close()
    saved = checkpoint.load(tmp_path / "run")
    assert saved.step == 40
    log = open_log(cfg, 0, saved)
    run_local(cfg, problem, resume=saved, after_block=log)
    log.close()
    assert [e.step for e in _events(tmp_path / "tb").Scalars("observables/loss")] == [40, 60, 80]


def test_a_log_directory_that_is_a_file_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "f").write_text("")
    assert main(["run", "--log-tensorboard", str(tmp_path / "f" / "tb"), "--steps", "20"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"decentral: error: --log-tensorboard {tmp_path / 'f' / 'tb'}: cannot create")
    assert "\n" not in err


# --- sweeps: one TensorBoard run per point ---------------------------------------------------


def _sweep(tmp_path, data, **kw):
    import decentral

    values = dict(sigma=[0.5, 20], depth=[1], units=4, transient=20, steps=40, eval_every=20,
                  test_samples=200, protocol="both", out=str(tmp_path / "sweep"),
                  log_tensorboard=str(tmp_path / "tb"), quiet=True, threads=1)
    return decentral.api.sweep(**{**values, **kw}, data=data)


def test_a_sweep_logs_every_point_as_its_own_run(synthetic_data, tmp_path):
    table = _sweep(tmp_path, synthetic_data).set_index("point_id")
    runs = sorted(p.name for p in (tmp_path / "tb").iterdir())
    assert runs == sorted(table.index) and len(runs) == 4  # 2 sigmas x both protocols
    for point, row in table.iterrows():
        events = _events(tmp_path / "tb" / point)
        assert events.Scalars("point/sigma")[0].value == pytest.approx(row.sigma)
        logged = events.Scalars("observables/accuracy")
        assert [e.step for e in logged] == [40, 60]
        assert np.mean([e.value for e in logged]) == pytest.approx(row.accuracy, rel=1e-5)
        assert events.Scalars("summary/loss")[0].value == pytest.approx(row.loss, rel=1e-6)
        image = events.Images("cross_accuracy")[0]
        assert (image.step, image.height, image.width) == (60, 4, 10)


def test_a_point_run_again_replaces_its_earlier_log(synthetic_data, tmp_path):
    """A resumed sweep recomputes unfinished points: their second log purges the first."""
    import shutil

    table = _sweep(tmp_path, synthetic_data, protocol="non-adiabatic")
    point = table.point_id[0]
    shutil.rmtree(tmp_path / "sweep" / "points")  # as if killed before any point was written
    (tmp_path / "sweep" / "points").mkdir()
    _sweep(tmp_path, synthetic_data, protocol="non-adiabatic", resume=True)
    events = _events(tmp_path / "tb" / point)
    assert len(list((tmp_path / "tb" / point).iterdir())) == 2  # two event files, one view
    assert [e.step for e in events.Scalars("observables/loss")] == [40, 60]
    assert len(events.Scalars("point/sigma")) == 1 and len(events.Scalars("summary/loss")) == 1


def test_sweep_log_options_refused_clearly(tmp_path, capsys):
    from tests.contract import assert_one_line_error

    base = ["sweep", "--sigma", "1", "--depth", "1", "--out", tmp_path / "s", "--steps", "20"]
    assert_one_line_error([*base, "--backend", "ray", "--log-tensorboard", tmp_path / "tb"], capsys,
                          "sweep: --log-tensorboard logs the points of a local sweep")
    (tmp_path / "f").write_text("")
    assert_one_line_error([*base, "--log-tensorboard", tmp_path / "f" / "tb"], capsys,
                          "--log-tensorboard .*: cannot create that directory")
    assert not (tmp_path / "s").exists()  # refused before any work


# --- the Ray backend --------------------------------------------------------------------------


@pytest.mark.ray
def test_a_ray_run_logs_every_evaluation_from_actors_that_load_the_dataset(tmp_path):
    """Local Ray, as `decentral run --backend ray` starts it: the actors load a generated
    Fashion-MNIST from the data root; the events hold every evaluation the run recorded."""
    pytest.importorskip("ray")
    from tests.datagen import make_dataset

    root = make_dataset("fashion-mnist", tmp_path / "data", n_train=200, n_test=100)
    values = dict(TINY, dataset="fashion-mnist", data_root=str(root), lr=0.05, sigma=20.0, threads=1)
    cfg = RunConfig(**values, backend="ray", out=str(tmp_path / "run"),
                    log_tensorboard=str(tmp_path / "tb")).validate()
    summary = execute(cfg)
    events = _logged_run(tmp_path, summary)
    assert events.Images("cross_accuracy")[0].step == 80
    assert summary["backend"] == "ray" and summary["dataset"] == "fashion-mnist"
    local = execute(RunConfig(**values).validate())  # the same numbers on the local engine
    assert local["accuracy"] == pytest.approx(summary["accuracy"], abs=1e-4)
    assert local["loss"] == pytest.approx(summary["loss"], rel=1e-4)

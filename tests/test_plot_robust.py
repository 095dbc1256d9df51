"""`decentral plot` on any valid sweep (2-9 units, every point diverged) and on damaged ones."""

from __future__ import annotations

import shutil

import pytest

from decentral.sweep import run_sweep
from decentral.sweep.config import load_sweep_config
from tests.contract import assert_one_line_error, run_cli

PNGS = {"fig3a_magnetization.png", "fig3b_loss.png", "fig3c_accuracy.png", "fig3efg_cross_accuracy.png"}


def _sweep(tmp_path, data, name, **over):
    values = dict(sigma="0.5,5", depth="0", seeds=1, transient=0, steps=6, eval_every=3, units=3,
                  out=str(tmp_path / name), quiet=True)
    values.update(over)
    run_sweep(load_sweep_config({}, values), data=data)
    return tmp_path / name


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory, synthetic_data):
    root = tmp_path_factory.mktemp("sweeps")
    return {"small": _sweep(root, synthetic_data, "small"),
            "nine": _sweep(root, synthetic_data, "nine", units=9, sigma="1"),
            "diverged": _sweep(root, synthetic_data, "diverged", sigma="1e7,1e8")}


@pytest.mark.parametrize("name", ["small", "nine", "diverged"])
def test_plot_draws_every_valid_sweep(sweeps, name, capsys):
    code, out, err = run_cli(["plot", sweeps[name]], capsys)
    assert code == 0, err
    assert "warning" not in err and "Traceback" not in err
    written = {line.rsplit("/", 1)[-1] for line in out.splitlines()}
    assert PNGS <= written
    assert written == {p.name for p in (sweeps[name] / "figures").iterdir()}


def _damaged_copy(sweeps, tmp_path, relative: str, data: bytes | None) -> str:
    copy = tmp_path / "copy"
    shutil.copytree(sweeps["small"], copy)
    target = next(copy.glob(relative))
    target.write_bytes(target.read_bytes()[: len(target.read_bytes()) // 2] if data is None else data)
    if relative.startswith("points"):  # the table is rebuilt from the points
        (copy / "results.parquet").unlink()
    return str(target.relative_to(copy))


@pytest.mark.parametrize("relative,data", [("sweep.json", b""), ("sweep.json", b"[1, 2]"),
                                           ("results.parquet", None), ("cross_accuracy.npz", None),
                                           ("points/*.json", None), ("points/*.json", b"{}")])
def test_damaged_sweep_dir_is_one_line_naming_the_file(sweeps, tmp_path, capsys, relative, data):
    name = _damaged_copy(sweeps, tmp_path, relative, data)
    assert_one_line_error(["plot", tmp_path / "copy"], capsys, name.replace("/", ".").split("*")[0])


def test_resume_with_a_truncated_chain_checkpoint_is_one_line(tmp_path, synthetic_data, capsys):
    from decentral.errors import UserInputError

    root = _sweep(tmp_path, synthetic_data, "chain", protocol="adiabatic", sigma="0.5,1,2")
    state = next((root / "state").glob("*.pt"))
    state.write_bytes(state.read_bytes()[:100])
    last = sorted((root / "points").glob("*.json"))[-1]
    last.unlink()
    with pytest.raises(UserInputError, match=f"chain checkpoint .*{state.name}.* damaged"):
        _sweep(tmp_path, synthetic_data, "chain", protocol="adiabatic", sigma="0.5,1,2", resume=True)


def test_all_diverged_sweep_leaks_no_numpy_warning(tmp_path, synthetic_data):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _sweep(tmp_path, synthetic_data, "div", sigma="1e7")
    assert not [w for w in caught if "empty slice" in str(w.message)]

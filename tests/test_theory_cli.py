"""`decentral theory`: tables, files, JSON, plots, topology files and one-line errors."""

import json

import numpy as np
import pandas as pd
import pytest

from decentral.cli import main

TABLE_COLUMNS = ["depth", "protocol", "sigma", "m_abs_mean", "m_abs_std", "loss_mean",
                 "loss_std", "accuracy_eff"]
SMALL = ["theory", "--depth", "0,1", "--sigma", "0.1,1,10", "--realizations", "3",
         "--units", "20"]


def test_csv_table_with_both_protocols(tmp_path, capsys):
    out = tmp_path / "theory.csv"
    assert main(SMALL + ["--protocol", "both", "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert list(table.columns[:8]) == TABLE_COLUMNS
    assert len(table) == 2 * 2 * 3
    assert set(table.protocol) == {"adiabatic", "non-adiabatic"}
    assert "S_x rank-one fit explains" in capsys.readouterr().out


def test_parquet_json_and_plots(tmp_path, capsys):
    out = tmp_path / "theory.parquet"
    assert main(SMALL + ["--out", str(out), "--json", "--plot", str(tmp_path / "fig")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["rows"]) == 6 and set(TABLE_COLUMNS) <= set(result["rows"][0])
    assert 0 < result["learning_path"]["explained_fraction"] <= 1
    assert len(pd.read_parquet(out)) == 6
    for name in ("fig2a_magnetization.png", "fig2b_loss.png", "fig2cde_rankings.png"):
        assert (tmp_path / "fig" / name).stat().st_size > 1000


def test_explicit_delta_file(tmp_path, capsys):
    delta_file = tmp_path / "delta.txt"
    delta_file.write_text("0.5, 1.0, -0.2, 2.0\n")
    args = ["theory", "--depth", "0", "--sigma", "1", "--realizations", "2", "--json",
            "--delta", str(delta_file)]
    assert main(args) == 0
    row = json.loads(capsys.readouterr().out)["rows"][0]
    assert np.isclose(row["m_abs_mean"], np.mean([0.5, 1.0, -0.2, 2.0]) / 1.001, atol=1e-2)


def test_topology_file(tmp_path, capsys):
    pytest.importorskip("decentral.topology")
    ring = tmp_path / "ring.edgelist"
    ring.write_text("".join(f"{i} {(i + 1) % 6}\n" for i in range(6)))
    args = ["theory", "--depth", "0", "--sigma", "0,100", "--realizations", "2", "--units", "6",
            "--topology", str(ring), "--json"]
    assert main(args) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert rows[1]["loss_mean"] < rows[0]["loss_mean"]


@pytest.mark.parametrize("flags,message", [
    (["--realizations", "-1"], "realizations"),
    (["--units", "0"], "units"),
    (["--sigma", ""], "empty"),
    (["--sigma", ","], "empty"),
    (["--delta", "1,nan,2"], "non-finite"),
    (["--depth", "1.5"], "depth"),
    (["--out", "table.xlsx"], ".csv or .parquet"),
])
def test_bad_input_is_one_line_exit_2(flags, message, capsys):
    assert main(["theory"] + flags) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("decentral: error:")

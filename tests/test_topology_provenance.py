"""--topology on run, sweep and theory: results record the file's name and hash and keep a copy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from decentral.cli import main
from decentral.jobs.run import execute
from decentral.sweep import run_sweep
from decentral.sweep.config import load_sweep_config
from decentral.topology import file_digest

RING = str(Path(__file__).resolve().parents[1] / "topologies" / "ring_n10.edgelist")


def test_run_records_and_copies_the_topology(tmp_path, synthetic_data, capsys):
    from decentral.config import RunConfig

    out = tmp_path / "run"
    cfg = RunConfig(topology=RING, transient=0, steps=20, eval_every=10, out=str(out)).validate()
    summary = execute(cfg, synthetic_data)
    assert summary["topology"]["name"] == "ring_n10.edgelist"
    assert summary["topology"]["sha256"] == file_digest(RING)
    assert (out / "topology.edgelist").read_bytes() == open(RING, "rb").read()
    assert json.loads((out / "summary.json").read_text())["topology"]["sha256"] == file_digest(RING)


def test_ring_differs_from_mean_field(synthetic_data):
    from decentral.config import RunConfig

    ring = execute(RunConfig(topology=RING, transient=0, steps=20, eval_every=10).validate(), synthetic_data)
    full = execute(RunConfig(transient=0, steps=20, eval_every=10).validate(), synthetic_data)
    assert ring["consensus_distance"] > full["consensus_distance"]


def test_sweep_keeps_a_copy_and_the_hash(tmp_path, synthetic_data):
    cfg = load_sweep_config({}, dict(sigma="1,30", depth="0", seeds=1, transient=10, steps=10,
                                     eval_every=10, topology=RING, out=str(tmp_path / "s"), quiet=True))
    run_sweep(cfg, synthetic_data)
    assert (tmp_path / "s" / "topologies" / "ring_n10.edgelist").is_file()
    assert file_digest(RING) in (tmp_path / "s" / "sweep.json").read_text()


def test_theory_records_the_topology(capsys):
    assert main(["theory", "--depth", "0", "--sigma", "1", "--realizations", "3", "--units", "10",
                 "--topology", RING, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["topology"]["sha256"] == file_digest(RING)
    assert {row["topology_sha256"] for row in result["rows"]} == {file_digest(RING)}
    assert np.isfinite(result["rows"][0]["m_abs_mean"])


def test_topology_of_the_wrong_size_is_rejected(capsys):
    assert main(["theory", "--depth", "0", "--sigma", "1", "--units", "12", "--topology", RING]) == 2
    assert "12" in capsys.readouterr().err

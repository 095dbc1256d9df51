"""SweepConfig by composition: the shared run fields plus the axes, with the config hash of
every sweep directory already written unchanged (they must resume)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from decentral.config import RunConfig, SharedConfig, read_config_file
from decentral.errors import UserInputError
from decentral.sweep.config import SweepConfig, config_hash, load_sweep_config, science_dict
from decentral.sweep.plan import count_points, plan_groups
from decentral.sweep.store import open_store

ROOT = Path(__file__).resolve().parents[1]
FIG3_PAPER = ROOT / "experiments" / "fig3_paper.toml"
FIG3_SWEEP = ROOT / "experiments" / "results" / "fig3_paper" / "sweep"


def fig3_paper(**flags) -> SweepConfig:
    return load_sweep_config(read_config_file(FIG3_PAPER), {"out": "x", **flags})


def test_fig3_paper_hashes_are_unchanged():
    """The hashes the code before the composition gave for experiments/fig3_paper.toml: as the
    file stands (3 seeds), and with --seeds 1, the running sweep's manifest."""
    assert config_hash(science_dict(fig3_paper())) == "b7d1420d19706120"
    assert config_hash(science_dict(fig3_paper(seeds=1))) == "bd53e1faea6cc302"
    assert config_hash(science_dict(fig3_paper(kernels="torch"))) != "b7d1420d19706120"  # hashed when set


def test_the_fig3_sweep_directory_resumes(tmp_path):
    manifest = json.loads((FIG3_SWEEP / "sweep.json").read_text())
    seeds = len(manifest["config"]["seeds"])  # the sweep runs with --seeds K (seeds 0..K-1)
    cfg = fig3_paper(seeds=seeds, out=str(tmp_path), resume=True)
    science = science_dict(cfg)
    assert json.loads(json.dumps(science)) == manifest["config"]
    assert config_hash(science) == manifest["hash"]
    (tmp_path / "points").mkdir()
    shutil.copy(FIG3_SWEEP / "sweep.json", tmp_path)
    first = sorted((FIG3_SWEEP / "points").glob("na-*.json"))[0]  # a fresh-state point: skipped alone
    shutil.copy(first, tmp_path / "points")
    open_store(tmp_path, science, config_hash(science), resume=True)  # accepted, not refused
    assert count_points(plan_groups(cfg, tmp_path)) == (50 * 3 + 50) * seeds - 1  # the finished point skipped


def test_shared_fields_have_one_default():
    shared = {f.name for f in dataclasses.fields(SharedConfig)}
    for cls in (RunConfig, SweepConfig):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        assert shared <= set(fields)
        for f in dataclasses.fields(SharedConfig):
            assert fields[f.name].default == f.default and fields[f.name].metadata is f.metadata
    point = SweepConfig(sigma="1,2", depth="0,1", out="x").validate().run_config(1, 2.0, 5, None)
    assert point == RunConfig(depth=1, sigma=2.0, seed=5)


def test_run_options_are_accepted_at_their_defaults_only():
    defaults = {"units_per_actor": 1, "gossip_period": 1, "staleness": 0, "checkpoint_every": 0,
                "actor_cpus": 1.0, "overwrite": False, "init_from": None, "log_tensorboard": None}
    cfg = load_sweep_config(defaults, {"sigma": "1", "out": "x"})
    assert not hasattr(cfg, "init_from") and "init_from" not in science_dict(cfg)
    for key, message in [("init_from", "init_from is an option of `decentral run`"),
                         ("overwrite", "there is no --overwrite"),
                         ("gossip_period", "--gossip-period is a Ray actor option")]:
        with pytest.raises(UserInputError, match=message):
            load_sweep_config({key: "y" if key != "gossip_period" else 2}, {"sigma": "1", "out": "x"})

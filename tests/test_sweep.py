"""decentral sweep: planning, batching equivalence, resume, config safety, CLI and plots.

Fast tests run on the small synthetic split of conftest; the phenomenology test (slow) runs a
reduced sweep on real MNIST.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from decentral.errors import UserInputError
from decentral.sweep.job import StoreSink, run_sweep
from decentral.sweep.config import SweepConfig, load_sweep_config
from decentral.sweep.plan import plan_groups

OBS = ["loss", "accuracy", "magnetization", "mean_sq_param", "consensus_distance"]


def tiny(tmp_path, **over) -> SweepConfig:
    values = dict(sigma="0.0001,1,30", depth="0,1", seeds=2, transient=20, steps=20, eval_every=10,
                  out=str(tmp_path / "sweep"), quiet=True)
    values.update(over)
    return load_sweep_config({}, values)


def results(cfg) -> pd.DataFrame:
    return pd.read_parquet(f"{cfg.out}/results.parquet").sort_values("point_id").reset_index(drop=True)


def test_lists_grids_and_files(tmp_path):
    cfg = load_sweep_config({"sigma": [10, 0.1, 1], "depth": [2, 0]}, {"out": "x", "seeds": "3"})
    assert cfg.sigmas() == [0.1, 1.0, 10.0] and cfg.depths() == [0, 2] and cfg.seed_list() == [0, 1, 2]
    paper = load_sweep_config({}, {"sigma_grid": "paper", "out": "x"}).sigmas()
    assert len(paper) == 50 and paper[0] == 1e-4 and paper[-1] == 390
    with pytest.raises(UserInputError, match="exactly one"):
        load_sweep_config({}, {"sigma": "1", "sigma_grid": "quick", "out": "x"})
    with pytest.raises(UserInputError, match="--sigma"):
        load_sweep_config({}, {"sigma": "1,a", "out": "x"})
    with pytest.raises(UserInputError, match="--out"):
        load_sweep_config({}, {"sigma": "1"})


def test_plan_stacks_seeds_by_sigmas(tmp_path):
    cfg = tiny(tmp_path, seeds=5, max_batch=6, protocol="both", adiabatic_depths="1")
    groups = plan_groups(cfg, tmp_path)
    na = [g for g in groups if g.protocol == "non-adiabatic"]
    assert all(g.replicas <= 6 for g in groups)
    assert sorted((g.depth, s, i) for g in na for s in g.seeds for i in g.sigma_indices) == \
        sorted((d, s, i) for d in (0, 1) for s in range(5) for i in range(3))
    chains = [g for g in groups if g.protocol == "adiabatic"]
    assert {g.depth for g in chains} == {1} and sum(len(g.seeds) for g in chains) == 5
    assert all(g.sigma_indices == (0, 1, 2) for g in chains)


def test_sweep_point_equals_run(tmp_path, synthetic_data):
    from decentral.jobs.run import execute

    cfg = tiny(tmp_path)
    run_sweep(cfg, synthetic_data)
    table = results(cfg)
    assert len(table) == 12 and table["batch_replicas"].eq(6).all()
    for depth, seed, sigma in [(0, 1, 30.0), (1, 0, 1.0)]:
        alone = execute(cfg.run_config(depth, sigma, seed, None), synthetic_data)
        row = table[(table.depth == depth) & (table.seed == seed) & (table.sigma == sigma)].iloc[0]
        for name in OBS:
            assert row[name] == pytest.approx(alone[name], rel=1e-5, abs=1e-6), name
        ax = np.load(f"{cfg.out}/cross_accuracy.npz")
        index = list(ax["point_id"]).index(row["point_id"])
        np.testing.assert_allclose(ax["cross_accuracy"][index], alone["cross_accuracy"], atol=1e-6)


def test_killed_sweep_resumes_to_the_same_results(tmp_path, synthetic_data, monkeypatch):
    whole = tiny(tmp_path / "a", protocol="both", max_batch=3)
    run_sweep(whole, synthetic_data)
    killed = dataclasses.replace(whole, out=str(tmp_path / "b"))
    original, calls = StoreSink.__call__, {"n": 0}

    def dying(self, records, states):
        calls["n"] += 1
        if calls["n"] == 5:  # dies while the 5th group's (or chain stage's) points are in flight
            raise KeyboardInterrupt
        original(self, records, states)

    monkeypatch.setattr(StoreSink, "__call__", dying)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(killed, synthetic_data)
    monkeypatch.setattr(StoreSink, "__call__", original)
    with pytest.raises(UserInputError, match="--resume"):
        run_sweep(killed, synthetic_data)
    report = run_sweep(dataclasses.replace(killed, resume=True), synthetic_data)
    assert 0 < report.finished_points < 24
    a, b = results(whole), results(killed)
    assert list(a["point_id"]) == list(b["point_id"]) and len(a) == 24
    for name in OBS:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert run_sweep(dataclasses.replace(killed, resume=True), synthetic_data).finished_points == 0


def test_different_config_is_refused(tmp_path, synthetic_data):
    cfg = tiny(tmp_path, depth="0", sigma="1", seeds=1)
    run_sweep(cfg, synthetic_data)
    with pytest.raises(UserInputError, match="different config.*lr"):
        run_sweep(dataclasses.replace(cfg, lr=0.01, resume=True), synthetic_data)
    # runtime options (batching, threads) are not part of the config
    assert run_sweep(dataclasses.replace(cfg, max_batch=1, resume=True), synthetic_data).finished_points == 0


def test_cli_sweep_and_plot(tmp_path, mnist_root, capsys):
    from decentral.cli import main

    out = tmp_path / "cli"
    config = tmp_path / "sweep.toml"
    config.write_text('sigma = [0.0001, 3, 30]\ndepth = [1]\ntransient = 10\nsteps = 10\n'
                      'eval_every = 10\ntest_samples = 200\n')
    argv = ["sweep", "--config", str(config), "--seeds", "2", "--out", str(out), "--data-root", mnist_root]
    assert main(argv + ["--json"]) == 0
    assert '"rows": 6' in capsys.readouterr().out
    assert main(argv + ["--lr", "0.01"]) == 2
    assert main(["plot", str(out)]) == 0
    pngs = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert pngs == ["fig3a_magnetization.png", "fig3b_loss.png", "fig3c_accuracy.png",
                    "fig3d_rank_one.png", "fig3efg_cross_accuracy.png"]


def _onset(sub: pd.DataFrame, level: float = 0.2) -> float:
    """Smallest sigma whose <A> exceeds `level` (inf when none does)."""
    above = sub[sub["accuracy"] > level]
    return float(above["sigma"].min()) if len(above) else float("inf")


@pytest.mark.slow
def test_reduced_sweep_shows_fig3_effects(tmp_path, mnist):
    """A reduced Fig. 3 (1 seed, 6 couplings, 750 + 750 steps) shows the paper's effects."""
    from decentral.sweep.store import load_results

    cfg = load_sweep_config({}, dict(sigma="0.0001,1,10,30,120,390", depth="0,1,2", seeds=1,
                                     transient=750, steps=750, eval_every=100, test_samples=1000,
                                     out=str(tmp_path / "fig3"), quiet=True))
    run_sweep(cfg, mnist)
    frame, cross = load_results(cfg.out)
    by_depth = {d: frame[frame.depth == d].sort_values("sigma") for d in (0, 1, 2)}
    for sub in by_depth.values():  # local learning: each unit only knows its own class
        assert sub["accuracy"].iloc[0] == pytest.approx(0.1, abs=0.01)
    strong = by_depth[0][by_depth[0]["sigma"] >= 30]
    assert strong["accuracy"].max() > 0.8  # (sigma=390 is near the lr*sigma < 2 stability edge)
    onsets = [_onset(by_depth[d]) for d in (0, 1, 2)]
    assert onsets[0] < onsets[1] <= onsets[2], onsets
    for d in (1, 2):  # disorder-order-disorder: <m> peaks at intermediate coupling
        m = by_depth[d]["magnetization"].to_numpy()
        assert m[1:-1].max() > 1.5 * max(m[0], m[-1]), (d, m)
    a_free = cross[by_depth[1].index[0]]  # D=1, no coupling: diagonal
    off = a_free[~np.eye(10, dtype=bool)]
    assert np.diag(a_free).mean() > 0.9 and off.mean() < 0.05
    a_strong = cross[by_depth[1].index[-1]]  # D=1, strongest coupling: rows alike, columns differ
    assert a_strong.std(axis=0).mean() < 0.5 * a_strong.mean(axis=0).std()


@pytest.mark.slow
@pytest.mark.ray
def test_ray_backend_runs_groups_as_tasks(tmp_path, mnist_root, mnist):
    """Points spread over (local) Ray equal the local sweep's."""
    values = dict(sigma="0.0001,30", depth="0,1", seeds=2, transient=10, steps=10, eval_every=10,
                  test_samples=200, data_root=mnist_root, max_batch=2, quiet=True)
    local = load_sweep_config({}, {**values, "out": str(tmp_path / "local")})
    remote = load_sweep_config({}, {**values, "out": str(tmp_path / "ray"), "backend": "ray", "threads": 1})
    run_sweep(local, mnist)
    report = run_sweep(remote)
    assert report.finished_points == 8
    a, b = results(local), results(remote)
    for name in OBS:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-5, atol=1e-6, err_msg=name)

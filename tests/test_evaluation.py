"""The rotating class-stratified evaluation: folds, the error bound on recorded trajectories,
config hashes left alone at the default, and sweeps extended by seeds."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from decentral.config import RunConfig
from decentral.engine import Hyper, init_state, make_stepper, sigma_tensor
from decentral.errors import UserInputError
from decentral.evaluation import make_evaluator, prepare_folds, rotation_error, stratified_folds
from decentral import observables
from decentral.problem import prepare
from decentral.runner import OBSERVABLES, Phases, run_phases
from decentral.simulation import LocalSimulation
from decentral.sweep import run_sweep
from decentral.sweep.config import config_hash, load_sweep_config, science_dict


def test_folds_partition_the_test_set_with_classes_spread_evenly():
    y = torch.arange(10).repeat_interleave(torch.tensor([98, 113, 103, 101, 98, 89, 95, 102, 97, 100]))
    folds = stratified_folds(y, 10)
    every = torch.cat(folds)
    assert len(every) == len(y) and len(set(every.tolist())) == len(y)  # disjoint and covering
    sizes = [len(f) for f in folds]
    assert max(sizes) - min(sizes) <= 1
    for c in range(10):
        counts = [int((y[f] == c).sum()) for f in folds]
        assert max(counts) - min(counts) <= 1, (c, counts)
    assert all(torch.equal(a, b) for a, b in zip(folds, stratified_folds(y, 10)))  # fixed seed
    with pytest.raises(UserInputError, match="eval-folds"):
        stratified_folds(y[:5], 6)


def _trajectory(mnist, depth: int, sigma: float, transient: int, n_evals: int, eval_every: int):
    """Parameters [1, N, P] at each of n_evals evaluations of a real run (and its arch, test)."""
    cfg = RunConfig(depth=depth, sigma=sigma, test_samples=2000)
    problem = prepare(cfg, mnist)
    stepper = make_stepper(problem.arch, problem.shards, problem.coupling,
                           sigma_tensor(sigma, 1, "cpu"), [0], Hyper())
    thetas = []

    def record(theta):
        thetas.append(theta.clone())
        return {k: np.zeros(1) for k in OBSERVABLES}

    sim = LocalSimulation(stepper, init_state(problem.arch, [0], cfg.units), record)
    run_phases(sim, Phases(transient, n_evals * eval_every, eval_every))
    return problem.arch, problem.test, thetas


@pytest.mark.parametrize("depth,sigma", [(0, 30.0), (1, 100.0)])
def test_rotating_average_is_within_the_derived_bound_on_a_real_trajectory(mnist, depth, sigma):
    n_folds, n_evals = 5, 20
    arch, test, thetas = _trajectory(mnist, depth, sigma, transient=100, n_evals=n_evals, eval_every=10)
    folds = prepare_folds(test, n_folds)
    rotating = make_evaluator(arch, test, "rotating", n_folds)
    full = make_evaluator(arch, test, "full", n_folds)
    estimates = [rotating(t) for t in thetas]  # what a run records
    exact = [full(t) for t in thetas]
    for name in ("accuracy", "loss"):
        scores = np.array([[float(observables.test_metrics(arch, t, f.test)[name][0]) for f in folds] for t in thetas])  # [M, K]
        result = rotation_error(scores, np.array([len(f.test.y) for f in folds]))
        measured = np.mean([e[name][0] for e in estimates])
        truth = np.mean([e[name][0] for e in exact])
        assert result["exact"] == pytest.approx(truth, abs=1e-9)  # folds weighted by size = full set
        assert measured == pytest.approx(result["rotating"], abs=1e-9)  # the evaluator is the estimator
        assert measured - truth == pytest.approx(result["formula"], abs=1e-9)  # identity (1), exact
        assert abs(measured - truth) <= result["bound"] + 1e-9  # bound (2)
        assert result["bound"] > 0  # the trajectory moves: the check is not vacuous
    for name in ("magnetization", "mean_sq_param", "consensus_distance"):  # exact at every evaluation
        np.testing.assert_allclose([e[name] for e in estimates], [e[name] for e in exact], rtol=1e-12)


def test_frozen_parameters_give_the_full_average_exactly(mnist):
    arch, test, thetas = _trajectory(mnist, 1, 10.0, transient=50, n_evals=1, eval_every=10)
    rotating = make_evaluator(arch, test, "rotating", 4)
    values = [rotating(thetas[0])["accuracy"][0] for _ in range(8)]  # two rotations, no drift
    full = make_evaluator(arch, test, "full", 4)(thetas[0])["accuracy"][0]
    assert np.mean(values) == pytest.approx(full, abs=1e-12)
    assert len(set(values)) > 1  # single folds differ; whole rotations do not


def test_rotating_needs_whole_rotations_and_cli_says_so(capsys):
    from decentral.cli import main

    RunConfig(eval_scheme="rotating", steps=200, eval_every=20, eval_folds=10).validate()
    with pytest.raises(UserInputError, match="not a multiple of --eval-folds 10"):
        RunConfig(eval_scheme="rotating", steps=210, eval_every=20).validate()
    assert main(["run", "--eval-scheme", "rotating", "--steps", "30", "--eval-every", "20"]) == 2
    assert main(["run", "--eval-folds", "0"]) == 2
    err = capsys.readouterr().err
    assert "decentral: error: --eval-scheme rotating" in err and "--eval-folds must be >= 1" in err


def test_default_scheme_leaves_sweep_hashes_alone():
    base = load_sweep_config({}, {"sigma_grid": "paper", "out": "x"})
    science = science_dict(base)
    assert "eval_scheme" not in science and "eval_folds" not in science
    assert config_hash(science) == config_hash(science_dict(dataclasses.replace(base, eval_folds=7)))
    rotating = science_dict(dataclasses.replace(base, eval_scheme="rotating"))
    assert rotating["eval_scheme"] == "rotating" and rotating["eval_folds"] == 10
    assert config_hash(rotating) != config_hash(science)


def _tiny(tmp_path, **over):
    values = dict(sigma="0.0001,30", depth="0", seeds=1, transient=20, steps=20, eval_every=10,
                  eval_scheme="rotating", eval_folds=2, out=str(tmp_path / "sweep"), quiet=True)
    return load_sweep_config({}, {**values, **over})


def test_sweep_extends_by_seeds_without_recomputing(tmp_path, synthetic_data):
    one = _tiny(tmp_path, protocol="both")
    assert run_sweep(one, synthetic_data).finished_points == 4
    manifest = tmp_path / "sweep" / "sweep.json"
    before = {p.name: p.read_bytes() for p in (tmp_path / "sweep" / "points").glob("*.json")}
    three = dataclasses.replace(one, seeds=3, resume=True)
    assert run_sweep(three, synthetic_data).finished_points == 8  # seeds 1 and 2 only
    assert json.loads(manifest.read_text())["config"]["seeds"] == [0, 1, 2]
    after = {p.name: p.read_bytes() for p in (tmp_path / "sweep" / "points").glob("*.json")}
    assert all(after[name] == data for name, data in before.items())  # seed 0 untouched
    assert run_sweep(dataclasses.replace(one, resume=True), synthetic_data).finished_points == 0  # a subset
    last = dataclasses.replace(one, seed=2, resume=True)  # another process's share: seed 2 alone
    assert run_sweep(last, synthetic_data).finished_points == 0
    with pytest.raises(UserInputError, match="different config.*seed"):  # seeds 2-3: not a subset
        run_sweep(dataclasses.replace(last, seeds=2), synthetic_data)
    assert json.loads(manifest.read_text())["config"]["seeds"] == [0, 1, 2]
    with pytest.raises(UserInputError, match="different config.*eval_folds"):
        run_sweep(dataclasses.replace(three, eval_folds=1), synthetic_data)
    with pytest.raises(UserInputError, match="--resume"):
        run_sweep(dataclasses.replace(one, seeds=4), synthetic_data)
    assert json.loads(manifest.read_text())["config"]["seeds"] == [0, 1, 2]  # refused: unchanged


def test_chunked_parameter_stats_equal_the_whole_tensor_formulas(monkeypatch):
    """Above STATS_WHOLE bytes parameter_stats sums float64 chunks of units in two passes: the
    same values as the whole-tensor formulas, to float64 rounding, per replica."""
    gen = torch.Generator().manual_seed(0)
    theta = torch.randn(3, 37, 50, generator=gen) * torch.tensor([0.1, 1.0, 30.0]).view(3, 1, 1) + 0.5
    whole = observables.parameter_stats(theta)  # one float64 copy
    monkeypatch.setattr(observables, "STATS_WHOLE", 0)
    monkeypatch.setattr(observables, "STATS_CHUNK", 8 * 3 * 50 * 8)  # 8 units a chunk: 5 chunks, the last short
    chunked = observables.parameter_stats(theta)
    for name, value in whole.items():
        assert value.dtype == chunked[name].dtype == torch.float64 and value.shape == (3,)
        torch.testing.assert_close(chunked[name], value, rtol=1e-13, atol=0)

"""experiments/topology_onset.py: the onset finder on known curves, and that its stacked
per-replica-Q ensemble equals running each (topology, sigma) point alone on the engine."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse
import torch

from decentral import topology
from decentral.topology import Coupling
from decentral.data import partition
from decentral.engine import Hyper, init_state, make_stepper, sigma_tensor
from decentral.errors import UserInputError
from decentral.model import Architecture

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "topology_onset.py"


@pytest.fixture(scope="module")
def exp():
    spec = importlib.util.spec_from_file_location("topology_onset", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_onset_of_a_curve_linear_in_log_sigma(exp):
    sigmas = np.logspace(-2, 2, 9)  # the curve rises from 0.1 to 0.9 between 0.1 and 10
    values = np.clip(0.1 + 0.4 * (np.log10(sigmas) + 1), 0.1, 0.9)
    assert exp.onset_sigma(sigmas, values) == pytest.approx(1.0, rel=1e-9)
    assert exp.onset_sigma(sigmas, values, fraction=0.25) == pytest.approx(10**-0.5, rel=1e-9)


def test_onset_takes_first_crossing_ignores_nan_and_unsorted_grid(exp):
    sigmas = np.array([0.1, 1.0, 10.0, 100.0, 1000.0])
    values = np.array([0.1, 0.3, 0.9, np.nan, 0.2])  # reentrant drop at the end
    order = np.array([3, 0, 4, 2, 1])
    level = 0.5  # halfway between 0.1 and 0.9
    expected = math.exp(math.log(1.0) + (level - 0.3) / 0.6 * math.log(10.0))
    assert exp.onset_sigma(sigmas[order], values[order]) == pytest.approx(expected)


def test_onset_is_nan_without_a_rise(exp):
    sigmas = np.logspace(-1, 2, 6)
    assert math.isnan(exp.onset_sigma(sigmas, np.full(6, 0.1)))
    assert math.isnan(exp.onset_sigma(sigmas, 0.1 + 0.01 * np.arange(6) / 5))  # below min_rise
    assert math.isnan(exp.onset_sigma(sigmas[:1], [0.5]))


def test_graph_families_match_their_invariant(exp, tmp_path):
    topos = exp.write_graphs(tmp_path)
    degree = topos[topos["family"] == "degree"]
    assert np.allclose(degree["mean_degree"], exp.DEGREE)
    lam = topos[topos["family"] != "degree"]
    assert np.allclose(lam["lambda_max"], exp.N_UNITS)
    for row in topos.itertuples():  # the file read back gives the Q described
        assert (tmp_path / row.file).exists()
        assert topology.lambda_max(row.q) == pytest.approx(row.lambda_max)


def test_stacked_ensemble_equals_each_point_alone(exp, synthetic_data):
    train, _ = synthetic_data
    shards = partition(train, 10, "class", seed=0)
    arch = Architecture(depth=1, width=4, n_in=train.x.shape[1], n_out=10)
    ring = np.roll(np.eye(10), 1, axis=1) + np.roll(np.eye(10), -1, axis=1)
    qs, sigmas, hyper = [np.ones((10, 10)) - np.eye(10), 1.7 * ring], [0.5, 30.0], Hyper()
    state, stepper, keys = exp.make_ensemble(arch, shards, qs, sigmas, (3,), hyper)
    stacked = stepper.advance(state, 6).theta
    for r, (seed, t, s) in enumerate(keys):
        alone = make_stepper(arch, shards, Coupling.from_matrix(qs[t]),
                             sigma_tensor(sigmas[s], 1, "cpu"), [seed], hyper)
        theta = alone.advance(init_state(arch, [seed], 10), 6).theta
        torch.testing.assert_close(stacked[r], theta[0], rtol=0, atol=1e-5)


def test_graphs_at_n200_match_their_invariants_and_stay_sparse(exp, tmp_path):
    topos = exp.write_graphs(tmp_path, 200)
    degree = topos[topos["family"] == "degree"]
    assert np.allclose(degree["mean_degree"], exp.DEGREE)
    assert np.allclose(topos[topos["family"] != "degree"]["lambda_max"], 200)
    kinds = dict(zip(topos["topology"], (c.kind for c in topos["coupling"])))
    assert kinds.pop("complete") == topology.COMPLETE and set(kinds.values()) == {topology.SPARSE}
    digests = (tmp_path / "graphs.sha256").read_text().splitlines()
    assert len(digests) == len(topos)
    for line in digests:  # the digest file names each graph file by its sha256
        digest, name = line.split("  ")
        assert topology.file_digest(tmp_path / name) == digest


def test_mnist_sigmas_are_the_largest_stable_grid_points(exp):
    settings = exp.LARGE
    grid = np.sort(settings.mnist_sigmas)
    for coupling in (Coupling.complete(200), Coupling.from_matrix(np.roll(np.eye(200), 1, 1) + np.roll(np.eye(200), -1, 1))):
        sigmas = exp.mnist_sigmas(coupling, settings)
        numbers = [coupling.stability_number(settings.lr, s) for s in sigmas]
        assert len(sigmas) == settings.mnist_points and max(numbers) <= settings.max_stability
        above = grid[grid > sigmas[-1]]  # the next grid point would break the cap
        assert above.size == 0 or coupling.stability_number(settings.lr, above[0]) > settings.max_stability
    assert list(exp.mnist_sigmas(Coupling.complete(10), exp.Settings())) == list(exp.Settings().mnist_sigmas)


def test_units_must_be_ten_or_a_multiple_above(exp):
    assert exp.settings_for(200, False).units == 200 and exp.settings_for(10, True) is exp.QUICK
    for bad in (5, 15, 0):
        with pytest.raises(UserInputError, match="--units"):
            exp.settings_for(bad, False)


def test_describe_takes_a_sparse_q_below_the_dense_spectrum_size():
    ring = np.roll(np.eye(50), 1, axis=1) + np.roll(np.eye(50), -1, axis=1)
    sparse, dense = topology.describe(scipy.sparse.csr_array(ring)), topology.describe(ring)
    assert sparse["sigma_max_euler"] == pytest.approx(dense["sigma_max_euler"])


def test_onset_at_a_given_top_level_is_nan_when_never_reached(exp):
    sigmas = np.logspace(-2, 2, 9)
    values = np.clip(0.1 + 0.4 * (np.log10(sigmas) + 1), 0.1, 0.5)  # saturates at 0.5
    assert exp.onset_sigma(sigmas, values, top=0.9) == pytest.approx(1.0, rel=1e-9)  # level 0.5
    assert math.isnan(exp.onset_sigma(sigmas, values, top=1.0))  # level 0.55, never reached


@pytest.mark.parametrize("units", [10, 20])
def test_mnist_and_theory_curves_take_each_topologys_stable_sigmas(exp, units, synthetic_data, tmp_path):
    topos = exp.write_graphs(tmp_path, units)
    topos = topos[topos["topology"].isin(["complete", "ring_k4", "star"])]  # mean field and sparse
    settings = exp.replace(exp.settings_for(units, quick=True), units=units, mnist_points=2, theory_points=2,
                           transient=4, steps=10, eval_every=1, eval_scheme="rotating", realizations=2,
                           lr=0.05, mnist_sigmas=exp.LARGE.mnist_sigmas, test_samples=None)
    saved = []
    curves = exp.mnist_curves(topos, settings, synthetic_data, log=lambda text: None, save=saved.append)
    assert len(curves) == 2 * len(topos) and len(saved) == len(topos) and len(saved[-1]) == len(curves)
    assert curves["stability"].max() <= settings.max_stability and not curves["diverged"].any()
    for row in topos.itertuples():  # each topology's two largest stable sigmas of the grid
        mine = curves[curves["topology"] == row.topology]
        assert list(mine["sigma"]) == list(exp.mnist_sigmas(row.coupling, settings))
    theory = exp.theory_curves(topos, settings, workers=1)
    assert (theory["rate"] <= settings.theory_max_rate * (1 + 1e-9)).all() and len(theory) == 2 * len(topos)
    table = exp.onset_table(topos, pd.concat([theory, curves], ignore_index=True))
    assert list(table["topology"]) == list(topos["topology"])

"""The paper's two limits on real MNIST (N=10, unit k owns class k)."""

from __future__ import annotations

import numpy as np
import pytest

from decentral.config import RunConfig
from decentral.jobs.run import execute


@pytest.mark.parametrize("depth", [0, 1])
def test_uncoupled_units_predict_only_their_own_class(mnist, depth):
    cfg = RunConfig(depth=depth, sigma=0.0, transient=400, steps=100, eval_every=50).validate()
    s = execute(cfg, data=mnist)
    assert s["accuracy"] == pytest.approx(0.1, abs=0.01)
    cross = np.array(s["cross_accuracy"])  # [unit, class]
    assert np.all(np.diag(cross) > 0.99)
    assert np.all(cross[~np.eye(10, dtype=bool)] < 0.01)


def test_strong_coupling_linear_units_learn_all_classes(mnist):
    cfg = RunConfig(depth=0, sigma=30.0, transient=2500, steps=500, eval_every=100).validate()
    s = execute(cfg, data=mnist)
    assert s["accuracy"] > 0.8
    cross = np.array(s["cross_accuracy"])
    assert cross.min() > 0.4  # every unit predicts every class, not only its own

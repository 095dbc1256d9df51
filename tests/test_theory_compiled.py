"""The compiled mean-field RK45 (decentral.theory.compiled) against SciPy and the NumPy one."""

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import solve_ivp

from decentral.theory import compiled, protocols
from decentral.theory.config import TheoryConfig
from decentral.theory.model import EffectiveRHS, moments
from decentral.theory.rk45 import integrate

pytestmark = pytest.mark.skipif(not compiled.available(), reason="numba is not installed")
GAMMA = 1e-3


def eq4(m, delta, sigma, depth):
    return delta * m**depth - m ** (2 * depth + 1) - GAMMA * m + sigma * (m.mean() - m)


def _problem(seed, n_rows=10, n_units=20):
    rng = np.random.default_rng(seed)
    delta = rng.normal(0, 2, (n_rows, n_units))
    return delta, np.logspace(-2, 2.2, n_rows), rng.uniform(-1.7, 2.3, (n_rows, n_units))


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_compiled_matches_solve_ivp_step_for_step(depth):
    delta, sigma, m0 = _problem(10 + depth)
    t_eval = np.linspace(0, 10, 100)
    sol = compiled.integrate_mean_field(depth, delta, sigma, GAMMA, m0, 10.0, t_eval, 5.0,
                                        1e-3, 1e-6)
    window = t_eval >= 5.0
    for r in range(len(sigma)):
        ref = solve_ivp(lambda t, m: eq4(m, delta[r], sigma[r], depth), (0, 10), m0[r],
                        method="RK45", t_eval=t_eval)
        assert sol.nfev[r] == ref.nfev  # the same accepted and rejected steps as SciPy
        assert np.allclose(sol.samples[r], moments(ref.y.T[window], depth), atol=1e-5)
        assert np.allclose(sol.y_final[r], ref.y[:, -1], atol=1e-5)
    assert sol.success.all()


@pytest.mark.parametrize("depth", [0, 1, 2, 3])
def test_compiled_matches_the_batched_numpy_integrator(depth):
    delta, sigma, m0 = _problem(20 + depth, n_rows=16, n_units=30)
    t_eval = np.linspace(0, 10, 100)
    ref = integrate(EffectiveRHS(depth, delta, sigma, GAMMA), m0, (0, 10), t_eval,
                    reduce=lambda m: moments(m, depth), sample_from=5.0, chunk_rows=5)
    got = compiled.integrate_mean_field(depth, delta, sigma, GAMMA, m0, 10.0, t_eval, 5.0,
                                        1e-3, 1e-6)
    same_path = (got.n_steps == ref.n_steps) & (got.n_rejected == ref.n_rejected)
    assert same_path.mean() >= 0.75  # rounding may flip a rare accept/reject decision
    assert np.allclose(got.samples[same_path], ref.samples[same_path], atol=1e-3)


def test_theory_table_is_the_same_with_either_integrator(monkeypatch):
    cfg = dict(depths=(0, 1), sigmas=np.logspace(-2, 2, 8), realizations=20, n_units=16,
               protocols=("non-adiabatic", "adiabatic"), t_end=4.0, workers=1)
    fast = protocols.run_theory(TheoryConfig(**cfg))
    monkeypatch.setattr(compiled, "available", lambda: False)
    reference = protocols.run_theory(TheoryConfig(**cfg))
    pd.testing.assert_frame_equal(fast, reference, check_exact=False, rtol=1e-6, atol=1e-8)


def test_divergent_rows_end_without_hanging():
    # huge states blow up: the step size falls below float spacing and the row gives up
    delta, sigma, m0 = _problem(5, n_rows=3, n_units=4)
    sol = compiled.integrate_mean_field(2, delta, sigma, GAMMA, m0 * 1e60, 1.0,
                                        np.linspace(0, 1, 11), 0.5, 1e-3, 1e-6)
    assert sol.y_final.shape == m0.shape and len(sol.success) == 3

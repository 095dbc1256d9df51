"""Effective theory: the batched integrator against SciPy and exact results (Eq. 4-8)."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.integrate import RK45, solve_ivp

from decentral.errors import UserInputError
from decentral.theory import (EffectiveRHS, FunctionRHS, TheoryConfig, coupling_term,
                              cross_accuracy_d0, explained_fraction, integrate, learning_path,
                              paper_sigma_grid, rank_one, ranking, run_theory, stationary_d0,
                              stationary_linear)
from decentral.theory import rk45

GAMMA = 1e-3


def eq4_reference(m, delta, sigma, depth, gamma=GAMMA, q=None):
    """Eq. 4 written literally, one system. m, delta [N] -> [N]"""
    n = m.size
    q = np.ones((n, n)) - np.eye(n) if q is None else q
    coupling = (sigma / n) * (q * (m[None, :] - m[:, None])).sum(axis=1)
    return delta * m**depth - m ** (2 * depth + 1) - gamma * m + coupling


def test_tableau_is_dormand_prince_as_in_scipy():
    assert np.allclose(rk45._C, RK45.C, rtol=1e-15, atol=0)
    for s in range(1, 6):
        assert np.allclose(rk45._A[s], RK45.A[s, :s], rtol=1e-15, atol=0)
    assert np.allclose(rk45._B, RK45.B, rtol=1e-15, atol=0)
    assert np.allclose(rk45._E, RK45.E, rtol=1e-15, atol=0)
    assert np.allclose(rk45._P, RK45.P, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("depth", [0, 1])
@pytest.mark.parametrize("q_kind", ["mean-field", "dense"])
def test_rhs_is_eq4(depth, q_kind):
    rng = np.random.default_rng(depth)
    m, delta = rng.normal(size=(4, 9)), rng.normal(size=(4, 9))
    sigma = rng.random(4) * 5
    q = None if q_kind == "mean-field" else rng.random((9, 9))
    got = EffectiveRHS(depth, delta, sigma, GAMMA, q)(None, m)
    want = [eq4_reference(m[r], delta[r], sigma[r], depth, q=q) for r in range(4)]
    assert np.allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("depth", [2, 3])
def test_rhs_is_eq4_deep(depth):
    rng = np.random.default_rng(depth)
    m, delta, sigma = rng.normal(size=(3, 6)), rng.normal(size=(3, 6)), rng.random(3)
    want = [eq4_reference(m[r], delta[r], sigma[r], depth) for r in range(3)]
    assert np.allclose(EffectiveRHS(depth, delta, sigma, GAMMA)(None, m), want, atol=1e-10)


@pytest.mark.parametrize("depth", [0, 1])
def test_batched_matches_solve_ivp_on_eq4(depth):
    rng = np.random.default_rng(10 + depth)
    n_rows, n_units = 10, 20
    delta = rng.normal(0, 2, (n_rows, n_units))
    sigma = np.logspace(-2, 2.2, n_rows)
    m0 = rng.uniform(-1.7, 2.3, (n_rows, n_units))
    t_eval = np.linspace(0, 10, 100)
    sol = integrate(EffectiveRHS(depth, delta, sigma, GAMMA), m0, (0, 10), t_eval,
                    chunk_rows=4)
    for r in range(n_rows):
        ref = solve_ivp(lambda t, m: eq4_reference(m, delta[r], sigma[r], depth), (0, 10),
                        m0[r], method="RK45", t_eval=t_eval)
        assert np.allclose(sol.samples[r], ref.y.T, rtol=0, atol=1e-5)
        assert sol.nfev[r] == ref.nfev
        assert np.allclose(sol.y_final[r], ref.y[:, -1], atol=1e-5)


def _random_nonlinear(t, y, params):
    """A smooth non-stiff random system per row: y' = A y + b sin(y) + c cos(t)."""
    a, b, c = params[:, :, :-2], params[:, :, -2], params[:, :, -1]
    return np.einsum("rij,rj->ri", a, y) + b * np.sin(y) + c * np.cos(t)[:, None]


@pytest.mark.parametrize("rtol,atol", [(1e-3, 1e-6), (1e-6, 1e-9)])
def test_batched_matches_solve_ivp_on_random_problems(rtol, atol):
    rng = np.random.default_rng(3)
    n_rows, n_dim = 8, 5
    params = rng.normal(size=(n_rows, n_dim, n_dim + 2))
    params[:, :, :n_dim] -= 2 * np.eye(n_dim)
    y0 = rng.normal(size=(n_rows, n_dim))
    t_eval = np.linspace(0.5, 3, 37)
    sol = integrate(FunctionRHS(_random_nonlinear, params), y0, (0, 3), t_eval, rtol, atol,
                    chunk_rows=3)
    for r in range(n_rows):
        fun = lambda t, y: _random_nonlinear(np.array([t]), y[None], params[r:r + 1])[0]  # noqa
        ref = solve_ivp(fun, (0, 3), y0[r], t_eval=t_eval, rtol=rtol, atol=atol)
        assert np.allclose(sol.samples[r], ref.y.T, rtol=0, atol=1e-5)
        assert sol.n_steps[r] + sol.n_rejected[r] == (ref.nfev - 2) // 6


def test_sample_window_and_reducer():
    rng = np.random.default_rng(4)
    y0 = rng.normal(size=(3, 4))
    full = integrate(lambda t, y: -y, y0, (0, 2), np.linspace(0, 2, 11))
    part = integrate(lambda t, y: -y, y0, (0, 2), np.linspace(0, 2, 11), sample_from=1.0,
                     reduce=lambda y: y.mean(axis=1, keepdims=True))
    assert np.allclose(part.t_eval, np.linspace(1, 2, 6))
    assert np.allclose(part.samples[..., 0], full.samples[:, 5:].mean(axis=2))
    assert np.allclose(full.samples[:, -1], y0 * np.exp(-2), rtol=0, atol=2e-3)


@pytest.mark.parametrize("n_units", [5, 50, 200])
def test_d0_stationary_state_is_eq6(n_units):
    rng = np.random.default_rng(n_units)
    sigmas = np.array([0.0, 0.01, 0.3, 3.0, 30.0])
    delta = rng.normal(0, 2, (sigmas.size, n_units))
    m0 = rng.uniform(-1.7, 2.3, delta.shape)
    sol = integrate(EffectiveRHS(0, delta, sigmas, GAMMA), m0, (0, 40), [40.0],
                    rtol=1e-10, atol=1e-12)
    exact = stationary_d0(delta, sigmas, GAMMA)
    assert np.abs(sol.y_final - exact).max() < 1e-6
    assert np.allclose(exact[2], stationary_linear(delta[2], 0.3, GAMMA), atol=1e-12)


def test_d0_stationary_state_for_any_coupling_matrix():
    rng = np.random.default_rng(5)
    n_units = 12
    q = rng.random((n_units, n_units)) * (rng.random((n_units, n_units)) < 0.5)
    np.fill_diagonal(q, 0)
    delta = rng.normal(0, 2, (2, n_units))
    sigma = np.array([1.0, 20.0])
    for coupling in (q, sp.csr_matrix(q)):
        sol = integrate(EffectiveRHS(0, delta, sigma, GAMMA, coupling), np.zeros_like(delta),
                        (0, 40), [40.0], rtol=1e-10, atol=1e-12)
        for r in range(2):
            exact = stationary_linear(delta[r], sigma[r], GAMMA, q)
            assert np.abs(sol.y_final[r] - exact).max() < 1e-6


def test_d1_uncoupled_units_settle_in_double_well_or_zero():
    rng = np.random.default_rng(6)
    delta = rng.normal(0, 2, (1, 300))
    m0 = rng.uniform(-1.7, 2.3, delta.shape)
    sol = integrate(EffectiveRHS(1, delta, np.zeros(1), GAMMA), m0, (0, 200), [200.0],
                    rtol=1e-9, atol=1e-12)
    m, d = sol.y_final[0], delta[0]
    wells = d - GAMMA > 0.3
    assert np.allclose(m[wells], np.sign(m0[0, wells]) * np.sqrt(d[wells] - GAMMA), atol=1e-6)
    assert np.abs(m[d - GAMMA < -0.3]).max() < 1e-6


@pytest.mark.parametrize("sparse", [False, True])
def test_coupling_conserves_total_for_symmetric_q(sparse):
    rng = np.random.default_rng(7)
    n_units = 15
    q = rng.random((n_units, n_units))
    q = q + q.T
    np.fill_diagonal(q, 0)
    coupling = sp.csr_matrix(q) if sparse else q
    sigma = np.array([0.5, 5.0, 50.0])
    m0 = rng.normal(size=(3, n_units))
    assert np.allclose(coupling_term(m0, sigma, coupling).sum(axis=1), 0, atol=1e-12)
    flow = FunctionRHS(lambda t, m, s: coupling_term(m, s, coupling), sigma)
    sol = integrate(flow, m0, (0, 10), np.linspace(0, 10, 20))
    assert np.allclose(sol.samples.sum(axis=2), m0.sum(axis=1)[:, None], atol=1e-10)
    assert np.allclose(sol.y_final[2], m0[2].mean(), atol=1e-3)  # strong coupling: consensus


def test_dense_sparse_and_mean_field_agree():
    rng = np.random.default_rng(8)
    n_units = 10
    q = np.ones((n_units, n_units)) - np.eye(n_units)
    m, delta, sigma = rng.normal(size=(2, n_units)), rng.normal(size=(2, n_units)), np.ones(2)
    for depth in (0, 1, 2):
        mf = EffectiveRHS(depth, delta, sigma, GAMMA)(None, m)
        assert np.allclose(EffectiveRHS(depth, delta, sigma, GAMMA, q)(None, m), mf)
        assert np.allclose(EffectiveRHS(depth, delta, sigma, GAMMA, sp.csr_matrix(q))(None, m), mf)


def test_cross_accuracy_eq8_and_learning_path():
    delta = np.array([0.5, 1.0, 2.0, 3.0])
    a_x = cross_accuracy_d0(delta, 0.0, 0.0)
    assert np.allclose(a_x, 2 * np.outer(delta, delta) - (delta**2)[:, None])
    far = cross_accuracy_d0(delta, 1e9, GAMMA)  # rows become identical: units agree
    assert np.allclose(far, far[0][None, :], atol=1e-6)
    path = learning_path(delta, paper_sigma_grid(), GAMMA)
    assert path.s_x.shape == (4, 4) and 0.9 < path.explained <= 1.0
    assert np.isclose(explained_fraction(np.outer(delta, delta + 1)), 1.0)
    assert np.allclose(rank_one(np.outer(delta, delta + 1)), np.outer(delta, delta + 1))
    assert np.allclose(ranking(np.array([[3.0, 1.0], [2.0, 0.0]])), [[1, 1 / 3], [2 / 3, 0]])


def test_config_rejects_bad_input():
    with pytest.raises(UserInputError):
        TheoryConfig(realizations=-1)
    with pytest.raises(UserInputError):
        TheoryConfig(n_units=0)
    with pytest.raises(UserInputError):
        TheoryConfig(sigmas=[])
    with pytest.raises(UserInputError):
        TheoryConfig(delta=[1.0, np.nan])
    with pytest.raises(UserInputError):
        TheoryConfig(sigmas=[1.0, 0.5], protocols=("adiabatic",))


def _small(**kw):
    base = dict(n_units=100, realizations=16, sigmas=np.logspace(-2, 2, 9), seed=1)
    return TheoryConfig(**{**base, **kw})


def test_phenomenology_d0_flat_d1_disorder_order_disorder():
    table = run_theory(_small(depths=(0, 1), protocols=("non-adiabatic",)))
    m0 = table[table.depth == 0].m_abs_mean.to_numpy()
    m1 = table[table.depth == 1].m_abs_mean.to_numpy()
    assert m0.max() - m0.min() < 0.02  # D = 0: <m> = <delta>/(1+gamma) at every sigma
    assert m1.max() > 3 * m1[0] and m1.max() > 2 * m1[-1]  # disorder-order-disorder
    loss0 = table[table.depth == 0].loss_mean.to_numpy()
    assert loss0[0] == 1.0 and np.all(np.diff(loss0) < 1e-3)  # D = 0 loss decreases


def test_explicit_delta_is_used_and_protocols_start_equal():
    delta = np.linspace(-1, 3, 40)
    cfg = TheoryConfig(depths=(0,), sigmas=[0.1, 1.0], realizations=3, delta=delta)
    table = run_theory(cfg)
    assert cfg.n_units == 40 and len(table) == 4
    expected = delta.mean() / (1 + GAMMA)  # Eq. 6 average, reached by t = 10 up to e^-10
    assert np.allclose(table.m_abs_mean, abs(expected), atol=1e-3)
    first = table[table.sigma == 0.1]
    assert np.allclose(first.m_abs_mean.iloc[0], first.m_abs_mean.iloc[1])


def test_adiabatic_differs_for_d2_and_onset_is_delayed_by_depth():
    table = run_theory(_small(depths=(0, 1, 2), realizations=24,
                              sigmas=np.logspace(-2, 2.2, 15)))
    d2 = table[table.depth == 2]
    fresh = d2[d2.protocol == "non-adiabatic"].m_abs_mean.to_numpy()
    carried = d2[d2.protocol == "adiabatic"].m_abs_mean.to_numpy()
    assert np.abs(fresh - carried).max() > 0.1
    fresh_rows = table[table.protocol == "non-adiabatic"]
    onset = [fresh_rows[(fresh_rows.depth == d) & (fresh_rows.accuracy_eff > 0.5)].sigma.min()
             for d in (0, 1, 2)]
    assert onset[0] < onset[1] <= onset[2]


def test_worker_processes_give_the_same_table():
    # 130 realizations: two adiabatic blocks; 20 couplings: several non-adiabatic tasks
    cfg = dict(depths=(1,), sigmas=np.logspace(-2, 2, 20), realizations=130, n_units=12,
               protocols=("non-adiabatic", "adiabatic"), t_end=2.0)
    one = run_theory(TheoryConfig(**cfg, workers=1))
    three = run_theory(TheoryConfig(**cfg, workers=3))
    default = run_theory(TheoryConfig(**cfg))  # one worker per available core
    pd.testing.assert_frame_equal(one, three, check_exact=True)
    pd.testing.assert_frame_equal(one, default, check_exact=True)

"""Eq. 4 under mean field, integrated by a compiled per-row RK45 (numba).

The same algorithm as :mod:`decentral.theory.rk45` (Dormand-Prince 5(4), Hairer-Norsett-Wanner
initial step, SciPy's step controller and dense output), written as one loop per row so that
a row's N units stay in cache through all six stages of a step, with the right-hand side of
Eq. 4 under mean field fused into each stage. The batched NumPy integrator stays the
reference (and serves any coupling matrix Q); the tests hold this one to it. Results differ
from it only by floating-point rounding: sums over units are taken in another order.

Written by hand because it is measured faster: ``benchmarks/bench_theory.py`` times the
``decentral theory`` command that uses it, and docs/theory.md gives the figures.
"""

from __future__ import annotations

import numpy as np

from .rk45 import _A, _B, _E, _P, BatchSolution

try:
    import numba
except ImportError:  # pragma: no cover - numba is a declared dependency
    numba = None

_A_FULL = np.zeros((7, 6))  # [stage, previous stage]; row 6 holds the 5th-order weights B
for _s in range(1, 6):
    _A_FULL[_s, :_s] = _A[_s]
_A_FULL[6, :] = _B
_P_T = np.ascontiguousarray(_P.T)  # [4, 7] dense-output coefficients per power of x


def available() -> bool:
    """True where the compiled integrator can run (numba imports)."""
    return numba is not None


def _njit(function):
    return numba.njit(cache=True, error_model="numpy")(function) if numba is not None else function


@_njit
def _rhs(depth, delta, sigma, gamma, m, out):
    """dm/dt = delta m^D - m^(2D+1) - gamma m + sigma (<m> - m) for one row. m, out [N]"""
    n = m.shape[0]
    mean = 0.0
    for i in range(n):
        mean += m[i]
    mean /= n
    if depth == 1:  # the paper's depths written out, so that the loop vectorizes
        for i in range(n):
            x = m[i]
            out[i] = delta[i] * x - x * x * x - gamma * x + sigma * (mean - x)
        return
    if depth == 2:
        for i in range(n):
            x = m[i]
            x2 = x * x
            out[i] = delta[i] * x2 - x2 * x2 * x - gamma * x + sigma * (mean - x)
        return
    for i in range(n):
        x = m[i]
        power = 1.0  # m^D
        for _ in range(depth):
            power *= x
        out[i] = delta[i] * power - power * power * x - gamma * x + sigma * (mean - x)


@_njit
def _rms_scaled(a, b, scale):
    """RMS of (a - b) / scale over a row (b = None written as zeros by the caller)."""
    total = 0.0
    for i in range(a.shape[0]):
        v = (a[i] - b[i]) / scale[i]
        total += v * v
    return np.sqrt(total / a.shape[0])


@_njit
def _initial_step(depth, delta, sigma, gamma, y, f0, interval, rtol, atol, work, f1):
    """Hairer-Norsett-Wanner starting step for one row (as rk45.initial_step)."""
    n = y.shape[0]
    scale, zero = work, np.zeros(n)
    for i in range(n):
        scale[i] = atol + abs(y[i]) * rtol
    d0, d1 = _rms_scaled(y, zero, scale), _rms_scaled(f0, zero, scale)
    h0 = 1e-6 if (d0 < 1e-5 or d1 < 1e-5) else 0.01 * d0 / d1
    h0 = min(h0, interval)
    probe = np.empty(n)
    for i in range(n):
        probe[i] = y[i] + h0 * f0[i]
    _rhs(depth, delta, sigma, gamma, probe, f1)
    d12 = max(d1, _rms_scaled(f1, f0, scale) / h0)
    h1 = max(1e-6, h0 * 1e-3) if d12 <= 1e-15 else (0.01 / d12) ** 0.2
    return min(min(100 * h0, h1), interval)


@_njit
def _stages(depth, delta, sigma, gamma, y, K, h, a_full, z):
    """K[1..6] of one step and z = the 5th-order solution y_new (K[6] = f(y_new): FSAL)."""
    n = y.shape[0]
    for s in range(1, 7):
        for i in range(n):
            acc = 0.0
            for j in range(s):
                acc += a_full[s, j] * K[j, i]
            z[i] = acc * h + y[i]
        _rhs(depth, delta, sigma, gamma, z, K[s])


@_njit
def _error_norm(y, y_new, K, h, e_weights, rtol, atol):
    """h * RMS(err / (atol + rtol max(|y|, |y_new|))) of one step."""
    total = 0.0
    n = y.shape[0]
    for i in range(n):
        err = 0.0
        for s in range(7):
            err += e_weights[s] * K[s, i]
        v = err / (atol + rtol * max(abs(y[i]), abs(y_new[i])))
        total += v * v
    return h * np.sqrt(total / n)


@_njit
def _step_factor(error_norm, accepted, after_rejection):
    """SciPy's controller: grow by <= 10 on acceptance (<= 1 right after a rejection), shrink
    by >= 0.2 on rejection (a NaN error shrinks by 5)."""
    grow = np.inf if error_norm == 0.0 else 0.9 * error_norm ** -0.2
    if accepted:
        factor = min(10.0, grow)
        return min(1.0, factor) if after_rejection else factor
    return 0.2 if grow != grow else max(0.2, grow)


@_njit
def _moments_into(m, depth, out):
    """<m>, <m^(D+1)>, <m^(2(D+1))> over units. m [N] -> out [3]"""
    n = m.shape[0]
    s0 = s1 = s2 = 0.0
    for i in range(n):
        p = m[i]
        for _ in range(depth):
            p *= m[i]
        s0 += m[i]
        s1 += p
        s2 += p * p
    out[0], out[1], out[2] = s0 / n, s1 / n, s2 / n


@_njit
def _emit(y, K, t, h, t_eval, next_eval, stop, first, depth, p_t, y_at, samples):
    """Dense output at t_eval[next_eval:stop] inside the accepted step (t, t + h]."""
    n = y.shape[0]
    for k in range(next_eval, stop):
        x = (t_eval[k] - t) / h
        for i in range(n):
            c0 = c1 = c2 = c3 = 0.0
            for s in range(7):
                c0 += p_t[0, s] * K[s, i]
                c1 += p_t[1, s] * K[s, i]
                c2 += p_t[2, s] * K[s, i]
                c3 += p_t[3, s] * K[s, i]
            y_at[i] = ((((c3 * x + c2) * x + c1) * x + c0) * x) * h + y[i]
        _moments_into(y_at, depth, samples[k - first])


@_njit
def _solve_row(depth, delta, sigma, gamma, m0, t_end, t_eval, first, rtol, atol,
               a_full, e_weights, p_t, samples, y_final):
    """Integrate one row from t = 0 to t_end. Returns (accepted, rejected, success)."""
    n = m0.shape[0]
    y, z, work, y_at = m0.copy(), np.empty(n), np.empty(n), np.empty(n)
    K = np.empty((7, n))  # [7, N] stage derivatives; K[0] = f(t, y)
    _rhs(depth, delta, sigma, gamma, y, K[0])
    h_abs = _initial_step(depth, delta, sigma, gamma, y, K[0], t_end, rtol, atol, work, K[1])
    t, next_eval, rejected, n_acc, n_rej = 0.0, first, False, 0, 0
    while t < t_end:
        min_step = 10.0 * abs(np.nextafter(t, np.inf) - t)
        if rejected and h_abs < min_step:
            y_final[:] = y
            return n_acc, n_rej, False
        t_new = min(t + max(h_abs, min_step), t_end)
        h = t_new - t
        _stages(depth, delta, sigma, gamma, y, K, h, a_full, z)
        error_norm = _error_norm(y, z, K, h, e_weights, rtol, atol)
        accepted = error_norm < 1.0
        h_abs = h * _step_factor(error_norm, accepted, rejected)
        rejected = not accepted
        if not accepted:
            n_rej += 1
            continue
        stop = np.searchsorted(t_eval, t_new, side="right")
        if stop > next_eval:
            _emit(y, K, t, h, t_eval, next_eval, stop, first, depth, p_t, y_at, samples)
            next_eval = stop
        y[:] = z
        K[0, :] = K[6]
        t, n_acc = t_new, n_acc + 1
    y_final[:] = y
    return n_acc, n_rej, True


@_njit
def _solve_rows(depth, delta, sigma, gamma, m0, t_end, t_eval, first, rtol, atol,
                a_full, e_weights, p_t, samples, y_final, counts):
    for r in range(m0.shape[0]):
        acc, rej, ok = _solve_row(depth, delta[r], sigma[r], gamma, m0[r], t_end, t_eval,
                                  first, rtol, atol, a_full, e_weights, p_t, samples[r],
                                  y_final[r])
        counts[r, 0], counts[r, 1], counts[r, 2] = acc, rej, 1 if ok else 0


def integrate_mean_field(depth: int, delta: np.ndarray, sigma: np.ndarray, gamma: float,
                         m0: np.ndarray, t_end: float, t_eval: np.ndarray, sample_from: float,
                         rtol: float, atol: float) -> BatchSolution:
    """Eq. 4 under mean field for R rows from t = 0: delta [R, N], sigma [R], m0 [R, N].

    Samples are the moments :func:`decentral.theory.model.moments` at the times of
    ``t_eval`` at or after ``sample_from``. [R, T, 3]"""
    delta = np.ascontiguousarray(delta, dtype=float)
    m0 = np.ascontiguousarray(m0, dtype=float)
    sigma = np.ascontiguousarray(np.broadcast_to(np.asarray(sigma, float), (m0.shape[0],)))
    t_eval = np.ascontiguousarray(t_eval, dtype=float)
    first = int(np.searchsorted(t_eval, sample_from))
    samples = np.full((m0.shape[0], t_eval.size - first, 3), np.nan)  # [R, T, 3]
    y_final = np.full_like(m0, np.nan)  # [R, N]
    counts = np.zeros((m0.shape[0], 3), dtype=np.int64)  # accepted, rejected, success
    with np.errstate(over="ignore", invalid="ignore"):
        _solve_rows(int(depth), delta, sigma, float(gamma), m0, float(t_end), t_eval, first,
                    float(rtol), float(atol), _A_FULL, _E, _P_T, samples, y_final, counts)
    n_acc, n_rej = counts[:, 0], counts[:, 1]
    return BatchSolution(t_eval[first:], samples, y_final, n_acc, n_rej, 6 * (n_acc + n_rej) + 2,
                         counts[:, 2].astype(bool))

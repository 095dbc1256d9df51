"""Batched Dormand-Prince RK45 that follows SciPy's ``RK45`` step for step, per row.

Every row of a batch ``y [R, N]`` is an independent ODE system with its own time, step size
and error control, exactly as if ``scipy.integrate.solve_ivp(method="RK45")`` had been called
on it alone. Implemented from the published algorithm:

* Butcher tableau, embedded 4th-order error estimate and 4th-order dense output of
  Dormand & Prince (1980) and Shampine (1986);
* initial step selection of Hairer, Norsett & Wanner, *Solving ODEs I*, Sec. II.4;
* error norm: RMS over a row of ``h * err / (atol + rtol * max(|y|, |y_new|))``;
* step controller: ``factor = min(10, 0.9 * err**(-1/5))`` on acceptance (never growing right
  after a rejection), ``max(0.2, 0.9 * err**(-1/5))`` on rejection;
* ``t_eval`` values inside an accepted step come from the dense output of that step.

The results therefore differ from ``solve_ivp`` only by floating-point rounding. Rows are
processed in chunks (cache-sized arrays); rows that reach ``t_end`` leave the chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

# --- Dormand-Prince 5(4) tableau ---------------------------------------------------------
_C = np.array([0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0])
_A = [
    np.array([]),
    np.array([1 / 5]),
    np.array([3 / 40, 9 / 40]),
    np.array([44 / 45, -56 / 15, 32 / 9]),
    np.array([19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729]),
    np.array([9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656]),
]
_B = np.array([35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84])
# Error weights (5th minus embedded 4th order), applied to all 7 stages (FSAL stage last).
_E = np.array([-71 / 57600, 0.0, 71 / 16695, -71 / 1920, 17253 / 339200, -22 / 525, 1 / 40])
# Dense output: y(t + x h) = y + h * sum_s K_s * (P[s] . [x, x^2, x^3, x^4]).
_P = np.array([
    [1, -8048581381 / 2820520608, 8663915743 / 2820520608, -12715105075 / 11282082432],
    [0, 0, 0, 0],
    [0, 131558114200 / 32700410799, -68118460800 / 10900136933, 87487479700 / 32700410799],
    [0, -1754552775 / 470086768, 14199869525 / 1410260304, -10690763975 / 1880347072],
    [0, 127303824393 / 49829197408, -318862633887 / 49829197408,
     701980252875 / 199316789632],
    [0, -282668133 / 205662961, 2019193451 / 616988883, -1453857185 / 822651844],
    [0, 40617522 / 29380423, -110615467 / 29380423, 69997945 / 29380423],
])
_ERROR_EXPONENT = -1 / 5  # -1 / (error estimator order 4 + 1)
_SAFETY, _MIN_FACTOR, _MAX_FACTOR = 0.9, 0.2, 10.0


class BatchedRHS(Protocol):
    """Right-hand side of R independent systems; ``select`` keeps a subset of the rows."""

    def __call__(self, t: np.ndarray, y: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Write dy/dt into ``out`` and return it. t [R], y [R, N], out [R, N]"""

    def select(self, rows: np.ndarray) -> "BatchedRHS":
        """The same right-hand side restricted to ``rows`` (int indices into this batch)."""


@dataclass
class FunctionRHS:
    """Wrap ``fun(t [R], y [R, N]) -> [R, N]`` (or ``fun(t, y, params)`` with row-wise params)."""

    fun: Callable
    params: np.ndarray | None = None  # [R, ...] row-wise parameters, or None

    def __call__(self, t, y, out):
        out[...] = self.fun(t, y) if self.params is None else self.fun(t, y, self.params)
        return out

    def select(self, rows):
        return self if self.params is None else FunctionRHS(self.fun, self.params[rows])


@dataclass
class BatchSolution:
    """Output of :func:`integrate` for R rows, T output times and N unknowns per row."""

    t_eval: np.ndarray  # [T] output times (those at or after ``sample_from``)
    samples: np.ndarray  # [R, T, K]: reduce(y(t)) at each output time (K = N without reducer)
    y_final: np.ndarray  # [R, N] state at t_end
    n_steps: np.ndarray  # [R] accepted steps
    n_rejected: np.ndarray  # [R] rejected step attempts
    nfev: np.ndarray  # [R] right-hand-side evaluations
    success: np.ndarray  # [R] False where the step size fell below the spacing of floats


def rms(x: np.ndarray) -> np.ndarray:
    """Root mean square along the last axis. [R, N] -> [R]"""
    return np.sqrt(np.einsum("rn,rn->r", x, x) / x.shape[-1])


def initial_step(rhs, t0, y0, f0, t_end, rtol, atol) -> np.ndarray:
    """Hairer-Norsett-Wanner starting step, per row. Returns h_abs [R]."""
    interval = t_end - t0  # [R]
    scale = atol + np.abs(y0) * rtol
    d0, d1 = rms(y0 / scale), rms(f0 / scale)
    h0 = np.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / np.where(d1 > 0, d1, 1.0))
    h0 = np.minimum(h0, interval)
    f1 = rhs(t0 + h0, y0 + h0[:, None] * f0, np.empty_like(y0))
    d2 = rms((f1 - f0) / scale) / h0
    d12 = np.maximum(d1, d2)
    with np.errstate(divide="ignore"):
        h1 = np.where(d12 <= 1e-15, np.maximum(1e-6, h0 * 1e-3), (0.01 / d12) ** (1 / 5))
    return np.minimum(np.minimum(100 * h0, h1), interval)


def integrate(
    rhs: BatchedRHS | Callable,
    y0: np.ndarray,
    t_span: tuple[float, float] = (0.0, 10.0),
    t_eval: np.ndarray | None = None,
    rtol: float = 1e-3,
    atol: float = 1e-6,
    reduce: Callable[[np.ndarray], np.ndarray] | None = None,
    sample_from: float | None = None,
    chunk_rows: int = 128,
) -> BatchSolution:
    """Integrate R independent systems ``dy/dt = rhs(t, y)`` from ``y0 [R, N]`` over ``t_span``.

    ``rhs`` is a :class:`BatchedRHS` or a plain ``fun(t [R], y [R, N]) -> [R, N]``.
    ``t_eval`` defaults to ``linspace(t0, t1, 100)``; only times ``>= sample_from`` are
    output. ``reduce`` maps states ``[M, N]`` to features ``[M, K]``, so that a large batch
    stores only features at the output times.
    """
    if not hasattr(rhs, "select"):
        rhs = FunctionRHS(rhs)
    y0 = np.ascontiguousarray(y0, dtype=float)
    t0, t1 = float(t_span[0]), float(t_span[1])
    if not t1 > t0:
        raise ValueError("t_span must increase")
    t_eval = np.linspace(t0, t1, 100) if t_eval is None else np.asarray(t_eval, dtype=float)
    if t_eval.size and (np.any(np.diff(t_eval) <= 0) or t_eval[0] < t0 or t_eval[-1] > t1):
        raise ValueError("t_eval must be increasing and inside t_span")
    first = 0 if sample_from is None else int(np.searchsorted(t_eval, sample_from))
    reduce = reduce or (lambda y: y)
    out = _Output(y0.shape[0], t_eval, first, reduce(y0[:1]).shape[-1], y0.shape[1])
    settings = _Settings(t0, t1, t_eval, first, rtol, atol, reduce)
    _Batch(rhs, y0, settings, out, max(1, chunk_rows)).run()
    return out.solution()


@dataclass
class _Settings:
    t_start: float
    t_end: float
    t_eval: np.ndarray  # [T] all requested times
    first: int  # index of the first time that is output
    rtol: float
    atol: float
    reduce: Callable


class _Output:
    """Preallocated result arrays, filled row-wise by the chunks."""

    def __init__(self, n_rows, t_eval, first, n_feat, n_dim):
        self.t_eval, self.first = t_eval, first
        self.samples = np.full((n_rows, t_eval.size - first, n_feat), np.nan)  # [R, T, K]
        self.y_final = np.full((n_rows, n_dim), np.nan)  # [R, N]
        self.n_steps = np.zeros(n_rows, dtype=np.int64)
        self.n_rejected = np.zeros(n_rows, dtype=np.int64)
        self.nfev = np.zeros(n_rows, dtype=np.int64)
        self.success = np.ones(n_rows, dtype=bool)

    def solution(self) -> BatchSolution:
        return BatchSolution(self.t_eval[self.first:], self.samples, self.y_final, self.n_steps,
                             self.n_rejected, self.nfev, self.success)


class _Batch:
    """The rows being integrated together: at most ``capacity`` at a time, taken in order
    from the R rows of the problem; finished rows leave and waiting rows join ("continuous
    batching"), so that the arrays stay large enough to amortize NumPy's per-call cost."""

    def __init__(self, rhs, y0, settings: _Settings, out: _Output, capacity: int):
        self.all_rhs, self.all_y0, self.cfg, self.out = rhs, y0, settings, out
        self.capacity, self.waiting = capacity, 0  # rows [waiting, R) have not started
        n_dim = y0.shape[1]
        self.rows = np.zeros(0, dtype=np.int64)  # [B] problem row of each batch row
        self.t, self.h_abs = np.zeros(0), np.zeros(0)  # [B] time and next step size
        self.rejected = np.zeros(0, dtype=bool)  # [B] a rejection happened within this step
        self.next_eval = np.zeros(0, dtype=np.int64)  # [B] next t_eval index to output
        self.done = np.zeros(0, dtype=bool)  # [B] reached t_end (steps of h = 0 until dropped)
        self._allocate(0, n_dim)

    def _allocate(self, n_rows, n_dim):
        self.K = np.empty((7, n_rows, n_dim))  # [7, B, N] stage derivatives; K[0] = f(t, y)
        self.K2 = self.K.reshape(7, -1)  # [7, B*N] view for BLAS combinations
        self.y = np.empty((n_rows, n_dim))  # [B, N] state at t
        self.y_new = np.empty((n_rows, n_dim))  # [B, N] 5th-order candidate
        self.work = np.empty((n_rows, n_dim))  # [B, N] scratch
        self.h_full = np.empty((n_rows, n_dim))  # [B, N] step size of each row, broadcast

    def run(self) -> None:
        with np.errstate(over="ignore", invalid="ignore"):  # trial stages may overflow: rejected
            self._run()

    def _run(self) -> None:
        n_total = self.all_y0.shape[0]
        while len(self.rows) or self.waiting < n_total:
            if self.waiting < n_total and len(self.rows) <= 3 * self.capacity // 4:
                self._admit(min(n_total, self.waiting + self.capacity - len(self.rows)))
            self.step()

    def _admit(self, stop: int) -> None:
        """Start rows [waiting, stop): evaluate f and the initial step, join the batch."""
        new = np.arange(self.waiting, stop)
        self.waiting = stop
        rhs, y_new = self.all_rhs.select(new), self.all_y0[new]
        t_new = np.full(len(new), self.cfg.t_start)
        f_new = rhs(t_new, y_new, np.empty_like(y_new))
        h_new = initial_step(rhs, t_new, y_new, f_new, np.full(len(new), self.cfg.t_end),
                             self.cfg.rtol, self.cfg.atol)
        self.out.nfev[new] += 2
        y, f = np.concatenate([self.y, y_new]), np.concatenate([self.K[0], f_new])
        self._allocate(*y.shape)
        self.y[...], self.K[0] = y, f
        self.rows = np.concatenate([self.rows, new])
        self.t, self.h_abs = np.concatenate([self.t, t_new]), np.concatenate([self.h_abs, h_new])
        self.rejected = np.concatenate([self.rejected, np.zeros(len(new), dtype=bool)])
        self.next_eval = np.concatenate([self.next_eval, np.full(len(new), self.cfg.first)])
        self.done = np.concatenate([self.done, np.zeros(len(new), dtype=bool)])
        self.rhs = self.all_rhs.select(self.rows)

    def _drop(self, done) -> None:
        """Remove the rows in ``done`` from the batch (their results are recorded already)."""
        keep = np.flatnonzero(~done)
        y, f = self.y[keep], self.K[0][keep]
        self._allocate(*y.shape)
        self.y[...], self.K[0] = y, f
        self.rows, self.t, self.h_abs = self.rows[keep], self.t[keep], self.h_abs[keep]
        self.rejected, self.next_eval = self.rejected[keep], self.next_eval[keep]
        self.done = self.done[keep]
        self.rhs = self.rhs.select(keep)

    def step(self) -> None:
        """One attempted step of every row: accepted rows advance, rejected rows shrink h."""
        t = self.t
        min_step = 10 * np.abs(np.nextafter(t, np.inf) - t)
        failed = self.rejected & (self.h_abs < min_step)  # step size underflow: give up
        if failed.any():
            self.out.success[self.rows[failed]] = False
            self._finish(failed)
            self._drop(failed)
            return
        t_new = np.minimum(t + np.maximum(self.h_abs, min_step), self.cfg.t_end)
        h = t_new - t  # [B]
        self._stages(t, h)
        error_norm = h * self._error_rms()  # [B]
        accepted = error_norm < 1
        self.out.nfev[self.rows[~self.done]] += 6
        self._update_step_size(h, error_norm, accepted)
        self._emit_samples(h, t_new, accepted)
        self._accept(t_new, accepted)
        newly_done = (self.t >= self.cfg.t_end) & ~self.done
        if newly_done.any():
            self._finish(newly_done)
        # Finished rows idle (h = 0) until enough of them are worth a reallocation.
        if self.done.all() or self.done.sum() >= max(1, len(self.done) // 8):
            self._drop(self.done)

    def _finish(self, rows_mask) -> None:
        """Record the final state of rows that reached t_end (or gave up)."""
        self.out.y_final[self.rows[rows_mask]] = self.y[rows_mask]
        self.done = self.done | rows_mask

    def _stages(self, t, h) -> None:
        """Fill K[1..6] and y_new (the 5th-order solution) from y and K[0] = f(t, y)."""
        K, K2, y, z = self.K, self.K2, self.y, self.y_new
        np.copyto(self.h_full, h[:, None])
        z2 = z.reshape(-1)
        for s in range(1, 7):
            np.dot(_A[s] if s < 6 else _B, K2[:s], out=z2)
            z *= self.h_full
            z += y
            self.rhs(t + _C[s] * h if s < 6 else t + h, z, K[s])  # last: f at y_new (FSAL)

    def _error_rms(self) -> np.ndarray:
        """RMS over units of err / (atol + rtol max(|y|, |y_new|)), without the factor h. [B]"""
        scale, err = self.work, self.h_full  # h_full is free again after the stages
        np.abs(self.y, out=scale)
        np.abs(self.y_new, out=err)
        np.maximum(scale, err, out=scale)
        scale *= self.cfg.rtol
        scale += self.cfg.atol
        np.dot(_E, self.K2, out=err.reshape(-1))  # [B, N]
        err /= scale
        return rms(err)

    def _update_step_size(self, h, error_norm, accepted) -> None:
        with np.errstate(divide="ignore", invalid="ignore"):
            grow = _SAFETY * error_norm ** _ERROR_EXPONENT  # inf where error_norm == 0
        on_accept = np.minimum(_MAX_FACTOR, grow)
        on_accept = np.where(self.rejected, np.minimum(1.0, on_accept), on_accept)
        on_reject = np.fmax(_MIN_FACTOR, grow)  # nan error -> shrink by 5, as SciPy
        self.h_abs = h * np.where(accepted, on_accept, on_reject)
        self.rejected = ~accepted

    def _accept(self, t_new, accepted) -> None:
        """Move accepted rows to (t_new, y_new, f_new); rejected rows stay where they are."""
        self.out.n_steps[self.rows[accepted & ~self.done]] += 1
        self.out.n_rejected[self.rows[~accepted & ~self.done]] += 1
        if accepted.all():
            self.y, self.y_new = self.y_new, self.y
            self.K[0], self.t = self.K[6], t_new
            return
        mask = accepted[:, None]
        np.copyto(self.y, self.y_new, where=mask)
        np.copyto(self.K[0], self.K[6], where=mask)
        self.t = np.where(accepted, t_new, self.t)

    def _emit_samples(self, h, t_new, accepted) -> None:
        """Dense output at the requested times inside each accepted step (t, t_new]."""
        stop = np.searchsorted(self.cfg.t_eval, t_new, side="right")
        count = np.where(accepted, np.maximum(stop - self.next_eval, 0), 0)  # [B]
        if count.any():
            emitting = np.flatnonzero(count)  # [U] batch rows with outputs in this step
            n_out = count[emitting]
            # Interpolant y(t + x h) = y + h x (Q0 + x (Q1 + x (Q2 + x Q3))), Q = P^T K.
            stages = self.K[:, emitting].reshape(7, -1)  # [7, U*N]
            coef = np.dot(_P.T, stages).reshape((4, len(emitting), -1))  # [4, U, N]
            pick = np.repeat(np.arange(len(emitting)), n_out)  # [M] emitting row per output
            if len(pick) > len(emitting):
                coef = coef[:, pick]  # [4, M, N]
            index = np.repeat(self.next_eval[emitting], n_out) + _ranks_within(n_out)  # [M]
            rows = emitting[pick]  # [M] batch row per output
            x = ((self.cfg.t_eval[index] - self.t[rows]) / h[rows])[:, None]  # [M, 1]
            y_at = coef[3] * x
            for power in (2, 1, 0):
                y_at += coef[power]
                y_at *= x
            y_at *= h[rows, None]
            y_at += self.y[rows]
            self.out.samples[self.rows[rows], index - self.cfg.first] = self.cfg.reduce(y_at)
        self.next_eval = np.where(accepted, np.maximum(stop, self.next_eval), self.next_eval)


def _ranks_within(count: np.ndarray) -> np.ndarray:
    """[0, 1, .., c0-1, 0, 1, .., c1-1, ...] for counts c. [sum(count)]"""
    starts = np.repeat(np.cumsum(count) - count, count)
    return np.arange(int(count.sum())) - starts

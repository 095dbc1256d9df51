"""The effective theory's equations: Eq. 4 (dynamics), Eq. 5 (loss), Eq. 6 (D = 0 fixed point)
and Eq. 8 (cross-accuracy), for batches of realizations.

Eq. 4:  dm_i/dt = delta_i m_i^D - m_i^(2D+1) - gamma m_i + (sigma/N) sum_j q_ij (m_j - m_i).

The coupling matrix Q is ``None`` for mean field (q_ij = 1, i != j, where the coupling term
is exactly sigma * (<m> - m_i), O(N) per row), a dense ``[N, N]`` array or a SciPy sparse
matrix. Rows of a batch are (realization, sigma) pairs with their own delta and sigma.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.linalg.blas import dger

from ..errors import UserInputError


def check_coupling(q, n_units: int):
    """Validate Q against N; returns None (mean field), a float array or a CSR matrix."""
    if q is None:
        return None
    if sp.issparse(q):
        q = sp.csr_matrix(q, dtype=float)
        values = q.data
    else:
        q = np.asarray(q, dtype=float)
        values = q
    if q.shape != (n_units, n_units):
        raise UserInputError(
            f"coupling matrix has shape {q.shape}, expected ({n_units}, {n_units})")
    if not np.all(np.isfinite(values)):
        raise UserInputError("coupling matrix has non-finite entries")
    return q


def coupling_term(m: np.ndarray, sigma: np.ndarray, q=None) -> np.ndarray:
    """(sigma/N) sum_j q_ij (m_j - m_i) for a batch. m [R, N], sigma [R] -> [R, N]."""
    n_units = m.shape[1]
    sigma = np.asarray(sigma, dtype=float).reshape(-1, 1)  # [R, 1]
    if q is None:
        return sigma * (m.mean(axis=1, keepdims=True) - m)
    neighbour_sum = (q @ m.T).T if sp.issparse(q) else m @ q.T  # [R, N]: sum_j q_ij m_j
    out_degree = np.asarray(q.sum(axis=1)).reshape(1, -1)  # [1, N]
    return (sigma / n_units) * (neighbour_sum - out_degree * m)


def _add_row_constant(out: np.ndarray, column: np.ndarray) -> None:
    """out[r, :] += column[r] in place (a BLAS rank-one update: twice as fast as broadcasting)."""
    if out.flags.c_contiguous and out.size:
        dger(1.0, np.ones(out.shape[1]), column, a=out.T, overwrite_a=1)
    else:
        out += column[:, None]


@dataclass
class EffectiveRHS:
    """Right-hand side of Eq. 4 for R rows (a :class:`~decentral.theory.rk45.BatchedRHS`)."""

    depth: int  # D >= 0
    delta: np.ndarray  # [R, N] quenched disorder of each row
    sigma: np.ndarray  # [R] coupling of each row
    gamma: float  # regularization
    q: object = None  # None (mean field), dense [N, N] or sparse coupling matrix

    def __post_init__(self):
        self.sigma = np.asarray(self.sigma, dtype=float).reshape(-1)
        self.delta = np.ascontiguousarray(self.delta, dtype=float)
        # Linear decay rate of m_i: gamma, plus sigma for mean field where
        # (sigma/N) sum_{j != i} (m_j - m_i) = sigma (<m> - m_i) exactly.
        # For D = 0 the term m^(2D+1) = m is linear too and joins the decay.
        decay = self.gamma + (self.sigma if self.q is None else 0.0 * self.sigma)  # [R]
        decay = decay + (1.0 if self.depth == 0 else 0.0)
        self._decay = np.ascontiguousarray(np.broadcast_to(decay[:, None], self.delta.shape))
        self._unit_weights = np.full(self.delta.shape[1], 1.0 / max(self.delta.shape[1], 1))

    def select(self, rows: np.ndarray) -> "EffectiveRHS":
        return EffectiveRHS(self.depth, self.delta[rows], self.sigma[rows], self.gamma, self.q)

    def __call__(self, t: np.ndarray, m: np.ndarray, out: np.ndarray | None = None):
        """dm/dt of Eq. 4 into ``out``. t [R] (unused: autonomous), m [R, N] -> [R, N]"""
        out = np.empty_like(m) if out is None else out
        self._local(m, out)
        if self.q is None:  # + sigma <m>
            _add_row_constant(out, self.sigma * np.dot(m, self._unit_weights))
        else:
            out += coupling_term(m, self.sigma, self.q)
        return out

    def _local(self, m: np.ndarray, out: np.ndarray) -> None:
        """out = delta m^D - m^(2D+1) - decay m (for D = 0: delta - decay m). [R, N]"""
        if self.depth == 0:
            np.multiply(m, self._decay, out=out)
            np.subtract(self.delta, out, out=out)
            return
        # D >= 1: out = m [m^(D-1) (delta - m^(D+1)) - decay]
        top = np.multiply(m, m)  # becomes m^(D+1)
        for _ in range(self.depth - 1):
            top *= m
        np.subtract(self.delta, top, out=top)
        for _ in range(self.depth - 1):
            top *= m
        top -= self._decay
        np.multiply(top, m, out=out)


def effective_loss(m_moment_d1: np.ndarray, m_moment_2d2: np.ndarray,
                   delta_mean: np.ndarray) -> np.ndarray:
    """Eq. 5: <m^(2(D+1))> - 2 <delta> <m^(D+1)>, from the unit-averaged moments."""
    return m_moment_2d2 - 2.0 * delta_mean * m_moment_d1


def moments(m: np.ndarray, depth: int) -> np.ndarray:
    """Unit averages <m>, <m^(D+1)>, <m^(2(D+1))> of states. [M, N] -> [M, 3]"""
    weights = np.full(m.shape[-1], 1.0 / m.shape[-1])
    power = m.copy()
    for _ in range(depth):
        power *= m
    out = np.empty(m.shape[:-1] + (3,))
    out[..., 0] = m @ weights
    out[..., 1] = power @ weights
    power *= power
    out[..., 2] = power @ weights
    return out


def stationary_d0(delta: np.ndarray, sigma, gamma: float) -> np.ndarray:
    """Eq. 6, the mean-field D = 0 fixed point. delta [..., N], sigma scalar or [...] -> [..., N]"""
    delta = np.asarray(delta, dtype=float)
    sigma = np.asarray(sigma, dtype=float)[..., None]
    mean = delta.mean(axis=-1, keepdims=True)
    return (delta + sigma * mean / (1 + gamma)) / (1 + gamma + sigma)


def stationary_linear(delta: np.ndarray, sigma: float, gamma: float, q=None) -> np.ndarray:
    """D = 0 fixed point for any Q: ((1 + gamma) I + (sigma/N) L) m = delta. [N] -> [N]"""
    delta = np.asarray(delta, dtype=float)
    n_units = delta.size
    q = np.ones((n_units, n_units)) - np.eye(n_units) if q is None else q
    if sp.issparse(q):  # a sparse Q stays sparse: one sparse LU solve
        q = sp.csr_array(q, dtype=float)
        lap = sp.diags_array(np.asarray(q.sum(axis=1)).ravel()) - q
        system = (1 + gamma) * sp.identity(n_units, format="csc") + (sigma / n_units) * sp.csc_array(lap)
        return spla.spsolve(system, delta)
    q = np.asarray(q, dtype=float)
    lap = np.diag(q.sum(axis=1)) - q
    return np.linalg.solve((1 + gamma) * np.eye(n_units) + (sigma / n_units) * lap, delta)


def cross_accuracy_d0(delta: np.ndarray, sigma: float, gamma: float) -> np.ndarray:
    """Eq. 8: A_x[i, j] = 2 delta_j m_i - m_i^2 with m_i from Eq. 6. [N] -> [N, N]"""
    m = stationary_d0(delta, sigma, gamma)  # [N]
    return 2.0 * m[:, None] * np.asarray(delta, dtype=float)[None, :] - (m * m)[:, None]

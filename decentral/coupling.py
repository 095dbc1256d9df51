"""The supra-network as a coupling matrix Q (q_ij = weight of the edge i -> j) and its spectrum.

Pure numpy: building Q, its graph Laplacian L = diag(sum_j q_ij) - Q, and the stability
bound of the explicit Euler coupling, lr * sigma * lambda_max(L) / N < 2.
"""

from __future__ import annotations

import numpy as np

from .errors import UserInputError


def mean_field(n_units: int) -> np.ndarray:
    """Complete graph, q_ij = 1 for i != j, 0 on the diagonal. [N, N]"""
    if n_units < 1:
        raise UserInputError(f"number of units must be >= 1, got {n_units}")
    return np.ones((n_units, n_units)) - np.eye(n_units)


def laplacian(q: np.ndarray) -> np.ndarray:
    """Graph Laplacian L = diag(rowsum Q) - Q, so that sum_j q_ij (x_j - x_i) = -(L x)_i."""
    q = np.asarray(q, dtype=float)
    return np.diag(q.sum(axis=1)) - q


def laplacian_spectrum(q: np.ndarray) -> np.ndarray:
    """Eigenvalues of L sorted by modulus (real for symmetric Q, complex otherwise)."""
    lap = laplacian(q)
    if np.allclose(lap, lap.T):
        return np.sort(np.linalg.eigvalsh(lap))
    values = np.linalg.eigvals(lap)
    return values[np.argsort(np.abs(values))]


def lambda_max(q: np.ndarray) -> float:
    """Largest Laplacian eigenvalue modulus; for mean field it equals N."""
    return float(np.max(np.abs(laplacian_spectrum(q)))) if len(q) else 0.0


def spectral_gap(q: np.ndarray) -> float:
    """Smallest non-zero-mode rate: the second-smallest real part of the Laplacian spectrum."""
    values = np.sort(np.real(laplacian_spectrum(q)))
    return float(values[1]) if len(values) > 1 else 0.0


def stability_number(q: np.ndarray, lr: float, sigma: float) -> float:
    """lr * sigma * lambda_max / N; the coupled Euler step is stable only while this is < 2."""
    return lr * sigma * lambda_max(q) / len(q)


def sigma_max_stable(q: np.ndarray, lr: float) -> float:
    """Largest sigma with lr * sigma * lambda_max / N < 2 (inf for an edgeless graph)."""
    lam = lambda_max(q)
    return float("inf") if lam == 0 else 2.0 * len(q) / (lr * lam)


def stability_warning(q: np.ndarray, lr: float, sigma: float) -> str | None:
    """A clear message when the coupled Euler step is unstable (number >= 2), else None."""
    number = stability_number(q, lr, sigma)
    if number < 2.0:
        return None
    return (f"unstable coupling: lr*sigma*lambda_max/N = {number:.3g} >= 2 "
            f"(sigma={sigma:g}, largest stable sigma {sigma_max_stable(q, lr):.4g}); expect divergence")

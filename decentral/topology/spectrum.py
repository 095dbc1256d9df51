"""The Laplacian spectrum of Q and the stability bound of the explicit Euler coupling.

The coupled step is stable only while lr * sigma * lambda_max(L) / N < 2, with L = diag(sum_j q_ij)
- Q and lambda_max its largest eigenvalue modulus. Up to ``DENSE_SPECTRUM_MAX`` units the whole
spectrum comes from a dense eigendecomposition (exact, as before); above it nothing N x N is
built: Q stays a scipy.sparse CSR array and lambda_max comes from ARPACK (``eigsh`` on an
undirected Q, ``eigs`` on a directed one; relative accuracy ``ARPACK_TOL``), the spectral gap
from ``eigsh`` in shift-invert mode (a sparse LU of L; not computed for large directed graphs).
Where ARPACK does not converge, lambda_max falls back to the Gershgorin bound 2 * max_i sum_j q_ij
(an upper bound, so the stability check stays on the safe side).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .matrix import laplacian

DENSE_SPECTRUM_MAX = 500  # units up to which spectra come from a dense eigendecomposition
ARPACK_TOL = 1e-4  # relative accuracy of ARPACK's lambda_max (tighter costs minutes on a 10^4 ring)


def _as_q(q):
    """A sparse Q as is, anything else as a float numpy array."""
    return q if sp.issparse(q) else np.asarray(q, dtype=float)


def _is_symmetric(q) -> bool:
    if sp.issparse(q):
        return (sp.csr_array(q) != sp.csr_array(q).T).nnz == 0
    return bool(np.array_equal(q, q.T))


def laplacian_spectrum(q) -> np.ndarray:
    """Every eigenvalue of L sorted by modulus (real for symmetric Q, complex otherwise).
    Dense: meant for N up to a few thousand (a sparse Q is densified here)."""
    q = _as_q(q)
    lap = laplacian(q.toarray() if sp.issparse(q) else q)
    if np.allclose(lap, lap.T):
        return np.sort(np.linalg.eigvalsh(lap))
    values = np.linalg.eigvals(lap)
    return values[np.argsort(np.abs(values))]


def _use_dense(q) -> bool:
    return q.shape[0] <= DENSE_SPECTRUM_MAX


def gershgorin_bound(q) -> float:
    """2 * max_i sum_j q_ij: no Laplacian eigenvalue has a larger modulus."""
    rows = np.asarray(q.sum(axis=1)).ravel()
    return float(2.0 * rows.max()) if len(rows) else 0.0


def lambda_max(q) -> float:
    """Largest Laplacian eigenvalue modulus; for mean field it equals N."""
    q = _as_q(q)
    if q.shape[0] == 0:
        return 0.0
    if _use_dense(q):
        return float(np.max(np.abs(laplacian_spectrum(q))))
    lap = sp.csr_array(laplacian(sp.csr_array(q)), dtype=float)
    try:
        if _is_symmetric(q):
            value = spla.eigsh(lap, k=1, which="LA", return_eigenvectors=False, tol=ARPACK_TOL)
        else:
            value = spla.eigs(lap, k=1, which="LM", return_eigenvectors=False, tol=ARPACK_TOL)
        return float(np.max(np.abs(value)))
    except (spla.ArpackNoConvergence, spla.ArpackError):
        return gershgorin_bound(q)


def spectral_gap(q) -> float:
    """Smallest non-zero-mode rate: the second-smallest real part of the Laplacian spectrum.
    Large directed graphs: NaN (not computed)."""
    q = _as_q(q)
    n = q.shape[0]
    if n < 2:
        return 0.0
    if _use_dense(q):
        return float(np.sort(np.real(laplacian_spectrum(q)))[1])
    if not _is_symmetric(q):
        return float("nan")
    lap = sp.csc_matrix(laplacian(sp.csr_array(q)), dtype=float)
    shift = 1e-6  # shift-invert just below 0: L + shift I is positive definite
    try:  # minimum-degree ordering: ~10x less fill-in than the default on scale-free graphs
        lu = spla.splu(lap + shift * sp.identity(n, format="csc"), permc_spec="MMD_AT_PLUS_A")
        solve = spla.LinearOperator(lap.shape, matvec=lu.solve, dtype=float)
        values = spla.eigsh(lap, k=2, sigma=-shift, which="LM", OPinv=solve, return_eigenvectors=False)
        return float(np.sort(values)[1])
    except (spla.ArpackNoConvergence, spla.ArpackError, RuntimeError):
        return float("nan")


def stability_number_of(lam: float, n_units: int, lr: float, sigma: float) -> float:
    """lr * sigma * lambda_max / N; the coupled Euler step is stable only while this is < 2."""
    return lr * sigma * lam / n_units


def stability_number(q, lr: float, sigma: float) -> float:
    """lr * sigma * lambda_max / N for a matrix Q (see :class:`~.coupling.Coupling` for a run's)."""
    q = _as_q(q)
    return stability_number_of(lambda_max(q), q.shape[0], lr, sigma)


def sigma_max_of(lam: float, n_units: int, lr: float) -> float:
    """Largest sigma with lr * sigma * lambda_max / N < 2 (inf for an edgeless graph)."""
    return float("inf") if lam == 0 else 2.0 * n_units / (lr * lam)


def sigma_max_stable(q, lr: float) -> float:
    q = _as_q(q)
    return sigma_max_of(lambda_max(q), q.shape[0], lr)


def warning_of(number: float, sigma: float, sigma_max: float) -> str | None:
    """A clear message when the coupled Euler step is unstable (number >= 2), else None."""
    if number < 2.0:
        return None
    return (f"unstable coupling: lr*sigma*lambda_max/N = {number:.3g} >= 2 "
            f"(sigma={sigma:g}, largest stable sigma {sigma_max:.4g}); expect divergence")


def stability_warning(q, lr: float, sigma: float) -> str | None:
    q = _as_q(q)
    lam = lambda_max(q)
    return warning_of(stability_number_of(lam, q.shape[0], lr, sigma), sigma, sigma_max_of(lam, q.shape[0], lr))


def sigma_max_euler(q, lr: float) -> float:
    """Exact stability bound of the Euler coupling step, max over modes |1 - h lambda| < 1.

    h = lr * sigma / N; equals :func:`sigma_max_stable` when the spectrum is real (undirected
    graphs) and is smaller when a directed graph has complex eigenvalues. It needs the whole
    spectrum: above ``DENSE_SPECTRUM_MAX`` units it is :func:`sigma_max_stable` for undirected
    graphs and NaN (not computed) for directed ones.
    """
    q = _as_q(q)
    if not _use_dense(q):
        return sigma_max_stable(q, lr) if _is_symmetric(q) else float("nan")
    values = laplacian_spectrum(q)
    values = values[np.abs(values) > 1e-9 * max(1.0, float(np.max(np.abs(values))))]
    if len(values) == 0:
        return float("inf")
    return float(np.min(2.0 * q.shape[0] * np.real(values) / (lr * np.abs(values) ** 2)))

"""Rank-one structure of cross-accuracy matrices: the learning-path math shared by the
experiments (S_x from A_x over a sweep) and the theory (S_x from Eq. 8). Pure numpy."""

from __future__ import annotations

import numpy as np


def rank_one(matrix: np.ndarray) -> np.ndarray:
    """Leading SVD term s1 u1 v1^T of a matrix. [N, M] -> [N, M]"""
    u, s, vt = np.linalg.svd(np.asarray(matrix, dtype=float))
    return s[0] * np.outer(u[:, 0], vt[0])


def explained_fraction(matrix: np.ndarray) -> float:
    """Share of ||S||_F^2 carried by the rank-one truncation: s1^2 / sum_k s_k^2."""
    s = np.linalg.svd(np.asarray(matrix, dtype=float), compute_uv=False)
    total = float(np.sum(s * s))
    return float(s[0] ** 2 / total) if total > 0 else 0.0


def off_diagonal(matrix: np.ndarray) -> np.ndarray:
    """Entries (i, j) with i != j, row by row."""
    matrix = np.asarray(matrix)
    return matrix[~np.eye(*matrix.shape, dtype=bool)]


def offdiagonal_r2(matrix: np.ndarray, fit: np.ndarray) -> float:
    """Squared Pearson correlation between the off-diagonal entries of two matrices."""
    a, b = off_diagonal(matrix), off_diagonal(fit)
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1] ** 2)


def rank_one_r2(s_x: np.ndarray, reference: np.ndarray | None = None) -> float:
    """R^2 of S_x's off-diagonal entries against the rank-one fit of `reference` (the paper:
    S_x of D=0), or against S_x's own rank-one fit when reference is None."""
    return offdiagonal_r2(s_x, rank_one(s_x if reference is None else reference))

"""The microscopic learning path (Eq. 8): cross-accuracy A_x(sigma), its cumulative sum S_x,
the rank-one truncation of S_x by SVD and how much of S_x that single direction explains."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scipy.integrate import trapezoid

from ..lowrank import explained_fraction, offdiagonal_r2, rank_one
from .model import cross_accuracy_d0


def theory_s_x(delta: np.ndarray, sigmas: np.ndarray, gamma: float, method: str = "sum") -> np.ndarray:
    """S_x of the effective theory (Eq. 8, D = 0) for one disorder sequence delta: sum over the grid of A_x(sigma) ("sum", as the authors' notebooks) or the
    trapezoid integral over sigma ("integral", the paper's formula). [N] -> [N, N]"""
    sigmas = np.asarray(sigmas, dtype=float)
    stack = np.stack([cross_accuracy_d0(delta, s, gamma) for s in sigmas])  # [S, N, N]
    if method == "sum":
        return stack.sum(axis=0)
    if method == "integral":
        return trapezoid(stack, sigmas, axis=0)
    raise ValueError(f"method must be 'sum' or 'integral', got {method!r}")


def ranking(matrix: np.ndarray) -> np.ndarray:
    """Normalized ranks of the entries, 0 (lowest) to 1 (highest). [N, M] -> [N, M]"""
    flat = matrix.reshape(-1)
    ranks = np.empty(flat.size)
    ranks[np.argsort(flat, kind="stable")] = np.arange(flat.size)
    return (ranks / max(flat.size - 1, 1)).reshape(matrix.shape)


@dataclass
class LearningPath:
    """S_x, its rank-one fit and the summary numbers for one disorder sequence."""

    s_x: np.ndarray  # [N, N] cumulative cross-accuracy
    fit: np.ndarray  # [N, N] rank-one truncation s1 u1 v1^T
    explained: float  # s1^2 / sum s_k^2
    r2_offdiagonal: float  # squared correlation of off-diagonal entries, S_x vs fit

    def summary(self) -> dict:
        return {"explained_fraction": self.explained, "r2_offdiagonal": self.r2_offdiagonal}


def learning_path(delta: np.ndarray, sigmas: np.ndarray, gamma: float,
                  method: str = "sum") -> LearningPath:
    """Eq. 8 summed over sigma, with its rank-one SVD truncation."""
    s_x = theory_s_x(delta, sigmas, gamma, method)
    fit = rank_one(s_x)
    return LearningPath(s_x, fit, explained_fraction(s_x), offdiagonal_r2(s_x, fit))

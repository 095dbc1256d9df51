"""Observables of coupled units: test loss and accuracy (Eq. 3), magnetization, consensus,
cross-loss/cross-accuracy matrices, and the cumulative S_x with its rank-one fit.

Pure functions of stacked parameters [R, N, P] and a test split; all return tensors or arrays
with a leading replica axis R.
"""

from __future__ import annotations

import numpy as np
import torch

from .data import Split
from .lowrank import explained_fraction, off_diagonal, offdiagonal_r2, rank_one, rank_one_r2  # noqa: F401
from .model import Architecture, per_sample_scores, shared_inputs

UNIT_CHUNK = 32  # units evaluated together on the test set (bounds activation memory)
# parameter_stats takes chunks of units once the float64 copy of theta would exceed STATS_WHOLE
# bytes, each chunk's copy about STATS_CHUNK bytes (2-8 MB: ~0.5 s at N = 10,000; 128 MB chunks: 2-2.6 s)
STATS_WHOLE, STATS_CHUNK = 2**26, 2**23


def parameter_stats(theta: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per replica [R]: magnetization <m> (signed mean parameter, averaged over units), mean
    squared parameter, and consensus distance mean_i ||theta_i - mean_j theta_j||^2 (float64).
    Above STATS_WHOLE bytes of float64, in chunks of units (`_chunked_stats`)."""
    if theta.numel() * 8 > STATS_WHOLE:
        return _chunked_stats(theta)
    theta = theta.double()  # [R, N, P]
    centre = theta.mean(dim=1, keepdim=True)  # [R, 1, P]
    return {
        "magnetization": theta.mean(dim=(1, 2)),
        "mean_sq_param": theta.pow(2).mean(dim=(1, 2)),
        "consensus_distance": (theta - centre).pow(2).sum(dim=2).mean(dim=1),
    }


def _chunked_stats(theta: torch.Tensor) -> dict[str, torch.Tensor]:
    """`parameter_stats` in two passes over chunks of units: the same float64 sums,
    taken in another order (equal to ~1e-15 relative), without the whole-tensor float64
    copies (at N = 10,000: four 1.3 GB temporaries and ~2.5 s, README "Scaling in N")."""
    n_rep, n_units, n_par = theta.shape
    chunk = max(1, STATS_CHUNK // (8 * n_rep * n_par))  # units per chunk
    total = torch.zeros(n_rep, n_par, dtype=torch.float64, device=theta.device)  # [R, P]
    squares = torch.zeros(n_rep, dtype=torch.float64, device=theta.device)  # [R]
    for start in range(0, n_units, chunk):
        block = theta[:, start : start + chunk].double()  # [R, c, P]
        total += block.sum(dim=1)
        squares += block.pow(2).sum(dim=(1, 2))
    centre = (total / n_units).unsqueeze(1)  # [R, 1, P]
    spread = torch.zeros_like(squares)
    for start in range(0, n_units, chunk):
        spread += (theta[:, start : start + chunk].double() - centre).pow(2).sum(dim=(1, 2))
    return {"magnetization": total.sum(dim=1) / (n_units * n_par), "mean_sq_param": squares / (n_units * n_par),
            "consensus_distance": spread / n_units}


def class_weights(test: Split, n_classes: int) -> torch.Tensor:
    """[T, C] matrix averaging per-sample scores within each class (columns sum to 1)."""
    onehot = torch.nn.functional.one_hot(test.y, n_classes).to(torch.float64)
    return onehot / onehot.sum(dim=0).clamp(min=1)


def weighted_scores(arch, theta, test: Split, weights: torch.Tensor, inputs=None):
    """Per-sample loss and correctness of every unit, reduced by weights [T, K] -> [R, N, K].
    inputs: test.x already prepared (model.SharedInputs), else prepared here."""
    n_rep, n_units, n_par = theta.shape
    flat = theta.reshape(-1, n_par)  # [R*N, P]
    weights = weights.to(theta.device)
    inputs = shared_inputs(test.x) if inputs is None else inputs
    losses, accs = [], []
    for start in range(0, len(flat), UNIT_CHUNK):
        loss, correct = per_sample_scores(arch, flat[start : start + UNIT_CHUNK], inputs, test.y)
        losses.append(loss.double() @ weights)  # [u, K]
        accs.append(correct.double() @ weights)
    shape = (n_rep, n_units, weights.shape[1])
    return torch.cat(losses).view(shape), torch.cat(accs).view(shape)


def cross_scores(arch: Architecture, theta: torch.Tensor, test: Split) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-loss and cross-accuracy [R, N, C]: unit i of replica r on test images of class c."""
    return weighted_scores(arch, theta, test, class_weights(test, arch.n_out))


def test_metrics(arch: Architecture, theta: torch.Tensor, test: Split, inputs=None) -> dict[str, torch.Tensor]:
    """Per replica [R]: mean test loss <L> and accuracy <A> over units on the whole split
    (inputs: its prepared model.SharedInputs, if already made)."""
    uniform = torch.full((len(test.y), 1), 1.0 / len(test.y), dtype=torch.float64)  # [T, 1]
    loss, acc = weighted_scores(arch, theta, test, uniform, inputs)
    return {"loss": loss.mean(dim=(1, 2)), "accuracy": acc.mean(dim=(1, 2))}


def replica_observables(arch: Architecture, theta: torch.Tensor, test: Split) -> dict[str, torch.Tensor]:
    """Every time-series observable per replica [R]: <L>, <A> and the parameter statistics."""
    with torch.no_grad():
        return {**test_metrics(arch, theta, test), **parameter_stats(theta)}


def finite_replicas(theta: torch.Tensor) -> torch.Tensor:
    """[R] bool: every parameter of the replica is finite."""
    return torch.isfinite(theta).flatten(1).all(dim=1)


def measured_s_x(a_x: np.ndarray) -> np.ndarray:
    """S_x [N, C] of a sweep: the sum over sigma values of run-averaged A_x given as [S, N, C]
    (the effective theory's counterpart is `theory.learning_path.theory_s_x`)."""
    return np.asarray(a_x, dtype=float).sum(axis=0)

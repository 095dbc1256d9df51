"""How the measurement phase evaluates observables: the full test set every time, or a rotating
class-stratified fold of it whose time average equals the full one up to the parameters' drift.

Scheme "full" (the default): every evaluation scores every unit on all T test images.

Scheme "rotating" (K folds): the T test images are dealt once (fixed seed) into K disjoint folds,
each class spread evenly (per class, fold sizes differ by at most one image; fold sizes by at
most one). Evaluation k of a measurement phase scores fold f(k) = k mod K only, so it costs
about 1/K of a full evaluation. The parameter observables (magnetization, mean squared
parameter, consensus distance) are exact at every evaluation; only the test loss and accuracy
are estimated. Evaluation k reports the fold mean a_f scaled by w_f = K n_f / T (n_f images in
fold f; w_f = 1 exactly when K divides T, as for MNIST's 10,000 with K = 10), so that the plain
time average the runner takes weights every fold by its size.

Error of the time average. Let a_f(theta) be the mean score (accuracy or loss, averaged over
units) on fold f, so the full-set score is a(theta) = sum_f (n_f / T) a_f(theta). With
M = R K evaluations at parameters theta_k, the exact time average is
A = (1/M) sum_k a(theta_k) and the rotating estimate is B = (1/M) sum_k w_f(k) a_f(k)(theta_k).
Within rotation r (evaluations k = rK + j, j = 0..K-1, fold j at k = rK + j),

    sum_j w_j a_j(theta_rK+j) - sum_j a(theta_rK+j)
        = sum_f (n_f/T) [K a_f(theta_rK+f) - sum_j a_f(theta_rK+j)]
        = sum_f (n_f/T) sum_j [a_f(theta_rK+f) - a_f(theta_rK+j)],

hence exactly

    B - A = (1/(R K)) sum_r sum_f (n_f/T) sum_j [a_f(theta_rK+f) - a_f(theta_rK+j)]      (1)

and, bounding each bracket by the range of a_f over the rotation,

    |B - A| <= (1/R) sum_r sum_f (n_f/T) (max_j a_f(theta_rK+j) - min_j a_f(theta_rK+j))  (2)

Every term compares one fold at two times of the same rotation: if the parameters did not move
within a rotation, B = A exactly, whatever the folds. The error is driven only by the drift
(and step-to-step fluctuation) of each fold's score over K evaluations, and it averages down
with R where the within-rotation deviations have no systematic sign: the folds are random
class-stratified subsets, so a_f - a has mean zero over the fold draw. If the phase stops after
an incomplete rotation (M not a multiple of K; only when replicas diverge, since the
rotating scheme requires complete rotations), the last m < K evaluations cover m folds only and
add the term (m/M) (B_last - A_last), the last rotation's estimate error, which is bounded
by the sampling error of m folds. `rotation_error` evaluates (1) and (2) on a recorded
trajectory; tests/test_evaluation.py checks both against the evaluator itself.

The final cross-accuracy A_x and cross-loss L_x are always computed on the full test set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .data import Split
from .errors import UserInputError
from .model import Architecture, SharedInputs
from .observables import parameter_stats, test_metrics, weighted_scores

SCHEMES = ("full", "rotating")
FOLD_SEED = 0  # the folds are one fixed partition of the test set (the same for every run)


def stratified_folds(y: torch.Tensor, n_folds: int, seed: int = FOLD_SEED) -> list[torch.Tensor]:
    """K disjoint sorted index sets [n_f] covering range(len(y)), each class dealt evenly.

    Each class's images are shuffled (fixed seed), the classes laid end to end and dealt
    round-robin: class c puts floor or ceil of n_c / K images in every fold, and the fold
    sizes differ by at most one.
    """
    if not 1 <= n_folds <= len(y):
        raise UserInputError(f"--eval-folds must be between 1 and the {len(y)} test images, got {n_folds}")
    gen = torch.Generator().manual_seed(seed)
    labels = y.cpu()
    order = [idx[torch.randperm(len(idx), generator=gen)]
             for idx in (torch.nonzero(labels == c).flatten() for c in torch.unique(labels))]
    dealt = torch.cat(order)  # [T] class by class, shuffled within each class
    fold_of = torch.arange(len(dealt)) % n_folds  # [T]
    return [dealt[fold_of == f].sort().values.to(y.device) for f in range(n_folds)]


@dataclass(frozen=True)
class Fold:
    """One fold of the test set, prepared once for the first layer of many units."""

    test: Split  # the fold's images and labels
    inputs: SharedInputs  # its prepared first-layer inputs
    weight: float  # K n_f / T: scales the fold mean so that folds count by their size


def prepare_folds(test: Split, n_folds: int, seed: int = FOLD_SEED) -> list[Fold]:
    """The K folds of `test` with their inputs prepared (do this once per measurement phase)."""
    total = len(test.y)
    folds = []
    for index in stratified_folds(test.y, n_folds, seed):
        part = Split(test.x[index], test.y[index])
        folds.append(Fold(part, SharedInputs(part.x), n_folds * len(index) / total))
    return folds


class RotatingEvaluator:
    """Observables per replica [R], evaluation k scoring the test set's fold k mod K."""

    def __init__(self, arch: Architecture, folds: list[Fold]):
        self.arch, self.folds, self.count = arch, folds, 0

    def __call__(self, theta: torch.Tensor) -> dict[str, np.ndarray]:
        fold = self.folds[self.count % len(self.folds)]
        self.count += 1
        with torch.no_grad():
            metrics = test_metrics(self.arch, theta, fold.test, inputs=fold.inputs)
            values = {k: v * fold.weight for k, v in metrics.items()}
            values.update(parameter_stats(theta))
        return {k: v.cpu().numpy() for k, v in values.items()}


class FullEvaluator:
    """Observables per replica [R] on the whole test set at every evaluation."""

    def __init__(self, arch: Architecture, test: Split):
        self.arch, self.test, self.inputs = arch, test, SharedInputs(test.x)

    def __call__(self, theta: torch.Tensor) -> dict[str, np.ndarray]:
        with torch.no_grad():
            values = {**test_metrics(self.arch, theta, self.test, inputs=self.inputs), **parameter_stats(theta)}
        return {k: v.cpu().numpy() for k, v in values.items()}


def make_evaluator(arch: Architecture, test: Split, scheme: str, n_folds: int) -> Callable:
    """A fresh evaluator for one measurement phase: evaluator(theta [R, N, P]) -> {name: [R]}."""
    if scheme == "full":
        return FullEvaluator(arch, test)
    if scheme == "rotating":
        return RotatingEvaluator(arch, prepare_folds(test, n_folds))
    raise UserInputError(f"--eval-scheme must be one of {', '.join(SCHEMES)}; got {scheme!r}")


def rotation_error(fold_scores: np.ndarray, fold_sizes: np.ndarray) -> dict[str, float]:
    """Exact vs rotating time average of a trajectory, with the error terms (1) and (2).

    fold_scores [M, K]: a_f(theta_k), every fold scored at every evaluation (M = R K);
    fold_sizes [K]: n_f. Returns the exact average, the rotating estimate, their difference,
    the exact error formula (1) and the bound (2).
    """
    scores = np.asarray(fold_scores, dtype=float)
    n_evals, n_folds = scores.shape
    if n_evals % n_folds:
        raise ValueError(f"{n_evals} evaluations are not whole rotations of {n_folds} folds")
    share = np.asarray(fold_sizes, dtype=float) / np.sum(fold_sizes)  # [K] n_f / T
    exact = float(np.mean(scores @ share))
    picked = scores[np.arange(n_evals), np.arange(n_evals) % n_folds]  # [M] a_f(k)(theta_k)
    rotating = float(np.mean(picked * n_folds * share[np.arange(n_evals) % n_folds]))
    rotations = scores.reshape(-1, n_folds, n_folds)  # [R, j, f]
    own = np.diagonal(rotations, axis1=1, axis2=2)  # [R, f] a_f at its own evaluation
    formula = float(np.mean(((own[:, None, :] - rotations) * share).sum(axis=(1, 2)) / n_folds))
    spread = rotations.max(axis=1) - rotations.min(axis=1)  # [R, f]
    bound = float(np.mean(spread @ share))
    return {"exact": exact, "rotating": rotating, "error": rotating - exact,
            "formula": formula, "bound": bound}


def fold_scores(arch: Architecture, theta: torch.Tensor, test: Split, n_folds: int) -> dict[str, np.ndarray]:
    """Loss and accuracy of every fold [R, K] (averaged over units), in one full-set pass; and
    the fold sizes [K]. Rows of a trajectory of these are rotation_error's fold_scores."""
    folds = stratified_folds(test.y, n_folds)
    weights = torch.zeros(len(test.y), n_folds, dtype=torch.float64)  # [T, K] fold means
    for f, index in enumerate(folds):
        weights[index.cpu(), f] = 1.0 / len(index)
    with torch.no_grad():
        loss, acc = weighted_scores(arch, theta, test, weights)  # [R, N, K]
    return {"loss": loss.mean(dim=1).cpu().numpy(), "accuracy": acc.mean(dim=1).cpu().numpy(),
            "sizes": np.array([len(i) for i in folds])}

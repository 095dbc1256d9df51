"""Eq. 2 of the paper, written once as pure tensor math and shared by every backend.

    theta_i(t+1) = theta_i(t) - lr * (grad L_i(theta_i(t)) + wd * theta_i(t))
                   + (lr * sigma / N) * sum_j q_ij (theta_j(t) - theta_i(t))

Fast forms, each tested against :func:`euler_step` (the reference): the dense linear map
(:func:`step_operator`, :func:`apply_operator`), the mean-field form on the complete graph
(:func:`mean_field_step`), and the sparse form on any graph (:func:`sparse_operator`,
:func:`sparse_step`); the CPU kernels apply the latter two per unit (decentral.backends.kernels).

Simultaneous explicit Euler, as the authors coded it: the gradient and the coupling both
act on theta(t); weight decay is L2 inside the local gradient only, the coupling is not
decayed. Nothing here knows about Ray, data or models: callers pass stacked tensors.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch


def diffusion(q_rows: torch.Tensor, sources: torch.Tensor, targets: torch.Tensor,
              degree: torch.Tensor | None = None) -> torch.Tensor:
    """sum_j q_ij (theta_j - theta_i) for each target row i.

    q_rows:  [n, M] rows of Q for the n target units, columns for the M source units
             (dense or sparse COO/CSR).
    sources: [M, P] parameters theta_j(t) of the source units.
    targets: [n, P] parameters theta_i(t) of the target units.
    degree:  [n, 1] sum_j q_ij, when q_rows does not carry it (sources that are already
             linear combinations of units, e.g. a block's compressed snapshot); else q_rows' row sums.
    Returns  [n, P].
    """
    if q_rows.is_sparse or q_rows.layout == torch.sparse_csr:
        pulled = torch.sparse.mm(q_rows, sources)  # [n, P]
        if degree is None:
            degree = torch.sparse.sum(q_rows, dim=1).to_dense().unsqueeze(1)  # [n, 1]
    else:
        pulled = q_rows @ sources  # [n, P]
        if degree is None:
            degree = q_rows.sum(dim=1, keepdim=True)  # [n, 1]
    return pulled - degree * targets


def euler_step(
    theta: torch.Tensor,
    grad: torch.Tensor,
    q_rows: torch.Tensor,
    sources: torch.Tensor,
    *,
    lr: float,
    sigma: float,
    n_units: int,
    weight_decay: float,
    degree: torch.Tensor | None = None,
) -> torch.Tensor:
    """One step of Eq. 2 for the target units; returns the new parameters.

    theta:   [n, P] theta_i(t) of the units being updated.
    grad:    [n, P] gradient of the data loss at theta(t) (weight decay is added here).
    q_rows, sources: as in :func:`diffusion`; in a local engine sources is theta itself.
    sigma:   Eq. 2's sigma (not sigma/N); n_units is the N of Eq. 2.
    degree:  optional [n, 1] row sums of the full Q, see :func:`diffusion`.
    """
    if q_rows.is_sparse or q_rows.layout == torch.sparse_csr or sources is not theta or degree is not None:
        local = grad + weight_decay * theta  # [n, P]
        coupling = diffusion(q_rows, sources, theta, degree)  # [n, P]
        return theta - lr * local + (lr * sigma / n_units) * coupling
    op = step_operator(q_rows, sigma, lr=lr, n_units=n_units, weight_decay=weight_decay)
    return apply_operator(op, theta, grad, lr=lr)


def step_operator(q: torch.Tensor, sigma, *, lr: float, n_units: int, weight_decay: float) -> torch.Tensor:
    """Eq. 2 as a linear map when the sources are the units themselves and Q is dense:

        theta(t+1) = A theta(t) - lr * grad,   A = (1 - lr*wd) I + c (Q - diag(deg)),  c = lr*sigma/N,

    deg_i = sum_j q_ij. q [N, N] or [R, N, N]; sigma a float or [R, 1, 1]; returns A [(R,) N, N].
    Callers that take many steps with one Q and sigma build A once.
    """
    scale = lr * sigma / n_units  # float or [R, 1, 1]
    eye = torch.eye(q.shape[-1], dtype=q.dtype, device=q.device)  # [N, N]
    laplacian = q - torch.diag_embed(q.sum(dim=-1))  # [(R,) N, N], rows sum to 0
    return (1.0 - lr * weight_decay) * eye + scale * laplacian


def apply_operator(op: torch.Tensor, theta: torch.Tensor, grad: torch.Tensor, *, lr: float,
                   into_grad: bool = False) -> torch.Tensor:
    """A theta - lr * grad in one GEMM pass: op [(R,) N, N], theta and grad [N, P] or [R, N, P].
    into_grad=True writes the result over grad (the caller's scratch) instead of a new tensor."""
    if theta.dim() == 3 and theta.shape[0] == 1:  # one replica: a plain GEMM
        flat = apply_operator(op.reshape(op.shape[-2:]), theta[0], grad[0], lr=lr, into_grad=into_grad)
        return flat.unsqueeze(0)
    if theta.dim() == 2:
        return grad.addmm_(op, theta, beta=-lr) if into_grad else torch.addmm(grad, op, theta, beta=-lr)
    op = op.expand(theta.shape[0], -1, -1)  # [R, N, N]
    return grad.baddbmm_(op, theta, beta=-lr) if into_grad else torch.baddbmm(grad, op, theta, beta=-lr)


def mean_field_step(theta: torch.Tensor, grad: torch.Tensor, alpha: torch.Tensor, c: torch.Tensor,
                    *, lr: float) -> torch.Tensor:
    """Eq. 2 in mean-field form: theta_i(t+1) = alpha theta_i + c sum_j theta_j - lr grad_i.

    theta, grad [R, N, P]; alpha = 1 - lr*wd - c*N and c = lr*sigma/N per replica [R]
    (`engine.mean_field_coefficients`). The same step as
    :func:`apply_operator` with A = alpha I + c 11^T, in one pass over the units plus their sum.
    """
    total = theta.sum(dim=1, keepdim=True)  # [R, 1, P]
    return alpha.view(-1, 1, 1) * theta + c.view(-1, 1, 1) * total - lr * grad


class SparseOperator(NamedTuple):
    """Eq. 2's linear part in sparse form over R*N stacked units (replica-major):
    theta(t+1) = diag * theta + W theta - lr * grad, W block-diagonal with blocks c_r Q_r
    (c_r = lr*sigma_r/N) and diag_i = 1 - lr*wd - c_r * deg_i. Cost O(R * edges * P) per step."""

    diag: torch.Tensor  # [R*N]
    crow: torch.Tensor  # [R*N + 1] int64, W's CSR row pointers
    col: torch.Tensor  # [R*E] int64, W's column indices (unit indices in the stacked [R*N])
    weight: torch.Tensor  # [R*E], c_r * q_ij

    def matrix(self) -> torch.Tensor:
        """W as a torch sparse CSR tensor [R*N, R*N]."""
        n = self.diag.shape[0]
        with warnings.catch_warnings():  # "sparse CSR support is in beta": the products used here are stable
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(self.crow, self.col, self.weight, (n, n), check_invariants=False)


def sparse_operator(qs, sigma, *, lr: float, n_units: int, weight_decay: float) -> SparseOperator:
    """The :class:`SparseOperator` of Q_r and sigma_r per replica.

    qs: [R] CSR parts (crow [N+1], col [E_r], q [E_r]) of each replica's Q (one may repeat);
    sigma: a float or [R] / [R, 1, 1]. The same map as :func:`step_operator`, without N x N.
    """
    sigma = sigma if torch.is_tensor(sigma) else torch.tensor(sigma, dtype=torch.float64)
    scale = (lr * sigma / n_units).reshape(-1).expand(len(qs))  # [R], c_r
    crows, cols, weights, diags, nnz = [], [], [], [], 0
    for r, (crow, col, q) in enumerate(qs):
        rows = torch.repeat_interleave(torch.arange(n_units, device=col.device), crow.diff())  # [E]
        degree = torch.zeros(n_units, dtype=q.dtype, device=q.device).index_add_(0, rows, q)  # [N]
        c = scale[r].to(q.dtype)
        diags.append((1.0 - lr * weight_decay) - c * degree)
        crows.append(crow[:-1] + nnz)
        cols.append(col + r * n_units)
        weights.append(c * q)
        nnz += int(crow[-1])
    crows.append(torch.tensor([nnz], dtype=crows[0].dtype, device=crows[0].device))
    return SparseOperator(torch.cat(diags), torch.cat(crows), torch.cat(cols), torch.cat(weights))


def sparse_step(op: SparseOperator, theta: torch.Tensor, grad: torch.Tensor, *, lr: float,
                w: torch.Tensor | None = None) -> torch.Tensor:
    """diag * theta + W theta - lr * grad: Eq. 2 in sparse form. theta, grad [R, N, P];
    w: op.matrix(), when the caller built it once."""
    flat, g = theta.reshape(-1, theta.shape[-1]), grad.reshape(-1, grad.shape[-1])  # [R*N, P]
    pulled = torch.sparse.mm(op.matrix() if w is None else w, flat)  # [R*N, P]
    return (op.diag.unsqueeze(1) * flat - lr * g + pulled).view_as(theta)

"""Eq. 2 of the paper, written once as pure tensor math and shared by every backend.

    theta_i(t+1) = theta_i(t) - lr * (grad L_i(theta_i(t)) + wd * theta_i(t))
                   + (lr * sigma / N) * sum_j q_ij (theta_j(t) - theta_i(t))

Simultaneous explicit Euler, as the authors coded it: the gradient and the coupling both
act on theta(t); weight decay is L2 inside the local gradient only, the coupling is not
decayed. Nothing here knows about Ray, data or models: callers pass stacked tensors.
"""

from __future__ import annotations

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
    return _fused_local_step(theta, grad, q_rows, lr=lr, sigma=sigma, n_units=n_units,
                             weight_decay=weight_decay)


def _fused_local_step(theta, grad, q, *, lr, sigma, n_units, weight_decay) -> torch.Tensor:
    """The same step when sources is theta and Q is dense, in three passes over memory:

        theta_i * (1 - lr*wd - c*deg_i) - lr*grad_i + c * sum_j q_ij theta_j,  c = lr*sigma/N.

    theta, grad [..., N, P]; q [N, N] or [R, N, N]; sigma a float or [R, 1, 1].
    """
    scale = lr * sigma / n_units  # float or [R, 1, 1]
    degree = q.sum(dim=-1, keepdim=True)  # [(R,) N, 1]
    keep = 1.0 - lr * weight_decay - scale * degree  # [(R,) N, 1]
    base = theta * keep  # [..., N, P]
    base.sub_(grad, alpha=lr)
    if theta.dim() == 2:
        return torch.addmm(base, q * scale, theta)
    mix = (q * scale).expand(theta.shape[0], -1, -1)  # [R, N, N]
    return torch.baddbmm(base, mix, theta)

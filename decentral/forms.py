"""Eq. 2's coupling in the form the run's Coupling calls for, chosen once per step function.

Backends branch on :attr:`Coupling.kind`, never on the numbers in Q:

* every replica on the complete graph: the mean-field form, alpha theta_i + c sum_j theta_j
  (`mean_field_coefficients`; the CPU kernel in place, else `update.mean_field_step`, or the
  dense operator up to ``DENSE_MAX_UNITS`` units, where its GEMM is cheaper);
* small graphs (kind "dense", N <= ``DENSE_MAX_UNITS``): the dense operator A [(R,) N, N]
  (`update.step_operator`), one GEMM per step;
* anything else: the sparse form (`update.sparse_operator`) over the R*N stacked units, O(edges x P).

The CPU kernel takes the mean-field or sparse form for every graph (`kernel_coupling`).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from .topology import COMPLETE, DENSE, SPARSE, Coupling
from .topology.coupling import DENSE_MAX_UNITS
from .update import (SparseOperator, apply_operator, mean_field_step, sparse_operator, sparse_step,
                     step_operator)

Couplings = Coupling | Sequence[Coupling]  # one Q shared by all replicas, or one per replica
Apply = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (theta [R, N, P], grad) -> theta(t+1)


def replica_couplings(coupling: Couplings, n_replicas: int) -> list[Coupling]:
    """The coupling of each replica [R]: one shared Coupling repeated, or the given list."""
    if isinstance(coupling, Coupling):
        return [coupling] * n_replicas
    couplings = list(coupling)
    if len(couplings) != n_replicas:
        raise ValueError(f"per-replica couplings: got {len(couplings)}, expected {n_replicas}")
    return couplings


def form_of(coupling: Couplings, n_replicas: int) -> str:
    """"complete" when every replica couples on the complete graph, "dense" when every Q is small
    enough for the dense operator, else "sparse"."""
    kinds = {c.kind for c in replica_couplings(coupling, n_replicas)}
    if kinds == {COMPLETE}:
        return COMPLETE
    return SPARSE if SPARSE in kinds else DENSE


def mean_field_coefficients(coupling: Couplings, sigma: torch.Tensor, lr: float, weight_decay: float):
    """(alpha [R], c [R]) of Eq. 2 on the complete graph, A = alpha I + c 11^T with
    c = lr*sigma/N and alpha = 1 - lr*wd - c*N, when every replica's coupling is "complete";
    else None. Computed with the same float32 operations as `update.step_operator`'s entries."""
    couplings = replica_couplings(coupling, sigma.shape[0])
    if form_of(couplings, len(couplings)) != COMPLETE or couplings[0].n_units < 2:
        return None
    n = couplings[0].n_units
    scale = (lr * sigma / n).reshape(-1)  # [R], the off-diagonal entry c
    identity = (1.0 - lr * weight_decay) * torch.ones_like(scale)  # the I term's diagonal
    diagonal = identity + scale * torch.full_like(scale, -(n - 1))  # A_ii = that + c * (-(N-1))
    return diagonal - scale, scale


def dense_coupling(coupling: Couplings, device, dtype=torch.float32) -> torch.Tensor:
    """Q as a tensor [N, N] (one Coupling, shared by all replicas) or [R, N, N] (one per replica)."""
    if isinstance(coupling, Coupling):
        q = coupling.dense()
    else:
        q = np.stack([c.dense() for c in coupling])
    return torch.as_tensor(q, dtype=dtype, device=device)


def coupling_operator(coupling: Couplings, sigma: torch.Tensor, n_units: int, lr: float, weight_decay: float,
                      device="cpu") -> torch.Tensor:
    """Eq. 2's linear part A [(R,) N, N] (see `update.step_operator`), dtype of sigma."""
    q = dense_coupling(coupling, device, sigma.dtype)  # [(R,) N, N]
    return step_operator(q, sigma, lr=lr, n_units=n_units, weight_decay=weight_decay)


def sparse_coupling(coupling: Couplings, sigma: torch.Tensor, lr: float, weight_decay: float,
                    device="cpu") -> SparseOperator:
    """Eq. 2's linear part in sparse form over the R*N stacked units (see `update.sparse_operator`)."""
    couplings = replica_couplings(coupling, sigma.shape[0])
    parts, cache = [], {}
    for c in couplings:
        if id(c) not in cache:
            q = c.csr()
            cache[id(c)] = tuple(torch.as_tensor(a, device=device) for a in
                                 (q.indptr.astype(np.int64), q.indices.astype(np.int64), q.data.astype(np.float64)))
        parts.append(cache[id(c)])
    op = sparse_operator(parts, sigma.to(torch.float64), lr=lr, n_units=couplings[0].n_units,
                         weight_decay=weight_decay)
    return SparseOperator(op.diag.to(sigma.dtype), op.crow, op.col, op.weight.to(sigma.dtype))


def step_apply(coupling: Couplings, sigma: torch.Tensor, n_units: int, lr: float, weight_decay: float,
               device) -> Apply:
    """apply(theta [R, N, P], grad [R, N, P]) -> theta(t+1), Eq. 2 in its cheapest tensor form;
    built once. grad is the caller's scratch and may be overwritten."""
    form = form_of(coupling, sigma.shape[0])
    if form == DENSE or (form == COMPLETE and n_units <= DENSE_MAX_UNITS):
        op = coupling_operator(coupling, sigma, n_units, lr, weight_decay, device)  # [(R,) N, N]
        return lambda theta, grad: apply_operator(op, theta, grad, lr=lr, into_grad=True)
    if form == COMPLETE:
        alpha, c = mean_field_coefficients(coupling, sigma, lr, weight_decay)
        return lambda theta, grad: mean_field_step(theta, grad, alpha, c, lr=lr)
    op = sparse_coupling(coupling, sigma, lr, weight_decay, device)
    w = op.matrix()  # [R*N, R*N] CSR, built once
    return lambda theta, grad: sparse_step(op, theta, grad, lr=lr, w=w)


def kernel_coupling(coupling: Couplings, sigma: torch.Tensor, lr: float, weight_decay: float) -> dict:
    """The CPU kernel's Eq. 2 (`kernels.LocalGrad` keywords): mean_field=(alpha, c, lr) on the
    complete graph, else sparse=(crow, col, weight, diag, lr) over the R*N stacked units."""
    mean_field = mean_field_coefficients(coupling, sigma, lr, weight_decay)
    if mean_field is not None:
        return {"mean_field": (*mean_field, lr)}
    op = sparse_coupling(coupling, sigma.cpu(), lr, weight_decay)
    return {"sparse": (op.crow.numpy(), op.col.numpy(), op.weight.numpy(), op.diag.numpy(), lr)}

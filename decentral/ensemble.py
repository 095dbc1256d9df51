"""Batched sweep ensembles on the local engine: many sweep points advanced as one.

Replicas are laid out seed-major, R = K seeds x S points per seed (replica r = k*S + s).
Replicas of one seed draw the same training batches (streams are seeded by (seed, unit)),
so their first layer runs as one wide GEMM per unit, [B, n_in] x [n_in, S*width], instead of S
thin ones, and each batch is gathered once. Evaluation multiplies the shared test images by
the first-layer weights of all units at once. Each replica's numbers equal the same point run
alone by `decentral run` up to float rounding. When the CPU kernels run, the ensemble takes the
engine's fused step instead, on any graph (one kernel pass per unit and replica, the shared rows
read from cache): faster than the shared GEMMs on the complete graph (see README).
"""

from __future__ import annotations

from typing import Sequence

import torch

from . import backends
from .backends import Backend
from .data import Shards
from .engine import EngineState, FusedKernel, Hyper, StepLoop, Stepper, batch_source, init_theta
from .forms import Couplings, step_apply
from .model import Architecture

class SharedBatches:
    """First-layer products for replicas laid out [K, S, N] whose S replicas of seed k share
    unit n's batch x [K, N, B, I] (the contract of `decentral.model.UnitBatches`).

    The S replicas' first-layer weights of one (seed, unit) are regrouped into one wide
    matrix [S*H, I], so each batch meets them in a single GEMM instead of S thin ones.
    """

    def __init__(self, x: torch.Tensor, per_seed: int):
        self.k, self.n, self.batch_size = x.shape[:3]
        self.s = per_seed
        self.x = x.reshape(self.k * self.n, self.batch_size, -1)  # [K*N, B, I]

    def _to_wide(self, t: torch.Tensor) -> torch.Tensor:
        """[K*S*N, H, C] regrouped per (seed, unit) as [K*N, S*H, C] (a copy; inverse of _grouped)."""
        h, c = t.shape[1:]
        return t.reshape(self.k, self.s, self.n, h, c).transpose(1, 2).reshape(self.k * self.n, self.s * h, c)

    def _grouped(self, t: torch.Tensor) -> torch.Tensor:
        """[K*N, S*H, C] seen as [K, S, N, H, C] (a strided view, no copy)."""
        return t.view(self.k, self.n, self.s, -1, t.shape[-1]).transpose(1, 2)

    def forward(self, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        h = torch.bmm(self._to_wide(w), self.x.transpose(1, 2))  # [K*N, S*H, B]
        out = torch.empty(w.shape[0], w.shape[1], self.batch_size, dtype=h.dtype, device=h.device)  # [U, H, B]
        torch.add(self._grouped(h), b.view(self.k, self.s, self.n, -1, 1),
                  out=out.view(self.k, self.s, self.n, -1, self.batch_size))  # regroup and bias, one pass
        return out

    def unit_x(self) -> torch.Tensor:
        """Every replica's unit batches [K*S*N, B, I] (expanded views; for generic models)."""
        x = self.x.view(self.k, 1, self.n, self.batch_size, -1)
        return x.expand(-1, self.s, -1, -1, -1).reshape(self.k * self.s * self.n, self.batch_size, -1)

    def weight_grad(self, delta: torch.Tensor, out: torch.Tensor) -> None:
        g_wide = torch.bmm(self._to_wide(delta), self.x)  # [K*N, S*H, I]
        out.view(self.k, self.s, self.n, *out.shape[1:]).copy_(self._grouped(g_wide))  # one strided copy


def init_ensemble(arch: Architecture, seeds: Sequence[int], per_seed: int, n_units: int,
                  scheme: str, device) -> EngineState:
    """Fresh parameters [K*S, N, P]: the S replicas of seed k start from seed k's init."""
    theta = init_theta(arch, seeds, n_units, scheme)  # [K, N, P]
    k, n, p = theta.shape
    theta = theta.unsqueeze(1).expand(k, per_seed, n, p).reshape(k * per_seed, n, p)
    return EngineState(theta.contiguous().to(device), 0)


def make_ensemble_stepper(arch: Architecture, shards: Shards, coupling: Couplings, sigma: torch.Tensor,
                          seeds: Sequence[int], per_seed: int, hyper: Hyper = Hyper(),
                          backend: Backend | None = None) -> Stepper:
    """A stepper (see `engine.make_stepper`) for replicas laid out as len(seeds) x per_seed (seed-major).

    coupling: one Coupling for all replicas or one per replica [R]; sigma [R, 1, 1]; seeds [K] distinct.
    """
    n_units, n_seeds = shards.n_units, len(seeds)
    backend = arch.gradient_backend(backend or backends.select(shards.train.x.device, shards.train.x.dtype))
    if backend.fuses_coupling:  # CPU kernels: one pass per unit beats shared GEMMs
        return FusedKernel(arch, shards, [s for s in seeds for _ in range(per_seed)], coupling, sigma, hyper,
                           backend)
    apply = step_apply(coupling, sigma, n_units, hyper.lr, hyper.weight_decay, shards.train.x.device)
    batches = batch_source(shards, seeds, hyper.batch_size, hyper.batches)

    def step_fn(state: EngineState) -> EngineState:
        theta = state.theta  # [R, N, P]
        inputs, y = batches(state.step)  # UnitBatches of K*N units, [K*N, B]
        b = y.shape[-1]
        shared = SharedBatches(inputs.x.view(n_seeds, n_units, b, -1), per_seed)  # x as [K, N, B, I]
        labels = y.view(n_seeds, 1, n_units, b).expand(-1, per_seed, -1, -1).reshape(-1, b)  # [R*N, B]
        _, grad = backend.loss_and_grad(arch, theta.reshape(-1, theta.shape[-1]), shared, labels, with_loss=False)
        return EngineState(apply(theta, grad.view_as(theta)), state.step + 1)

    return StepLoop(step_fn)

"""The vectorized local engine: R replicas x N units stacked, one coupled step for all.

A jax-md style state contract: `init_state(...)` builds the state, `make_stepper(...)`
returns a stepper closed over the data and the coupling, whose `step(state) -> state` takes one
step and `advance(state, n) -> state` takes n. Replicas are independent ensembles (different
seeds, sigma or Q) advanced together; a single run is R=1. Float32 CPU steps run the local
gradient and Eq. 2 in one kernel pass per unit (`FusedKernel`); otherwise a `StepLoop` takes
the backend's `loss_and_grad` (`decentral.backends`) plus Eq. 2 in the form the run's
:class:`~decentral.topology.Coupling` names (`decentral.forms`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from . import backends
from .backends import Backend, NumbaBackend
from .config import Hyper  # noqa: F401  (the local-learning hyper-parameters a stepper takes)
from .data import Shards
from .model import Architecture, UnitBatches, init_params
from .streams import BatchIndexer, init_generator
from .forms import Couplings, kernel_coupling, step_apply


@dataclass
class EngineState:
    """Parameters of every unit of every replica, and the step count."""

    theta: torch.Tensor  # [R, N, P]
    step: int = 0


def init_theta(arch: Architecture, seeds: Sequence[int], n_units: int, scheme: str) -> torch.Tensor:
    """Initial parameters [R, N, P] (CPU float32): unit u of replica r from stream (seeds[r], u)."""
    rows = [init_params(arch, [init_generator(s, u) for u in range(n_units)], scheme) for s in seeds]
    return torch.stack(rows)


def init_state(arch, seeds, n_units, scheme="pytorch", device="cpu") -> EngineState:
    return EngineState(init_theta(arch, seeds, n_units, scheme).to(device), 0)


def sigma_tensor(sigma, n_replicas: int, device, dtype=torch.float32) -> torch.Tensor:
    """sigma per replica as [R, 1, 1], broadcastable over units and parameters."""
    values = torch.as_tensor(np.broadcast_to(np.asarray(sigma, dtype=float), (n_replicas,)).copy())
    return values.to(device=device, dtype=dtype).view(n_replicas, 1, 1)


def unit_indexer(shards: Shards, seeds: Sequence[int], batch_size: int, scheme: str, device) -> BatchIndexer:
    """Batch indices of every (seed, unit) stream, seed-major, into the shard-sorted training split."""
    keys = [(s, u) for s in seeds for u in range(shards.n_units)]
    return BatchIndexer(keys, shards.offsets, shards.sizes, batch_size, device, scheme)


def batch_source(shards: Shards, seeds: Sequence[int], batch_size: int, scheme: str = "iid"):
    """batches(step) -> (inputs, y [K*N, B]): the batch each (seed, unit) stream trains on at
    `step`, as UnitBatches over the shard-sorted training split (seed-major); nothing is copied
    until a path asks for `inputs.x` [K*N, B, n_in]."""
    indexer = unit_indexer(shards, seeds, batch_size, scheme, shards.train.x.device)
    train_x, train_y = shards.train.x, shards.train.y

    def batches(step: int) -> tuple[UnitBatches, torch.Tensor]:
        idx = indexer.indices(step)  # [K*N, B]
        return UnitBatches(train_x, idx), train_y.index_select(0, idx.view(-1)).view(idx.shape)

    return batches


class StepLoop:
    """A pure `step_fn(state) -> state` taken n times (no autograd graph is ever built)."""

    def __init__(self, step_fn: Callable[[EngineState], EngineState]):
        self.step_fn = step_fn

    def step(self, state: EngineState) -> EngineState:
        return self.step_fn(state)

    def advance(self, state: EngineState, n_steps: int, donate: bool = False) -> EngineState:
        """n_steps steps; each makes new tensors, so `donate` (see `FusedKernel.advance`) changes nothing."""
        with torch.no_grad():
            for _ in range(n_steps):
                state = self.step_fn(state)
        return state


class FusedKernel:
    """The gradient and Eq. 2 in one `kernels.LocalGrad` pass per unit (float32 CPU). On the
    complete graph each step updates one copy of the parameters in place (mean-field form); on any
    other graph each unit's new row is written to a second buffer from its neighbours' rows at t
    (sparse form) and the buffers swap, or in place where `kernel.in_place` (`backends.inplace`). The hot loop touches numpy views only."""

    def __init__(self, arch: Architecture, shards: Shards, seeds: Sequence[int], coupling: Couplings,
                 sigma: torch.Tensor, hyper: Hyper, backend: NumbaBackend = backends.NUMBA):
        train = shards.train
        form = kernel_coupling(coupling, sigma, hyper.lr, hyper.weight_decay)  # mean_field=... or sparse=...
        self.kernel = backend.coupled_kernel(arch, train.x, train.y, form)
        self.indexer = unit_indexer(shards, seeds, hyper.batch_size, hyper.batches, "cpu")
        self._free: list[torch.Tensor] = []  # [R, N, P] buffers of earlier steps that no state holds

    def step(self, state: EngineState) -> EngineState:
        return self.advance(state, 1)

    def advance(self, state: EngineState, n_steps: int, donate: bool = False) -> EngineState:
        """n_steps steps. The first reads the caller's rows and writes a buffer of the stepper's;
        the caller's state is untouched unless `donate`, where its theta may be overwritten (a
        caller that drops its state for the result, as `LocalSimulation` does with the states it
        got from here). A buffer left over at the end is kept for the next call: at N = 10,000 a
        fresh [N, P] buffer costs ~0.3 s of page faults and a copy ~0.2 s, as much as a step
        (README, "Scaling in N", session 9). Results do not depend on which buffer a step writes."""
        current = state.theta.detach()  # [R, N, P]
        owned = donate and current.is_contiguous()  # may be written
        if not current.is_contiguous():
            current, owned = current.contiguous(), True
        if n_steps <= 0:
            return EngineState(current if owned else current.clone(), state.step)
        for step in range(state.step, state.step + n_steps):
            following = current if (owned and self.kernel.in_place) else self._take(current)
            self.kernel.run_rows(_rows(current), _rows(following), self.indexer.host_indices(step))
            if owned and following is not current:
                self._free.append(current)  # rows at t, no longer read: the next step's output
            current, owned = following, True
        return EngineState(current, state.step + n_steps)

    def _take(self, like: torch.Tensor) -> torch.Tensor:
        """A buffer shaped like `like` [R, N, P]: one kept from an earlier step, else a new one."""
        while self._free:
            spare = self._free.pop()
            if spare.shape == like.shape and spare.dtype == like.dtype and spare.device == like.device:
                return spare
        return torch.empty_like(like, memory_format=torch.contiguous_format)


def _rows(theta: torch.Tensor) -> np.ndarray:
    """[R*N, P] numpy view of contiguous parameters [R, N, P]."""
    return theta.numpy().reshape(-1, theta.shape[-1])


Stepper = StepLoop | FusedKernel  # both: step(state) -> state, advance(state, n, donate=False) -> state


def make_stepper(
    arch: Architecture,
    shards: Shards,
    coupling: Couplings,
    sigma: torch.Tensor,
    seeds: Sequence[int],
    hyper: Hyper = Hyper(),
    backend: Backend | None = None,
) -> Stepper:
    """Simultaneous explicit Euler steps of Eq. 2 for all units: `step(state)` takes one,
    `advance(state, n)` takes n.

    coupling: one Coupling for every replica or one per replica [R]; sigma [R, 1, 1]; shards on
    the engine's device; seeds [R]; backend: the gradient backend (default: `backends.select`
    for the shards' device and dtype, and the arch: torch.func for a generic model). Whether the fused kernel runs (the backend) and Eq. 2's
    form (the coupling's kind, `decentral.forms`) are decided here, once.
    """
    backend = arch.gradient_backend(backend or backends.select(shards.train.x.device, shards.train.x.dtype))
    if backend.fuses_coupling:  # gradient and Eq. 2 in one pass
        return FusedKernel(arch, shards, seeds, coupling, sigma, hyper, backend)
    apply = step_apply(coupling, sigma, shards.n_units, hyper.lr, hyper.weight_decay, shards.train.x.device)
    batches = batch_source(shards, seeds, hyper.batch_size, hyper.batches)

    def step_fn(state: EngineState) -> EngineState:
        theta = state.theta  # [R, N, P]
        inputs, y = batches(state.step)  # UnitBatches of R*N units, [R*N, B]
        flat = theta.reshape(-1, theta.shape[-1])  # [R*N, P]
        _, grad = backend.loss_and_grad(arch, flat, inputs, y, with_loss=False)
        return EngineState(apply(theta, grad.view_as(theta)), state.step + 1)  # [R, N, P]

    return StepLoop(step_fn)

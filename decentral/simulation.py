"""The one simulation contract that the runner drives, and its local-engine implementation.

A simulation is R replicas of N coupled units that can be advanced and measured:

    advance(n)  -> None                     take n coupled steps (Eq. 2) in every replica
    evaluate()  -> dict[str, np.ndarray]    every observable of `runner.OBSERVABLES`, per replica [R]
    finite()    -> np.ndarray               [R] bool: every parameter of the replica is finite
    state       -> EngineState              parameters [R, N, P] and the step count
    theta       -> torch.Tensor             the parameters [R, N, P] (= state.theta)

`LocalSimulation` meets it on the vectorized engine (one run: R = 1; a sweep ensemble or the
topology-onset experiment: R replicas), `ray_backend.driver.Fleet` on a Ray cluster (R = 1).
`runner.run_phases(sim, phases)` takes any of them.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence

import numpy as np
import torch

from . import backends
from .config import RunConfig, SharedConfig
from .data import Shards
from .engine import EngineState, Stepper, init_state, make_stepper, sigma_tensor
from .ensemble import make_ensemble_stepper
from .evaluation import make_evaluator
from .observables import finite_replicas
from .problem import Problem

Evaluator = Callable[[torch.Tensor], dict]  # theta [R, N, P] -> {observable: [R]} (see `evaluation`)


class Simulation(Protocol):
    """What `runner.run_phases` drives (see the module docstring)."""

    def advance(self, n: int) -> None: ...

    def evaluate(self) -> dict[str, np.ndarray]: ...

    def finite(self) -> np.ndarray: ...

    @property
    def state(self) -> EngineState: ...

    @property
    def theta(self) -> torch.Tensor: ...


class LocalSimulation:
    """Replicas on the local engine: a stepper (the fused kernel or the operator step, chosen once
    by `engine.make_stepper`), the current state, and the evaluator of the run's evaluation
    scheme (`evaluation.make_evaluator`)."""

    def __init__(self, stepper: Stepper, state: EngineState, evaluator: Evaluator):
        self.stepper, self.state, self.evaluator = stepper, state, evaluator
        self._produced: torch.Tensor | None = None  # the theta the stepper last returned here

    @property
    def theta(self) -> torch.Tensor:
        return self.state.theta  # [R, N, P]

    def advance(self, n: int) -> None:
        """n steps. A state the stepper made here is donated to the next block (its buffer is
        reused, not copied: `engine.FusedKernel.advance`); a state given from outside is not.
        So `sim.theta` is overwritten by the next `advance`: clone it to keep it."""
        donate = self.state.theta is self._produced
        self.state = self.stepper.advance(self.state, n, donate=donate)
        self._produced = self.state.theta

    def evaluate(self) -> dict[str, np.ndarray]:
        return self.evaluator(self.state.theta)

    def finite(self) -> np.ndarray:
        return finite_replicas(self.state.theta).cpu().numpy()


def backend_of(cfg: SharedConfig, shards: Shards, arch=None) -> backends.Backend:
    """The gradient backend of cfg.kernels for the shards' device and dtype (chosen once here;
    torch.func for a generic model `arch`)."""
    return backends.select(shards.train.x.device, shards.train.x.dtype, cfg.kernels, arch)


def single_run(cfg: RunConfig, problem: Problem, device, state: EngineState | None = None) -> LocalSimulation:
    """One run (R = 1) of `problem` under `cfg` on `device`, from `state` (default: fresh parameters)."""
    shards, test = problem.on_device(device)
    stepper = make_stepper(problem.arch, shards, problem.coupling, sigma_tensor(cfg.sigma, 1, device),
                           [cfg.seed], cfg.hyper(), backend_of(cfg, shards, problem.arch))
    if state is None:
        state = init_state(problem.arch, [cfg.seed], shards.n_units, cfg.init, device)
    return LocalSimulation(stepper, state, make_evaluator(problem.arch, test, cfg.eval_scheme, cfg.eval_folds))


def ensemble(cfg: RunConfig, problem: Problem, sigmas: Sequence[float], seeds: Sequence[int], per_seed: int,
             state: EngineState, device) -> LocalSimulation:
    """R = len(seeds) x per_seed replicas (seed-major) of `problem` under `cfg`, from `state`:
    sigmas [R]; replicas of one seed share their batches."""
    shards, test = problem.on_device(device)
    stepper = make_ensemble_stepper(problem.arch, shards, problem.coupling,
                                    sigma_tensor(list(sigmas), len(sigmas), device), list(seeds), per_seed,
                                    cfg.hyper(), backend_of(cfg, shards, problem.arch))
    return LocalSimulation(stepper, state, make_evaluator(problem.arch, test, cfg.eval_scheme, cfg.eval_folds))

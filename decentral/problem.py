"""What every backend needs besides the config: data, shapes, the coupling, and the device.

Library helpers shared by the `run` job, the sweep and the experiments: `prepare` turns a
RunConfig into a `Problem` (data loaded, shards cut, the Coupling read), and
`final_cross_scores` reads A_x and L_x off the final stacked parameters as numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .config import RunConfig
from .data import Shards, Split, load_split, partition, resolve_data_root, subsample_test
from .datasets import get as get_dataset
from .errors import UserInputError
from .functional import ModuleArch
from .model import Architecture
from .models import build as build_arch
from .observables import cross_scores, finite_replicas
from .topology import Coupling, load_coupling


@dataclass(frozen=True)
class Problem:
    """Everything a backend needs besides the config: data, shapes and the coupling."""

    arch: Architecture | ModuleArch  # the MLP (fast paths) or a generic model (`decentral.models`)
    shards: Shards | None  # None when the backend's workers load their own shards
    test: Split
    coupling: Coupling  # Q of Eq. 2 (q_ij weight of edge i -> j), its provenance and spectral bound
    # shape of one input, a row of x: (C, H, W) of the dataset (MNIST (1, 28, 28), CIFAR-10
    # (3, 32, 32)); (n_in,) for data passed in whose rows do not match the configured dataset
    input_shape: tuple[int, ...] = (1, 28, 28)

    @property
    def topology(self) -> dict | None:
        """Provenance of the graph file (name, path, sha256), None for mean field."""
        return self.coupling.provenance()

    def on_device(self, device) -> tuple[Shards, Split]:
        """The training shards and the test split moved to `device`."""
        s = self.shards
        return Shards(s.train.to(device), s.offsets, s.sizes, s.classes), self.test.to(device)


def resolve_device(name: str) -> torch.device:
    """torch.device of a --device value, refusing unknown names and absent CUDA."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserInputError(f"--device: unknown device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserInputError(f"--device {name}: CUDA is not available on this machine")
    return device


def prepare(cfg: RunConfig, data: tuple[Split, Split] | None = None) -> Problem:
    """Data, partition, architecture and Q for a run (data may be passed in already loaded).

    The Ray backend's actors load their own shards on their nodes, so for it the driver reads
    only the test split (for the final A_x) and `shards` is None.
    """
    coupling = load_coupling(cfg.topology, cfg.units)
    remote_shards = cfg.backend == "ray" and data is None
    spec = get_dataset(cfg.dataset)
    given = data is not None
    if data is None:
        root = resolve_data_root(cfg.data_root)
        train = None if remote_shards else load_split(spec.name, root, True, cfg.download)
        data = (train, load_split(spec.name, root, False, cfg.download))
    train, test = data
    shards = None if remote_shards else partition(
        train, cfg.units, cfg.partition, cfg.seed, cfg.classes_per_unit, cfg.dirichlet_alpha)
    test = subsample_test(test, cfg.test_samples, seed=0)
    n_in = test.x.shape[1]
    n_out = int(test.y.max()) + 1 if given else spec.n_classes
    shape = spec.shape if n_in == spec.n_inputs else (n_in,)
    arch = build_arch(cfg.model, cfg.depth, cfg.width, shape, n_out)  # the MLP, or a generic model
    return Problem(arch, shards, test, coupling, shape)


def final_cross_scores(arch: Architecture, theta: torch.Tensor, test: Split) -> tuple[np.ndarray, np.ndarray]:
    """Cross-loss and cross-accuracy [R, N, C] of the final parameters (NaN where diverged)."""
    with torch.no_grad():
        cross_loss, cross_acc = cross_scores(arch, theta, test.to(theta.device))
    bad = ~finite_replicas(theta)
    cross_loss[bad], cross_acc[bad] = float("nan"), float("nan")
    return cross_loss.cpu().numpy(), cross_acc.cpu().numpy()

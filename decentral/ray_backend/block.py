"""Pure math of one actor's block of units: gradients on private batches, Eq. 2 updates,
checkpoints and the sufficient statistics the driver combines into observables.

Everything here is a function of tensors; the actor only holds the state and calls these.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..model import Architecture, init_params
from ..observables import test_metrics
from ..streams import BatchIndexer, init_generator
from ..update import euler_step
from .plan import coupling_sigma
from .sources import BlockData


@dataclass(frozen=True)
class BlockHyper:
    """What every block needs to take a step (shared by all actors of a run)."""

    lr: float
    weight_decay: float
    batch_size: int
    sigma: float  # Eq. 2's sigma
    n_units: int  # Eq. 2's N
    gossip_period: int  # tau
    staleness: int  # s (0: synchronous)
    seed: int
    init: str  # "pytorch" or "normal"
    batches: str = "iid"  # batch scheme (streams.batch_chunk)
    kernels: str = "auto"  # gradient backend (the config's `kernels`, see decentral.backends)


def initial_block(arch: Architecture, hyper: BlockHyper, units) -> torch.Tensor:
    """theta(0) of the hosted units [n, P]: rows of `engine.init_theta`, built only for them."""
    return init_params(arch, [init_generator(hyper.seed, u) for u in units], hyper.init)


def make_indexer(hyper: BlockHyper, units, data: BlockData) -> BatchIndexer:
    """Batch indices [n, B] per step into the block's rows, a pure function of (seed, unit, step)."""
    return BatchIndexer([(hyper.seed, u) for u in units], data.offsets, data.sizes, hyper.batch_size,
                        scheme=hyper.batches)


def payload(theta: torch.Tensor, send_rows: torch.Tensor | None) -> torch.Tensor:
    """What the block publishes at a coupling step: R @ theta [k, P] with R = send_rows [k, n],
    or theta [n, P] itself when send_rows is None (raw; see `plan`)."""
    return theta if send_rows is None else send_rows @ theta


def coupled_step(theta, grad, q_rows, sources, degree, hyper: BlockHyper) -> torch.Tensor:
    """Eq. 2 from the block's stack: theta [n, P], grad [n, P], q_rows [n, M] (plan.Block.q_rows),
    sources [M, P] = theta and the sources' payloads stacked, degree [n, 1] Q's row sums."""
    return euler_step(theta, grad, q_rows, sources, lr=hyper.lr,
                      sigma=coupling_sigma(hyper.sigma, hyper.gossip_period),
                      n_units=hyper.n_units, weight_decay=hyper.weight_decay, degree=degree)


def block_stats(arch, theta, test) -> dict:
    """Sufficient statistics of the block for the driver's observables (sums over units)."""
    with torch.no_grad():
        metrics = test_metrics(arch, theta.unsqueeze(0), test)  # means over the n units
    flat = theta.double()  # [n, P]
    n = theta.shape[0]
    return {
        "units": n,
        "loss_sum": float(metrics["loss"][0]) * n,
        "accuracy_sum": float(metrics["accuracy"][0]) * n,
        "param_sum": flat.sum(dim=0).numpy(),  # [P]
        "sq_sum": float(flat.pow(2).sum()),
        "finite": bool(torch.isfinite(theta).all()),
    }


def combine_stats(parts: list[dict], n_params: int) -> dict[str, np.ndarray]:
    """Observables per replica [1] from the blocks' sums, as `observables` defines them."""
    n = sum(p["units"] for p in parts)
    total = np.sum([p["param_sum"] for p in parts], axis=0)  # [P]
    sq = sum(p["sq_sum"] for p in parts)
    mean = total / n  # [P] centre of the units
    values = {
        "loss": sum(p["loss_sum"] for p in parts) / n,
        "accuracy": sum(p["accuracy_sum"] for p in parts) / n,
        "magnetization": total.sum() / (n * n_params),
        "mean_sq_param": sq / (n * n_params),
        "consensus_distance": max(sq / n - float(mean @ mean), 0.0),
    }
    return {k: np.array([v]) for k, v in values.items()}

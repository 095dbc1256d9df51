"""Batched sweep ensembles on the local engine: many sweep points advanced as one.

Replicas are laid out seed-major, R = K seeds x S points per seed (replica r = k*S + s).
Replicas of one seed draw the same training batches (streams are seeded by (seed, unit)),
so their first layer runs as one wide GEMM per unit, [B, n_in] x [n_in, S*width], instead of S
thin ones, and each batch is gathered once. Evaluation multiplies the shared test images by
the first-layer weights of all units at once. Each replica's numbers equal the same point run
alone by `decentral run` up to float rounding.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .data import Shards
from .engine import EngineState, Hyper, batch_source, init_theta
from .model import Architecture
from .update import euler_step

def _wide(w: torch.Tensor, k: int, s: int, n: int) -> torch.Tensor:
    """First-layer weights [K*S*N, H, I] regrouped per (seed, unit) as [K*N, S*H, I] (a copy)."""
    h, i = w.shape[1:]
    return w.reshape(k, s, n, h, i).transpose(1, 2).reshape(k * n, s * h, i)


def shared_input_grad(arch: Architecture, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Gradient [K, S, N, P] of each unit's mean cross-entropy (no weight decay).

    theta [K, S, N, P]; x [K, N, B, I] and y [K, N, B]: the batch of unit n of seed k, shared
    by the S replicas of that seed. Activations are kept transposed, [U, width, B], so every
    product is W @ h (as decentral.model.loss_and_grad).
    """
    k, s, n, p = theta.shape
    b = x.shape[2]
    layers = arch.layers(theta.reshape(-1, p))  # views, U = K*S*N units
    w1, b1 = layers[0]
    width = w1.shape[1]
    xs = x.reshape(k * n, b, -1)  # [K*N, B, I]
    h = torch.bmm(_wide(w1, k, s, n), xs.transpose(1, 2))  # [K*N, S*H, B]
    h = h.view(k, n, s, width, b).transpose(1, 2).reshape(k * s * n, width, b) + b1.unsqueeze(2)  # [U, H, B]
    inputs = [None]  # transposed inputs of layers 1.. ; layer 0's input is the shared xs
    for w, bias in layers[1:]:
        h = torch.relu(h)
        inputs.append(h)
        h = torch.baddbmm(bias.unsqueeze(2), w, h)  # [U, fan_out, B]
    labels = y.unsqueeze(1).expand(k, s, n, b).reshape(-1, 1, b)  # [U, 1, B]
    delta = torch.softmax(h, dim=1)  # dL/dlogits, transposed [U, C, B]
    delta.scatter_add_(1, labels, torch.full_like(delta[:, :1], -1.0)).mul_(1.0 / b)
    grad = torch.empty_like(theta)
    grad_layers = arch.layers(grad.view(-1, p))
    for i in range(len(layers) - 1, 0, -1):
        gw, gb = grad_layers[i]
        gw.copy_(torch.bmm(delta, inputs[i].transpose(1, 2)))
        gb.copy_(delta.sum(dim=2))
        delta = torch.bmm(layers[i][0].transpose(1, 2), delta).mul_(inputs[i] > 0)  # [U, fan_in, B]
    gw, gb = grad_layers[0]
    wide_delta = delta.view(k, s, n, width, b).transpose(1, 2).reshape(k * n, s * width, b)  # [K*N, S*H, B]
    g_wide = torch.bmm(wide_delta, xs)  # [K*N, S*H, I]
    gw.copy_(g_wide.view(k, n, s, width, -1).transpose(1, 2).reshape(gw.shape))
    gb.copy_(delta.sum(dim=2))
    return grad


def init_ensemble(arch: Architecture, seeds: Sequence[int], per_seed: int, n_units: int,
                  scheme: str, device) -> EngineState:
    """Fresh parameters [K*S, N, P]: the S replicas of seed k start from seed k's init."""
    theta = init_theta(arch, seeds, n_units, scheme)  # [K, N, P]
    k, n, p = theta.shape
    theta = theta.unsqueeze(1).expand(k, per_seed, n, p).reshape(k * per_seed, n, p)
    return EngineState(theta.contiguous().to(device), 0)


def make_ensemble_step_fn(arch: Architecture, shards: Shards, q: torch.Tensor, sigma: torch.Tensor,
                          seeds: Sequence[int], per_seed: int, hyper: Hyper = Hyper()):
    """step_fn(state) -> state for replicas laid out as len(seeds) x per_seed (seed-major).

    q [N, N] or [R, N, N]; sigma [R, 1, 1]; seeds [K] distinct.
    """
    n_units, n_seeds = shards.n_units, len(seeds)
    batches = batch_source(shards, seeds, hyper.batch_size)

    def step_fn(state: EngineState) -> EngineState:
        theta = state.theta  # [R, N, P]
        x, y = batches(state.step)  # [K*N, B, I], [K*N, B]
        x = x.view(n_seeds, n_units, *x.shape[1:])  # [K, N, B, I]
        y = y.view(n_seeds, n_units, -1)  # [K, N, B]
        grad = shared_input_grad(arch, theta.view(n_seeds, per_seed, *theta.shape[1:]), x, y)
        new = euler_step(theta, grad.view_as(theta), q, theta, lr=hyper.lr, sigma=sigma,
                         n_units=n_units, weight_decay=hyper.weight_decay)
        return EngineState(new, state.step + 1)

    return step_fn

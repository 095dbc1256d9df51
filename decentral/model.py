"""Stacked MLP units: many units' parameters in one tensor, batched forward and backward.

A unit is `Linear(784, 20)`, then (D-1) times `ReLU, Linear(20, 20)`, then `ReLU, Linear(20, 10)`;
D = 0 is `Linear(784, 10)` (softmax regression). Biases everywhere. Each unit's parameters are
one flat row in PyTorch's `nn.Module.parameters()` order (weight [out, in], then bias [out],
layer by layer), so a row loads straight into the equivalent `nn.Sequential`.

The backward pass is written by hand for cross-entropy with stacked weights: it is several
times faster than autograd on tiny layers, where per-op overhead dominates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Architecture:
    """Shape of every unit (all units share it, as Eq. 2 requires)."""

    depth: int = 1  # D, number of hidden layers; 0 is linear softmax regression
    width: int = 20  # neurons per hidden layer (paper: 20)
    n_in: int = 784  # input pixels (28 x 28 MNIST)
    n_out: int = 10  # classes

    @property
    def layer_shapes(self) -> list[tuple[int, int]]:
        """(fan_in, fan_out) of each Linear layer, input to output."""
        sizes = [self.n_in] + [self.width] * self.depth + [self.n_out]
        return list(zip(sizes[:-1], sizes[1:]))

    @property
    def n_params(self) -> int:
        return sum(fan_out * fan_in + fan_out for fan_in, fan_out in self.layer_shapes)

    def layers(self, theta: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Views (W [U, out, in], b [U, out]) into flat parameters theta [U, P]."""
        views, offset = [], 0
        for fan_in, fan_out in self.layer_shapes:
            w = theta[:, offset : offset + fan_out * fan_in].view(-1, fan_out, fan_in)
            offset += fan_out * fan_in
            b = theta[:, offset : offset + fan_out]
            offset += fan_out
            views.append((w, b))
        return views

    def to_module(self, row: torch.Tensor) -> torch.nn.Sequential:
        """The equivalent nn.Sequential holding one unit's parameters row [P] (for checks)."""
        mods: list[torch.nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(self.layer_shapes):
            if i:
                mods.append(torch.nn.ReLU())
            mods.append(torch.nn.Linear(fan_in, fan_out))
        net = torch.nn.Sequential(*mods).to(row.device, row.dtype)
        torch.nn.utils.vector_to_parameters(row.detach().clone(), net.parameters())
        return net


def forward(arch: Architecture, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Logits [U, B, C] of units theta [U, P] on inputs x [U, B, n_in] or shared x [B, n_in]."""
    h = x
    layers = arch.layers(theta)
    for i, (w, b) in enumerate(layers):
        if h.dim() == 2:  # inputs shared by all units: one wide GEMM [B, n_in] x [n_in, U*out]
            n_units, fan_out, fan_in = w.shape
            wide = h @ w.reshape(-1, fan_in).T  # [B, U*out]
            h = wide.view(len(h), n_units, fan_out).transpose(0, 1) + b.unsqueeze(1)  # [U, B, out]
        else:
            h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
        if i < len(layers) - 1:
            h = torch.relu(h)
    return h


def loss_and_grad(
    arch: Architecture, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy per unit [U] and its gradient [U, P] (no weight decay).

    theta [U, P], x [U, B, n_in], y [U, B] (class indices). Activations are kept transposed,
    [U, width, B], so every product is W @ h with W as stored (measured ~2x faster than
    h @ W^T for these thin layers).
    """
    layers = arch.layers(theta)
    inputs = [x.transpose(1, 2)]  # input of each layer, transposed: [U, fan_in, B]
    h = inputs[0]
    for i, (w, b) in enumerate(layers):
        h = torch.baddbmm(b.unsqueeze(2), w, h)  # [U, fan_out, B]
        if i < len(layers) - 1:
            h = torch.relu(h)
            inputs.append(h)
    log_p = torch.log_softmax(h, dim=1)  # [U, C, B]
    labels = y.unsqueeze(1)  # [U, 1, B]
    loss = -log_p.gather(1, labels).squeeze(1).mean(dim=1)  # [U]
    delta = log_p.exp_()
    delta.scatter_add_(1, labels, torch.full_like(delta[:, :1], -1.0))
    delta.mul_(1.0 / x.shape[1])  # dL/dlogits, transposed [U, C, B]
    grad = torch.empty_like(theta)
    grad_layers = arch.layers(grad)
    for i in range(len(layers) - 1, -1, -1):
        gw, gb = grad_layers[i]
        gw.copy_(torch.bmm(delta, inputs[i].transpose(1, 2)))  # [U, fan_out, fan_in]
        gb.copy_(delta.sum(dim=2))
        if i:
            back = torch.bmm(layers[i][0].transpose(1, 2), delta)  # [U, fan_in, B]
            delta = torch.ops.aten.threshold_backward(back, inputs[i], 0)  # ReLU mask, one pass
    return loss, grad


def per_sample_scores(
    arch: Architecture, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy [U, T] and correctness [U, T] of every unit on shared test data x [T, n_in]."""
    logits = forward(arch, theta, x)  # [U, T, C]
    loss = F.cross_entropy(logits.transpose(1, 2), y.expand(logits.shape[0], -1), reduction="none")
    correct = (logits.argmax(dim=-1) == y).to(theta.dtype)
    return loss, correct


def init_params(arch: Architecture, generators: list[torch.Generator], scheme: str) -> torch.Tensor:
    """Initial parameters [U, P], unit u drawn from its own generators[u] (CPU, float32).

    scheme "pytorch": nn.Linear's default, weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    (kaiming_uniform with a=sqrt(5)); scheme "normal": every parameter N(0, 1) (the paper's text).
    """
    rows = []
    for gen in generators:
        parts = []
        for fan_in, fan_out in arch.layer_shapes:
            for numel in (fan_out * fan_in, fan_out):
                if scheme == "normal":
                    parts.append(torch.randn(numel, generator=gen))
                else:
                    bound = 1.0 / fan_in**0.5
                    parts.append(torch.rand(numel, generator=gen) * (2 * bound) - bound)
        rows.append(torch.cat(parts))
    return torch.stack(rows)

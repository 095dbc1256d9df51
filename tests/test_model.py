"""Stacked MLP: hand-written backward against autograd, layouts, initialisation."""

from __future__ import annotations

import pytest
import torch

from decentral.model import (
    Architecture, forward, init_params, layer_views, loss_and_grad, per_sample_scores, shared_inputs,
    transposed_logits,
)
from decentral.streams import init_generator


@pytest.mark.parametrize("depth", [0, 1, 2, 3])
def test_loss_and_grad_match_autograd_of_equivalent_module(depth):
    arch = Architecture(depth=depth)
    theta = init_params(arch, [init_generator(0, u) for u in range(3)], "pytorch")
    gen = torch.Generator().manual_seed(depth)
    x, y = torch.rand(3, 16, 784, generator=gen), torch.randint(0, 10, (3, 16), generator=gen)
    loss, grad = loss_and_grad(arch, theta, x, y)
    for u in range(3):
        net = arch.to_module(theta[u])
        ref = torch.nn.functional.cross_entropy(net(x[u]), y[u])
        ref.backward()
        ref_grad = torch.cat([p.grad.flatten() for p in net.parameters()])
        assert torch.allclose(loss[u], ref, atol=1e-6)
        assert torch.allclose(grad[u], ref_grad, atol=1e-6)
        assert torch.allclose(forward(arch, theta[u : u + 1], x[u])[0], net(x[u]), atol=1e-5)
    shared = forward(arch, theta, x[0])  # [U, B, C]: every unit on the same inputs
    for u in range(3):
        assert torch.allclose(shared[u], arch.to_module(theta[u])(x[0]), atol=1e-5)


def test_parameter_counts_follow_the_paper_architecture():
    assert Architecture(depth=0).n_params == 784 * 10 + 10
    assert Architecture(depth=1).n_params == 784 * 20 + 20 + 20 * 10 + 10
    assert Architecture(depth=2).n_params == 784 * 20 + 20 + 20 * 20 + 20 + 20 * 10 + 10


def test_init_schemes():
    arch = Architecture(depth=1)
    default = init_params(arch, [init_generator(1, 0)], "pytorch")[0]
    w1, b1 = layer_views(arch, default.unsqueeze(0))[0]
    bound = 1 / 784**0.5
    assert w1.abs().max() <= bound and b1.abs().max() <= bound
    assert w1.abs().max() > 0.9 * bound
    normal = init_params(arch, [init_generator(1, 0)], "normal")[0]
    assert abs(normal.std().item() - 1.0) < 0.03 and abs(normal.mean().item()) < 0.03
    again = init_params(arch, [init_generator(1, 0)], "pytorch")[0]
    assert torch.equal(default, again)


@pytest.mark.parametrize("depth", [0, 2])
def test_shared_inputs_drop_dead_pixels_and_carry_the_bias(depth):
    arch = Architecture(depth=depth)
    theta = init_params(arch, [init_generator(3, u) for u in range(4)], "normal")
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(50, 784, generator=gen) * (torch.rand(50, 784, generator=gen) < 0.3)
    x[:, :100] = 0  # pixels that are zero in every image, as MNIST's borders
    prepared = shared_inputs(x)
    assert len(prepared.live) == int((x != 0).any(dim=0).sum()) <= 684
    assert shared_inputs(x) is prepared  # prepared once per tensor
    logits = transposed_logits(arch, theta, prepared)  # [U, C, T]
    assert torch.allclose(logits, transposed_logits(arch, theta, x), rtol=1e-5, atol=1e-4)
    for u in range(4):
        assert torch.allclose(logits[u].T, arch.to_module(theta[u])(x), rtol=1e-5, atol=1e-4)
    loss, correct = per_sample_scores(arch, theta, prepared, torch.randint(0, 10, (50,), generator=gen))
    assert loss.shape == correct.shape == (4, 50)

"""The fused CPU kernel for the layers above the first, held to the PyTorch path."""

from __future__ import annotations

import pytest
import torch

from decentral import kernels
from decentral.errors import UserInputError
from decentral.model import Architecture, init_params, loss_and_grad
from decentral.streams import init_generator

pytestmark = pytest.mark.skipif(kernels.numba is None, reason="numba not installed")


def _problem(depth: int, units: int = 3, batch: int = 7):
    arch = Architecture(depth=depth)
    theta = init_params(arch, [init_generator(0, u) for u in range(units)], "normal")
    gen = torch.Generator().manual_seed(depth)
    x = torch.rand(units, batch, 784, generator=gen)
    y = torch.randint(0, 10, (units, batch), generator=gen)
    return arch, theta, x, y


def _torch_path(monkeypatch, *args, **kwargs):
    with monkeypatch.context() as patch:
        patch.setenv(kernels.KERNELS_ENV, "torch")
        return loss_and_grad(*args, **kwargs)


@pytest.mark.parametrize("depth", [0, 1, 2, 3])
def test_fused_kernel_equals_the_pytorch_path(depth, monkeypatch):
    arch, theta, x, y = _problem(depth)
    assert kernels.usable(theta)
    loss, grad = loss_and_grad(arch, theta, x, y)
    ref_loss, ref_grad = _torch_path(monkeypatch, arch, theta, x, y)
    scale = ref_grad.abs().max()
    assert torch.allclose(loss, ref_loss, rtol=1e-5, atol=1e-5)
    assert (grad - ref_grad).abs().max() <= 1e-6 * scale
    assert loss_and_grad(arch, theta, x, y, with_loss=False)[0] is None


def test_fused_kernel_handles_a_different_width_and_batch(monkeypatch):
    arch = Architecture(depth=2, width=13)
    theta = init_params(arch, [init_generator(1, u) for u in range(2)], "pytorch")
    x, y = torch.rand(2, 33, 784), torch.randint(0, 10, (2, 33))
    _, grad = loss_and_grad(arch, theta, x, y)
    _, ref = _torch_path(monkeypatch, arch, theta, x, y)
    assert torch.allclose(grad, ref, atol=1e-6)


def test_kernel_is_skipped_where_it_does_not_apply(monkeypatch):
    _, theta, _, _ = _problem(1)
    assert not kernels.usable(theta.double())
    monkeypatch.setenv(kernels.KERNELS_ENV, "torch")
    assert not kernels.usable(theta)


def test_nan_parameters_propagate_as_in_pytorch(monkeypatch):
    arch, theta, x, y = _problem(2)
    theta[1, 784 * 20 + 20 + 5] = float("nan")  # W[0, 5] of unit 1's second layer
    loss, grad = loss_and_grad(arch, theta, x, y)
    ref_loss, ref_grad = _torch_path(monkeypatch, arch, theta, x, y)
    assert torch.equal(torch.isnan(grad), torch.isnan(ref_grad))
    assert torch.isnan(loss[1]) and torch.isnan(grad[1]).any()
    assert torch.isfinite(grad[0]).all() and torch.isfinite(grad[2]).all()


def test_unknown_kernel_choice_is_rejected(monkeypatch):
    monkeypatch.setenv(kernels.KERNELS_ENV, "fast")
    with pytest.raises(UserInputError, match="DECENTRAL_KERNELS='fast'"):
        kernels.usable(torch.zeros(1, 3))


def test_kernel_compiles_without_a_writable_cache(monkeypatch):
    real_njit = kernels.numba.njit

    def njit(*args, cache=False, **options):
        if cache:
            raise RuntimeError("cannot cache function: no locator available")
        return real_njit(*args, **options)

    monkeypatch.setattr(kernels.numba, "njit", njit)
    twice = kernels._compiled()(lambda v: 2 * v)
    assert twice(21) == 42


def test_parameters_that_require_grad_are_accepted():
    arch, theta, x, y = _problem(1)
    loss, grad = loss_and_grad(arch, theta.requires_grad_(), x, y)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()

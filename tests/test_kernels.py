"""The numba gradient backend (a unit's whole local gradient; the layers above the first), held to
the PyTorch reference, and the backend choice."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from decentral.backends import kernels, layers
from decentral import backends
from decentral.config import RunConfig
from decentral.errors import UserInputError
from decentral.model import Architecture, UnitBatches, init_params
from decentral.model import loss_and_grad as reference

loss_and_grad = backends.NUMBA.loss_and_grad
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
    return reference(*args, **kwargs)


class _OwnContract:
    """Inputs with UnitBatches' forward/weight_grad contract but not a UnitBatches (as the
    ensemble's SharedBatches): the first layer stays on PyTorch, the layers above on the kernel."""

    def __init__(self, x):
        self.plain = UnitBatches.stacked(x)

    def forward(self, w, b):
        return self.plain.forward(w, b)

    def weight_grad(self, delta, out):
        self.plain.weight_grad(delta, out)


@pytest.mark.parametrize("depth", [0, 1, 2, 3])
def test_whole_gradient_kernel_equals_the_pytorch_path(depth, monkeypatch):
    arch, theta, x, y = _problem(depth)
    assert backends.select(theta.device, theta.dtype) is backends.NUMBA
    loss, grad = loss_and_grad(arch, theta, x, y)
    ref_loss, ref_grad = _torch_path(monkeypatch, arch, theta, x, y)
    scale = ref_grad.abs().max()
    assert torch.allclose(loss, ref_loss, rtol=1e-5, atol=1e-5)
    # the first layer sums 784 products in another order than MKL; N(0, 1) weights amplify it
    assert (grad - ref_grad).abs().max() <= 1e-5 * scale
    assert loss_and_grad(arch, theta, x, y, with_loss=False)[0] is None


@pytest.mark.parametrize("depth", [0, 1, 2, 3])
def test_upper_layers_kernel_equals_the_pytorch_path(depth, monkeypatch):
    arch, theta, x, y = _problem(depth)
    loss, grad = loss_and_grad(arch, theta, _OwnContract(x), y)
    ref_loss, ref_grad = _torch_path(monkeypatch, arch, theta, x, y)
    assert torch.allclose(loss, ref_loss, rtol=1e-5, atol=1e-5)
    assert (grad - ref_grad).abs().max() <= 1e-6 * ref_grad.abs().max()


def test_batches_as_rows_of_a_source_equal_the_stacked_batches():
    arch, theta, _, _ = _problem(2, units=3, batch=6)
    gen = torch.Generator().manual_seed(5)
    source = torch.rand(40, 784, generator=gen)
    rows = torch.tensor([[3, 3, 0, 39, 7, 12], [39, 1, 2, 2, 2, 5], [20, 19, 18, 17, 16, 15]])
    y = torch.randint(0, 10, rows.shape, generator=gen)
    loss, grad = loss_and_grad(arch, theta, UnitBatches(source, rows), y)
    ref_loss, ref_grad = loss_and_grad(arch, theta, source[rows], y)
    assert torch.equal(loss, ref_loss) and torch.equal(grad, ref_grad)


def test_a_unit_gradient_does_not_depend_on_the_other_units():
    """What lets a Ray block of any size reproduce the local engine: the kernel works unit by unit."""
    arch, theta, x, y = _problem(1, units=4, batch=9)
    _, grad = loss_and_grad(arch, theta, x, y)
    for u in range(4):
        _, alone = loss_and_grad(arch, theta[u:u + 1], x[u:u + 1], y[u:u + 1])
        assert torch.equal(alone[0], grad[u])


@pytest.mark.parametrize("width,batch", [(13, 33), (20, 1), (6, 2), (21, 30)])
def test_fused_kernel_handles_other_widths_and_batches(width, batch, monkeypatch):
    """Widths and batches off the 4-row blocks take the kernels' leftover loops."""
    arch = Architecture(depth=2, width=width)
    theta = init_params(arch, [init_generator(1, u) for u in range(2)], "pytorch")
    x, y = torch.rand(2, batch, 784), torch.randint(0, 10, (2, batch))
    _, grad = loss_and_grad(arch, theta, x, y)
    _, ref = _torch_path(monkeypatch, arch, theta, x, y)
    assert torch.allclose(grad, ref, atol=1e-6)


def test_kernel_is_skipped_where_it_does_not_apply(monkeypatch):
    assert backends.select("cpu", torch.float64) is backends.TORCH
    assert backends.select("meta") is backends.TORCH  # any device but the CPU
    monkeypatch.setenv(backends.KERNELS_ENV, "torch")
    assert backends.select("cpu") is backends.TORCH


def test_the_config_chooses_the_backend_over_the_environment(monkeypatch):
    assert backends.select("cpu", choice="torch") is backends.TORCH
    monkeypatch.setenv(backends.KERNELS_ENV, "torch")  # what "auto" means here
    assert backends.select("cpu", choice="auto") is backends.TORCH
    assert backends.select("cpu", choice="numba") is backends.NUMBA  # an explicit choice wins
    with pytest.raises(UserInputError, match="--kernels numba runs float32 work on the CPU"):
        backends.select("meta", choice="numba")
    with pytest.raises(UserInputError, match="--kernels must be one of auto, numba, torch"):
        RunConfig(kernels="fast").validate()


def test_a_run_builds_the_backend_of_its_config(synthetic_data):
    from decentral.engine import FusedKernel
    from decentral.problem import prepare
    from decentral.simulation import single_run

    cfg = RunConfig(units=3, width=4, transient=0, steps=4, eval_every=2, test_samples=30)
    problem = prepare(cfg, synthetic_data)
    fused = single_run(cfg, problem, "cpu")
    loop = single_run(dataclasses.replace(cfg, kernels="torch"), problem, "cpu")
    assert isinstance(fused.stepper, FusedKernel) and not isinstance(loop.stepper, FusedKernel)
    fused.advance(3), loop.advance(3)
    assert torch.allclose(fused.theta, loop.theta, atol=1e-5)


@pytest.mark.parametrize("where", [784 * 20 + 20 + 5, 3 * 784 + 100])  # second layer's W[0, 5]; first layer's W[3, 100]
def test_nan_parameters_propagate_as_in_pytorch(where, monkeypatch):
    arch, theta, x, y = _problem(2)
    theta[1, where] = float("nan")
    loss, grad = loss_and_grad(arch, theta, x, y)
    ref_loss, ref_grad = _torch_path(monkeypatch, arch, theta, x, y)
    assert torch.equal(torch.isnan(grad), torch.isnan(ref_grad))
    assert torch.isnan(loss[1]) and torch.isnan(grad[1]).any()
    assert torch.isfinite(grad[0]).all() and torch.isfinite(grad[2]).all()


def test_unknown_kernel_choice_is_rejected(monkeypatch):
    monkeypatch.setenv(backends.KERNELS_ENV, "fast")
    with pytest.raises(UserInputError, match="DECENTRAL_KERNELS='fast'"):
        backends.select("cpu")


def test_kernel_compiles_without_a_writable_cache(monkeypatch):
    real_njit = layers.numba.njit

    def njit(*args, cache=False, **options):
        if cache:
            raise RuntimeError("cannot cache function: no locator available")
        return real_njit(*args, **options)

    monkeypatch.setattr(layers.numba, "njit", njit)
    twice = layers._compiled()(lambda v: 2 * v)
    assert twice(21) == 42


def test_parameters_that_require_grad_are_accepted():
    arch, theta, x, y = _problem(1)
    loss, grad = loss_and_grad(arch, theta.requires_grad_(), x, y)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()


def test_classes_read_from_source_labels_equal_classes_given_per_batch():
    arch, theta, _, _ = _problem(2, units=3, batch=6)
    gen = torch.Generator().manual_seed(8)
    source, labels = torch.rand(40, 784, generator=gen), torch.randint(0, 10, (40,), generator=gen)
    rows = torch.randint(0, 40, (3, 6), generator=gen)
    kernel = kernels.LocalGrad(arch.layer_shapes, source, labels)
    per_batch, from_labels = torch.empty_like(theta), torch.empty_like(theta)
    loss = kernel(theta, per_batch, rows, labels[rows])
    assert np.array_equal(kernel.run_rows(theta.numpy(), from_labels.numpy(), rows.numpy()), loss)
    assert torch.equal(per_batch, from_labels)


def test_mean_field_step_in_place_equals_a_separate_output():
    arch, theta, _, _ = _problem(1, units=4, batch=5)
    gen = torch.Generator().manual_seed(9)
    source, labels = torch.rand(30, 784, generator=gen), torch.randint(0, 10, (30,), generator=gen)
    rows = torch.randint(0, 30, (4, 5), generator=gen).numpy()
    kernel = kernels.LocalGrad(arch.layer_shapes, source, labels, ([0.9, 0.8], [0.01, 0.05], 0.005))  # 2 replicas
    separate = torch.empty_like(theta)
    kernel.run_rows(theta.numpy(), separate.numpy(), rows)
    in_place = theta.clone()
    kernel.run_rows(in_place.numpy(), in_place.numpy(), rows)
    assert torch.equal(in_place, separate)

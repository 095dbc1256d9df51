"""The hand-written reverse pass of stacked forwards (`decentral.reverse`): autograd's gradients
through the same forward (bitwise on these shapes where its rules run, to float precision where
a layer falls back to local autograd); the caller's images untouched, in-place layers included;
no autograd graph left behind; a wrong rule refused at build."""

from __future__ import annotations

import pytest
import torch

from decentral import models, reverse
from decentral.functional import ModuleArch
from decentral.model import logits_grad

nn = torch.nn


def _relu_first(input_shape, n_classes):  # an elementwise layer on the images, before any parameter
    return nn.Sequential(nn.ReLU(), nn.Conv2d(input_shape[0], 4, 3, stride=2, padding=1), nn.ReLU(), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 14 * 14, n_classes))


def _mixed(input_shape, n_classes):  # every rule and the local-autograd fallback, chained
    return nn.Sequential(nn.Conv2d(input_shape[0], 4, 3, padding="same"), nn.SiLU(),
                         nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(6 * 7 * 7, 16), nn.ReLU(), nn.Linear(16, 16, bias=False),
                         nn.Linear(16, n_classes), nn.Tanh())


def _problem(arch: ModuleArch, units: int = 4, batch: int = 6):
    gen = torch.Generator().manual_seed(3)
    theta = arch.init_params([torch.Generator().manual_seed(u) for u in range(units)], "pytorch")
    x = torch.rand(units, batch, arch.n_in, generator=gen)
    return theta, x, torch.randint(0, arch.n_out, (units, batch), generator=gen)


def _autograd_through_stacked(arch: ModuleArch, theta, x, y):
    """The gradient autograd gives through the same stacked forward (what `reverse` replaces)."""
    with torch.enable_grad():
        params = {n: p.detach().requires_grad_() for n, p in arch.unflatten(theta).items()}
        logits = arch.stacked(params, arch.unit_images(x))  # [U, B, C]
    _, dlogits = logits_grad(logits.detach().transpose(1, 2), y, True)  # [U, C, B]
    grads = torch.autograd.grad(logits, list(params.values()), dlogits.transpose(1, 2))
    return torch.cat([g.reshape(theta.shape[0], -1) for g in grads], dim=1)


@pytest.mark.parametrize("factory, shape", [(models.small_cnn, (1, 28, 28)), (models.small_cnn, (3, 32, 32)),
                                            (models.mlp_factory(2), (1, 28, 28)), (models.mlp_factory(0), (1, 28, 28)),
                                            (_relu_first, (1, 28, 28))])
def test_the_written_out_pass_gives_autograds_gradients_to_the_bit(factory, shape):
    arch = ModuleArch("net", factory, shape, 10)
    assert arch.stacked is not None
    theta, x, y = _problem(arch)
    _, grad = arch.loss_and_grad(theta, x, y)
    assert torch.equal(grad, _autograd_through_stacked(arch, theta, x, y))


def test_rules_and_the_local_autograd_fallback_chain_to_autograds_gradients():
    arch = ModuleArch("mixed", _mixed, (1, 28, 28), 10)
    assert arch.stacked is not None
    theta, x, y = _problem(arch)
    _, grad = arch.loss_and_grad(theta, x, y)
    assert torch.allclose(grad, _autograd_through_stacked(arch, theta, x, y), atol=1e-6, rtol=1e-5)


def test_the_fused_convolution_and_relu_equal_them_apart(monkeypatch):
    arch = ModuleArch("cnn", models.small_cnn, (1, 28, 28), 10)
    theta, x, y = _problem(arch)
    fused = arch.loss_and_grad(theta, x, y)
    monkeypatch.setattr(reverse, "_POINTWISE", None)
    apart = arch.loss_and_grad(theta, x, y)
    assert torch.equal(fused[0], apart[0]) and torch.equal(fused[1], apart[1])


def test_in_place_relus_leave_the_callers_images_and_parameters_alone():
    arch = ModuleArch("relu-first", _relu_first, (1, 28, 28), 10)
    theta, x, y = _problem(arch)
    x -= 0.5  # negative pixels: a ReLU on the images in place would change them
    x_before, theta_before = x.clone(), theta.clone()
    arch.loss_and_grad(theta, x, y)
    assert torch.equal(x, x_before) and torch.equal(theta, theta_before)


def test_a_wrong_rule_is_caught_at_build_and_the_model_goes_to_vmap(monkeypatch):
    def wrong_relu(layer, prefix, params, h, image, units, batch, fresh, track):
        out = torch.relu(h)
        return out, image, False, (lambda grad: (grad, {})) if track else None  # forgets the mask

    monkeypatch.setitem(reverse._RULES, nn.ReLU, wrong_relu)
    monkeypatch.setattr(reverse, "_POINTWISE", None)  # the CNN's ReLUs through the rule
    assert ModuleArch("cnn", models.small_cnn, (1, 28, 28), 10).stacked is None


def _in_place(input_shape, n_classes):  # elementwise layers built in place, before and after parameters
    return nn.Sequential(nn.LeakyReLU(0.1, inplace=True), nn.Conv2d(input_shape[0], 4, 3, stride=2, padding=1),
                         nn.SiLU(inplace=True), nn.Flatten(), nn.Linear(4 * 14 * 14, 16), nn.ReLU(inplace=True),
                         nn.Linear(16, n_classes), nn.ELU(inplace=True))


def test_layers_built_in_place_keep_the_plan_and_touch_no_input():
    arch = ModuleArch("in-place", _in_place, (1, 28, 28), 10)
    assert arch.stacked is not None
    theta, x, y = _problem(arch)
    x -= 0.5
    test_x = torch.rand(5, arch.n_in) - 0.5
    x_before, test_before = x.clone(), test_x.clone()
    _, grad = arch.loss_and_grad(theta, x, y)
    arch.per_sample_scores(theta, test_x, torch.zeros(5, dtype=torch.long))
    assert torch.equal(x, x_before) and torch.equal(test_x, test_before)
    assert torch.allclose(grad, _autograd_through_stacked(arch, theta, x, y), atol=1e-6, rtol=1e-5)
    assert arch.template[0].inplace  # the user's module is left as built


def test_no_autograd_graph_is_left_on_the_loss_or_the_gradient():
    arch = ModuleArch("mixed", _mixed, (1, 28, 28), 10)  # its last layer runs under local autograd
    theta, x, y = _problem(arch)
    with torch.enable_grad():
        loss, grad = arch.loss_and_grad(theta, x, y)
    assert not loss.requires_grad and not grad.requires_grad

"""Gradient backends behind one interface, chosen once per simulation from its device.

    torch   `model.loss_and_grad`: batched PyTorch ops and the hand-written backward (any device,
            any dtype); the reference every other backend is tested against
    numba   `kernels`: a unit's whole local gradient in one compiled CPU loop nest (float32 CPU),
            followed by Eq. 2 in the same pass (`kernels.LocalGrad`)

`select(device)` picks numba for float32 CPU work when numba imports, else torch.
`DECENTRAL_KERNELS=torch` (or `fused`, the default) overrides the choice; it is read here, once
per call of `select`, which the engine makes when it builds a stepper and a Ray actor when it
starts, never per step.
"""

from __future__ import annotations

import os

import torch

from . import kernels
from .errors import UserInputError
from .model import Architecture, UnitBatches, layer_views, loss_and_grad

KERNELS_ENV = "DECENTRAL_KERNELS"  # "torch" forces the PyTorch backend; "fused" (default) allows numba
CHOICES = ("fused", "torch")


class TorchBackend:
    """The PyTorch reference (`model.loss_and_grad`)."""

    name = "torch"
    fuses_coupling = False  # Eq. 2 runs apart from the gradient (`decentral.forms`)

    def loss_and_grad(self, arch: Architecture, theta: torch.Tensor, x, y: torch.Tensor,
                      with_loss: bool = True) -> tuple[torch.Tensor | None, torch.Tensor]:
        return loss_and_grad(arch, theta, x, y, with_loss)


class NumbaBackend:
    """The compiled CPU kernels: units on their own batches (`UnitBatches`) in one kernel pass
    each; inputs that meet the first layer elsewhere (an ensemble's shared batches) run it through
    their own `forward`/`weight_grad` and everything above it in `kernels.upper_grad`."""

    name = "numba"
    fuses_coupling = True  # Eq. 2 runs inside the gradient pass, on any graph

    def loss_and_grad(self, arch: Architecture, theta: torch.Tensor, x, y: torch.Tensor,
                      with_loss: bool = True) -> tuple[torch.Tensor | None, torch.Tensor]:
        """As `model.loss_and_grad` (same arguments and results, same math)."""
        inputs = UnitBatches.stacked(x) if isinstance(x, torch.Tensor) else x
        if theta.stride(-1) != 1:
            theta = theta.contiguous()
        grad = torch.empty_like(theta)  # [U, P]
        if isinstance(inputs, UnitBatches):  # the whole local gradient, one kernel
            loss = kernels.local_grad(arch.layer_shapes, theta, grad, inputs.source, inputs.rows, y, with_loss)
            return loss, grad
        layers, grad_layers = layer_views(arch, theta), layer_views(arch, grad)
        z0 = inputs.forward(*layers[0])  # first-layer outputs, transposed [U, width, B]
        loss, delta = kernels.upper_grad(arch.layer_shapes, theta, grad, z0, y, with_loss)
        inputs.weight_grad(delta, grad_layers[0][0])  # the first layer meets the inputs
        return loss, grad

    def coupled_kernel(self, arch: Architecture, train_x: torch.Tensor, train_y: torch.Tensor,
                       form: dict) -> kernels.LocalGrad:
        """The gradient kernel bound to a training split, followed by Eq. 2 in the form
        `forms.kernel_coupling` gives (mean_field=... or sparse=..., see `kernels.LocalGrad`)."""
        return kernels.LocalGrad(arch.layer_shapes, train_x, train_y, **form)


TORCH, NUMBA = TorchBackend(), NumbaBackend()
Backend = TorchBackend | NumbaBackend


def requested() -> str:
    """The DECENTRAL_KERNELS override ("fused", the default, or "torch"), checked."""
    mode = os.environ.get(KERNELS_ENV, "fused")
    if mode not in CHOICES:
        raise UserInputError(f"{KERNELS_ENV}={mode!r}: expected 'fused' (the default) or 'torch'")
    return mode


def select(device, dtype: torch.dtype = torch.float32) -> Backend:
    """numba for float32 CPU work where numba imports and DECENTRAL_KERNELS allows it, else torch."""
    mode = requested()
    on_cpu = torch.device(device).type == "cpu"
    if mode == "fused" and kernels.available() and on_cpu and dtype == torch.float32:
        return NUMBA
    return TORCH

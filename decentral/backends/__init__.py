"""Gradient backends behind one interface, chosen once per simulation from its config and device.

    torch.func  `functional.ModuleArch.loss_and_grad`: any nn.Module (`--model cnn`, the Python API)
    torch   `model.loss_and_grad`: batched PyTorch ops and the hand-written backward (any device,
            any dtype); the reference every other backend is tested against
    numba   `backends/kernels.py`: a unit's whole local gradient in one compiled CPU loop nest
            (float32 CPU), followed by Eq. 2 in the same pass (`kernels.LocalGrad`)

`select(device, dtype, kernels)` takes the config's `kernels` field (`--kernels`):
"torch" or "numba" force that backend (numba only for float32 CPU work where it imports);
"auto", the default, picks numba for float32 CPU work when numba imports, else torch. The
environment variable `DECENTRAL_KERNELS=torch` (or `fused`, the same as unset) is what "auto"
means on this machine: an explicit `--kernels` wins over it. `select` runs when a simulation
builds its stepper (`simulation.single_run`, `simulation.ensemble`) and when a Ray actor
starts, never per step.
"""

from __future__ import annotations

import os

import torch

from . import kernels
from ..config import KERNELS  # values of the config's `kernels` field
from ..errors import UserInputError
from ..functional import FunctionalBackend
from ..model import Architecture, UnitBatches, layer_views, loss_and_grad

KERNELS_ENV = "DECENTRAL_KERNELS"  # "torch" makes "auto" mean PyTorch; "fused" (or unset) allows numba
CHOICES = ("fused", "torch")  # values of DECENTRAL_KERNELS


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
        """As `model.loss_and_grad` of an MLP (same arguments and results, same math)."""
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
Backend = TorchBackend | NumbaBackend | FunctionalBackend


def requested(choice: str = "auto") -> str:
    """The backend asked for: "numba" or "torch" as the config's `kernels` says, or with "auto"
    the DECENTRAL_KERNELS override ("torch"; "fused", the default, leaves "auto"), checked."""
    if choice not in KERNELS:
        raise UserInputError(f"--kernels must be one of {', '.join(KERNELS)}; got {choice!r}")
    mode = os.environ.get(KERNELS_ENV, "fused")
    if mode not in CHOICES:
        raise UserInputError(f"{KERNELS_ENV}={mode!r}: expected 'fused' (the default) or 'torch'")
    return "torch" if choice == "auto" and mode == "torch" else choice


def select(device, dtype: torch.dtype = torch.float32, choice: str = "auto", arch=None) -> Backend:
    """The gradient backend for `choice`, the config's `kernels` ("auto": numba for float32 CPU
    work where numba imports and DECENTRAL_KERNELS allows it, else torch); "numba" where it
    cannot run is a UserInputError. A generic model (`arch` not an MLP `Architecture`) always
    takes torch.func (`functional`): the architecture has the last word
    (`arch.gradient_backend`)."""
    mode = requested(choice)
    fits = kernels.available() and torch.device(device).type == "cpu" and dtype == torch.float32
    if mode == "numba" and not fits:
        raise UserInputError("--kernels numba runs float32 work on the CPU with numba installed; "
                             "use --kernels auto or torch here")
    chosen = NUMBA if fits and mode != "torch" else TORCH
    stepped = chosen if arch is None else arch.gradient_backend(chosen)
    if mode == "numba" and stepped is not NUMBA:
        raise UserInputError("--kernels numba steps only the MLP (--model mlp); other models are "
                             "stepped by torch.func: use --kernels auto")
    return stepped

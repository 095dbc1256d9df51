"""Any `torch.nn.Module` as a stacked ensemble of units, stepped with torch.func.

A unit is the module a factory builds, `factory(input_shape, n_classes) -> nn.Module`; all units
share its structure. Unit u's parameters are one flat row theta[u] [P] in the module's
`named_parameters()` order (each tensor row-major), so Eq. 2 (`decentral.update`, `forms`) acts
on theta [R, N, P] exactly as for the MLP. Gradients come from one reverse pass through all
units' forward (the units are independent, so the gradient of their summed losses is every
unit's own gradient): where the module is a Sequential of layers `decentral.stacked` knows, its
batched forward and `decentral.reverse`'s pass written out layer by layer; else autograd through
`torch.func.vmap` over `functional_call`. Weight decay is not in it (Eq. 2 adds it).
Evaluation runs the same forward on shared test images.

The module runs in eval mode with its buffers fixed at the template's values (no batch-norm
statistics, no dropout), so a step is a pure function of (theta, batch). Unit u is initialized
by the factory under the global RNG seeded from its own stream (`streams.init_generator`).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

from . import reverse, stacked
from .errors import UserInputError
from .model import logits_grad

Factory = Callable[[tuple, int], torch.nn.Module]  # (input_shape, n_classes) -> a fresh module
# floats of the largest layer output of all units in one evaluation chunk (bounds activation
# memory; 8 MB keeps it in cache, README: generic models)
EVAL_FLOATS = 2**21


class ModuleArch:
    """The shape of every unit of a generic model: the template module and its flat layout."""

    def __init__(self, name: str, factory: Factory, input_shape: tuple, n_out: int):
        self.name, self.factory = name, factory
        self.input_shape, self.n_out = tuple(int(s) for s in input_shape), int(n_out)
        self.n_in = math.prod(self.input_shape)
        with torch.random.fork_rng(devices=[]):
            self.template = self._build()
        self.names = [n for n, _ in self.template.named_parameters()]
        self.shapes = [tuple(p.shape) for _, p in self.template.named_parameters()]
        self.numels = [math.prod(s) for s in self.shapes]
        self.n_params = sum(self.numels)
        self.buffers = {n: b.detach() for n, b in self.template.named_buffers()}
        self.output_floats = self._largest_output()  # floats of the largest layer output for one image
        # images channels-last across units when the model convolves them (`unit_images`)
        self.channels_last = len(self.input_shape) == 3 and any(
            isinstance(m, torch.nn.Conv2d) for m in self.template.modules())
        # all units' forward as one chain of batched ops when the module is made of layers
        # `decentral.stacked` knows and it agrees with vmap here; else None: vmap
        self.stacked = self._checked(stacked.plan(self.template, self.input_shape))

    def _build(self) -> torch.nn.Module:
        module = self.factory(self.input_shape, self.n_out)
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"model factory {self.name!r} returned {type(module).__name__}, not an nn.Module")
        return module.float().eval()

    def _largest_output(self) -> int:
        """Floats of the largest output of any layer of the template on one image."""
        sizes = [self.n_in]
        def record(_module, _inputs, out):  # tensors of a leaf's output on one image
            outs = out if isinstance(out, (tuple, list)) else (out,)
            sizes.extend(t.numel() for t in outs if torch.is_tensor(t))

        hooks = [m.register_forward_hook(record) for m in self.template.modules() if not list(m.children())]
        try:
            with torch.no_grad():
                self.template(torch.zeros(1, *self.input_shape))
        finally:
            for hook in hooks:
                hook.remove()
        return max(sizes)

    def _checked(self, forward: stacked.StackedForward | None) -> stacked.StackedForward | None:
        """`forward` when it gives vmap's logits, and its reverse pass (fused where `reverse`
        fuses, and apart) autograd's loss and gradients through vmap, for 2 units on 3 random
        inputs each, and vmap's logits on 3 shared ones; else None (vmap). Each tensor agrees
        to 1e-4 of its own size."""
        if forward is None:
            return None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            theta, flat = torch.randn(2, self.n_params) * 0.1, torch.rand(2, 3, self.n_in)
            y = torch.randint(0, self.n_out, (2, 3))
        params, x, shared = self.unflatten(theta), self.unit_images(flat), self.images(flat[0])
        try:
            with torch.no_grad():
                pairs = [(forward(params, x), vmap(self._forward)(params, x)),
                         (forward(params, shared, shared=True), vmap(self.logits, in_dims=(0, None))(theta, shared))]
            want_loss, want_grad = self._vmap_loss_and_grad(theta, x, y, True)
            for fuse in (True, False):  # the loss, and each parameter tensor's gradient apart
                loss, grad = self._taped_loss_and_grad(forward, theta, x, y, True, fuse)
                pairs += [(loss, want_loss), *zip(self.unflatten(grad).values(), self.unflatten(want_grad).values())]
            agree = all(a.shape == b.shape and bool((a - b).norm() <= 1e-4 * b.norm() + 1e-6) for a, b in pairs)
        except Exception:  # any failure of the plan (or of vmap here): vmap, as for unknown modules
            return None
        return forward if agree else None

    def gradient_backend(self, chosen) -> "FunctionalBackend":
        """torch.func steps every generic model, whatever backend `chosen` the device and
        --kernels picked for the MLP (`model.Architecture.gradient_backend`)."""
        return FUNCTIONAL

    def describe(self) -> dict:
        """What params.safetensors records of the architecture."""
        return {"kind": self.name, "input_shape": list(self.input_shape), "n_out": self.n_out,
                "n_params": self.n_params}

    def layout(self) -> list[dict]:
        """Name, shape and offset in a row of every parameter tensor, in storage order."""
        offsets = [sum(self.numels[:i]) for i in range(len(self.numels))]
        return [{"name": n, "shape": list(s), "offset": o} for n, s, o in zip(self.names, self.shapes, offsets)]

    def unflatten(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """{name: view [..., *shape]} of rows [..., P] (one unit's row, or units' rows [U, P];
        views, no copy; differentiable)."""
        parts = rows.split(self.numels, dim=-1)
        return {n: p.reshape(*p.shape[:-1], *s) for n, p, s in zip(self.names, parts, self.shapes)}

    def logits(self, row: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Logits [B, C] of one unit (row [P]) on images x [B, *input_shape]."""
        return self._forward(self.unflatten(row), x)

    def _forward(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Logits [B, C] of one unit with parameters {name: tensor} on images x [B, *input_shape]."""
        buffers = {n: b.to(x.device) for n, b in self.buffers.items()}
        return functional_call(self.template, (params, buffers), (x,))

    def images(self, flat: torch.Tensor) -> torch.Tensor:
        """Flat inputs [..., n_in] as images [..., *input_shape]."""
        return flat.reshape(*flat.shape[:-1], *self.input_shape)

    def unit_images(self, flat: torch.Tensor) -> torch.Tensor:
        """Every unit's batch [U, B, n_in] as images [U, B, *input_shape]; for a model with 2-D
        convolutions stored channels-last across units ([B, H, W, U, C] in memory), so that the
        grouped convolution vmap makes of the units' convolutions reads and writes NHWC (2x faster
        on the CPU than NCHW for the small CNN, README)."""
        x = self.images(flat)  # [U, B, ...]
        if not self.channels_last:
            return x
        return x.permute(1, 3, 4, 0, 2).contiguous().permute(3, 0, 4, 1, 2)  # [U, B, C, H, W], NHWC storage

    def loss_and_grad(self, theta: torch.Tensor, inputs, y: torch.Tensor, with_loss: bool = True
                      ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Mean cross-entropy per unit [U] and its gradient [U, P] (no weight decay), as
        `model.loss_and_grad`: theta [U, P]; inputs x [U, B, n_in] or UnitBatches/SharedBatches
        (their `unit_x()`); y [U, B].

        One forward of all units and one reverse pass from the logits' gradient, written out
        (softmax - one-hot) / B as the MLP's path writes it: units are independent, so that pass
        gives each unit's own gradient (cheaper than vmap of grad: no per-unit transforms). With
        a stacked plan the reverse pass is `decentral.reverse`'s, else autograd's through `vmap`
        over `functional_call` (parameters as views of theta either way)."""
        x = self.unit_images(inputs if isinstance(inputs, torch.Tensor) else inputs.unit_x())  # [U, B, ...]
        if self.stacked is not None:
            return self._taped_loss_and_grad(self.stacked, theta, x, y, with_loss)
        return self._vmap_loss_and_grad(theta, x, y, with_loss)

    def _taped_loss_and_grad(self, forward: stacked.StackedForward, theta, x, y, with_loss: bool,
                             fuse: bool = True):
        """loss_and_grad through the stacked forward and `reverse`'s pass (`reverse.taped`'s
        fuse); x [U, B, ...] images."""
        logits, tape = reverse.taped(forward, self.unflatten(theta.detach()), x, fuse)  # [U, B, C]
        losses, dlogits = logits_grad(logits.transpose(1, 2), y, with_loss)  # [U], [U, C, B]
        grads = tape.backward(dlogits.transpose(1, 2))
        return losses, torch.cat([grads[n].reshape(theta.shape[0], -1) for n in self.names], dim=1)  # [U, P]

    def _vmap_loss_and_grad(self, theta, x, y, with_loss: bool):
        """loss_and_grad through vmap over functional_call and autograd; x [U, B, ...] images."""
        with torch.enable_grad():  # the engine steps under no_grad
            params = {n: p.detach().requires_grad_() for n, p in self.unflatten(theta).items()}  # [U, ...]
            logits = vmap(self._forward)(params, x)  # [U, B, C]
        losses, dlogits = logits_grad(logits.detach().transpose(1, 2), y, with_loss)  # [U], [U, C, B]
        grads = torch.autograd.grad(logits, list(params.values()), dlogits.transpose(1, 2))
        return losses, torch.cat([g.reshape(theta.shape[0], -1) for g in grads], dim=1)  # [U, P]

    def per_sample_scores(self, theta: torch.Tensor, x, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy [U, T] and correctness [U, T] of units theta [U, P] on shared test images
        x [T, n_in] (or an object holding them as `.x`, e.g. model.SharedInputs)."""
        x = self.images(x if isinstance(x, torch.Tensor) else x.x)  # [T, ...]
        chunk = max(1, EVAL_FLOATS // (max(1, theta.shape[0]) * self.output_floats))
        losses, correct = [], []
        for start in range(0, x.shape[0], chunk):
            xc, yc = x[start : start + chunk], y[start : start + chunk]
            logits = self._shared_logits(theta, xc)  # [U, t, C]
            losses.append(F.cross_entropy(logits.transpose(1, 2), yc.expand(theta.shape[0], -1), reduction="none"))
            correct.append((logits.max(dim=2).indices == yc).to(theta.dtype))
        return torch.cat(losses, dim=1), torch.cat(correct, dim=1)

    def _shared_logits(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Logits [U, T, C] of units theta [U, P] on images x [T, ...] that all of them see."""
        if self.stacked is None:
            return vmap(self.logits, in_dims=(0, None))(theta, x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.stacked(self.unflatten(theta), x, shared=True)

    def init_params(self, generators: list[torch.Generator], scheme: str) -> torch.Tensor:
        """Initial parameters [U, P] (CPU float32), unit u from generators[u]: "pytorch" builds the
        module with the global RNG seeded from that stream (its layers' own default init);
        "normal" draws every parameter N(0, 1)."""
        rows = []
        for gen in generators:
            if scheme == "normal":
                rows.append(torch.randn(self.n_params, generator=gen))
                continue
            seed = int(torch.randint(0, 2**62, (1,), generator=gen))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                module = self._build()
            rows.append(self._row_of(module))
        return torch.stack(rows)

    def _row_of(self, module: torch.nn.Module) -> torch.Tensor:
        """A module's parameters as one row [P], checked against the template's layout."""
        params = list(module.named_parameters())
        if [n for n, _ in params] != self.names or [tuple(p.shape) for _, p in params] != self.shapes:
            raise UserInputError(f"model factory {self.name!r} built modules of different structures "
                                 f"(each call must return the same parameter names and shapes)")
        return torch.cat([p.detach().reshape(-1) for _, p in params]).float()


class FunctionalBackend:
    """The gradient backend of generic models (`ModuleArch.loss_and_grad`; any device)."""

    name = "torch.func"
    fuses_coupling = False  # Eq. 2 runs apart from the gradient (`decentral.forms`)

    def loss_and_grad(self, arch: ModuleArch, theta: torch.Tensor, x, y: torch.Tensor,
                      with_loss: bool = True) -> tuple[torch.Tensor | None, torch.Tensor]:
        return arch.loss_and_grad(theta, x, y, with_loss)


FUNCTIONAL = FunctionalBackend()

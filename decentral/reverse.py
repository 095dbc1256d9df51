"""All units' gradients through a stacked forward, by a reverse pass written out layer by layer.

`decentral.stacked` runs the forward of all units as one chain of batched ops. `taped` runs that
chain on units' own batches and keeps, for every layer, its step back: a closure from the
gradient of the layer's output to the gradients of its input and of its parameters.
`Tape.backward` runs the steps last layer first. No autograd graph is built for the rules below;
they call the ops autograd's own formulas call, on the same tensors, so the gradients are
autograd's to the bit (tests/test_functional.py):

    Conv2d    aten.convolution_backward on the saved input and stacked weights (the first
              layer with parameters asks for no input gradient: the images need none)
    Linear    two batched products and a sum, in the forward's transposed layouts
    ReLU      in place on the fresh output of a Conv2d or Linear (whose backward needs only
              its input), aten.threshold_backward on the way back
    Flatten   the copy back into the convolutions' layout (one copy)
    other     pools, other elementwise layers, a Conv2d with string padding: the layer's own
              forward under autograd, differentiated locally (torch.autograd.grad)

Layers before the first one with parameters need no step back. What it buys over autograd
through the same forward: 1.2x the small CNN's step on the CPU (README, bench_models): no graph
to build and walk, one ReLU buffer fewer, ~15 fewer op dispatches per step.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .stacked import StackedForward, _apply, nn

aten = torch.ops.aten
# step back of one layer: gradient of its output -> (gradient of its input (None where none is
# needed), {parameter name: gradient [U, ...]})
Step = Callable[[torch.Tensor], tuple]


class Tape:
    """The steps back of a taped forward, first layer first."""

    def __init__(self):
        self.steps: list[Step] = []

    def backward(self, dlogits: torch.Tensor) -> dict[str, torch.Tensor]:
        """{parameter name: gradient [U, ...]} from the gradient of the logits [U, B, C]."""
        grads, grad = {}, dlogits
        for step in reversed(self.steps):
            grad, own = step(grad)
            grads.update(own)
        return grads


def taped(forward: StackedForward, params: dict, x: torch.Tensor) -> tuple[torch.Tensor, Tape]:
    """Logits [U, B, C] of all units (parameters {name: [U, ...]}) on their own images
    x [U, B, ...], and the tape that gives their gradients."""
    units, batch = next(iter(params.values())).shape[0], x.shape[1]
    h, image, fresh, tape = x, False, False, Tape()
    with torch.no_grad():
        for prefix, layer in forward.layers:
            track = bool(tape.steps)  # an earlier layer has parameters: this input needs a gradient
            rule = next((r for cls, r in _RULES.items() if isinstance(layer, cls)), _by_autograd)
            h, image, fresh, step = rule(layer, prefix, params, h, image, units, batch, fresh, track)
            if step is not None:
                tape.steps.append(step)
    return h, tape


def _conv(layer, prefix, params, h, image, units, batch, fresh, track):
    """Conv2d as one grouped convolution, units folded into the channels."""
    if isinstance(layer.padding, str):
        return _by_autograd(layer, prefix, params, h, image, units, batch, fresh, track)
    h_img = h if image else h.transpose(0, 1).flatten(1, 2)  # [B, U*C, H, W]
    w, b = params[prefix + "weight"], params.get(prefix + "bias")  # [U, out, in/g, k, k], [U, out]
    weight, groups = w.flatten(0, 1), layer.groups * units  # [U*out, in/g, k, k] (a copy)
    z = F.conv2d(h_img, weight, None if b is None else b.flatten(), layer.stride, layer.padding,
                 layer.dilation, groups)  # [B, U*out, H', W'], as `stacked._conv2d`

    def step(grad):
        g_in, g_w, g_b = aten.convolution_backward(
            grad, h_img, weight, None if b is None else [b.numel()], layer.stride, layer.padding,
            layer.dilation, False, [0, 0], groups, [track, True, b is not None])
        own = {prefix + "weight": g_w.reshape(w.shape)}
        if b is not None:
            own[prefix + "bias"] = g_b.reshape(b.shape)
        if track and not image:  # back to the caller's [U, B, C, H, W]
            g_in = g_in.unflatten(1, (units, -1)).transpose(0, 1)
        return g_in, own

    return z, True, True, step


def _linear(layer, prefix, params, h, image, units, batch, fresh, track):
    """Linear as batched products on activations kept transposed ([U, B, F] views of [U, F, B])."""
    if image or h.dim() != 3:
        raise ValueError("Linear on images (not flattened)")
    w, b = params[prefix + "weight"], params.get(prefix + "bias")  # [U, out, in], [U, out]
    h_t = h.transpose(1, 2)  # [U, in, B]
    z_t = torch.bmm(w, h_t) if b is None else torch.baddbmm(b.unsqueeze(-1), w, h_t)  # [U, out, B]

    def step(grad):  # grad [U, B, out]
        d = grad.transpose(1, 2)  # [U, out, B]
        own = {prefix + "weight": torch.bmm(d, h)}  # [U, out, in]
        if b is not None:
            own[prefix + "bias"] = d.sum(2)
        return (torch.bmm(w.transpose(1, 2), d).transpose(1, 2) if track else None), own  # [U, B, in]

    return z_t.transpose(1, 2), False, True, step


def _relu(layer, prefix, params, h, image, units, batch, fresh, track):
    """ReLU, in place where its input is a fresh Conv2d or Linear output no step needs."""
    out = torch.relu_(h) if fresh else torch.relu(h)
    step = (lambda grad: (aten.threshold_backward(grad, out, 0), {})) if track else None
    return out, image, False, step


def _flatten(layer, prefix, params, h, image, units, batch, fresh, track):
    """Flatten: [B, U*C, H, W] -> [U, B, C*H*W] (one copy), or [U, B, ...] -> [U, B, F] (a view
    where the layout allows); the step back writes the gradient in the input's layout."""
    out, _ = _apply(layer, prefix, params, h, image, units, batch)
    if not track:
        return out, False, False, None
    if not image:
        return out, False, False, lambda grad: (grad.reshape(h.shape), {})

    def step(grad):  # grad [U, B, F] -> [B, U*C, H, W] in h's layout
        g_in = torch.empty_strided(h.shape, h.stride(), dtype=grad.dtype, device=grad.device)
        g_in.unflatten(1, (units, -1)).transpose(0, 1).copy_(grad.unflatten(2, (-1, *h.shape[2:])))
        return g_in, {}

    return out, False, False, step


def _by_autograd(layer, prefix, params, h, image, units, batch, fresh, track):
    """Any other layer: its stacked forward under autograd, differentiated on the way back."""
    own = {n: params[n].detach().requires_grad_() for n in (prefix + "weight", prefix + "bias") if n in params}
    if not own and not track:
        out, image = _apply(layer, prefix, params, h, image, units, batch)
        return out, image, False, None
    with torch.enable_grad():
        inp = h.detach().requires_grad_(track)
        out, image = _apply(layer, prefix, own, inp, image, units, batch)

    def step(grad):
        leaves = ([inp] if track else []) + list(own.values())
        grads = torch.autograd.grad(out, leaves, grad)
        return (grads[0] if track else None), dict(zip(own, grads[int(track):]))

    return out, image, False, step


_RULES = {nn.Conv2d: _conv, nn.Linear: _linear, nn.ReLU: _relu, nn.Flatten: _flatten}

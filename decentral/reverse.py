"""All units' gradients through a stacked forward, by a reverse pass written out layer by layer.

`decentral.stacked` runs the forward of all units as one chain of batched ops. `taped` runs that
chain on units' own batches and keeps, for every layer, its step back: a closure from the
gradient of the layer's output to the gradients of its input and of its parameters.
`Tape.backward` runs the steps last layer first. No autograd graph is built for the rules below;
they call the ops of autograd's own formulas (or, marked *, an equivalent product or fused op),
so the gradients equal autograd's through the same forward to float rounding, and bitwise on
the shapes tests/test_reverse.py tries:

    Conv2d    aten.convolution_backward on the saved input and stacked weights (the first
              layer with parameters asks for no input gradient: the images need none)
    Conv2d    * on the CPU in float32, one oneDNN convolution with a ReLU post-op
     + ReLU     (mkldnn._convolution_pointwise), aten.threshold_backward then the above
    Linear    two batched products and a sum; * the input gradient in its input's layout
    ReLU      in place on the fresh output of an unfused Conv2d or a Linear (whose backward
              needs only its input), aten.threshold_backward on the way back
    Flatten   the copy back into the convolutions' layout (one copy)
    other     pools, other elementwise layers, a Conv2d with string padding: the layer's own
              forward under autograd, differentiated locally (torch.autograd.grad)

Layers before the first one with parameters need no step back. What it buys over autograd
through the same forward: 1.13-1.16x the small CNN's step on the CPU, 2x the generic MLP's
(README, bench_models): no graph to build and walk, one ReLU buffer fewer, fewer op dispatches.
`functional.ModuleArch` checks a plan's pass, fused and unfused, against vmap's once.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .stacked import StackedForward, _apply, nn

aten = torch.ops.aten
# oneDNN's convolution with a fused elementwise op (what torch.compile's CPU lowering calls), or None
_POINTWISE = getattr(getattr(torch.ops, "mkldnn", None), "_convolution_pointwise", None) \
    if torch.backends.mkldnn.is_available() else None
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
        with torch.no_grad():  # local autograd steps differentiate their own graphs all the same
            for step in reversed(self.steps):
                grad, own = step(grad)
                grads.update(own)
        return grads


def taped(forward: StackedForward, params: dict, x: torch.Tensor, fuse: bool = True) -> tuple[torch.Tensor, Tape]:
    """Logits [U, B, C] of all units (parameters {name: [U, ...]}) on their own images
    x [U, B, ...], and the tape that gives their gradients; fuse=False runs every Conv2d and
    ReLU apart (`_fuses_relu`)."""
    units, batch = next(iter(params.values())).shape[0], x.shape[1]
    h, image, fresh, tape, layers, i = x, False, False, Tape(), forward.layers, 0
    with torch.no_grad():
        while i < len(layers):
            prefix, layer = layers[i]
            track = bool(tape.steps)  # an earlier layer has parameters: this input needs a gradient
            fused = fuse and i + 1 < len(layers) and _fuses_relu(layer, layers[i + 1][1], h)
            if fused:
                h, image, fresh, step = _conv(layer, prefix, params, h, image, units, batch, fresh, track, relu=True)
            else:
                rule = next((r for cls, r in _RULES.items() if isinstance(layer, cls)), _by_autograd)
                h, image, fresh, step = rule(layer, prefix, params, h, image, units, batch, fresh, track)
            if step is not None:
                tape.steps.append(step)
            i += 2 if fused else 1
    return h.detach(), tape  # detached: a last layer under local autograd leaves no graph on it


def _fuses_relu(layer, after, h: torch.Tensor) -> bool:
    """Whether Conv2d `layer` and the ReLU `after` it run as one oneDNN convolution with a ReLU
    post-op (CPU float32; 1.15x conv2's forward alone, README)."""
    return (isinstance(layer, nn.Conv2d) and isinstance(after, nn.ReLU) and not isinstance(layer.padding, str)
            and h.device.type == "cpu" and h.dtype == torch.float32 and _POINTWISE is not None)


def _conv(layer, prefix, params, h, image, units, batch, fresh, track, relu: bool = False):
    """Conv2d as one grouped convolution, units folded into the channels; with relu=True, the
    ReLU after it too (`_fuses_relu`)."""
    if isinstance(layer.padding, str):
        return _by_autograd(layer, prefix, params, h, image, units, batch, fresh, track)
    h_img = h if image else h.transpose(0, 1).flatten(1, 2)  # [B, U*C, H, W]
    w, b = params[prefix + "weight"], params.get(prefix + "bias")  # [U, out, in/g, k, k], [U, out]
    weight, groups = w.flatten(0, 1), layer.groups * units  # [U*out, in/g, k, k] (a copy)
    bias = None if b is None else b.flatten()  # [U*out]
    if relu:
        z = _POINTWISE(h_img, weight, bias, layer.padding, layer.stride, layer.dilation, groups, "relu", [], "")
    else:  # as `stacked._conv2d`
        z = F.conv2d(h_img, weight, bias, layer.stride, layer.padding, layer.dilation, groups)  # [B, U*out, H', W']

    def step(grad):
        if relu:
            grad = aten.threshold_backward(grad, z, 0)
        g_in, g_w, g_b = aten.convolution_backward(
            grad, h_img, weight, None if b is None else [b.numel()], layer.stride, layer.padding,
            layer.dilation, False, [0, 0], groups, [track, True, b is not None])
        own = {prefix + "weight": g_w.reshape(w.shape)}
        if b is not None:
            own[prefix + "bias"] = g_b.reshape(b.shape)
        if track and not image:  # back to the caller's [U, B, C, H, W]
            g_in = g_in.unflatten(1, (units, -1)).transpose(0, 1)
        return g_in, own

    return z, True, not relu, step


def _linear(layer, prefix, params, h, image, units, batch, fresh, track):
    """Linear as batched products on activations kept transposed ([U, B, F] views of [U, F, B])."""
    z, _ = _apply(layer, prefix, params, h, image, units, batch)  # [U, B, out] view of [U, out, B]
    w, b = params[prefix + "weight"], params.get(prefix + "bias")  # [U, out, in], [U, out]

    def step(grad):  # grad [U, B, out]
        d = grad.transpose(1, 2)  # [U, out, B]
        own = {prefix + "weight": torch.bmm(d, h)}  # [U, out, in]
        if b is not None:
            own[prefix + "bias"] = d.sum(2)
        if not track:
            return None, own
        if h.is_contiguous():  # rows [U, B, in] (a Flatten's copy): the gradient in rows too
            return torch.bmm(d.transpose(1, 2), w), own  # [U, B, in]
        return torch.bmm(w.transpose(1, 2), d).transpose(1, 2), own  # [U, B, in] view of [U, in, B]

    return z, False, True, step


def _relu(layer, prefix, params, h, image, units, batch, fresh, track):
    """ReLU, in place where its input is a fresh Conv2d or Linear output no step needs."""
    out = torch.relu_(h) if fresh else torch.relu(h)
    step = (lambda grad: (aten.threshold_backward(grad, out, 0), {})) if track else None
    return out, image, False, step


def _flatten(layer, prefix, params, h, image, units, batch, fresh, track):
    """Flatten: [B, U*C, H, W] -> [U, B, C*H*W] (one copy), or [U, B, ...] -> [U, B, F] (a view
    where the layout allows); the step back writes the gradient in the input's layout."""
    by_unit = h.unflatten(1, (units, -1)).transpose(0, 1) if image else h  # [U, B, ...]
    out = by_unit.reshape(units, batch, -1)  # as `stacked._apply`, without its autograd Function
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

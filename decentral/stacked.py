"""All units' forward pass as one chain of batched tensor ops, for modules built of known layers.

`functional.ModuleArch` steps any `nn.Module` with `vmap` over `functional_call`. When the
module is an `nn.Sequential` (nested ones included) of the layers below, `plan` returns the
same forward written directly on the units' stacked parameters, which runs faster on the CPU
(README, bench_models): no per-op vmap dispatch, one op per layer, and layouts chosen so that
a reverse pass gives the weights' gradients in their storage order. Training differentiates it
with `decentral.reverse` (the reverse pass written out); it stays differentiable by autograd.

    Linear          torch.baddbmm on the stacked weights [U, out, in]; activations kept
                    transposed in memory ([U, B, F] views of [U, F, B]), as the MLP's fast path
                    keeps them, so each weight's gradient is one plain batched product
    Conv2d          one grouped convolution, units folded into the channels ([B, U*C, H, W],
                    channels-last in memory), bias included
    pools           MaxPool2d, AvgPool2d and their adaptive forms: per channel, units folded in
    elementwise     ReLU, LeakyReLU, ELU, GELU, SiLU, Tanh, Sigmoid, Identity, Dropout (eval)
    Flatten         default dims

Anything else returns no plan, and the vmap path runs: another layer, a subclass with a forward
of its own (a Sequential's included), a module with hooks, a Linear on images, a non-zero
padding mode. `ModuleArch` also checks a plan against the vmap path once, on random
parameters and inputs, before it uses it.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

nn = torch.nn
ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Identity, nn.Dropout)
POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
KNOWN = (nn.Conv2d, nn.Linear, nn.Flatten, *POOLS, *ELEMENTWISE)


def leaves(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]] | None:
    """(parameter-name prefix, layer) of a Sequential's layers in order, nested Sequentials
    opened; None when the module is not a plain Sequential."""
    if not (isinstance(module, nn.Sequential) and _plain(module, nn.Sequential)):
        return None
    out = []
    for name, child in module.named_children():
        inner = leaves(child, f"{prefix}{name}.")
        out += inner if inner is not None else [(f"{prefix}{name}.", child)]
    return out


def plan(module: nn.Module, input_shape: tuple) -> "StackedForward | None":
    """The stacked forward of `module` on inputs of `input_shape`, or None when some layer is
    not one this module knows (the caller then uses vmap)."""
    layers = leaves(module)
    if layers is None or not all(_known(layer) for _, layer in layers):
        return None
    if not any(isinstance(layer, (nn.Conv2d, nn.Linear)) for _, layer in layers):
        return None  # no parameters: nothing to stack
    if any(isinstance(layer, nn.Conv2d) for _, layer in layers) and len(input_shape) != 3:
        return None
    return StackedForward([(prefix, _out_of_place(layer)) for prefix, layer in layers])


def _out_of_place(layer: nn.Module) -> nn.Module:
    """layer, or for an elementwise layer built with inplace=True a copy that is not in place:
    the stacked forward's input may be the caller's images (or shared test images), and a
    reverse pass needs the inputs it saved."""
    if not getattr(layer, "inplace", False):
        return layer
    layer = copy.copy(layer)
    layer.inplace = False
    return layer


class StackedForward:
    """forward(params {name: [U, ...]}, x [U, B, ...]) -> logits [U, B, C] of all units at once;
    with shared=True, x [B, ...] is one batch every unit sees (evaluation), and the first Conv2d
    or Linear runs as one plain convolution or GEMM of all units' weights on it. Picklable: it
    holds the template's parameter-free layer objects and their parameters' names."""

    def __init__(self, layers: list[tuple[str, nn.Module]]):
        self.layers = layers

    def __call__(self, params: dict, x: torch.Tensor, shared: bool = False) -> torch.Tensor:
        units = next(iter(params.values())).shape[0]
        batch = x.shape[0] if shared else x.shape[1]
        h, image = x, False  # image: h is [B, U*C, H, W]; else [U, B, ...] ([B, ...] while shared)
        for prefix, layer in self.layers:
            if shared and isinstance(layer, (nn.Conv2d, nn.Linear)):
                (h, image, applied), shared = _shared(layer, prefix, params, h, units), False
                if applied:
                    continue
            if not shared:
                h, image = _apply(layer, prefix, params, h, image, units, batch)
            elif isinstance(layer, nn.Flatten):
                h = h.reshape(batch, -1)
            else:
                h = layer(h)  # elementwise or a pool on the shared images
        if image or shared or h.dim() != 3:
            raise ValueError("the stacked forward did not end in logits [U, B, C]")
        return h


def _shared(layer, prefix: str, params: dict, h: torch.Tensor, units: int):
    """The first Conv2d or Linear on the shared batch h [B, ...]: (its output, image layout,
    applied); a grouped convolution gets the batch repeated per unit instead (not applied yet)."""
    w, b = params[prefix + "weight"], params.get(prefix + "bias")  # [U, out, ...], [U, out]
    if isinstance(layer, nn.Conv2d):
        if layer.groups != 1:
            return h.expand(units, *h.shape), False, False  # [U, B, C, H, W]
        return _conv2d(layer, w, b, h, groups=1), True, True  # [B, U*out, H', W']
    if h.dim() != 2:
        raise ValueError("Linear on images (not flattened)")
    flat_w = w.flatten(0, 1)  # [U*out, in]
    z = flat_w @ h.T if b is None else torch.addmm(b.reshape(-1, 1), flat_w, h.T)  # [U*out, B]
    return z.view(units, -1, h.shape[0]).transpose(1, 2), False, True  # [U, B, out]


def _conv2d(layer: nn.Conv2d, w: torch.Tensor, b: torch.Tensor | None, h: torch.Tensor, groups: int) -> torch.Tensor:
    """layer's convolution with all units' weights w [U, out, in/g, k, k] and biases b [U, out]
    stacked as one layer's output channels [U*out], on h [B, channels, H, W]."""
    return F.conv2d(h, w.flatten(0, 1), None if b is None else b.flatten(), layer.stride, layer.padding,
                    layer.dilation, groups)


def _plain(module: nn.Module, cls: type) -> bool:
    """Whether module runs cls's own forward (no subclass's) and no hooks: the stacked forward
    writes that forward out, and would skip anything else."""
    hooks = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return type(module).forward is cls.forward and not any(getattr(module, h, None) for h in hooks)


def _known(layer: nn.Module) -> bool:
    if not any(isinstance(layer, cls) and _plain(layer, cls) for cls in KNOWN):
        return False
    if isinstance(layer, nn.Conv2d):
        return layer.padding_mode == "zeros"
    if isinstance(layer, nn.Flatten):
        return layer.start_dim == 1 and layer.end_dim == -1
    return True


def _apply(layer, prefix: str, params: dict, h: torch.Tensor, image: bool, units: int, batch: int):
    """One layer on the stacked activations h: (output, whether it is in image layout)."""
    if isinstance(layer, nn.Conv2d):
        if not image:  # [U, B, C, H, W] -> [B, U*C, H, W] (a view when h is stored [B, H, W, U, C])
            h = h.transpose(0, 1).flatten(1, 2)
        w, b = params[prefix + "weight"], params.get(prefix + "bias")  # [U, out, in/g, k, k], [U, out]
        return _conv2d(layer, w, b, h, groups=layer.groups * units), True
    if isinstance(layer, nn.Linear):
        if image or h.dim() != 3:
            raise ValueError("Linear on images (not flattened)")
        w, b = params[prefix + "weight"], params.get(prefix + "bias")  # [U, out, in], [U, out]
        if b is None:
            return torch.bmm(w, h.transpose(1, 2)).transpose(1, 2), False
        return torch.baddbmm(b.unsqueeze(-1), w, h.transpose(1, 2)).transpose(1, 2), False  # [U, B, out]
    if isinstance(layer, nn.Flatten):
        if image:  # [B, U*C, H, W] -> [U, B, C*H*W] (one copy); its gradient comes back in h's layout
            by_unit = _GradInLayout.apply(h).unflatten(1, (units, -1)).transpose(0, 1)  # [U, B, C, H, W]
            return by_unit.reshape(units, batch, -1), False
        return h.reshape(units, batch, -1), False
    if isinstance(layer, POOLS) and not image:
        raise ValueError("pooling on flat activations")
    return layer(h), image  # pools per channel, elementwise layers in any layout


class _GradInLayout(torch.autograd.Function):
    """Identity whose backward copies the gradient into its input's memory layout: the ops
    behind it (ReLU's backward, the convolutions') run several times slower on mixed layouts
    than one copy costs."""

    @staticmethod
    def forward(ctx, h: torch.Tensor) -> torch.Tensor:
        ctx.shape, ctx.strides = h.shape, h.stride()
        return h.view_as(h)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        if grad.stride() == ctx.strides:
            return grad
        return torch.empty_strided(ctx.shape, ctx.strides, dtype=grad.dtype, device=grad.device).copy_(grad)

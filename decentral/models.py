"""The unit models a run can name (`--model`, config key `model`), and the architecture of each.

    mlp   the paper's MLP (`model.Architecture`: depth D, width 20), on its fast paths: the
          numba kernels on the CPU, the hand-written batched backward on PyTorch
    cnn   a small CNN (`small_cnn`), stepped generically with torch.func (`functional`)

The Python API registers any other `nn.Module` factory by name (`register`), and runs, sweeps
and the Ray backend then take that name like a built-in one (in this process; Ray actors and
sweep tasks unpickle the architecture with its factory).

This module is the one registry of model names: the config validates `model` against `NAMES`,
a read-only live view of it. So that the config can do so cheaply, torch and the architectures
are imported only when a model is built.
"""

from __future__ import annotations

import math
import types
from typing import Callable

from .errors import UserInputError

MLP = "mlp"  # the paper's MLP: no factory, `model.Architecture`
_FACTORIES: dict[str, Callable | None] = {MLP: None}  # name -> factory(input_shape, n_classes) -> nn.Module
NAMES = types.MappingProxyType(_FACTORIES)  # every model name this process knows (read only, live)


def small_cnn(input_shape: tuple, n_classes: int):
    """Two 3x3 convolutions of stride 2 (8 and 16 channels, ReLU each) and a linear head:
    9,098 parameters on 1x28x28 images, 11,642 on 3x32x32 (strides instead of pooling: a
    quarter of the arithmetic and the activations of stride-1 convolutions with 2x2 pooling)."""
    import torch

    channels, height, width = input_shape
    return torch.nn.Sequential(
        torch.nn.Conv2d(channels, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(16 * (-(-height // 4)) * (-(-width // 4)), n_classes))


def mlp_factory(depth: int, width: int = 20) -> Callable:
    """The paper's MLP as a plain nn.Sequential factory (what the fast paths compute; for tests
    and benchmarks of the generic path). Same parameter order as `model.Architecture`."""

    def build(input_shape: tuple, n_classes: int):
        import torch

        sizes = [math.prod(input_shape)] + [width] * depth + [n_classes]
        layers: list[torch.nn.Module] = [torch.nn.Flatten()]
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers += [torch.nn.ReLU()] if i else []
            layers.append(torch.nn.Linear(fan_in, fan_out))
        return torch.nn.Sequential(*layers)

    return build


def register(name: str, factory: Callable) -> str:
    """Make `factory(input_shape, n_classes) -> nn.Module` the model `name` (in this process);
    returns the name. "mlp" stays the paper's fast MLP."""
    if not callable(factory):
        raise UserInputError(f"model {name!r}: the factory must be callable, got {type(factory).__name__}")
    if name == MLP or not name or not isinstance(name, str):
        raise UserInputError(f"model name {name!r} is reserved or empty; choose another")
    _FACTORIES[name] = factory
    return name


def build(name: str, depth: int, width: int, input_shape: tuple, n_out: int):
    """The architecture of model `name` on inputs of `input_shape` with n_out classes: a
    `model.Architecture` for the MLP, a `functional.ModuleArch` for any other."""
    from .functional import ModuleArch
    from .model import Architecture

    if name == MLP:
        return Architecture(depth=depth, width=width, n_in=math.prod(input_shape), n_out=n_out)
    if name not in _FACTORIES:
        raise UserInputError(f"--model must be one of {', '.join(NAMES)}; got {name!r}")
    try:
        return ModuleArch(name, _FACTORIES[name], input_shape, n_out)
    except (TypeError, ValueError, RuntimeError) as err:
        raise UserInputError(f"--model {name}: its factory fails on inputs {tuple(input_shape)}: "
                             f"{str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__}"
                             ) from None


register("cnn", small_cnn)
BUILTIN = tuple(NAMES)  # the models every process knows (a Ray task cannot know a registered one)

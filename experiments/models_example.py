"""Units beyond the paper's MLP: the built-in CNN (`--model cnn`) and your own nn.Module.

    python experiments/models_example.py [WORKDIR]

Any `torch.nn.Module` factory `factory(input_shape, n_classes)` becomes a unit: every unit is
one module built by it (its own initialization stream), all units are stepped together with
torch.func and coupled by Eq. 2 on their flattened parameters. Tiny sizes (seconds; MNIST from
$DECENTRAL_DATA or the default data folder); tests/test_functional.py runs it.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

import decentral

TINY = dict(units=10, transient=60, steps=40, eval_every=20, test_samples=500, lr=0.02, threads=1)


def tiny_convnet(input_shape, n_classes):
    """One 3x3 convolution with 4 channels, global average pooling, a linear head (90 parameters
    on 1x28x28 images)."""
    channels = input_shape[0]
    return torch.nn.Sequential(torch.nn.Conv2d(channels, 4, 3, stride=2), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, n_classes))


def main(workdir: Path) -> None:
    # the built-in CNN: the same as `decentral run --model cnn`
    cnn = decentral.run(TINY, model="cnn", sigma=50.0, out=str(workdir / "cnn"))
    print(f"cnn: {cnn.summary['n_params']} parameters per unit, <A> = {cnn.summary['accuracy']:.3f}")

    # your own module: pass the factory; it is registered under its function name
    mine = decentral.run(TINY, model=tiny_convnet, sigma=50.0)
    print(f"{mine.config.model}: {mine.summary['n_params']} parameters per unit, "
          f"<A> = {mine.summary['accuracy']:.3f}")

    # unit 0's final parameters back in a module of its own
    net = tiny_convnet((1, 28, 28), 10)
    torch.nn.utils.vector_to_parameters(mine.params[0], net.parameters())
    print("unit 0 as an nn.Module:", type(net).__name__, sum(p.numel() for p in net.parameters()), "parameters")

    # a sweep over sigma with the registered name
    table = decentral.api.sweep(TINY, model="tiny_convnet", sigma=[0.0, 50.0], depth=[1],
                            out=str(workdir / "sweep"), quiet=True)
    print(table[["sigma", "accuracy", "consensus_distance"]].to_string(index=False))


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tmp))

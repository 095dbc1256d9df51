"""The Python API in a few lines: a run, its saved parameters continued, a sweep, the theory.

    python experiments/api_example.py [WORKDIR]

Tiny sizes (seconds on a laptop; MNIST from $DECENTRAL_DATA or the default data folder);
tests/test_api.py runs it. Outputs go to WORKDIR (default: a temporary folder).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import decentral
from decentral import api

TINY = dict(units=4, depth=1, transient=20, steps=40, eval_every=20, test_samples=200, threads=1)


def main(workdir: Path) -> None:
    # one point: a RunResult with pandas objects
    result = api.run(TINY, sigma=30.0, seed=1, out=str(workdir / "run"))
    print(f"<A> = {result.summary['accuracy']:.3f}, {len(result.timeseries)} evaluations")
    print(result.timeseries[["step", "loss", "accuracy"]].to_string(index=False))
    print("A_x (units x classes):\n", result.cross_accuracy.round(2).to_string())

    # the saved run read back, then continued from its parameters for 40 more steps
    saved = api.load(workdir / "run")
    assert saved.params is not None and saved.params.shape[0] == TINY["units"]
    more = api.run(TINY, sigma=30.0, seed=1, transient=0, init_from=str(workdir / "run"))
    print(f"continued from step {more.summary['start_step']}: <A> = {more.summary['accuracy']:.3f}")

    # bad input raises, with the CLI's message
    try:
        api.run(TINY, units=0)
    except decentral.UserInputError as err:
        print(f"refused: {err}")

    # a sweep: its results table; load() gives A_x of every point
    table = api.sweep(TINY, sigma=[0.0, 30.0], depth=[0, 1], out=str(workdir / "sweep"), quiet=True)
    print(table[["depth", "sigma", "accuracy", "magnetization"]].to_string(index=False))
    print("sweep A_x:", api.load(workdir / "sweep").cross_accuracy.shape)

    # the effective theory on a small supra-network
    curves = api.theory(depths=[0, 1], sigmas=[0.0, 1.0, 10.0], n_units=20, realizations=5,
                              protocols=["non-adiabatic"], workers=1)
    print(curves[["depth", "sigma", "m_abs_mean", "loss_mean"]].to_string(index=False))


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))

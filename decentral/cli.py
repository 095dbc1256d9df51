"""The one command-line entry point: `decentral run|sweep|theory|topology|plot`.

Each subcommand has an `_add_<name>` function here that declares its flags (most of them made
from a config dataclass by `config.add_flags`), and a module `decentral.jobs.<name>` whose
`main(args)` turns the parsed flags into a typed config and calls the library. Bad input raises
:class:`UserInputError`, which `main` prints as one line before exiting with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from .errors import Interrupted, UserInputError


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line and exit code 2 (argparse's own convention)."""

    def error(self, message: str) -> None:  # noqa: D401
        raise UserInputError(message)


def _job(name: str):
    """The handler of subcommand `name`: `decentral.jobs.<name>.main`, imported only when that
    command runs (parsing flags and --help load no job)."""

    def handler(args) -> int:
        return importlib.import_module(f"{__package__}.jobs.{name}").main(args)

    return handler


# --- run --------------------------------------------------------------------------------


def _add_run(sub) -> None:
    from .config import RunConfig, add_flags

    p = sub.add_parser("run", help="train N coupled units on an image dataset, MNIST by default "
                       "(local engine or Ray)",
                       description="Train N class-private units coupled by Eq. 2 and measure them.")
    p.add_argument("--config", metavar="FILE", help="TOML or YAML file whose keys match the flags")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--resume", metavar="DIR", help="continue the run whose checkpoint is in DIR "
                   "(its --out; flags that change its config are refused)")
    add_flags(p, RunConfig)
    p.set_defaults(handler=_job("run"))


# --- theory -----------------------------------------------------------------------------


def _add_theory(sub) -> None:
    from .config import add_flags
    from .theory.config import TheoryFlags

    p = sub.add_parser("theory", help="integrate the effective theory (Eq. 4-8)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    add_flags(p, TheoryFlags)
    p.set_defaults(handler=_job("theory"))


# --- topology ---------------------------------------------------------------------------


def _add_topology(sub) -> None:
    from .config import TopologyFlags, add_flags
    from .topology import FORMATS, KINDS

    p = sub.add_parser(
        "topology",
        help="inspect or generate supra-network graph files",
        description="Inspect a topology file (`decentral topology FILE [--json] [--lr LR]`) or "
        "make one (`decentral topology generate KIND --nodes N [--seed S] [--out FILE]`). "
        f"Formats by extension: {', '.join(FORMATS)}. A file named 'generate': write ./generate.",
    )
    p.add_argument("target", metavar="FILE|generate", help="topology file to inspect, or 'generate'")
    p.add_argument("kind", nargs="?", metavar="KIND", help=f"generate: one of {', '.join(KINDS)}")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    add_flags(p, TopologyFlags)
    p.set_defaults(handler=_job("topology"))


# --- sweep and plot ---------------------------------------------------------------------


def _add_sweep(sub) -> None:
    from .config import add_flags
    from .sweep.config import SweepConfig

    p = sub.add_parser("sweep", help="sweep sigma x depth x seed (Fig. 3)",
                       description="Sweep sigma x depth x seed (x topology) under the non-adiabatic "
                       "and/or adiabatic protocol; points run batched as stacked ensembles. Results: "
                       "DIR/results.parquet (one row per point), DIR/cross_accuracy.npz, DIR/analysis.json.")
    p.add_argument("--config", metavar="FILE", help="TOML or YAML file whose keys match the flags "
                   "(e.g. experiments/fig3.toml)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    add_flags(p, SweepConfig)
    p.set_defaults(handler=_job("sweep"))


def _add_plot(sub) -> None:
    p = sub.add_parser("plot", help="draw Fig. 3 style figures from a sweep directory",
                       description="Fig. 3 a-g style PNGs from a sweep directory: <m>, <L>, <A> vs "
                       "sigma/N, S_x against its rank-one fit, A_x heatmaps.")
    p.add_argument("sweep_dir", metavar="DIR", help="a `decentral sweep --out` directory")
    p.add_argument("--out", metavar="DIR", help="where to write the PNGs (default: DIR/figures, "
                   "replaced on every plot)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out DIR")
    p.add_argument("--theory", action="store_true", help="overlay the effective theory's curves")
    p.add_argument("--heatmap-depth", type=int, default=1, help="depth of the A_x panels (default 1)")
    p.add_argument("--heatmap-sigma-over-n", metavar="S0,S1,S2", default="0,3,30",
                   help="sigma/N of the A_x panels, nearest sweep values (default 0,3,30: Fig. 3e-g's "
                   "values, read as sigma/N like the figure's axis)")
    p.add_argument("--heatmap-sigmas", metavar="S0,S1,S2", default=None,
                   help="the A_x panels at Eq. 2's sigma instead (nearest sweep values)")
    p.set_defaults(handler=_job("plot"))


# --- entry point ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="decentral", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in (_add_run, _add_sweep, _add_theory, _add_topology, _add_plot):
        add(sub)
    return parser


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"decentral: warning: {message}\n"


def _handle(args) -> int:
    """Run a command's handler with its compute threads limited: --threads where the command
    has it, else all available cores (run, sweep and theory narrow it further themselves)."""
    from .jobs.common import stdout_to_stderr
    from .threads import limited, per_worker

    with limited(per_worker(getattr(args, "threads", None))), stdout_to_stderr(bool(getattr(args, "json", False))):
        return int(args.handler(args) or 0)


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = _format_warning
    try:
        args = build_parser().parse_args(argv)
        return _handle(args)
    except UserInputError as err:
        print(f"decentral: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `decentral ... --json | head`
        sys.stderr.close()
        return 0
    except Interrupted as stop:  # Ctrl-C with a checkpoint saved
        print(f"decentral: {stop}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("decentral: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""The one command-line entry point: `decentral run|sweep|theory|topology|plot`.

Each subcommand has an `_add_<name>` function that declares its flags and a `_cmd_<name>`
handler that turns the parsed flags into a typed config and calls the library. Bad input
raises :class:`UserInputError`, which `main` prints as one line before exiting with code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from .errors import UserInputError


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line and exit code 2 (argparse's own convention)."""

    def error(self, message: str) -> None:  # noqa: D401
        raise UserInputError(message)


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=None, default=_json_default))


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)


# --- run --------------------------------------------------------------------------------


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="train N coupled units on MNIST (local engine or Ray)")
    p.set_defaults(handler=_cmd_run)


def _cmd_run(args) -> int:
    raise UserInputError("run: not implemented yet")


# --- theory -----------------------------------------------------------------------------


def _add_theory(sub) -> None:
    p = sub.add_parser("theory", help="integrate the effective theory (Eq. 4-8)")
    p.set_defaults(handler=_cmd_theory)


def _cmd_theory(args) -> int:
    raise UserInputError("theory: not implemented yet")


# --- topology ---------------------------------------------------------------------------


def _add_topology(sub) -> None:
    p = sub.add_parser("topology", help="inspect or generate supra-network graph files")
    p.set_defaults(handler=_cmd_topology)


def _cmd_topology(args) -> int:
    raise UserInputError("topology: not implemented yet")


# --- sweep and plot ---------------------------------------------------------------------


def _add_sweep(sub) -> None:
    p = sub.add_parser("sweep", help="sweep sigma x depth x seed (Fig. 3)")
    p.set_defaults(handler=_cmd_sweep)


def _cmd_sweep(args) -> int:
    raise UserInputError("sweep: not implemented yet")


def _add_plot(sub) -> None:
    p = sub.add_parser("plot", help="draw Fig. 3 style figures from a sweep directory")
    p.set_defaults(handler=_cmd_plot)


def _cmd_plot(args) -> int:
    raise UserInputError("plot: not implemented yet")


# --- entry point ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="decentral", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in (_add_run, _add_sweep, _add_theory, _add_topology, _add_plot):
        add(sub)
    return parser


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"decentral: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = _format_warning
    try:
        args = build_parser().parse_args(argv)
        return int(args.handler(args) or 0)
    except UserInputError as err:
        print(f"decentral: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("decentral: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

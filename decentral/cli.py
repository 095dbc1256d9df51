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
    from .config import RunConfig, add_flags

    p = sub.add_parser("run", help="train N coupled units on MNIST (local engine or Ray)",
                       description="Train N class-private units coupled by Eq. 2 and measure them.")
    p.add_argument("--config", metavar="FILE", help="TOML or YAML file whose keys match the flags")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    add_flags(p, RunConfig)
    p.set_defaults(handler=_cmd_run)


def _config_from_args(cls, args, skip=("config", "json", "handler", "command")):
    """Defaults < --config FILE < explicit flags, validated."""
    from .config import merge, read_config_file

    file_values = read_config_file(args.config) if getattr(args, "config", None) else {}
    flags = {k: v for k, v in vars(args).items() if k not in skip}
    return merge(cls, file_values, flags)


def _cmd_run(args) -> int:
    from .config import RunConfig
    from .run import execute, json_safe

    summary = execute(_config_from_args(RunConfig, args))
    if args.json:
        print(json.dumps(json_safe(summary)))
    else:
        _print_run_summary(summary)
    return 0


def _print_run_summary(s: dict) -> None:
    print(f"{s['backend']} run: N={s['units']} D={s['depth']} sigma={s['sigma']:g} "
          f"(sigma/N={s['sigma_over_n']:g}) seed={s['seed']}")
    print(f"  <A> = {s['accuracy']:.4f}   <L> = {s['loss']:.4f}   <m> = {s['magnetization']:.3e}"
          f"   consensus = {s['consensus_distance']:.3e}")
    print(f"  {s['steps_per_second']:.0f} coupled steps/s, {s['message']}")


# --- theory -----------------------------------------------------------------------------


def _add_theory(sub) -> None:
    p = sub.add_parser("theory", help="integrate the effective theory (Eq. 4-8)")
    p.set_defaults(handler=_cmd_theory)


def _cmd_theory(args) -> int:
    raise UserInputError("theory: not implemented yet")


# --- topology ---------------------------------------------------------------------------


def _add_topology(sub) -> None:
    from .graphs import FORMATS, KINDS

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
    p.add_argument("--lr", type=float, default=0.005, help="learning rate for sigma_max (default 0.005)")
    p.add_argument("--nodes", type=int, help="generate: number of nodes; inspect: require exactly N")
    g = p.add_argument_group("generate options")
    g.add_argument("--seed", type=int, help="random seed (default 0)")
    g.add_argument("--out", help="output file, format by extension (default: edge list on stdout)")
    g.add_argument("--degree", type=float, help="mean degree of random kinds (default 4)")
    g.add_argument("--rewire", type=float, help="small_world rewiring probability (default 0.1)")
    g.add_argument("--periodic", action="store_true", default=None, help="lattice: wrap around (torus)")
    g.add_argument("--weights", metavar="LOW,HIGH", help="i.i.d. uniform edge weights in [LOW, HIGH]")
    p.set_defaults(handler=_cmd_topology)



def _cmd_topology(args) -> int:
    from . import topology

    if not args.lr > 0:
        raise UserInputError(f"--lr must be > 0, got {args.lr:g}")
    options = {k: getattr(args, k) for k in ("seed", "out", "degree", "rewire", "periodic", "weights")}
    if args.target != "generate":
        extra = [f"--{k}" for k, v in options.items() if v is not None] + ([args.kind] if args.kind else [])
        if extra:
            raise UserInputError(f"topology: {' '.join(extra)} only go with 'generate'")
        info = topology.inspect_file(args.target, args.lr, args.nodes)
    else:
        if args.kind is None or args.nodes is None:
            raise UserInputError("topology generate needs KIND and --nodes N")
        kw = {k: options[k] for k in ("degree", "rewire", "periodic") if options[k] is not None}
        if options["weights"] is not None:
            try:
                kw["weights"] = tuple(float(x) for x in options["weights"].split(","))
            except ValueError:
                kw["weights"] = ()
            if len(kw["weights"]) != 2 or not 0 <= kw["weights"][0] <= kw["weights"][1]:
                raise UserInputError(f"--weights must be LOW,HIGH with 0 <= LOW <= HIGH, got {options['weights']}")
        seed = 0 if options["seed"] is None else options["seed"]
        graph = topology.generate(args.kind, args.nodes, seed, **kw)
        if options["out"] is None and not args.json:
            sys.stdout.write(topology.format_edgelist(graph))
            return 0
        if options["out"] is not None:
            topology.write_graph(graph, options["out"])
            info = topology.inspect_file(options["out"], args.lr)
        else:
            info = topology.describe(graph, args.lr)
    if args.json:
        _print_json({k: None if isinstance(v, float) and abs(v) == float("inf") else v for k, v in info.items()})
    else:
        print(topology.format_report(info))
    return 0


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
    except BrokenPipeError:  # e.g. `decentral ... --json | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("decentral: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

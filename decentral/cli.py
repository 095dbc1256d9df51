"""The one command-line entry point: `decentral run|sweep|theory|topology|plot`.

Each subcommand has an `_add_<name>` function that declares its flags and a `_cmd_<name>`
handler that turns the parsed flags into a typed config and calls the library. Bad input
raises :class:`UserInputError`, which `main` prints as one line before exiting with code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import warnings

from .errors import Interrupted, UserInputError


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line and exit code 2 (argparse's own convention)."""

    def error(self, message: str) -> None:  # noqa: D401
        raise UserInputError(message)


_STDOUT_FD: dict = {}  # with --json: the real stdout's saved descriptor, while fd 1 goes to stderr


@contextlib.contextmanager
def _stdout_to_stderr(enabled: bool):
    """With --json, stdout carries exactly one JSON object: until it is printed, anything
    written to descriptor 1 (Ray's log lines from its C++ core and Python threads included)
    goes to stderr."""
    if not enabled:
        yield
        return
    try:
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(2, 1)
    except (OSError, ValueError):  # no real descriptor 1: nothing to guard
        yield
        return
    _STDOUT_FD["saved"] = saved
    try:
        yield
    finally:
        _restore_stdout()


def _restore_stdout() -> None:
    saved = _STDOUT_FD.pop("saved", None)
    if saved is not None:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _print_json(obj) -> None:
    _restore_stdout()
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
    p.add_argument("--resume", metavar="DIR", help="continue the run whose checkpoint is in DIR "
                   "(its --out; flags that change its config are refused)")
    add_flags(p, RunConfig)
    p.set_defaults(handler=_cmd_run)


def _config_from_args(cls, args, skip=("config", "json", "handler", "command", "resume")):
    """Defaults < --config FILE < explicit flags, validated."""
    from .config import merge, read_config_file

    file_values = read_config_file(args.config) if getattr(args, "config", None) else {}
    flags = {k: v for k, v in vars(args).items() if k not in skip}
    return merge(cls, file_values, flags)


def _cmd_run(args) -> int:
    from .config import RunConfig
    from .run import execute
    from .storage import json_safe

    if args.resume:
        summary = _resume_run(args)
    else:
        summary = execute(_config_from_args(RunConfig, args))
    if args.json:
        _print_json(json_safe(summary))
    else:
        _print_run_summary(summary)
    return 0


def _resume_run(args) -> dict:
    """Continue the run in args.resume: its stored config, refused if a flag changes it."""
    from . import checkpoint
    from .config import read_config_file
    from .run import execute

    if getattr(args, "out", args.resume) != args.resume:
        raise UserInputError("--resume DIR continues the run in DIR: leave out --out")
    ckpt = checkpoint.load(args.resume)
    given = read_config_file(args.config) if args.config else {}
    given.update({k: v for k, v in vars(args).items()
                  if k not in ("config", "json", "handler", "command", "resume")})
    return execute(checkpoint.resumed_config(args.resume, ckpt.config, given), resume=ckpt)


def _print_run_summary(s: dict) -> None:
    print(f"{s['backend']} run: N={s['units']} D={s['depth']} sigma={s['sigma']:g} "
          f"(sigma/N={s['sigma_over_n']:g}) seed={s['seed']}")
    print(f"  <A> = {s['accuracy']:.4f}   <L> = {s['loss']:.4f}   <m> = {s['magnetization']:.3e}"
          f"   consensus = {s['consensus_distance']:.3e}")
    if s["backend"] == "ray":
        print(f"  Ray: {s['actors']} actors x {s['units_per_actor']} units, {s['actor_cpus']:g} CPU each "
              f"({s['actor_layout']}), {s['nodes']} node(s), {s['restarts']} restarts")
    print(f"  {s['steps_per_second']:.0f} coupled steps/s, {s['message']}")


# --- theory -----------------------------------------------------------------------------


def _add_theory(sub) -> None:
    from .config import add_flags
    from .theory.config import TheoryFlags

    p = sub.add_parser("theory", help="integrate the effective theory (Eq. 4-8)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    add_flags(p, TheoryFlags)
    p.set_defaults(handler=_cmd_theory)


def _float_list(text: str, name: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserInputError(f"--{name} must be a comma-separated list of numbers, got {text!r}")
    if not values:
        raise UserInputError(f"--{name} is an empty list")
    return values


def _theory_config(args):
    from .theory import TheoryConfig, load_delta, paper_sigma_grid

    depths = _float_list(args.depth, "depth")
    if any(d != int(d) for d in depths):
        raise UserInputError(f"--depth must list integers, got {args.depth!r}")
    sigmas = _float_list(args.sigma, "sigma") if args.sigma is not None else paper_sigma_grid()
    protocols = ("non-adiabatic", "adiabatic") if args.protocol == "both" else (args.protocol,)
    delta = load_delta(args.delta) if args.delta else None
    n_units = args.units if args.units is not None else None
    if n_units is None:
        n_units = delta.shape[-1] if delta is not None else 200
    coupling = None
    if args.topology:
        from .topology import Coupling

        coupling = Coupling.from_file(args.topology, n_units)
    for name in ("workers", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UserInputError(f"--{name} must be >= 1, got {getattr(args, name)}")
    return TheoryConfig(depths=tuple(int(d) for d in depths), sigmas=sigmas, protocols=protocols,
                        n_units=n_units, realizations=args.realizations, gamma=args.gamma,
                        delta_std=args.delta_std, delta=delta, t_end=args.t_end,
                        q=coupling and coupling.matrix(),  # CSR for a large sparse graph
                        seed=args.seed, workers=args.workers, threads=args.threads), coupling


def _topology_provenance(coupling) -> dict | None:
    """Name and sha256 of the graph file (`Coupling.provenance`), recorded with the table."""
    record = coupling and coupling.provenance()
    return {"name": record["name"], "sha256": record["sha256"]} if record else None


LEARNING_PATH_MAX_UNITS = 2000  # S_x (Eq. 8) is N x N with a full SVD: skipped above this N


def _cmd_theory(args) -> int:
    from pathlib import Path

    from .theory.config import TheoryFlags

    from .theory import learning_path, run_theory
    from .theory.protocols import disorder

    from .storage import atomic_dir, atomic_write_bytes, check_output_dir, check_output_file

    if getattr(args, "sigma", None) is not None and getattr(args, "sigma_grid", None) is not None:
        raise UserInputError("theory: give one of --sigma LIST and --sigma-grid NAME")
    json_out, args = args.json, _config_from_args(TheoryFlags, args)
    if args.out and Path(args.out).suffix not in (".csv", ".parquet"):
        raise UserInputError(f"--out must end in .csv or .parquet, got {args.out!r}")
    if args.out:  # output paths are checked before any work starts
        check_output_file(args.out, args.overwrite)
    if args.plot:
        check_output_dir(args.plot, args.overwrite, flag="--plot")
    cfg, coupling = _theory_config(args)
    table = run_theory(cfg)
    topology = _topology_provenance(coupling)
    if topology:
        table["topology"], table["topology_sha256"] = topology["name"], topology["sha256"]
    if args.out:
        data = (table.to_csv(index=False).encode() if args.out.endswith(".csv")
                else table.to_parquet(index=False))
        atomic_write_bytes(args.out, data)
    delta = disorder(cfg, 0)[0]  # one quenched sequence for Eq. 8 and S_x
    path = learning_path(delta, cfg.sigmas, cfg.gamma) if cfg.n_units <= LEARNING_PATH_MAX_UNITS else None
    plots = []
    if args.plot:
        from .theory.plots import plot_fig2

        with atomic_dir(args.plot, args.overwrite) as tmp:
            plots = [str(Path(args.plot) / p.name) for p in plot_fig2(table, delta, cfg.gamma, tmp)]
    if json_out:
        _print_json({"rows": table.to_dict(orient="records"), "learning_path": path and path.summary(),
                     "topology": topology, "out": args.out, "plots": plots})
        return 0
    print(table[["depth", "protocol", "sigma", "m_abs_mean", "m_abs_std", "loss_mean",
                 "loss_std", "accuracy_eff"]].to_string(index=False, float_format="%.4g"))
    if path is None:
        print(f"S_x not computed above {LEARNING_PATH_MAX_UNITS:,} units (an N x N matrix and its SVD)")
    else:
        print(f"S_x rank-one fit explains {path.explained:.4f} of ||S_x||^2 "
              f"(off-diagonal R^2 {path.r2_offdiagonal:.4f})")
    for item in ([args.out] if args.out else []) + plots:
        print(f"wrote {item}")
    return 0


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
    p.set_defaults(handler=_cmd_topology)


def _cmd_topology(args) -> int:
    from . import topology
    from .config import TopologyFlags

    flags = _config_from_args(TopologyFlags, args, skip=("config", "json", "handler", "command", "target", "kind"))
    if not flags.lr > 0:
        raise UserInputError(f"--lr must be > 0, got {flags.lr:g}")
    options = {k: getattr(flags, k) for k in ("seed", "out", "degree", "rewire", "periodic", "weights", "overwrite")}
    if args.target != "generate":
        extra = [f"--{k}" for k, v in options.items() if v is not None] + ([args.kind] if args.kind else [])
        if extra:
            raise UserInputError(f"topology: {' '.join(extra)} only go with 'generate'")
        info = topology.inspect_file(args.target, flags.lr, flags.nodes)
    else:
        if args.kind is None or flags.nodes is None:
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
        if options["out"] is not None:
            from .storage import check_output_file

            check_output_file(options["out"], bool(options["overwrite"]))  # before any work
            topology.file_format(options["out"])  # a known extension
        graph = topology.generate(args.kind, flags.nodes, seed, **kw)
        if options["out"] is None and not args.json:
            sys.stdout.write(topology.format_edgelist(graph))
            return 0
        if options["out"] is not None:
            _write_graph_atomic(graph, options["out"])
            info = topology.inspect_file(options["out"], flags.lr)
        else:
            info = topology.describe(graph, flags.lr)
    if args.json:
        _print_json({k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in info.items()})
    else:
        print(topology.format_report(info))
    return 0


def _write_graph_atomic(graph, path: str) -> None:
    """The graph file written as a hidden sibling, then renamed into place."""
    import os
    import tempfile
    from pathlib import Path

    from . import topology

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=target.suffix)
    os.close(fd)
    try:
        topology.write_graph(graph, tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    p.set_defaults(handler=_cmd_sweep)


def _cmd_sweep(args) -> int:
    from .config import read_config_file
    from .sweep import run_sweep
    from .sweep.config import load_sweep_config

    file_values = read_config_file(args.config) if args.config else {}
    flags = {k: v for k, v in vars(args).items() if k not in ("config", "json", "handler", "command")}
    report = run_sweep(load_sweep_config(file_values, flags))
    info = {"out": str(report.out), "planned_points": report.planned_points,
            "finished_points": report.finished_points, "rows": report.rows, "seconds": round(report.seconds, 1)}
    if args.json:
        _print_json(info)
    else:
        print(f"sweep: {report.finished_points} of {report.planned_points} pending points finished in "
              f"{report.seconds:.0f} s; {report.rows} rows in {report.out}/results.parquet")
    return 0


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
    p.set_defaults(handler=_cmd_plot)


def _cmd_plot(args) -> int:
    from .sweep.grids import parse_list
    from .sweep.plots import plot_sweep

    sigmas = None if args.heatmap_sigmas is None else parse_list(args.heatmap_sigmas, float, "--heatmap-sigmas")
    over_n = parse_list(args.heatmap_sigma_over_n, float, "--heatmap-sigma-over-n")
    paths = plot_sweep(args.sweep_dir, args.out, theory=args.theory, heatmap_depth=args.heatmap_depth,
                       heatmap_sigmas=sigmas, overwrite=args.overwrite, heatmap_sigma_over_n=over_n)
    for path in paths:
        print(path)
    return 0


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
    from .threads import limited, per_worker

    with limited(per_worker(getattr(args, "threads", None))), _stdout_to_stderr(bool(getattr(args, "json", False))):
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

"""`decentral topology`: inspect a graph file, or generate one.

`main(args)`: `decentral topology FILE` reports the graph (nodes, edges, connectivity, spectrum
and the stable sigma at --lr, `topology.inspect_file`); `decentral topology generate KIND
--nodes N` writes a standard graph (`topology.generate`) to --out (atomically) or stdout.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from pathlib import Path

from .. import topology
from ..config import TopologyFlags
from ..errors import UserInputError
from ..storage import check_output_file
from .common import COMMAND_KEYS, config_from_args, print_json

GENERATE_OPTIONS = ("seed", "out", "degree", "rewire", "periodic", "weights", "overwrite")


def main(args) -> int:
    """`decentral topology FILE|generate [KIND]`: the report, printed or as JSON."""
    flags = config_from_args(TopologyFlags, args, skip=COMMAND_KEYS + ("target", "kind"))
    if not flags.lr > 0:
        raise UserInputError(f"--lr must be > 0, got {flags.lr:g}")
    options = {k: getattr(flags, k) for k in GENERATE_OPTIONS}
    if args.target != "generate":
        extra = [f"--{k}" for k, v in options.items() if v is not None] + ([args.kind] if args.kind else [])
        if extra:
            raise UserInputError(f"topology: {' '.join(extra)} only go with 'generate'")
        info = topology.inspect_file(args.target, flags.lr, flags.nodes)
    else:
        info = _generate(args, flags, options)
        if info is None:  # the edge list went to stdout
            return 0
    if args.json:
        print_json({k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in info.items()})
    else:
        print(topology.format_report(info))
    return 0


def _generate(args, flags: TopologyFlags, options: dict) -> dict | None:
    """Generate the graph; write it to --out (its report returned) or, without --json, to stdout
    (None returned)."""
    if args.kind is None or flags.nodes is None:
        raise UserInputError("topology generate needs KIND and --nodes N")
    kw = {k: options[k] for k in ("degree", "rewire", "periodic") if options[k] is not None}
    if options["weights"] is not None:
        kw["weights"] = _weights(options["weights"])
    seed = 0 if options["seed"] is None else options["seed"]
    if options["out"] is not None:
        check_output_file(options["out"], bool(options["overwrite"]))  # before any work
        topology.file_format(options["out"])  # a known extension
    graph = topology.generate(args.kind, flags.nodes, seed, **kw)
    if options["out"] is None and not args.json:
        sys.stdout.write(topology.format_edgelist(graph))
        return None
    if options["out"] is not None:
        write_graph_atomic(graph, options["out"])
        return topology.inspect_file(options["out"], flags.lr)
    return topology.describe(graph, flags.lr)


def _weights(text: str) -> tuple[float, float]:
    try:
        weights = tuple(float(x) for x in text.split(","))
    except ValueError:
        weights = ()
    if len(weights) != 2 or not 0 <= weights[0] <= weights[1]:
        raise UserInputError(f"--weights must be LOW,HIGH with 0 <= LOW <= HIGH, got {text}")
    return weights


def write_graph_atomic(graph, path: str) -> None:
    """The graph file written as a hidden sibling, then renamed into place."""
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

"""`decentral theory`: the effective theory (Eq. 4-8) over depths x protocols x couplings.

`main(args)` turns the flags (`theory.config.TheoryFlags`, declared like `run`'s) into a
TheoryConfig, integrates it (`theory.run_theory`), records the topology file's provenance
(`Coupling.provenance`) with the table, and writes the table (--out), the Fig. 2 plots (--plot)
and a printed or JSON report. The math is in `decentral.theory`.
"""

from __future__ import annotations

from pathlib import Path

from ..config import parse_list
from ..errors import UserInputError
from ..storage import atomic_dir, atomic_write_bytes, check_output_dir, check_output_file
from ..theory import TheoryConfig, learning_path, load_delta, paper_sigma_grid, run_theory
from ..theory.config import TheoryFlags
from ..theory.protocols import disorder
from ..topology import Coupling
from .common import config_from_args, print_json

LEARNING_PATH_MAX_UNITS = 2000  # S_x (Eq. 8) is N x N with a full SVD: skipped above this N


def main(args) -> int:
    """`decentral theory`: flags to a TheoryConfig, integrated; table, plots and report written."""
    if getattr(args, "sigma", None) is not None and getattr(args, "sigma_grid", None) is not None:
        raise UserInputError("theory: give one of --sigma LIST and --sigma-grid NAME")
    json_out, flags = args.json, config_from_args(TheoryFlags, args)
    _check_outputs(flags)
    cfg, coupling = theory_config(flags)
    table = run_theory(cfg)
    topology = topology_provenance(coupling)
    if topology:
        table["topology"], table["topology_sha256"] = topology["name"], topology["sha256"]
    if flags.out:
        data = (table.to_csv(index=False).encode() if flags.out.endswith(".csv")
                else table.to_parquet(index=False))
        atomic_write_bytes(flags.out, data)
    delta = disorder(cfg, 0)[0]  # one quenched sequence for Eq. 8 and S_x
    path = learning_path(delta, cfg.sigmas, cfg.gamma) if cfg.n_units <= LEARNING_PATH_MAX_UNITS else None
    plots = _plot(flags, table, delta, cfg.gamma)
    if json_out:
        print_json({"rows": table.to_dict(orient="records"), "learning_path": path and path.summary(),
                    "topology": topology, "out": flags.out, "plots": plots})
    else:
        _print_report(table, path, [flags.out] if flags.out else [], plots)
    return 0


def _check_outputs(flags: TheoryFlags) -> None:
    """Output paths are checked before any work starts."""
    if flags.out and Path(flags.out).suffix not in (".csv", ".parquet"):
        raise UserInputError(f"--out must end in .csv or .parquet, got {flags.out!r}")
    if flags.out:
        check_output_file(flags.out, flags.overwrite)
    if flags.plot:
        check_output_dir(flags.plot, flags.overwrite, flag="--plot")


def theory_config(flags: TheoryFlags) -> tuple[TheoryConfig, Coupling | None]:
    """The TheoryConfig of the flags, and the Coupling of --topology (None: mean field)."""
    depths = parse_list(flags.depth, float, "--depth")
    if any(d != int(d) for d in depths):
        raise UserInputError(f"--depth must list integers, got {flags.depth!r}")
    sigmas = parse_list(flags.sigma, float, "--sigma") if flags.sigma is not None else paper_sigma_grid()
    protocols = ("non-adiabatic", "adiabatic") if flags.protocol == "both" else (flags.protocol,)
    delta = load_delta(flags.delta) if flags.delta else None
    n_units = flags.units
    if n_units is None:
        n_units = delta.shape[-1] if delta is not None else TheoryConfig.n_units
    coupling = Coupling.from_file(flags.topology, n_units) if flags.topology else None
    for name in ("workers", "threads"):
        if getattr(flags, name) is not None and getattr(flags, name) < 1:
            raise UserInputError(f"--{name} must be >= 1, got {getattr(flags, name)}")
    cfg = TheoryConfig(depths=tuple(int(d) for d in depths), sigmas=sigmas, protocols=protocols,
                       n_units=n_units, realizations=flags.realizations, gamma=flags.gamma,
                       delta_std=flags.delta_std, delta=delta, t_end=flags.t_end,
                       q=coupling and coupling.matrix(),  # CSR for a large sparse graph
                       seed=flags.seed, workers=flags.workers, threads=flags.threads)
    return cfg, coupling


def topology_provenance(coupling: Coupling | None) -> dict | None:
    """Name and sha256 of the graph file (`Coupling.provenance`), recorded with the table."""
    record = coupling and coupling.provenance()
    return {"name": record["name"], "sha256": record["sha256"]} if record else None


def _plot(flags: TheoryFlags, table, delta, gamma: float) -> list[str]:
    """The Fig. 2 PNGs of --plot (written as one folder, atomically); their paths."""
    if not flags.plot:
        return []
    from ..theory.plots import plot_fig2

    with atomic_dir(flags.plot, flags.overwrite) as tmp:
        return [str(Path(flags.plot) / p.name) for p in plot_fig2(table, delta, gamma, tmp)]


def _print_report(table, path, written: list[str], plots: list[str]) -> None:
    print(table[["depth", "protocol", "sigma", "m_abs_mean", "m_abs_std", "loss_mean",
                 "loss_std", "accuracy_eff"]].to_string(index=False, float_format="%.4g"))
    if path is None:
        print(f"S_x not computed above {LEARNING_PATH_MAX_UNITS:,} units (an N x N matrix and its SVD)")
    else:
        print(f"S_x rank-one fit explains {path.explained:.4f} of ||S_x||^2 "
              f"(off-diagonal R^2 {path.r2_offdiagonal:.4f})")
    for item in written + plots:
        print(f"wrote {item}")

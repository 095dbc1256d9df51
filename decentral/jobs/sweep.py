"""`decentral sweep`: the paper's Fig. 3 as a resumable sweep.

`main(args)` turns the flags and the config file into a SweepConfig (`sweep.config`, lists
given as TOML/YAML arrays or comma-separated) and calls the library, `run_sweep`
(`decentral.sweep.job`: open the directory, plan the groups, run them, rebuild the results).
"""

from __future__ import annotations

from ..config import read_config_file
from ..sweep import run_sweep
from ..sweep.config import load_sweep_config
from .common import COMMAND_KEYS, print_json


def main(args) -> int:
    """`decentral sweep`: run or resume the sweep; its report printed or as JSON."""
    file_values = read_config_file(args.config) if args.config else {}
    flags = {k: v for k, v in vars(args).items() if k not in COMMAND_KEYS}
    report = run_sweep(load_sweep_config(file_values, flags))
    info = {"out": str(report.out), "planned_points": report.planned_points,
            "finished_points": report.finished_points, "rows": report.rows, "seconds": round(report.seconds, 1)}
    if args.json:
        print_json(info)
    else:
        print(f"sweep: {report.finished_points} of {report.planned_points} pending points finished in "
              f"{report.seconds:.0f} s; {report.rows} rows in {report.out}/results.parquet")
    return 0

"""Golden outputs: a fixed set of small runs, sweeps and theory tables through the CLI.

    python tools/golden.py write   # record tests/golden/*.json from the current code
    python tools/golden.py check   # compare the current code with them, bitwise (exit 1 on a change)

The refactors of the redesign must leave these numbers bitwise equal on one machine; the test
suite (tests/test_golden.py) compares the same cases to a float tolerance, since other CPUs
(or BLAS kernels) may round differently.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
SMALL = ["--transient", "40", "--steps", "40", "--eval-every", "20", "--test-samples", "500", "--json"]

RUNS = {
    "run_mf_d0": ["--depth", "0", "--sigma", "30", "--seed", "3"],
    "run_mf_d2": ["--depth", "2", "--sigma", "100", "--seed", "1"],
    "run_ring_d1": ["--depth", "1", "--sigma", "50", "--topology", "topologies/ring_n10.edgelist"],
    "run_weighted_d1": ["--depth", "1", "--sigma", "20", "--topology", "topologies/weighted_n10.edgelist"],
    "run_dirichlet_d1": ["--depth", "1", "--units", "6", "--partition", "dirichlet", "--sigma", "10"],
    "run_window_d1": ["--depth", "1", "--sigma", "5", "--batches", "window", "--seed", "2"],
}
SWEEP = ["--sigma", "0.1,10,100", "--depth", "0,1", "--seeds", "2", "--protocol", "both",
         "--transient", "40", "--steps", "40", "--eval-every", "20", "--test-samples", "500", "--quiet"]
THEORY = ["--depth", "0,1", "--sigma", "0.1,1,10", "--realizations", "4", "--protocol", "both",
          "--units", "20", "--json"]
# keys that are timings or paths, not results
VOLATILE = {"train_seconds", "group_train_seconds", "steps_per_second", "path", "out", "data_root", "wall_seconds"}


def _cli(*args: str) -> str:
    cmd = [sys.executable, "-m", "decentral", *args]
    env = {"DECENTRAL_DATA": str(ROOT.parent / "shared" / "data"), **os.environ}
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return done.stdout


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def collect() -> dict[str, object]:
    import pandas as pd

    out = {name: _strip(json.loads(_cli("run", *args, *SMALL).strip().splitlines()[-1]))
           for name, args in RUNS.items()}
    with tempfile.TemporaryDirectory() as tmp:
        _cli("sweep", *SWEEP, "--out", f"{tmp}/sweep")
        table = pd.read_parquet(f"{tmp}/sweep/results.parquet")
        keep = [c for c in table.columns if c not in VOLATILE and table[c].dtype.kind in "fiub"]
        table = table.sort_values([c for c in ("protocol", "depth", "sigma", "seed") if c in table.columns])
        out["sweep"] = {c: table[c].tolist() for c in keep}
    out["theory"] = _strip(json.loads(_cli("theory", *THEORY).strip().splitlines()[-1]))
    return out


def main(argv: list[str]) -> int:
    mode = argv[0] if argv else "check"
    current = collect()
    if mode == "write":
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for name, value in current.items():
            (GOLDEN / f"{name}.json").write_text(json.dumps(value, indent=1, sort_keys=True) + "\n")
        print(f"wrote {len(current)} golden files to {GOLDEN}")
        return 0
    changed = [name for name, value in current.items()
               if json.loads(json.dumps(value, sort_keys=True))
               != json.loads((GOLDEN / f"{name}.json").read_text())]
    print("bitwise equal" if not changed else f"changed: {', '.join(changed)}")
    return 1 if changed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""The on-disk sweep directory: manifest, one file per finished point, the tidy results.

    DIR/sweep.json            manifest: the config that determines the results and its hash
    DIR/points/<id>.json      one finished point (written atomically: tmp file + os.replace)
    DIR/state/<chain>.pt      adiabatic chains: parameters after the last finished sigma
    DIR/results.parquet       one row per (protocol, depth, topology, seed, sigma)
    DIR/cross_accuracy.npz    A_x and L_x [rows, N, C] aligned with results.parquet
    DIR/analysis.json         S_x per (protocol, depth) with rank-one R^2 (see analysis)

A killed sweep loses only the points in flight; a directory refuses a different config.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from .errors import UserInputError
from .run import json_safe

MANIFEST = "sweep.json"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(json_safe(obj), indent=1) + "\n").encode())


def _differences(old: dict, new: dict) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [k for k in keys if json.dumps(old.get(k), default=str) != json.dumps(new.get(k), default=str)]


def open_store(out: str | Path, science: dict, digest: str, resume: bool) -> Path:
    """Create or reopen a sweep directory; refuse a different config or unasked-for reuse."""
    root = Path(out)
    manifest = root / MANIFEST
    if manifest.exists():
        old = json.loads(manifest.read_text())
        if old.get("hash") != digest:
            diff = ", ".join(_differences(old.get("config", {}), json.loads(json.dumps(json_safe(science)))))
            raise UserInputError(f"sweep: {root} holds results of a different config (differs in: "
                                 f"{diff or 'version'}); use another --out")
        if not resume and finished_ids(root):
            raise UserInputError(f"sweep: {root} already holds finished points; pass --resume to "
                                 "continue it or use another --out")
        return root
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(manifest, {"format": 1, "hash": digest, "config": science})
    return root


def read_manifest(root: str | Path) -> dict:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise UserInputError(f"{root}: not a sweep directory (no {MANIFEST})")
    return json.loads(path.read_text())


def point_path(root: Path, point_id: str) -> Path:
    return Path(root) / "points" / f"{point_id}.json"


def finished_ids(root: Path) -> set[str]:
    folder = Path(root) / "points"
    return {p.stem for p in folder.glob("*.json")} if folder.is_dir() else set()


def write_point(root: Path, record: dict) -> None:
    atomic_write_json(point_path(root, record["point_id"]), record)


def read_points(root: str | Path) -> list[dict]:
    folder = Path(root) / "points"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def save_chain_state(root: Path, chain: str, payload: dict) -> None:
    """Adiabatic chain checkpoint (parameters, step, index of the last finished sigma)."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(Path(root) / "state" / f"{chain}.pt", buffer.getvalue())


def load_chain_state(root: Path, chain: str) -> dict | None:
    import torch

    path = Path(root) / "state" / f"{chain}.pt"
    return torch.load(path, weights_only=True) if path.is_file() else None


ORDER = ["protocol", "depth", "topology", "seed", "sigma"]


def results_frame(records: list[dict]):
    """The tidy table (one row per point, A_x/L_x left out) sorted by ORDER."""
    import pandas as pd

    rows = [{k: v for k, v in r.items() if k not in ("cross_accuracy", "cross_loss")} for r in records]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame["topology"] = frame["topology"].fillna("mean-field")
    return frame.sort_values(ORDER, kind="stable").reset_index(drop=True)


def write_results(root: str | Path) -> tuple[int, Path]:
    """results.parquet and cross_accuracy.npz from the finished points (atomically)."""
    import io

    root = Path(root)
    records = read_points(root)
    frame = results_frame(records)
    by_id = {r["point_id"]: r for r in records}
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    atomic_write_bytes(root / "results.parquet", buffer.getvalue())
    ids = list(frame["point_id"]) if len(frame) else []
    arrays = {name: np.array([by_id[i][name] for i in ids], dtype=float) for name in ("cross_accuracy", "cross_loss")}
    buffer = io.BytesIO()
    np.savez(buffer, point_id=np.array(ids, dtype=str), **arrays)
    atomic_write_bytes(root / "cross_accuracy.npz", buffer.getvalue())
    return len(frame), root / "results.parquet"


def load_results(root: str | Path):
    """(results DataFrame, A_x [rows, N, C]) of a sweep directory, rebuilt from points if stale."""
    import pandas as pd

    root = Path(root)
    read_manifest(root)
    table = root / "results.parquet"
    if not table.is_file() or len(finished_ids(root)) != len(pd.read_parquet(table, columns=["point_id"])):
        write_results(root)
    frame = pd.read_parquet(table)
    cross = np.load(root / "cross_accuracy.npz")
    return frame, cross["cross_accuracy"]

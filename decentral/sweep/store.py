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
from pathlib import Path

import numpy as np

from ..errors import UserInputError
from ..storage import (atomic_write_bytes, atomic_write_json, check_output_dir, json_safe,  # noqa: F401
                      read_json, read_npz, read_parquet, read_torch)

MANIFEST = "sweep.json"


def _differences(old: dict, new: dict) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [k for k in keys if json.dumps(old.get(k), default=str) != json.dumps(new.get(k), default=str)]


def open_store(out: str | Path, science: dict, digest: str, resume: bool) -> Path:
    """Create or reopen a sweep directory; refuse a different config or unasked-for reuse.

    A directory whose manifest has no finished point or chain checkpoint yet (a sweep that
    stopped before its first point) holds nothing to lose: it is taken over by any config.
    """
    root = Path(out)
    manifest = root / MANIFEST
    if not manifest.exists():
        _check_new_root(root)
    elif _has_results(root):
        old = read_manifest(root)
        extended = None if old.get("hash") == digest else _reconcile(root, old, science, digest)
        if not resume and finished_ids(root):
            raise UserInputError(f"sweep: {root} already holds finished points; pass --resume to "
                                 "continue it or use another --out")
        if extended is not None:
            atomic_write_json(manifest, extended)
        return root
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(manifest, {"format": 1, "hash": digest, "config": science})
    return root


def _check_new_root(root: Path) -> None:
    """A new sweep directory: creatable, and if it exists, empty but for hidden files."""
    if root.is_dir():
        if any(not p.name.startswith(".") for p in root.iterdir()):
            raise UserInputError(f"sweep: --out {str(root)!r} is a non-empty directory without "
                                 f"{MANIFEST}; use another --out")
        check_output_dir(root, overwrite=True)
    else:
        check_output_dir(root)


def _has_results(root: Path) -> bool:
    state = root / "state"
    return bool(finished_ids(root)) or (state.is_dir() and any(state.glob("*.pt")))


def _reconcile(root: Path, old: dict, science: dict, digest: str) -> dict | None:
    """Accept a config that differs from the directory's only in its seeds (`seed` and `seeds`),
    one seed list holding the other (points are per seed, so nothing is recomputed): more seeds
    extend the manifest (the new manifest is returned), fewer run a part of it (None), so that
    several processes or machines can share one directory, a seed range each (`--seed 2 --seeds
    1`). Any other difference is refused, naming the keys."""
    new = json.loads(json.dumps(json_safe(science)))
    diff = _differences(old.get("config", {}), new)
    if diff and set(diff) <= {"seed", "seeds"}:
        old_seeds, new_seeds = set(old["config"]["seeds"]), set(new["seeds"])
        if old_seeds < new_seeds:
            return {**old, "hash": digest, "config": science}
        if new_seeds <= old_seeds:
            return None
    raise UserInputError(f"sweep: {root} holds results of a different config (differs in: "
                         f"{', '.join(diff) or 'version'}); use another --out")


def read_manifest(root: str | Path) -> dict:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise UserInputError(f"{root}: not a sweep directory (no {MANIFEST})")
    manifest = read_json(path, "sweep manifest")
    if not isinstance(manifest, dict) or "hash" not in manifest:
        raise UserInputError(f"sweep manifest {str(path)!r} is damaged (no config hash)")
    return manifest


def point_path(root: Path, point_id: str) -> Path:
    return Path(root) / "points" / f"{point_id}.json"


def finished_ids(root: Path) -> set[str]:
    folder = Path(root) / "points"
    return {p.stem for p in folder.glob("*.json")} if folder.is_dir() else set()


def write_point(root: Path, record: dict) -> None:
    atomic_write_json(point_path(root, record["point_id"]), record)


def read_points(root: str | Path) -> list[dict]:
    folder = Path(root) / "points"
    points = [read_json(p, "sweep point") for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
    for path, point in zip(sorted(folder.glob("*.json")), points):
        if not isinstance(point, dict) or point.get("point_id") != path.stem or not _complete(point):
            raise UserInputError(f"sweep point {str(path)!r} is damaged (fields missing or wrong)")
    return points


POINT_FIELDS = ("protocol", "depth", "seed", "sigma", "diverged", "cross_accuracy", "cross_loss")


def _complete(point: dict) -> bool:
    return all(k in point for k in POINT_FIELDS) and isinstance(point["cross_accuracy"], list)


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
    if not path.is_file():
        return None
    payload = read_torch(path, "chain checkpoint")
    if not isinstance(payload, dict) or not isinstance(payload.get("theta"), torch.Tensor) or "step" not in payload:
        raise UserInputError(f"chain checkpoint {str(path)!r} is damaged (no theta or step)")
    return payload


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
    """(results DataFrame, A_x [rows, N, C]) of a sweep directory, rebuilt from points if stale.

    Damaged files are one UserInputError line naming the file (results.parquet and
    cross_accuracy.npz are rebuilt from points/ when deleted).
    """
    root = Path(root)
    read_manifest(root)
    table, arrays = root / "results.parquet", root / "cross_accuracy.npz"
    if not table.is_file() or not arrays.is_file() or \
            len(finished_ids(root)) != len(read_parquet(table, "sweep table", columns=["point_id"])):
        write_results(root)
    frame = read_parquet(table, "sweep table")
    cross = read_npz(arrays, "sweep cross-accuracy arrays", keys=["point_id", "cross_accuracy"])
    if len(cross["point_id"]) != len(frame) or (len(frame) and list(cross["point_id"]) != list(frame["point_id"])):
        raise UserInputError(f"sweep arrays {str(arrays)!r} do not match {str(table)!r}; delete both "
                             "to rebuild them from points/")
    return frame, cross["cross_accuracy"]

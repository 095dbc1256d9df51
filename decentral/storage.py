"""Files at the edge: output-path checks, atomic writes, provenance, and careful readers.

Writers. Every output is checked before any work starts (`check_output_dir`,
`check_output_file`): a path that exists as the wrong kind, an ancestor that is a file, a
place this process cannot write into, or an existing output without `--overwrite` is one
`UserInputError` line. Missing parents are created. Files are written whole or not at all
(`atomic_write_bytes`: a temporary sibling, fsync, `os.replace`); directories too
(`atomic_dir`: filled as a hidden temporary sibling, fsynced, renamed into place), so a kill
at any moment leaves either the old output, or none, never a part of one.

Readers (`read_json`, `read_toml`, `read_parquet`, `read_npz`, `read_torch`) turn a missing,
empty, truncated or otherwise damaged file into one `UserInputError` line naming the file.

Provenance: `json_safe` (NaN/inf to null), `write_toml` (a flat config), `file_digest` (sha256).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from .errors import UserInputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, published as tomli (a dependency there)
    import tomli as tomllib

__all__ = [
    "atomic_dir", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "check_output_dir",
    "check_output_file", "file_digest", "json_safe", "read_json", "read_npz", "read_parquet",
    "read_toml", "read_torch", "toml_text", "write_toml",
]  # fmt: skip


# --- provenance ---------------------------------------------------------------------------


def json_safe(obj):
    """Replace NaN/inf floats (not valid JSON) by None, recursively."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def toml_text(values: dict) -> str:
    """A flat TOML document of config values (None values are omitted, as TOML has no null)."""
    lines = [f"{key} = {json.dumps(value)}" for key, value in values.items() if value is not None]
    return "\n".join(lines) + "\n"


def write_toml(values: dict, path: str | Path) -> None:
    """A flat TOML file of config values, written atomically."""
    atomic_write_text(Path(path), toml_text(values))


def file_digest(path: str | Path) -> str:
    """sha256 hex digest of the file's bytes, for provenance."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as err:
        raise UserInputError(f"cannot read {str(path)!r}: {err.strerror or err}") from None
    return digest.hexdigest()


# --- output paths -------------------------------------------------------------------------


def _nearest_existing(path: Path) -> Path:
    """The path itself or its closest ancestor that exists."""
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(".")


def _check_writable_parent(path: Path, flag: str) -> None:
    """The nearest existing ancestor of path's parent is a directory we can create files in."""
    ancestor = _nearest_existing(path.parent)
    if not ancestor.is_dir():
        raise UserInputError(f"{flag} {str(path)!r}: {str(ancestor)!r} exists and is not a directory")
    try:  # a real probe: os.access says yes to root on a read-only file system
        fd, probe = tempfile.mkstemp(dir=ancestor, prefix=".decentral-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise UserInputError(f"{flag} {str(path)!r}: cannot write into {str(ancestor)!r} "
                             f"({err.strerror or err})") from None


def check_output_dir(path: str | Path, overwrite: bool = False, flag: str = "--out") -> Path:
    """An output directory we may (re)create: checked before any work starts."""
    path = Path(path)
    if os.path.lexists(path) and not path.is_dir():
        raise UserInputError(f"{flag} {str(path)!r} exists and is not a directory")
    if path.is_dir() and not overwrite:
        raise UserInputError(f"{flag} {str(path)!r} already exists; pass --overwrite to replace it")
    _check_writable_parent(path, flag)
    return path


def check_output_file(path: str | Path, overwrite: bool = False, flag: str = "--out") -> Path:
    """An output file we may (re)write: checked before any work starts."""
    path = Path(path)
    if path.is_dir():
        raise UserInputError(f"{flag} {str(path)!r} is a directory, expected a file name")
    if os.path.lexists(path) and not overwrite:
        raise UserInputError(f"{flag} {str(path)!r} already exists; pass --overwrite to replace it")
    _check_writable_parent(path, flag)
    return path


# --- atomic writers -----------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never a part."""
    path = Path(path)
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
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj, indent: int | None = 1) -> None:
    atomic_write_bytes(path, (json.dumps(json_safe(obj), indent=indent) + "\n").encode())


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError), open(Path(folder) / name, "rb") as handle:
                os.fsync(handle.fileno())
        _fsync_dir(Path(folder))


@contextlib.contextmanager
def atomic_dir(path: str | Path, overwrite: bool = False):
    """Yield a hidden temporary sibling to fill; on success it is renamed to `path`.

    A kill before the rename leaves only the hidden sibling (`.NAME.partial-*`); with
    `overwrite`, the old directory is first moved aside (`.NAME.old-*`) and removed after.
    """
    path = Path(path)
    check_output_dir(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.partial-"))
    try:
        yield tmp
        _fsync_tree(tmp)
        old = None
        if path.is_dir():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old-"))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --- careful readers ----------------------------------------------------------------------


def _damaged(path: Path, what: str, err: BaseException) -> UserInputError:
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return UserInputError(f"{what} {str(path)!r} is damaged or unreadable ({reason[:200]})")


def _read_bytes(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise UserInputError(f"{what} {str(path)!r} not found")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UserInputError(f"cannot read {what} {str(path)!r}: {err.strerror or err}") from None
    if not data:
        raise UserInputError(f"{what} {str(path)!r} is empty")
    return data


def _read_document(path: str | Path, what: str, parse, errors: tuple) -> object:
    """`parse` of a text file's contents; missing, unreadable or damaged (one of `errors`, bad
    UTF-8, nested too deep) files are one UserInputError line."""
    path = Path(path)
    data = _read_bytes(path, what)
    try:
        return parse(data.decode())
    except (UnicodeDecodeError, RecursionError, *errors) as err:
        raise _damaged(path, what, err) from None


def read_json(path: str | Path, what: str = "file"):
    """A JSON document; damaged or missing files are one UserInputError line."""
    return _read_document(path, what, json.loads, (json.JSONDecodeError,))


def read_toml(path: str | Path, what: str = "file") -> dict:
    """A TOML document; damaged or missing files are one UserInputError line."""
    return _read_document(path, what, tomllib.loads, (tomllib.TOMLDecodeError,))


def read_parquet(path: str | Path, what: str = "table", columns=None):
    """A pandas DataFrame from a parquet file; damaged files are one UserInputError line."""
    import pandas as pd

    path = Path(path)
    _read_bytes(path, what)
    try:
        return pd.read_parquet(path, columns=columns)
    except Exception as err:  # pyarrow raises several unrelated types for damaged files
        raise _damaged(path, what, err) from None


def read_npz(path: str | Path, what: str = "arrays", keys=None) -> dict[str, np.ndarray]:
    """The arrays of an .npz file, loaded eagerly (pickles refused); one line if damaged."""
    import io
    import zipfile

    path = Path(path)
    data = _read_bytes(path, what)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            return {k: archive[k] for k in (keys if keys is not None else archive.files)}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile) as err:
        raise _damaged(path, what, err) from None


def read_torch(path: str | Path, what: str = "checkpoint"):
    """A torch.save payload (weights only); one line if damaged."""
    import io

    import torch

    path = Path(path)
    data = _read_bytes(path, what)
    try:
        return torch.load(io.BytesIO(data), weights_only=True)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        raise _damaged(path, what, err) from None

"""Where MNIST lives on this machine, whether its files are all there, and fetching them.

The data root is `--data-root DIR`, else `$DECENTRAL_DATA`, else a default folder in the
platform's cache directory (:func:`default_root`). Under it, torchvision's layout:
``ROOT/MNIST/raw/<four idx files>``. Missing files are downloaded (torchvision's downloader,
with its progress bar on stderr) with `--download`, or on a first run into the default
folder; where that is impossible (offline), one line names the missing files and the folder
to put them in. A file of the wrong size (a partial download, another file) is one line too.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path

from .errors import UserInputError

DATA_ENV = "DECENTRAL_DATA"  # environment variable naming the data root
# torchvision's uncompressed MNIST files and their sizes in bytes (idx header + payload)
FILES = {
    "train-images-idx3-ubyte": 47_040_016,
    "train-labels-idx1-ubyte": 60_008,
    "t10k-images-idx3-ubyte": 7_840_016,
    "t10k-labels-idx1-ubyte": 10_008,
}
SOURCE = "https://ossci-datasets.s3.amazonaws.com/mnist/ (torchvision's mirrors)"


def default_root() -> Path:
    """The default data root: the platform's user cache folder for decentral, then /data
    (platformdirs when installed; else $XDG_CACHE_HOME or ~/.cache)."""
    try:
        from platformdirs import user_cache_dir
    except ImportError:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "decentral"
    else:
        base = Path(user_cache_dir("decentral", appauthor=False))
    return base / "data"


def resolve_root(flag: str | None) -> Path:
    """--data-root, else $DECENTRAL_DATA (either must be a folder), else the default folder."""
    given = flag or os.environ.get(DATA_ENV)
    if not given:
        return default_root()
    path = Path(given).expanduser()
    if not path.is_dir():
        source = "--data-root" if flag else f"${DATA_ENV}"
        raise UserInputError(f"data root {str(path)!r} does not exist or is not a directory (from {source})")
    return path


def raw_folder(root: str | Path) -> Path:
    return Path(root) / "MNIST" / "raw"


def missing_files(root: str | Path) -> list[str]:
    """The MNIST files absent from ROOT/MNIST/raw, in FILES order."""
    return [name for name in FILES if not (raw_folder(root) / name).is_file()]


def check_sizes(root: str | Path, names) -> None:
    """One line naming the first file among `names` whose size is not MNIST's."""
    for name in names:
        path = raw_folder(root) / name
        size = path.stat().st_size
        if size != FILES[name]:
            raise UserInputError(
                f"MNIST file {path} is damaged: {size:,} bytes, expected {FILES[name]:,} "
                "(replace it, or delete it and rerun with --download)")


def ensure(root: str | Path, download: bool) -> None:
    """Make sure the four files are present and whole (torchvision opens either split only
    then), downloading where allowed: with `download`, or into the default folder (a first
    run). Otherwise one line says what is missing and where it goes."""
    root = Path(root)
    missing = missing_files(root)
    if missing:
        if not (download or _is_default(root)):
            raise UserInputError(
                f"MNIST files missing in {raw_folder(root)}: {', '.join(missing)}; put them there "
                f"(uncompressed) or rerun with --download where internet exists")
        _download(root, missing)
    check_sizes(root, FILES)


def _is_default(root: Path) -> bool:
    return root.resolve() == default_root().resolve()


def _download(root: Path, missing: list[str]) -> None:
    """torchvision's MNIST download: its progress bars on stderr, its messages held back (so
    stdout stays clean and an offline attempt ends in exactly one line)."""
    from torchvision.datasets import MNIST

    try:
        raw_folder(root).mkdir(parents=True, exist_ok=True)
        with contextlib.redirect_stdout(io.StringIO()):
            MNIST(root=str(root), train=True, download=True)
        print(f"decentral: downloaded MNIST into {raw_folder(root)}", file=sys.stderr)
    except (OSError, RuntimeError) as err:
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        still = missing_files(root) or missing
        raise UserInputError(
            f"MNIST files missing in {raw_folder(root)}: {', '.join(still)}; the download from "
            f"{SOURCE} failed ({reason}): put the files there (uncompressed), or pass "
            f"--data-root DIR / set {DATA_ENV} to a folder that has them") from None

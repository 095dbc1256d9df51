"""Where the datasets live on this machine, whether their files are all there and whole, and
fetching them.

The data root is `--data-root DIR`, else `$DECENTRAL_DATA`, else a default folder in the
platform's cache directory (:func:`default_root`). Under it, torchvision's layout, one folder
per dataset (`decentral.datasets`): ``ROOT/MNIST/raw``, ``ROOT/FashionMNIST/raw`` and
``ROOT/KMNIST/raw`` with four uncompressed idx files each, ``ROOT/cifar-10-batches-py`` with
CIFAR-10's python batches. Missing files are downloaded (torchvision's downloader, with its
progress bar on stderr) with `--download`, or on a first run into the default folder; where
that is impossible (offline), one line names the missing files and the folder to put them in.
An idx file whose size or header is not what its header and the dataset say (a partial
download, another file) is one line too; CIFAR-10's batches are checked as they are read
(`decentral.datareaders`).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import struct
import sys
from pathlib import Path

from .datasets import DEFAULT, Dataset, get
from .errors import UserInputError

DATA_ENV = "DECENTRAL_DATA"  # environment variable naming the data root
# torchvision's uncompressed MNIST files and their sizes in bytes (idx header + payload)
FILES = {
    "train-images-idx3-ubyte": 47_040_016,
    "train-labels-idx1-ubyte": 60_008,
    "t10k-images-idx3-ubyte": 7_840_016,
    "t10k-labels-idx1-ubyte": 10_008,
}
IDX_UBYTE = 0x08  # idx type code of unsigned bytes, the MNIST family's pixels and labels


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


def _spec(dataset: str | Dataset) -> Dataset:
    return dataset if isinstance(dataset, Dataset) else get(dataset)


def raw_folder(root: str | Path, dataset: str | Dataset = DEFAULT) -> Path:
    """The folder of the dataset's files under the data root (ROOT/MNIST/raw for MNIST)."""
    return _spec(dataset).raw_folder(root)


def missing_files(root: str | Path, dataset: str | Dataset = DEFAULT) -> list[str]:
    """The dataset's files absent from its folder, in the order the dataset lists them."""
    spec = _spec(dataset)
    return [name for name in spec.files if not (spec.raw_folder(root) / name).is_file()]


def check_idx(spec: Dataset, path: Path, item_shape: tuple[int, ...]) -> int:
    """An idx file of unsigned bytes holding items of `item_shape` ((H, W) images, () labels),
    its size the one its header gives; returns its item count, or one line saying what is wrong."""
    ndim = 1 + len(item_shape)
    header_bytes = 4 + 4 * ndim
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(header_bytes)
    if len(head) < header_bytes:
        raise spec.damaged(path, f"{size:,} bytes, shorter than its idx header ({header_bytes} bytes)")
    if head[:4] != bytes((0, 0, IDX_UBYTE, ndim)):
        raise spec.damaged(path, f"header {head[:4].hex()} is not that of {ndim}-dimensional unsigned "
                       f"bytes (expected {bytes((0, 0, IDX_UBYTE, ndim)).hex()})")
    dims = struct.unpack(f">{ndim}I", head[4:])
    if tuple(dims[1:]) != tuple(item_shape):
        raise spec.damaged(path, f"its header gives items of shape {tuple(dims[1:])}, expected "
                       f"{tuple(item_shape)}")
    expected = header_bytes + math.prod(dims)
    if size != expected:
        raise spec.damaged(path, f"{size:,} bytes, expected {expected:,}")
    return dims[0]


def check_files(root: str | Path, dataset: str | Dataset = DEFAULT) -> None:
    """The idx files of the MNIST family: headers and sizes (CIFAR-10's batches are checked as
    they are read)."""
    spec = _spec(dataset)
    if spec.file_format != "idx":
        return
    for name in spec.files:
        shape = tuple(spec.shape[1:]) if "images" in name else ()
        check_idx(spec, spec.raw_folder(root) / name, shape)


def ensure(root: str | Path, download: bool, dataset: str | Dataset = DEFAULT) -> None:
    """Make sure the dataset's files are present and whole (torchvision opens a split only
    then), downloading where allowed: with `download`, or into the default folder (a first
    run). Otherwise one line says what is missing and where it goes."""
    root, spec = Path(root), _spec(dataset)
    missing = missing_files(root, spec)
    if missing:
        if not (download or _is_default(root)):
            raise UserInputError(
                f"{spec.title} files missing in {spec.raw_folder(root)}: {', '.join(missing)}; put them "
                f"there ({_as_stored(spec)}) or rerun with --download where internet exists")
        _download(root, missing, spec)
    check_files(root, spec)


def _as_stored(spec: Dataset) -> str:
    return "uncompressed" if spec.file_format == "idx" else "as extracted from cifar-10-python.tar.gz"


def _is_default(root: Path) -> bool:
    return root.resolve() == default_root().resolve()


def _download(root: Path, missing: list[str], spec: Dataset) -> None:
    """torchvision's download of the dataset: its progress bars on stderr, its messages held
    back (so stdout stays clean and an offline attempt ends in exactly one line)."""
    import torchvision.datasets

    try:
        spec.raw_folder(root).mkdir(parents=True, exist_ok=True)
        with contextlib.redirect_stdout(io.StringIO()):
            getattr(torchvision.datasets, spec.torchvision_class)(root=str(root), train=True, download=True)
        print(f"decentral: downloaded {spec.title} into {spec.raw_folder(root)}", file=sys.stderr)
    except (OSError, RuntimeError) as err:
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        still = missing_files(root, spec) or missing
        raise UserInputError(
            f"{spec.title} files missing in {spec.raw_folder(root)}: {', '.join(still)}; the download "
            f"from {spec.source} failed ({reason}): put the files there ({_as_stored(spec)}), or "
            f"pass --data-root DIR / set {DATA_ENV} to a folder that has them") from None

"""Reading a dataset's files into pixel and label tensors, checked at the edge.

The MNIST family's idx files are read by torchvision's own dataset classes (`MNIST`,
`FashionMNIST`, `KMNIST`), after `datafiles.check_files` has checked their headers and sizes.
CIFAR-10's python batches are pickled dicts (`data` [n, 3072] uint8 in (C, H, W) order,
`labels`); torchvision's `CIFAR10` also checks each file's md5 against the official
release, so the files are read here with the same `pickle.load(..., encoding="latin1")`,
through an unpickler that builds nothing but numpy arrays, lists, dicts, strings and numbers
(a damaged or hostile file cannot run code), and every batch is checked: its arrays' shapes,
and labels in 0..C-1 (the kernels index with them). Whatever is wrong is one line naming the
file.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from .datasets import CIFAR_META, Dataset
from .errors import UserInputError


def read_split(spec: Dataset, root: str | Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixels [M, C*H*W] uint8, labels [M] int64) of one split, checked."""
    if spec.file_format == "idx":
        return _read_idx(spec, root, train)
    return _read_cifar(spec, root, train)


def _read_idx(spec: Dataset, root: str | Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    import torchvision.datasets

    reader = getattr(torchvision.datasets, spec.torchvision_class)
    folder = spec.raw_folder(root)
    try:
        data = reader(root=str(root), train=train, download=False)
    except (RuntimeError, AssertionError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserInputError(f"{spec.title} files in {folder} cannot be read: {first}") from None
    images_file, labels_file = (folder / name for name in spec.split_files(train))
    images, labels = data.data, data.targets
    if images.ndim != 3 or tuple(images.shape[1:]) != spec.shape[1:] or len(images) == 0:
        raise UserInputError(f"{spec.title} file {images_file} holds images of shape {tuple(images.shape)}, "
                             f"expected [M, {spec.shape[1]}, {spec.shape[2]}]")
    if labels.ndim != 1 or len(labels) != len(images):
        raise UserInputError(f"{spec.title} file {labels_file} holds {len(labels)} labels for "
                             f"{len(images)} images in {images_file.name}")
    check_labels(spec, labels, labels_file)
    return images.reshape(len(images), -1), labels.to(torch.int64)


def check_labels(spec: Dataset, labels: torch.Tensor, path: Path) -> None:
    """Every label in 0..C-1 (the kernels index with them); one line naming the file if not."""
    bad = torch.nonzero((labels < 0) | (labels >= spec.n_classes)).flatten()
    if len(bad):
        first = int(bad[0])
        raise UserInputError(f"{spec.title} file {path}: label {int(labels[first])} at index {first} "
                             f"is outside 0..{spec.n_classes - 1} ({len(bad)} such labels)")


def _read_cifar(spec: Dataset, root: str | Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    folder = spec.raw_folder(root)
    _check_meta(spec, folder / CIFAR_META)
    pixels, labels = [], []
    for name in spec.split_files(train):
        batch_pixels, batch_labels = _cifar_batch(spec, folder / name)
        pixels.append(batch_pixels)
        labels.append(batch_labels)
    return torch.cat(pixels), torch.cat(labels)


def _cifar_batch(spec: Dataset, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One python batch: data [n, C*H*W] uint8 and labels [n], checked."""
    batch = load_pickle(spec, path)
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != spec.n_inputs or len(data) == 0:
        shown = (f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
                 else type(data).__name__)
        raise spec.damaged(path, f"its data is a {shown}, expected uint8 [n, {spec.n_inputs}]")
    try:
        labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    except (TypeError, ValueError, OverflowError):
        labels = None
    if labels is None or labels.ndim != 1 or len(labels) != len(data):
        raise spec.damaged(path, f"its labels are not a list of {len(data)} integers, one per image")
    check_labels(spec, labels, path)
    return torch.from_numpy(np.ascontiguousarray(data)), labels


def _check_meta(spec: Dataset, path: Path) -> None:
    names = load_pickle(spec, path).get("label_names")
    if not isinstance(names, list) or len(names) != spec.n_classes:
        raise spec.damaged(path, f"its label_names are not a list of {spec.n_classes} class names")


class _ArraysOnly(pickle.Unpickler):
    """Builds numpy arrays and plain Python values only; any other global is refused."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a data batch never holds")
        if (module, name) == ("_codecs", "encode"):  # bytes pickled by Python 3 at protocol 2
            return _latin1_bytes
        if module == "numpy.core.multiarray":  # files pickled by numpy 1 (numpy 2 renamed the module)
            module = np.ndarray.__reduce__(np.zeros(0))[0].__module__
        return super().find_class(module, name)


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """`_codecs.encode` as protocol-2 pickles of bytes call it: latin1 only, no other codec."""
    if encoding.lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"it encodes bytes as {encoding[:20]!r}, not latin1")
    return text.encode("latin1")


def load_pickle(spec: Dataset, path: Path) -> dict:
    """A pickled dict of a CIFAR python batch (latin1 strings, as torchvision reads them)."""
    try:
        with open(path, "rb") as handle:
            value = _ArraysOnly(handle, encoding="latin1").load()
    except Exception as err:  # noqa: BLE001 - any failure to unpickle is a damaged file
        reason = " ".join(str(err).split())[:120] or type(err).__name__
        raise spec.damaged(path, f"it cannot be unpickled ({type(err).__name__}: {reason})") from None
    if not isinstance(value, dict):
        raise spec.damaged(path, f"it holds a {type(value).__name__}, expected a dict")
    return value

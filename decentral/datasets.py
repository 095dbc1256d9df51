"""The image datasets a run can train on (`--dataset`): MNIST, Fashion-MNIST, KMNIST, CIFAR-10.

Each is described once, as a :class:`Dataset` value: where torchvision keeps its files under
the data root, which files those are, the shape (C, H, W) of one input and the number of
classes, how its pixels are normalised, and the torchvision class that downloads it. Loading
(`decentral.data.load`), checking (`decentral.datafiles`) and reading
(`decentral.datareaders`) all take their facts from here.

A loaded split holds x [M, C*H*W] float32, each row one image flattened in (C, H, W) order
(row-major: channel, then image row, then column), so a model that wants images reshapes a
batch with `x.view(-1, *dataset.shape)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from .errors import UserInputError

# torchvision's uncompressed idx files of the MNIST family (the same four names in each folder)
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
# CIFAR-10's python batches (pickled dicts with `data` [10000, 3072] uint8 and `labels`)
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = ("test_batch",)
CIFAR_META = "batches.meta"  # pickled dict whose `label_names` lists the classes


@dataclass(frozen=True)
class Dataset:
    """One dataset: its files under the data root, input shape, classes and normalisation."""

    name: str  # the --dataset value
    title: str  # its name in messages
    folder: str  # the folder of its files under the data root (torchvision's layout)
    file_format: str  # "idx" (the MNIST family) or "cifar" (pickled python batches)
    train_files: tuple[str, ...]  # the files of the training split
    test_files: tuple[str, ...]  # the files of the test split
    shape: tuple[int, int, int]  # (C, H, W) of one input image
    n_classes: int  # labels are 0 .. n_classes - 1
    mean: tuple[float, ...] | None  # per-channel mean subtracted from pixels in [0, 1] (None: kept in [0, 1])
    std: tuple[float, ...] | None  # per-channel std the centred pixels are divided by
    torchvision_class: str  # the torchvision.datasets class that downloads it
    source: str  # where the download comes from (for messages)
    extra_files: tuple[str, ...] = ()  # other files the folder must hold (CIFAR-10's batches.meta)

    @property
    def n_inputs(self) -> int:
        """Values per input row: C * H * W (784 for MNIST, 3072 for CIFAR-10)."""
        return math.prod(self.shape)

    @property
    def files(self) -> tuple[str, ...]:
        """Every file the folder must hold, training files first."""
        return self.train_files + self.test_files + self.extra_files

    def split_files(self, train: bool) -> tuple[str, ...]:
        return self.train_files if train else self.test_files

    def raw_folder(self, root: str | Path) -> Path:
        """The folder of its files under the data root `root`."""
        return Path(root) / self.folder

    def damaged(self, path: Path, what: str) -> UserInputError:
        """The one-line error for a file of this dataset that is present but wrong (`what`)."""
        return UserInputError(f"{self.title} file {path} is damaged: {what} (replace it, or delete it "
                              "and rerun with --download)")


def _idx(name: str, title: str, folder: str, tv_class: str, source: str) -> Dataset:
    return Dataset(name, title, f"{folder}/raw", "idx", IDX_FILES[:2], IDX_FILES[2:], (1, 28, 28), 10,
                   None, None, tv_class, source)


DATASETS = {
    "mnist": _idx("mnist", "MNIST", "MNIST", "MNIST",
                  "https://ossci-datasets.s3.amazonaws.com/mnist/ (torchvision's mirrors)"),
    "fashion-mnist": _idx("fashion-mnist", "Fashion-MNIST", "FashionMNIST", "FashionMNIST",
                          "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"),
    "kmnist": _idx("kmnist", "KMNIST", "KMNIST", "KMNIST",
                   "http://codh.rois.ac.jp/kmnist/dataset/kmnist/"),
    # per-channel mean and std of CIFAR-10's 50,000 training images (pixels in [0, 1])
    "cifar10": Dataset("cifar10", "CIFAR-10", "cifar-10-batches-py", "cifar", CIFAR_TRAIN, CIFAR_TEST,
                       (3, 32, 32), 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "CIFAR10",
                       "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                       extra_files=(CIFAR_META,)),
}
NAMES = tuple(DATASETS)  # the --dataset choices
DEFAULT = "mnist"  # the paper's dataset


def get(name: str) -> Dataset:
    """The Dataset of a --dataset value; one line naming the choices if unknown."""
    try:
        return DATASETS[name]
    except KeyError:
        raise UserInputError(f"--dataset must be one of {', '.join(NAMES)}; got {name!r}") from None

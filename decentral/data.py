"""Datasets as tensors, and their partition into N private shards.

A dataset (`--dataset`: MNIST, Fashion-MNIST, KMNIST, CIFAR-10; see `decentral.datasets`) is
loaded once from its files in torchvision's layout (never a per-sample DataLoader): images
flattened to x [M, C*H*W] float32 in (C, H, W) order, normalised as the dataset says (the
MNIST family: pixels in [0, 1]; CIFAR-10: standardised per channel), labels y [M] int64.
The training set is reordered so that each unit's private samples are contiguous: unit u
owns rows offsets[u] : offsets[u+1]. The partitions are the same for every dataset.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import datafiles
from .datafiles import DATA_ENV  # noqa: F401  (re-exported)
from .datareaders import read_split
from .datasets import DEFAULT, Dataset, get
from .errors import UserInputError


@dataclass(frozen=True)
class Split:
    """One split of a labelled image set: x [M, C*H*W] float32 (784 for MNIST), y [M] int64."""

    x: torch.Tensor
    y: torch.Tensor

    def to(self, device) -> "Split":
        return Split(self.x.to(device), self.y.to(device))


@dataclass(frozen=True)
class Shards:
    """A training split sorted by owner: unit u owns x[offsets[u] : offsets[u] + sizes[u]]."""

    train: Split
    offsets: np.ndarray  # [N] first row of each unit's shard
    sizes: np.ndarray  # [N] samples in each unit's shard
    classes: list[list[int]]  # classes present in each unit's shard

    @property
    def n_units(self) -> int:
        return len(self.sizes)


def resolve_data_root(flag: str | None) -> Path:
    """The data root: the flag if given, else $DECENTRAL_DATA, else the default folder
    (see :mod:`decentral.datafiles`)."""
    return datafiles.resolve_root(flag)


def load(dataset: str, root: str | Path, download: bool = False) -> tuple[Split, Split]:
    """(train, test) splits of `dataset` (a --dataset name) from torchvision's layout under
    `root` (cached per root)."""
    return load_split(dataset, root, True, download), load_split(dataset, root, False, download)


def load_split(dataset: str, root: str | Path, train: bool, download: bool = False) -> Split:
    """One split of `dataset` (train=True: its training images; False: its test images), cached."""
    return _load_cached(get(dataset).name, str(Path(root).resolve()), train, download)


def load_mnist(root: str | Path, download: bool = False) -> tuple[Split, Split]:
    """(train, test) MNIST splits (:func:`load` of "mnist")."""
    return load(DEFAULT, root, download)


def load_mnist_split(root: str | Path, train: bool, download: bool = False) -> Split:
    """One MNIST split (train=True: 60,000 images; False: the 10,000 test images), cached."""
    return load_split(DEFAULT, root, train, download)


@functools.lru_cache(maxsize=4)
def _load_cached(dataset: str, root: str, train: bool, download: bool) -> Split:
    spec = get(dataset)
    datafiles.ensure(root, download, spec)  # present and whole, or one line saying what is not
    pixels, labels = read_split(spec, root, train)  # [M, C*H*W] uint8, [M] int64, checked
    return _as_split(pixels, labels, spec)


def _as_split(pixels: torch.Tensor, labels: torch.Tensor, spec: Dataset) -> Split:
    """Pixels [M, C*H*W] uint8 to x float32 in [0, 1], then standardised per channel where the
    dataset has a mean and std."""
    x = pixels.reshape(len(pixels), -1).to(torch.float32).div_(255.0)  # [M, C*H*W]
    if spec.mean is not None:
        channels = spec.shape[0]
        mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, channels, 1)
        std = torch.tensor(spec.std, dtype=torch.float32).view(1, channels, 1)
        x.view(len(x), channels, -1).sub_(mean).div_(std)  # [M, C, H*W], in place
    return Split(x.contiguous(), labels.to(torch.int64))


def assign_by_class(labels: np.ndarray, n_units: int) -> list[np.ndarray]:
    """Unit u owns class u mod C; units sharing a class split its samples evenly (disjoint).

    N <= C (unit k owns class k, the paper's N = 10) or N a multiple of C (each class split among
    N/C units); any other N would give classes unequal numbers of owners: a UserInputError."""
    n_classes = int(labels.max()) + 1
    if n_units > n_classes and n_units % n_classes:
        raise UserInputError(f"partition class needs at most {n_classes} units or a multiple of {n_classes} "
                             f"(each class split evenly among N/{n_classes} units), got {n_units}; "
                             "use k-classes or dirichlet")
    owners = [[u for u in range(n_units) if u % n_classes == c] for c in range(n_classes)]
    return _split_classes(labels, owners, np.full(n_units, 1.0), rng=None)


def assign_k_classes(labels: np.ndarray, n_units: int, k: int, seed: int) -> list[np.ndarray]:
    """Each unit owns k distinct random classes; each class is split evenly among its owners."""
    n_classes = int(labels.max()) + 1
    if not 1 <= k <= n_classes:
        raise UserInputError(f"classes per unit must be in 1..{n_classes}, got {k}")
    rng = np.random.default_rng(seed)
    owners: list[list[int]] = [[] for _ in range(n_classes)]
    for u in range(n_units):
        for c in rng.choice(n_classes, size=k, replace=False):
            owners[int(c)].append(u)
    return _split_classes(labels, owners, np.full(n_units, 1.0), rng)


def assign_dirichlet(labels: np.ndarray, n_units: int, alpha: float, seed: int) -> list[np.ndarray]:
    """Each class is split among all units with proportions ~ Dirichlet(alpha)."""
    if not alpha > 0:
        raise UserInputError(f"dirichlet alpha must be > 0, got {alpha}")
    rng = np.random.default_rng(seed)
    n_classes = int(labels.max()) + 1
    owned: list[list[np.ndarray]] = [[] for _ in range(n_units)]
    for c in range(n_classes):
        members = rng.permutation(np.flatnonzero(labels == c))
        cuts = np.floor(np.cumsum(rng.dirichlet(np.full(n_units, alpha))) * len(members))
        for u, part in enumerate(np.split(members, cuts[:-1].astype(int))):
            owned[u].append(part)
    return [np.sort(np.concatenate(parts)) for parts in owned]


def _split_classes(labels, owners, weights, rng) -> list[np.ndarray]:
    """Split each class's sample indices evenly among the units listed as its owners."""
    owned: list[list[np.ndarray]] = [[] for _ in range(len(weights))]
    for c, units in enumerate(owners):
        members = np.flatnonzero(labels == c)
        if rng is not None:
            members = rng.permutation(members)
        for u, part in zip(units, np.array_split(members, len(units)) if units else []):
            owned[u].append(part)
    return [np.sort(np.concatenate(p)) if p else np.empty(0, np.int64) for p in owned]


def make_shards(train: Split, assignment: list[np.ndarray]) -> Shards:
    """Reorder the training split so each unit's private samples are contiguous."""
    empty = [u for u, idx in enumerate(assignment) if len(idx) == 0]
    if empty:
        shown = ", ".join(map(str, empty[:8])) + (f", ... ({len(empty)} in all)" if len(empty) > 8 else "")
        raise UserInputError(f"partition leaves units {shown} without data; use fewer units")
    order = torch.from_numpy(np.concatenate(assignment).astype(np.int64))
    sizes = np.array([len(idx) for idx in assignment])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    labels = train.y.numpy()
    classes = [sorted(set(labels[idx].tolist())) for idx in assignment]
    return Shards(Split(train.x[order], train.y[order]), offsets, sizes, classes)


def partition(train: Split, n_units: int, scheme: str, seed: int, k: int = 1, alpha: float = 0.5):
    """Shards for `scheme` "class" (one class per unit; N <= C or a multiple of C), "k-classes" or
    "dirichlet". Impossible requests (more units than samples, a unit without data) are
    UserInputErrors."""
    labels = train.y.numpy()
    if n_units > len(labels):
        raise UserInputError(f"{n_units} units but only {len(labels)} training samples: every unit needs data")
    if scheme == "class":
        assignment = assign_by_class(labels, n_units)
    elif scheme == "k-classes":
        assignment = assign_k_classes(labels, n_units, k, seed)
    elif scheme == "dirichlet":
        assignment = assign_dirichlet(labels, n_units, alpha, seed)
    else:
        raise UserInputError(f"unknown partition {scheme!r}; choose class, k-classes or dirichlet")
    return make_shards(train, assignment)


def subsample_test(test: Split, n_samples: int | None, seed: int = 0) -> Split:
    """The first-drawn n_samples of a fixed permutation of the test set (all when None)."""
    if n_samples is None or n_samples >= len(test.y):
        return test
    keep = torch.from_numpy(np.sort(np.random.default_rng(seed).permutation(len(test.y))[:n_samples]))
    return Split(test.x[keep], test.y[keep])

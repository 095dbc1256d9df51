"""Where an actor's private data comes from. Data is I/O at the edge of the actor.

:class:`MnistSource` is what runs use: it is a small recipe (data root, partition scheme,
seed) that each actor executes *on its own node*, keeping only its units' rows of the
shard-sorted training set and the test set; nothing but the recipe crosses the network.
:class:`InlineSource` ships given shards to the actors (tests and synthetic problems only).
Both give bit-identical shards to `decentral.data.partition` on the driver.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from ..data import DATA_ENV, Shards, Split, partition, resolve_data_root, subsample_test
from ..data import load as load_data


@dataclass(frozen=True)
class BlockData:
    """One actor's private rows and the shared test split."""

    train: Split  # x [rows, n_in], y [rows]: the shards of the actor's units, concatenated
    offsets: np.ndarray  # [N] row of each unit's shard within `train` (only own units meaningful)
    sizes: np.ndarray  # [N] shard size of each unit (only own units meaningful)
    test: Split


def slice_block(shards: Shards, units, test: Split) -> BlockData:
    """Keep only `units`' rows of shard-sorted training data."""
    rows = [np.arange(shards.offsets[u], shards.offsets[u] + shards.sizes[u]) for u in units]
    order = torch.from_numpy(np.concatenate(rows).astype(np.int64))
    offsets = np.zeros(shards.n_units, dtype=np.int64)
    sizes = np.zeros(shards.n_units, dtype=np.int64)
    start = 0
    for u in units:
        offsets[u], sizes[u] = start, shards.sizes[u]
        start += int(shards.sizes[u])
    train = Split(shards.train.x[order].contiguous(), shards.train.y[order].contiguous())
    return BlockData(train, offsets, sizes, test)


@dataclass(frozen=True)
class MnistSource:
    """Load the dataset on the actor's node and partition it exactly as the driver would."""

    data_root: str | None  # explicit --data-root; else the node's $DECENTRAL_DATA
    driver_root: str | None  # the driver's data root, the last fallback
    n_units: int
    scheme: str
    seed: int
    classes_per_unit: int
    dirichlet_alpha: float
    test_samples: int | None
    dataset: str = "mnist"  # the --dataset to load

    def load(self, units) -> BlockData:
        root = resolve_data_root(self.data_root or os.environ.get(DATA_ENV) or self.driver_root)
        train, test = load_data(self.dataset, root)
        # partition row *indices* (x = row number) so only our rows of x are ever copied
        index = Split(torch.arange(len(train.y)).unsqueeze(1), train.y)
        shards = partition(index, self.n_units, self.scheme, self.seed, self.classes_per_unit,
                           self.dirichlet_alpha)
        rows = slice_block(shards, units, test)  # x holds original row numbers [rows, 1]
        picked = rows.train.x.squeeze(1)
        own = Split(train.x[picked].contiguous(), train.y[picked].contiguous())
        return BlockData(own, rows.offsets, rows.sizes, subsample_test(test, self.test_samples, seed=0))


@dataclass(frozen=True)
class InlineSource:
    """Shards given by the driver (small synthetic problems and tests)."""

    shards: Shards
    test: Split

    def load(self, units) -> BlockData:
        return slice_block(self.shards, units, self.test)


def mnist_source(cfg) -> MnistSource:
    return MnistSource(cfg.data_root, os.environ.get(DATA_ENV), cfg.units, cfg.partition, cfg.seed,
                       cfg.classes_per_unit, cfg.dirichlet_alpha, cfg.test_samples, cfg.dataset)

"""Private shards: exact, disjoint, reproducible; per-unit batch streams."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from decentral.data import Split, partition, subsample_test
from decentral.errors import UserInputError
from decentral.streams import CHUNK_STEPS, BatchIndexer


def _labels(per_class=(30, 25, 40, 35, 20, 33, 27, 31, 29, 22)):
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(per_class)])
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    y = y[perm]
    return Split(torch.arange(len(y), dtype=torch.float32).unsqueeze(1), y)


def _owned_rows(shards, unit):
    start = shards.offsets[unit]
    return shards.train.x[start : start + shards.sizes[unit], 0].long().tolist()


def test_one_class_per_unit_is_exact():
    train = _labels()
    shards = partition(train, 10, "class", seed=0)
    for unit in range(10):
        rows = _owned_rows(shards, unit)
        assert sorted(rows) == torch.nonzero(train.y == unit).flatten().tolist()
        assert shards.classes[unit] == [unit]


@pytest.mark.parametrize("scheme,kw", [("class", {}), ("k-classes", {"k": 3}), ("dirichlet", {"alpha": 0.3})])
def test_partitions_are_disjoint_and_reproducible(scheme, kw):
    train = _labels()
    a = partition(train, 7 if scheme != "class" else 20, scheme, seed=4, **kw)
    b = partition(train, 7 if scheme != "class" else 20, scheme, seed=4, **kw)
    rows = [r for u in range(a.n_units) for r in _owned_rows(a, u)]
    assert len(rows) == len(set(rows))  # disjoint
    assert torch.equal(a.train.x, b.train.x)
    if scheme != "k-classes":
        assert sorted(rows) == list(range(len(train.y)))  # every sample owned
    for unit in range(a.n_units):
        labels = set(train.y[_owned_rows(a, unit)].tolist())
        assert labels == set(a.classes[unit])


def test_bad_partitions_rejected():
    with pytest.raises(UserInputError, match="classes per unit"):
        partition(_labels(), 5, "k-classes", seed=0, k=11)
    with pytest.raises(UserInputError, match="unknown partition"):
        partition(_labels(), 5, "bogus", seed=0)
    with pytest.raises(UserInputError, match="500 units but only 292 training samples"):
        partition(_labels(), 500, "class", seed=0)
    with pytest.raises(UserInputError, match="partition class needs at most 10 units or a multiple of 10"):
        partition(_labels(), 15, "class", seed=0)
    with pytest.raises(UserInputError, match="without data"):  # 280 units, 1 random class each: some class too small
        partition(_labels(), 280, "k-classes", seed=0, k=1)


@pytest.mark.parametrize("n_units", [30, 100])
def test_class_partition_splits_each_class_evenly_among_n_over_c_units(n_units):
    train = _labels(per_class=(300, 250, 400, 350, 200, 330, 270, 310, 290, 220))
    shards = partition(train, n_units, "class", seed=0)
    for c in range(10):
        owners = [u for u in range(n_units) if u % 10 == c]
        assert len(owners) == n_units // 10
        assert all(shards.classes[u] == [c] for u in owners)
        sizes = [shards.sizes[u] for u in owners]
        assert sum(sizes) == int((train.y == c).sum()) and max(sizes) - min(sizes) <= 1


def test_impossible_partition_is_one_line_exit_2(mnist_root, capsys):
    from decentral.cli import main

    code = main(["run", "--data-root", mnist_root, "--units", "15", "--partition", "class", "--steps", "1",
                 "--transient", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "partition class needs" in err[0]


def test_batches_are_a_pure_function_of_seed_unit_step():
    offsets, sizes = np.array([0, 100, 250]), np.array([100, 150, 80])
    full = BatchIndexer([(3, 0), (3, 1), (3, 2)], offsets, sizes, batch_size=16)
    block = BatchIndexer([(3, 2)], offsets, sizes, batch_size=16)
    later = BatchIndexer([(3, 1)], offsets, sizes, batch_size=16)
    for step in (0, 5, CHUNK_STEPS - 1, CHUNK_STEPS, 3 * CHUNK_STEPS + 7):
        idx = full.indices(step)
        assert torch.equal(idx[2], block.indices(step)[0])
        assert torch.equal(idx[1], later.indices(step)[0])
        for unit in range(3):  # each unit draws inside its own shard
            assert (idx[unit] >= offsets[unit]).all() and (idx[unit] < offsets[unit] + sizes[unit]).all()
    other_seed = BatchIndexer([(4, 0)], offsets, sizes, batch_size=16)
    assert not torch.equal(other_seed.indices(0)[0], full.indices(0)[0])


def test_subsample_test_is_fixed():
    test = _labels()
    a, b = subsample_test(test, 50), subsample_test(test, 50)
    assert len(a.y) == 50 and torch.equal(a.x, b.x)
    assert subsample_test(test, None) is test


def test_window_batches_are_consecutive_runs_inside_each_shard():
    offsets, sizes = np.array([0, 100, 250]), np.array([100, 150, 40])
    windows = BatchIndexer([(3, u) for u in range(3)], offsets, sizes, batch_size=40, scheme="window")
    starts = []
    for step in range(2 * CHUNK_STEPS):
        idx = windows.indices(step)  # [U, B]
        assert torch.equal(idx - idx[:, :1], torch.arange(40).expand(3, -1))  # consecutive
        for unit in range(3):
            assert idx[unit, 0] >= offsets[unit] and idx[unit, -1] < offsets[unit] + sizes[unit]
        starts.append(idx[:, 0] - torch.as_tensor(offsets))
    starts = torch.stack(starts)  # [steps, U]
    assert (starts[:, 2] == 0).all()  # a shard of exactly one batch has one window
    assert starts[:, 1].min() == 0 and starts[:, 1].max() == 150 - 40  # every offset reachable
    iid = BatchIndexer([(3, 0)], offsets, sizes, batch_size=40)
    assert not torch.equal(iid.indices(0)[0], windows.indices(0)[0])


def test_window_batches_need_shards_of_a_whole_batch():
    with pytest.raises(UserInputError, match="--batches window needs every shard"):
        BatchIndexer([(0, 0), (0, 1)], np.array([0, 100]), np.array([100, 20]), batch_size=32, scheme="window")


def test_host_indices_equal_the_tensor_indices_and_are_read_only():
    indexer = BatchIndexer([(3, 0), (3, 1), (4, 0)], [0, 50, 0], [50, 30, 50], 8)
    for step in (0, 1, 255, 256, 700):
        host = indexer.host_indices(step)
        assert np.array_equal(host, indexer.indices(step).numpy())
        assert not host.flags.writeable

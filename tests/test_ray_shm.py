"""The shared-memory exchange alone (no Ray): spawned processes on one segment.

Every rank gets the same sum (rows added in rank order) and its sources' payloads; a peer that
stops ends the others' waits within a bounded time; the segment's name is gone once unlinked.
"""

from __future__ import annotations

import os
import time

import pytest
import torch
import torch.multiprocessing as mp

from decentral.ray_backend import shm
from decentral.ray_backend.collective import PeerLost

pytestmark = pytest.mark.skipif(not shm.available(), reason="needs Linux on x86_64 with /dev/shm")

P = 1000


def _rank(rank: int, rows: list[int], path: str, results, fate: str) -> None:
    group = shm.ShmGroup(path, rank, rows, P, timeout_s=120)  # spawned ranks start far apart
    for step in range(3):  # more rounds than buffers: the double buffering is exercised
        x = torch.full((1, P), float(rank + 1 + step))
        results.put((rank, "sum", step, group.allreduce_sum(x).numpy().copy()))
    got = group.exchange(torch.full((rows[rank], P), float(rank)), [], [(rank + 1) % len(rows)],
                         [(rows[(rank + 1) % len(rows)], P)])
    results.put((rank, "neighbour", 0, got[0].numpy().copy()))
    if rank == len(rows) - 1:
        if fate == "dies":
            results.close()
            results.join_thread()
            os._exit(1)
        time.sleep(30)  # alive, silent
        return
    group.timeout_s = 2.0
    start = time.monotonic()
    try:
        group.allreduce_sum(torch.ones(1, P))
        results.put((rank, "finished", 0, time.monotonic() - start))
    except PeerLost as err:
        results.put((rank, str(err)[:30], 0, time.monotonic() - start))


@pytest.mark.parametrize("fate", ["dies", "hangs"])
def test_sums_agree_and_a_lost_peer_ends_the_wait_within_the_timeout(fate):
    rows = [1, 2, 1]  # rank 1 publishes two rows (a compressed payload of k = 2)
    world = len(rows)
    path = shm.create(rows, P)
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_rank, args=(r, rows, path, results, fate)) for r in range(world)]
    for p in procs:
        p.start()
    try:
        got = [results.get(timeout=120) for _ in range(3 * world + world + world - 1)]
    finally:
        for p in procs:
            p.kill()
        shm.unlink(path)
    assert not os.path.exists(path)
    for step in range(3):
        sums = [v for _, what, s, v in got if what == "sum" and s == step]
        assert len(sums) == world and all((s == sum(range(1 + step, world + 1 + step))).all() for s in sums)
    for rank, what, _, value in got:
        if what == "neighbour":
            assert value.shape == (rows[(rank + 1) % world], P) and (value == (rank + 1) % world).all()
    ends = [(what, seconds) for _, what, _, seconds in got if what not in ("sum", "neighbour")]
    assert len(ends) == world - 1
    for what, seconds in ends:
        assert what.startswith("shared-memory exchange") and seconds < 2.0 + 5.0, (what, seconds)


def test_stop_ends_a_wait_at_once(tmp_path):
    path = shm.create([1, 1], P, directory=str(tmp_path))
    group = shm.ShmGroup(path, 0, [1, 1], P, stop=lambda: True, timeout_s=60)
    start = time.monotonic()
    with pytest.raises(PeerLost, match="stopped"):
        group.allreduce_sum(torch.ones(1, P))  # rank 1 never publishes
    assert time.monotonic() - start < 1.0


def test_a_segment_the_directory_cannot_hold_fails_at_creation_and_leaves_nothing(tmp_path, monkeypatch):
    def full(fd, offset, length):
        raise OSError(28, "No space left on device")  # a container's small /dev/shm
    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(OSError):
        shm.create([1, 1], P, directory=str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_a_segment_is_reserved_whole_at_creation(tmp_path):
    path = shm.create([1, 2], P, directory=str(tmp_path))
    assert os.stat(path).st_blocks * 512 >= 2 * 3 * P * 4  # allocated, not a sparse file

"""The collective data plane alone (no Ray): gloo groups of spawned processes on loopback.

Sums equal on every rank, and a peer that dies mid-exchange ends in `PeerLost` within a bounded
time: at once when its process dies, after gloo's timeout when it just stops answering.
"""

from __future__ import annotations

import os
import time

import pytest
import torch
import torch.multiprocessing as mp

from decentral.ray_backend.collective import Group, PeerLost, Rendezvous

IP = "127.0.0.1"


def _rank(rank: int, world: int, addresses, results, fate: str) -> None:
    if rank == 0:
        rendezvous = Rendezvous(IP, world, timeout_s=30)
        for _ in range(world - 1):
            addresses.put(rendezvous.address)
        group = Group(0, world, rendezvous.address, IP, store=rendezvous.store, timeout_s=3)
    else:
        group = Group(rank, world, addresses.get(timeout=60), IP, timeout_s=3)
    x = torch.full((2, 1000), float(rank + 1))
    results.put((rank, "sum", group.allreduce_sum(x).numpy().copy()))
    if rank == world - 1:
        if fate == "dies":
            results.close()
            results.join_thread()  # flush our result, then die without any clean-up
            os._exit(1)
        time.sleep(30)  # "hangs": alive, silent
        return
    start = time.monotonic()
    try:
        group.allreduce_sum(torch.ones(2, 1000))
        results.put((rank, "finished", 0.0))
    except PeerLost as err:
        results.put((rank, str(err).splitlines()[0][:40], time.monotonic() - start))


@pytest.mark.parametrize("fate", ["dies", pytest.param("hangs", marks=pytest.mark.slow)])
def test_a_lost_peer_ends_the_exchange_within_a_bounded_time(fate):
    world = 3
    ctx = mp.get_context("spawn")
    addresses, results = ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_rank, args=(r, world, addresses, results, fate)) for r in range(world)]
    for p in procs:
        p.start()
    try:
        got = [results.get(timeout=120) for _ in range(2 * world - 1)]
    finally:
        for p in procs:
            p.kill()
    sums = [value for _, what, value in got if what == "sum"]
    assert len(sums) == world and all((s == sum(range(1, world + 1))).all() for s in sums)
    ends = [(what, value) for _, what, value in got if what != "sum"]
    assert len(ends) == world - 1
    for what, seconds in ends:  # the survivor next to the silent/dead rank, and the one behind it
        assert what.startswith("all-reduce failed") and seconds < 3.0 + 5.0, (what, seconds)  # timeout 3 s
    if fate == "dies":  # closed sockets: no waiting for the timeout
        assert min(seconds for _, seconds in ends) < 2.5

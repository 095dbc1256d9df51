"""The collective data plane: torch.distributed's gloo process group inside the unit actors.

Ray stays the control plane (placement, data loading, stats, checkpoints, restarts); at a
coupling step the actors exchange tensors over one gloo process group, rank a = actor index a,
world = number of actors, set up the way Ray Train sets up its groups: rank 0 hosts the
rendezvous (a `TCPStore` on its node address) and the driver hands that address to every rank.
The store only carries gloo's connection set-up; rank 0 is then a peer like any other (no
parameter server: in the all-reduce it swaps with its partners exactly as every rank does).

Only the node address ever listens: the store's socket is bound here to the node address
(passed to `TCPStore` as `master_listen_fd`; TCPStore alone binds the wildcard address) and
gloo's device is created for that address (`ProcessGroupGloo.create_device(hostname=...)`), so
on local Ray and the loopback cluster every data-plane socket is on loopback.

Two exchanges, both pure moves of tensors (the math stays in `update`, `forms` and `block`):

* :func:`allreduce_sum` (mean field): the sum over ranks of one [k, P] tensor, by recursive
  doubling over gloo send/recv: ceil(log2 W) (+2 when W is not a power of two) sequential
  exchanges instead of gloo's ring all-reduce's 2(W-1); every rank ends with the bitwise same
  sum (docs/ray.md has the measurements behind the choice; `ALLREDUCE_ENV` picks gloo's own).
* :func:`exchange` (any other graph): each block sends its payload to the blocks that read it
  and receives its sources' payloads, point to point (isend/irecv), neighbours only.

Every gloo operation carries the group's timeout: a peer that dies mid-exchange makes the
others fail at once (its sockets close) or, on a lost node, after `timeout_s`; never a hang.
"""

from __future__ import annotations

import datetime
import gc
import os
import socket
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

ALLREDUCE_ENV = "DECENTRAL_RAY_ALLREDUCE"  # "doubling" (default) or "gloo" (gloo's ring all-reduce)
TIMEOUT_S = 60.0  # gloo's timeout per operation and for the rendezvous


class PeerLost(RuntimeError):
    """A gloo operation failed: a peer died or timed out (the driver restarts the group)."""


@dataclass
class Meter:
    """Bytes this rank sent and seconds it spent in exchanges (waiting included)."""

    bytes: int = 0
    messages: int = 0  # point-to-point sends
    seconds: float = 0.0
    exchanges: int = 0

    def sent(self, tensor: torch.Tensor, count: int = 1) -> None:
        self.bytes += tensor.nbytes * count
        self.messages += count


class Rendezvous:
    """Rank 0's store: a TCPStore serving a socket bound to the node address only."""

    def __init__(self, node_ip: str, world: int, timeout_s: float = TIMEOUT_S):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((node_ip, 0))
        self.sock.listen(max(world, 8))
        self.address = (node_ip, self.sock.getsockname()[1])
        self.store = dist.TCPStore(node_ip, self.address[1], world, True, _delta(timeout_s),
                                   wait_for_workers=False, master_listen_fd=self.sock.fileno())

    def close(self) -> None:
        self.store = None
        self.sock.close()


class Group:
    """One rank's gloo process group (rank, world) and its traffic meter."""

    def __init__(self, rank: int, world: int, address: tuple[str, int], node_ip: str,
                 store=None, meter: Meter | None = None, timeout_s: float = TIMEOUT_S):
        self.rank, self.world, self.timeout = rank, world, _delta(timeout_s)
        self.meter = meter if meter is not None else Meter()  # the caller's, kept across rebuilds
        if store is None:
            store = dist.TCPStore(address[0], address[1], world, False, _delta(timeout_s))
        self.store = store  # kept alive with the group
        options = dist.ProcessGroupGloo._Options()
        options._devices = [dist.ProcessGroupGloo.create_device(hostname=node_ip)]
        options._timeout = _delta(timeout_s)
        try:
            self.pg = dist.ProcessGroupGloo(store, rank, world, options)
        except RuntimeError as err:
            raise PeerLost(f"gloo rendezvous at {address[0]}:{address[1]} failed: {_first_line(err)}") from None
        self.use_gloo_allreduce = os.environ.get(ALLREDUCE_ENV, "doubling") == "gloo"

    def close(self) -> None:
        """Close every connection now, so peers blocked on this rank fail at once."""
        self.pg = None  # gloo closes its pairs when the group is destroyed
        gc.collect()

    def allreduce_sum(self, x: torch.Tensor) -> torch.Tensor:
        """Sum over ranks of x [k, P] (float32, contiguous), in place; the same bits on every rank."""
        start = time.perf_counter()
        try:
            if self.world > 1:
                if self.use_gloo_allreduce:
                    self.pg.allreduce([x]).wait(self.timeout)
                    self.meter.messages += 2 * (self.world - 1)  # ring: reduce-scatter + all-gather
                    self.meter.bytes += 2 * x.nbytes * (self.world - 1) // self.world  # ring
                else:
                    _doubling(self, x)
        except RuntimeError as err:
            raise PeerLost(f"all-reduce failed: {_first_line(err)}") from None
        finally:
            self.meter.seconds += time.perf_counter() - start
            self.meter.exchanges += 1
        return x

    def exchange(self, payload: torch.Tensor, readers, sources, shapes) -> list[torch.Tensor]:
        """Send payload [k, P] to each reader rank; receive one tensor of shapes[b] from each
        source rank (in `sources` order). Point to point, all posted at once."""
        start = time.perf_counter()
        received = [torch.empty(shape, dtype=payload.dtype) for shape in shapes]
        try:
            works = [self.pg.send([payload], r, 0) for r in readers]
            works += [self.pg.recv([buf], s, 0) for buf, s in zip(received, sources)]
            for work in works:
                work.wait(self.timeout)
        except RuntimeError as err:
            raise PeerLost(f"neighbour exchange failed: {_first_line(err)}") from None
        finally:
            self.meter.seconds += time.perf_counter() - start
            self.meter.exchanges += 1
        self.meter.sent(payload, len(readers))
        return received


def _doubling(group: Group, x: torch.Tensor) -> None:
    """Recursive doubling: ranks >= 2^m (m = floor log2 W) first fold into rank - 2^m, the 2^m
    core ranks swap and add in log2 rounds, then the folded ranks get the result back.
    Both peers of a swap add the same two tensors (a + b == b + a): identical sums."""
    pg, rank, world = group.pg, group.rank, group.world
    core = 1 << (world.bit_length() - 1)  # largest power of two <= world
    other = torch.empty_like(x)
    if rank >= core:  # folded: send ours, receive the total
        pg.send([x], rank - core, 1).wait(group.timeout)
        pg.recv([x], rank - core, 2).wait(group.timeout)
        group.meter.sent(x)
        return
    if rank + core < world:
        pg.recv([other], rank + core, 1).wait(group.timeout)
        x += other
    mask = 1
    while mask < core:
        peer = rank ^ mask
        sent = pg.send([x.clone()], peer, 0)
        pg.recv([other], peer, 0).wait(group.timeout)
        sent.wait(group.timeout)
        x += other
        group.meter.sent(x)
        mask <<= 1
    if rank + core < world:
        pg.send([x], rank + core, 2).wait(group.timeout)
        group.meter.sent(x)


def _delta(seconds: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=seconds)


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__

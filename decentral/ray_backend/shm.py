"""The shared-memory data plane: the actors of one node exchange through one segment in /dev/shm.

The gloo plane (`collective`) pays, per coupling step, ceil(log2 W) network round trips, each
one a wake-up of a descheduled process when W actors share few cores. Actors on the same node
need no messages at all: rank 0 creates one segment, every rank maps it, and a step is one
write and one read of memory. The segment holds, for W ranks,

    counters  int64 [W]          counters[r] = rounds rank r has published (single writer each)
    rows      float32 [2, R, P]  double-buffered payloads; rank r owns rows offsets[r]:offsets[r+1]

Round m (the m-th exchange since the group was built) uses buffer m % 2: a rank writes its
payload there, then sets its counter to m + 1, then waits until every counter is >= m + 1 and
reads what it needs. No locks: each slot has one writer, and double buffering makes the reuse
safe, because a rank can write round m + 2 into a buffer only after every peer published round
m + 1, i.e. after every peer finished reading round m. The data are written before the counter
and read after it, which x86's store and load ordering keeps in that order (the Python calls
between them are no reordering compiler). Waiting sleeps in the kernel on a futex (the
segment's `seq` word), which the rank that completes a round sets and wakes: no spinning on a
CPU that the peers being waited for need, and one wake-up per rank per round. The sleep is cut
every WAIT_SLICE_S, which also bounds the rare lost wake-up (x86 may let two ranks' counter
stores and loads cross, so each sees the other late).

The interface is `collective.Group`'s (`allreduce_sum`, `exchange`, `meter`, `close`), so the
actor steps the same way on either plane. The mean-field sum adds the W rows in rank order on
every rank: the same bits everywhere.

A peer that dies or stops never bumps its counter: the waiters end when the driver aborts them
(`stop()` turns true, at once after Ray reports the death) or after `timeout_s` (`PeerLost`), and
the group is rebuilt on a fresh segment. The segment's name is unlinked as soon as every rank has
mapped it (`unlink`), so nothing is left in /dev/shm whoever dies later; the mappings live until
the last process lets go of them.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import time
import uuid

import numpy as np
import torch

from .collective import TIMEOUT_S, Meter, PeerLost

SHM_DIR = "/dev/shm"
PREFIX = "decentral-"  # segment names: decentral-<uuid hex>
WAIT_SLICE_S = 5e-3  # longest sleep between checks of stop() and the deadline while waiting
_FUTEX_SYSCALL = {"x86_64": 202}  # SYS_futex; the plane relies on x86's memory ordering
_ALIGN = 64


def _layout(rows: list[int], n_params: int) -> tuple[int, int]:
    """(byte offset of the rows, total bytes) of a segment for slots of `rows` rows each."""
    head = -(-(8 * len(rows) + 8) // _ALIGN) * _ALIGN  # counters [W] int64, then seq int32
    return head, head + 2 * sum(rows) * n_params * 4


def create(rows: list[int], n_params: int, directory: str = SHM_DIR) -> str:
    """A fresh zeroed segment for W = len(rows) ranks (rank r publishes rows[r] rows of
    n_params floats); returns its path. OSError (nothing left behind) when the directory cannot
    hold it: its pages are reserved here, since a tmpfs that runs out later (a container's 64 MB
    /dev/shm) kills the writer with SIGBUS instead."""
    path = os.path.join(directory, f"{PREFIX}{uuid.uuid4().hex}")
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.posix_fallocate(fd, 0, _layout(rows, n_params)[1])  # tmpfs: zero-filled
    except BaseException:
        unlink(path)
        raise
    finally:
        os.close(fd)
    return path


def unlink(path: str) -> None:
    """Remove the segment's name (mapped ranks keep their mappings)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def available() -> bool:
    """Whether this machine can run the plane: Linux on x86_64 with a /dev/shm."""
    return platform.system() == "Linux" and platform.machine() in _FUTEX_SYSCALL and os.path.isdir(SHM_DIR)


class Sleeper:
    """Sleep until a shared 32-bit word changes (Linux futex, shared between processes)."""

    WAIT, WAKE = 0, 1  # FUTEX_WAIT, FUTEX_WAKE (not FUTEX_PRIVATE: the word is in shared memory)

    def __init__(self):
        self.libc = ctypes.CDLL(None, use_errno=True)  # CDLL: the GIL is released in the call
        self.number = _FUTEX_SYSCALL[platform.machine()]
        self.libc.syscall.restype = ctypes.c_long

    def wait(self, address: int, expected: int, timeout_s: float) -> None:
        """Return when the word at address is woken, is no longer `expected`, or after timeout_s."""
        sec = int(timeout_s)
        spec = (ctypes.c_long * 2)(sec, int((timeout_s - sec) * 1e9))  # struct timespec
        self.libc.syscall(self.number, ctypes.c_void_p(address), self.WAIT, ctypes.c_int(expected), spec, None, 0)

    def wake(self, address: int) -> None:
        self.libc.syscall(self.number, ctypes.c_void_p(address), self.WAKE, ctypes.c_int(0x7FFFFFFF), None, None, 0)


class ShmGroup:
    """One rank's view of a node's segment, with `collective.Group`'s exchange interface.
    stop() (polled while waiting) ends a wait with PeerLost, e.g. when the driver aborts."""

    def __init__(self, path: str, rank: int, rows: list[int], n_params: int, stop=None,
                 meter: Meter | None = None, timeout_s: float = TIMEOUT_S):
        self.rank, self.world, self.timeout_s = rank, len(rows), timeout_s
        self.meter = meter if meter is not None else Meter()
        self.stop = stop or (lambda: False)
        self.closed = False
        head, size = _layout(rows, n_params)
        fd = os.open(path, os.O_RDWR)
        try:
            self.map = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self.counters = np.frombuffer(self.map, dtype=np.int64, count=self.world)  # [W]
        self.seq = ctypes.c_int32.from_buffer(self.map, 8 * self.world)  # the round last completed
        self.seq_address = ctypes.addressof(self.seq)
        self.sleeper = Sleeper()
        total = sum(rows)
        self.rows = torch.from_numpy(np.frombuffer(self.map, dtype=np.float32, offset=head,
                                                   count=2 * total * n_params).reshape(2, total, n_params))
        self.offsets = np.concatenate([[0], np.cumsum(rows)]).tolist()  # [W + 1]
        self.firsts = slice(0, self.world) if rows == [1] * self.world else np.array(self.offsets[:-1])
        self.round = 0

    def close(self) -> None:
        """Stop any wait on this segment (a rebuild replaces the group); the mapping is freed
        once nothing refers to it."""
        self.closed = True

    def _publish(self, payload: torch.Tensor, read: bool = True) -> torch.Tensor:
        """Write this rank's payload for the current round (counted as sent when some rank
        reads it); returns the round's buffer [R, P]. Every rank publishes every round: the
        counters are also the barrier that makes the double buffering safe."""
        buf = self.rows[self.round % 2]
        lo = self.offsets[self.rank]
        buf[lo:lo + payload.shape[0]].copy_(payload)  # at most the rank's rows
        self.counters[self.rank] = self.round + 1  # after the data (x86: stores stay in order)
        if read:
            self.meter.sent(payload)
        return buf

    def _wait_all(self) -> None:
        """Until every rank has published the current round: asleep in the kernel (a futex on
        the segment's `seq` word, woken by the rank that completes the round), re-checking
        stop() and the deadline every WAIT_SLICE_S."""
        target, counters = self.round + 1, self.counters
        deadline = time.monotonic() + self.timeout_s
        while True:
            seen = self.seq.value  # read before the counters: a later wake changes it
            if counters.min() >= target:
                self._wake(target)  # the round is complete: wake the sleepers (no-op if woken)
                return
            if self.closed or self.stop():
                raise PeerLost(f"shared-memory exchange stopped at round {self.round}")
            if time.monotonic() > deadline:
                late = [r for r in range(self.world) if counters[r] < target]
                raise PeerLost(f"shared-memory exchange: ranks {late} silent for {self.timeout_s:g} s")
            self.sleeper.wait(self.seq_address, seen, WAIT_SLICE_S)

    def _wake(self, target: int) -> None:
        value = target & 0x7FFFFFFF
        if self.seq.value != value:
            self.seq.value = value
            self.sleeper.wake(self.seq_address)

    def _timed(self, body):
        start = time.perf_counter()
        try:
            return body()
        finally:
            self.round += 1
            self.meter.seconds += time.perf_counter() - start
            self.meter.exchanges += 1

    def allreduce_sum(self, x: torch.Tensor) -> torch.Tensor:
        """Sum over ranks of x [1, P] (float32, contiguous), in place: the rows added in rank
        order (same bits on every rank)."""
        if self.world == 1:
            return x

        def body():
            buf = self._publish(x)
            self._wait_all()
            firsts = buf.numpy()[self.firsts]  # [W, P]: each rank's first row, in rank order
            np.sum(firsts, axis=0, out=x.numpy()[0])  # row after row (axis 0): same bits on every rank
            return x
        return self._timed(body)

    def exchange(self, payload: torch.Tensor, readers, sources, shapes) -> list[torch.Tensor]:
        """Publish payload [k, P]; return copies of each source rank's payload (shapes[b])."""
        if self.world == 1:
            return []

        def body():
            buf = self._publish(payload, read=bool(readers))
            self._wait_all()
            return [buf[self.offsets[s]:self.offsets[s + 1]].clone().view(shape)
                    for s, shape in zip(sources, shapes)]
        return self._timed(body)

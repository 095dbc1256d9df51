"""The snapshot exchange protocol between actors: publish once, read neighbours directly.

At each coupling step t an actor sends its block's payload (the compressed snapshot
R @ theta(t) [k, P] that `plan` chose, or theta(t) itself) to each reader
(`reader.receive.remote(...)`, fire and forget): inline in the call when it is small (one
row: 64 KB for D=1), else put into the object store once (`ray.put`) with only the object
ref sent to each reader. Readers keep what they receive in an :class:`Inbox`, keyed
by source actor and step, and await the refs they use: parameters travel actor to actor and
never through the driver. Synchronous gossip (staleness 0) waits for the
snapshots of step t exactly, which is Eq. 2; bounded staleness s accepts the newest snapshot
of steps t-s .. t from each source.

Every message carries an *epoch*: after a restart the driver rolls all actors back to a
checkpoint and bumps the epoch, so snapshots still in flight from before are ignored.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field

from .plan import acceptable

# Snapshots up to this size travel inline in the actor call (Ray inlines arguments below
# 100 KiB); bigger ones go through the object store once and readers receive the ref.
# $DECENTRAL_INLINE_BYTES (read where the actor runs) overrides it, for tuning.
INLINE_BYTES = int(os.environ.get("DECENTRAL_INLINE_BYTES", 96 * 1024))


class Aborted(Exception):
    """The driver asked the actor to stop waiting (a peer died); it will be restored."""


@dataclass
class Traffic:
    """Messages and payload bytes this actor has sent (bytes: the arrays actually sent, once
    per reader; an object-store payload counts once per reader too)."""

    messages: int = 0
    bytes: int = 0
    snapshots: int = 0  # payloads published (one per coupling step with readers)


@dataclass
class Inbox:
    """Snapshot refs received from source actors, {source: {step: ref}}, and a wake-up."""

    sources: tuple[int, ...]
    epoch: int = 0
    aborted: bool = False
    _refs: dict = field(default_factory=dict)
    _changed: asyncio.Event | None = None

    def __post_init__(self):
        self._refs = {s: {} for s in self.sources}

    def _event(self) -> asyncio.Event:
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def put(self, source: int, step: int, ref, epoch: int) -> None:
        if epoch != self.epoch or source not in self._refs:
            return  # from before a rollback: stale timeline
        self._refs[source][step] = ref
        self._event().set()

    def reset(self, epoch: int) -> None:
        """Forget everything (rollback to a checkpoint) and accept only `epoch` from now on."""
        self.epoch, self.aborted = epoch, False
        self._refs = {s: {} for s in self.sources}

    def abort(self) -> None:
        self.aborted = True
        self._event().set()

    async def wait_aborted(self) -> None:
        """Return once `abort` has been called (the collective plane's wait for the driver)."""
        while not self.aborted:
            event = self._event()
            event.clear()
            await event.wait()

    def pick(self, step: int, staleness: int) -> list | None:
        """The newest acceptable ref of each source, or None while one is missing."""
        chosen = []
        for source in self.sources:
            steps = [s for s in self._refs[source] if acceptable(s, step, staleness)]
            if not steps:
                return None
            chosen.append(self._refs[source][max(steps)])
        return chosen

    async def gather(self, step: int, staleness: int) -> list:
        """Wait until every source has an acceptable snapshot; return their refs, in order."""
        while True:
            if self.aborted:
                raise Aborted(f"aborted while waiting for snapshots of step {step}")
            chosen = self.pick(step, staleness)
            if chosen is not None:
                self.prune(step - staleness)
                return chosen
            event = self._event()
            event.clear()
            await event.wait()

    def prune(self, oldest: int) -> None:
        """Drop snapshots older than step `oldest` (they can serve no later step)."""
        for refs in self._refs.values():
            for s in [s for s in refs if s < oldest]:
                del refs[s]


def publish(ray, readers: dict, source: int, step: int, payload, epoch: int, traffic: Traffic):
    """Send payload (numpy [k, P]) to each reader: inline in the call when small, else put it
    in the object store once and send the ref (a list, so Ray passes the ref, not the value)."""
    if not readers:
        return
    traffic.snapshots += 1
    message = [payload] if payload.nbytes <= INLINE_BYTES else [ray.put(payload)]
    for handle in readers.values():
        handle.receive.remote(source, step, message, epoch)
        traffic.messages += 1
        traffic.bytes += payload.nbytes


async def resolve(items: list) -> list:
    """Values of inbox items: inline arrays as they are, object refs awaited (concurrently)."""
    refs = [(k, item) for k, item in enumerate(items) if not hasattr(item, "shape")]
    values = list(items)
    if refs:
        resolved = await asyncio.gather(*(ref for _, ref in refs))
        for (k, _), value in zip(refs, resolved):
            values[k] = value
    return values

"""The thin unit actor: holds a block of units (parameters, private data, step), steps it with
`stepper.BlockStepper` (the local engine's fused kernel) and moves tensors on one of two data
planes (docs/ray.md, "Data planes"):

* **collective** (synchronous runs): a gloo process group over the actors (`collective`); at
  a coupling step one all-reduce of block sums under mean field, else a point-to-point exchange
  of the `plan` payloads with the neighbouring blocks only. The steps run in a worker thread
  so the actor's event loop stays free: when a peer dies the driver's `abort` returns
  `advance` at once, and the stale thread (blocked in gloo until its timeout) never touches
  the state again (an epoch check under a lock).
* **actor calls** (bounded staleness): each block publishes its payload with fire-and-forget
  `receive` calls and reads its sources' from an :class:`~gossip.Inbox` (`gossip`).
"""

from __future__ import annotations

import asyncio
import threading
import warnings

import ray
import torch

from .. import backends
from ..threads import limit as limit_threads
from . import block as B
from . import shm
from .collective import Group, Meter, PeerLost, Rendezvous
from .gossip import Aborted, Inbox, Traffic, publish, resolve
from .plan import COLLECTIVE, Block, is_coupling_step
from .stepper import BlockStepper, torch_csr as _sparse



class UnitActor:
    """One Ray actor hosting the units of `plan_block` (see `driver` for its options)."""

    def __init__(self, arch, hyper: B.BlockHyper, plan_block: Block, source, checkpoint_every: int,
                 threads: int = 1, plane: str = COLLECTIVE):
        limit_threads(threads)  # BLAS, OpenMP and PyTorch: the CPUs the actor requested
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        self.arch, self.hyper, self.plan, self.plane = arch, hyper, plan_block, plane
        self.checkpoint_every = checkpoint_every
        self.data = source.load(plan_block.units)  # on this node, from the data root
        backend = backends.select("cpu", choice=hyper.kernels, arch=arch)  # the gradient backend, once per actor
        self.stepper = BlockStepper(arch, hyper, plan_block, self.data, backend)
        self.send_rows = None if plan_block.raw else _sparse(plan_block.send_rows)  # [k, n]
        self.cross = _sparse(plan_block.cross) if plan_block.sources else None  # [n, sum k_B]
        self.theta = B.initial_block(arch, hyper, plan_block.units)  # [n, P]
        self.step = 0
        self.inbox = Inbox(plan_block.sources)
        self.readers: dict = {}
        self.traffic = Traffic()
        self.checkpoint: tuple[int, object] | None = None  # latest (step, theta numpy) not yet reported
        self.group: Group | shm.ShmGroup | None = None
        self.meter = Meter()  # collective traffic, kept across group rebuilds
        self.rendezvous: Rendezvous | None = None
        self.lock = threading.Lock()  # the state (theta, step, epoch) between the loop and the step thread

    def ready(self) -> dict:
        ctx = ray.get_runtime_context()
        return {"node": ctx.get_node_id(), "actor": self.plan.index, "units": list(self.plan.units),
                "ip": ray.util.get_node_ip_address()}

    def set_readers(self, readers: dict) -> None:
        """Handles of the actors that read this one's snapshot, {actor index: handle}."""
        self.readers = {a: readers[a] for a in self.plan.readers}

    # --- the collective data plane ---------------------------------------------------
    def open_rendezvous(self, world: int) -> tuple[str, int]:
        """Rank 0 only: a fresh store on this node's address; returns (host, port)."""
        if self.rendezvous is not None:
            self.rendezvous.close()
        self.rendezvous = Rendezvous(ray.util.get_node_ip_address(), world)
        return self.rendezvous.address

    async def join(self, address: tuple[str, int], world: int) -> None:
        """Join (or rebuild) the process group; returns when every rank has joined."""
        store = self.rendezvous.store if self.rendezvous is not None else None
        ip = ray.util.get_node_ip_address()
        self.group = await asyncio.to_thread(Group, self.plan.index, world, tuple(address), ip, store, self.meter)

    def open_segment(self, rows: list[int], n_params: int) -> str | None:
        """Rank 0 only, shared-memory exchange: a fresh segment on this node; returns its path,
        or None when the node cannot hold it (not Linux on x86_64, whatever the driver's machine
        is, or /dev/shm full or unwritable: the driver uses gloo)."""
        if not shm.available():
            return None
        try:
            return shm.create(rows, n_params)
        except OSError:
            return None

    def join_segment(self, path: str, rows: list[int]) -> None:
        """Map the node's segment as this actor's group (closing the previous group's waits)."""
        if self.group is not None:
            self.group.close()
        aborted = self.inbox
        self.group = shm.ShmGroup(path, self.plan.index, rows, self.theta.shape[1],
                                  stop=lambda: aborted.aborted, meter=self.meter)

    def unlink_segment(self, path: str) -> None:
        shm.unlink(path)

    # --- steps -------------------------------------------------------------------------
    async def advance(self, n_steps: int) -> dict:
        """Take n_steps coupled steps; returns the status the driver keeps (no parameters,
        except a checkpoint when one was taken)."""
        try:
            if self.plane == COLLECTIVE:
                await self._advance_in_thread(n_steps)
            else:
                for _ in range(n_steps):
                    await self._one_step()
        except (Aborted, PeerLost) as err:
            return {"aborted": True, "step": self.step, "error": str(err)}
        report, self.checkpoint = self.checkpoint, None
        return {"aborted": False, "step": self.step, "finite": bool(torch.isfinite(self.theta).all()),
                "checkpoint": report}

    async def _advance_in_thread(self, n_steps: int) -> None:
        """The steps in a worker thread; an abort (or a peer's failure) ends the wait at once."""
        epoch = self.inbox.epoch
        work = asyncio.ensure_future(asyncio.to_thread(self._steps, n_steps, epoch, self.group))
        aborted = asyncio.ensure_future(self.inbox.wait_aborted())
        done, _ = await asyncio.wait({work, aborted}, return_when=asyncio.FIRST_COMPLETED)
        aborted.cancel()
        if work not in done:
            raise Aborted("aborted while exchanging with a peer")
        work.result()

    def _steps(self, n_steps: int, epoch: int, group: Group) -> None:
        for _ in range(n_steps):
            t = self.step
            if self.inbox.aborted:
                raise Aborted(f"aborted at step {t}")
            coupled = self.hyper.sigma != 0 and is_coupling_step(t, self.hyper.gossip_period)
            cross = self._exchange(group, t) if coupled else None  # [n, P] or [1, P]
            with self.lock:
                if self.inbox.epoch != epoch or self.step != t:
                    raise Aborted(f"superseded at step {t}")  # rolled back meanwhile
                self._commit(self.stepper.step(self.theta, t, coupled, cross), t + 1)

    def _exchange(self, group: Group, t: int) -> torch.Tensor | None:
        """sum_{j outside the block} q_ij theta_j(t): [1, P] under mean field, else [n, P]."""
        with torch.no_grad():
            if self.plan.mean_field:
                local = self.theta.sum(dim=0, keepdim=True)  # [1, P]
                return group.allreduce_sum(local.clone()) - local
            sent = B.payload(self.theta, self.send_rows)  # [k, P]
            shapes = [(k, self.theta.shape[1]) for k in self.plan.source_rows]
            received = group.exchange(sent.contiguous(), self.plan.readers, self.plan.sources, shapes)
            return torch.sparse.mm(self.cross, torch.cat(received)) if received else None

    def _commit(self, theta: torch.Tensor, step: int) -> None:
        self.theta, self.step = theta, step
        if self.checkpoint_every and step % self.checkpoint_every == 0:
            self.checkpoint = (step, theta.numpy().copy())

    async def _one_step(self) -> None:
        """One step on the actor-call plane (bounded staleness)."""
        t, hyper = self.step, self.hyper
        coupled = hyper.sigma != 0 and is_coupling_step(t, hyper.gossip_period)
        cross = None
        with torch.no_grad():
            if coupled and self.readers:
                sent = B.payload(self.theta, self.send_rows).numpy()  # [k, P]
                publish(ray, self.readers, self.plan.index, t, sent, self.inbox.epoch, self.traffic)
            if coupled and self.plan.sources:
                payloads = [torch.from_numpy(a) for a in await self._neighbours(t)]  # [k_B, P] each
                cross = torch.sparse.mm(self.cross, torch.cat(payloads))  # [n, P]
            self._commit(self.stepper.step(self.theta, t, coupled, cross), t + 1)

    async def receive(self, source: int, step: int, ref: list, epoch: int) -> None:
        self.inbox.put(source, step, ref[0], epoch)

    async def _neighbours(self, step: int) -> list:
        refs = await self.inbox.gather(step, self.hyper.staleness)
        return await resolve(refs)

    # --- control -----------------------------------------------------------------------
    async def abort(self) -> int:
        self.inbox.abort()
        return self.step

    def restore(self, checkpoint, epoch: int) -> int:
        """Roll back to (step, theta [n, P]) or, for None, to theta(0); accept only `epoch`."""
        with self.lock:
            if checkpoint is None:
                self.step, self.theta = 0, B.initial_block(self.arch, self.hyper, self.plan.units)
            else:
                self.step, self.theta = checkpoint[0], torch.from_numpy(checkpoint[1].copy())
            self.inbox.reset(epoch)
            self.checkpoint = None
        return self.step

    def stats(self) -> dict:
        return B.block_stats(self.arch, self.theta, self.data.test)

    def parameters(self):
        return self.theta.numpy()  # [n, P]

    def traffic_counts(self) -> dict:
        t, meter = self.traffic, self.meter
        return {"messages": t.messages + meter.messages, "bytes": t.bytes + meter.bytes,
                "snapshots": t.snapshots + meter.exchanges, "comm_seconds": meter.seconds}

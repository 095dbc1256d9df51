"""The thin unit actor: holds a block of units (parameters, private data, step) and forwards
every computation to the pure functions of `block`, every exchange to `gossip`. At a
coupling step it publishes its block's payload (`block.payload`: the compressed snapshot
R @ theta of `plan`, or theta itself) and steps with its own rows and its sources' payloads.

It is an asyncio actor: while `advance` awaits neighbours' snapshots, the event loop serves
their `receive` calls (and the driver's `abort`), so actors gossip among themselves inside
one `advance(n)` call per block of steps.
"""

from __future__ import annotations

import warnings

import ray
import torch

from .. import backends
from ..threads import limit as limit_threads
from . import block as B
from .gossip import Aborted, Inbox, Traffic, publish, resolve
from .plan import Block, is_coupling_step


class UnitActor:
    """One Ray actor hosting the units of `plan_block` (see `driver` for its options)."""

    def __init__(self, arch, hyper: B.BlockHyper, plan_block: Block, source, checkpoint_every: int,
                 threads: int = 1):
        limit_threads(threads)  # BLAS, OpenMP and PyTorch: the CPUs the actor requested
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        self.arch, self.hyper, self.plan = arch, hyper, plan_block
        self.checkpoint_every = checkpoint_every
        self.data = source.load(plan_block.units)  # on this node, from the data root
        self.indexer = B.make_indexer(hyper, plan_block.units, self.data)
        self.backend = backends.select("cpu", choice=hyper.kernels)  # the gradient backend, once per actor
        self.q_rows = torch.as_tensor(plan_block.q_rows, dtype=torch.float32)  # [n, M]
        self.degree = torch.as_tensor(plan_block.degree, dtype=torch.float32).unsqueeze(1)  # [n, 1]
        self.send_rows = None if plan_block.raw else torch.as_tensor(plan_block.send_rows,
                                                                     dtype=torch.float32)  # [k, n]
        self.theta = B.initial_block(arch, hyper, plan_block.units)  # [n, P]
        self.step = 0
        self.inbox = Inbox(plan_block.sources)
        self.readers: dict = {}
        self.traffic = Traffic()
        self.checkpoint: tuple[int, object] | None = None  # latest (step, theta numpy) not yet reported

    def ready(self) -> dict:
        ctx = ray.get_runtime_context()
        return {"node": ctx.get_node_id(), "actor": self.plan.index, "units": list(self.plan.units)}

    def set_readers(self, readers: dict) -> None:
        """Handles of the actors that read this one's snapshot, {actor index: handle}."""
        self.readers = {a: readers[a] for a in self.plan.readers}

    async def receive(self, source: int, step: int, ref: list, epoch: int) -> None:
        self.inbox.put(source, step, ref[0], epoch)

    async def abort(self) -> int:
        self.inbox.abort()
        return self.step

    async def advance(self, n_steps: int) -> dict:
        """Take n_steps coupled steps; returns the status the driver keeps (no parameters,
        except a checkpoint when one was taken)."""
        try:
            for _ in range(n_steps):
                await self._one_step()
        except Aborted:
            return {"aborted": True, "step": self.step}
        report, self.checkpoint = self.checkpoint, None
        return {"aborted": False, "step": self.step, "finite": bool(torch.isfinite(self.theta).all()),
                "checkpoint": report}

    async def _one_step(self) -> None:
        t, hyper = self.step, self.hyper
        coupled = hyper.sigma != 0 and is_coupling_step(t, hyper.gossip_period)
        with torch.no_grad():
            if coupled and self.readers:
                sent = B.payload(self.theta, self.send_rows).numpy()  # [k, P]
                publish(ray, self.readers, self.plan.index, t, sent, self.inbox.epoch, self.traffic)
            grad = B.local_gradient(self.arch, self.theta, self.data, self.indexer, t, self.backend)  # [n, P]
            if coupled:
                payloads = [torch.from_numpy(a) for a in await self._neighbours(t)]  # [k_B, P] each
                sources = torch.cat([self.theta, *payloads])  # [M, P], M = n + sum k_B
                self.theta = B.coupled_step(self.theta, grad, self.q_rows, sources, self.degree, hyper)
            else:
                self.theta = B.local_step(self.theta, grad, hyper)
        self.step = t + 1
        if self.checkpoint_every and self.step % self.checkpoint_every == 0:
            self.checkpoint = (self.step, self.theta.numpy().copy())

    async def _neighbours(self, step: int) -> list:
        refs = await self.inbox.gather(step, self.hyper.staleness)
        return await resolve(refs)

    def restore(self, checkpoint, epoch: int) -> int:
        """Roll back to (step, theta [n, P]) or, for None, to theta(0); accept only `epoch`."""
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
        t = self.traffic
        return {"messages": t.messages, "bytes": t.bytes, "snapshots": t.snapshots}


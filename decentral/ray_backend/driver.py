"""`run_ray`: start the unit actors, set sigma, collect metrics, restart actors that die.

The driver never averages or relays parameters during steps. It calls each actor once per
block of steps (`advance(n)`); the actors gossip among themselves inside that call. It keeps
the checkpoints actors report every K steps; when an actor (or its node) dies it starts a
replacement wherever the cluster has room, rolls every actor back to the last common
checkpoint and replays. Batches and initial parameters are pure functions of (seed, unit,
step), so the replay gives the same numbers as an undisturbed run, and no measurement is lost.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os

import numpy as np
import torch

from ..engine import EngineState
from ..runner import progress_bar, run_phases
from . import cluster
from .actor import UnitActor
from .block import BlockHyper, combine_stats
from . import shm
from .plan import (COLLECTIVE, EXCHANGE_ENV, GLOO, PLANE_ENV, SHM, choose_exchange, choose_layout,
                   choose_plane, make_blocks, messages_per_coupling, slot_rows)
from .sources import mnist_source

READY_TIMEOUT_S = 300.0  # placing and loading all actors at start (MNIST load included)
RESTART_TIMEOUT_S = 120.0  # placing and loading a replacement actor
MAX_RESTARTS = 10  # per run; beyond this the run stops with an error
JOIN_TIMEOUT_S = 120.0  # every actor joining the gloo process group


class ActorsLost(Exception):
    def __init__(self, dead: list[int]):
        super().__init__(f"unit actors {dead} died")
        self.dead = dead


def hyper_of(cfg) -> BlockHyper:
    return BlockHyper(cfg.lr, cfg.weight_decay, cfg.batch_size, cfg.sigma, cfg.units,
                      cfg.gossip_period, cfg.staleness, cfg.seed, cfg.init, cfg.batches, cfg.kernels)


class Fleet:
    """The actors of one run, their checkpoints, and the restart logic."""

    def __init__(self, ray, cfg, arch, blocks, source, on_advance=None):
        self.ray, self.cfg, self.arch, self.blocks, self.source = ray, cfg, arch, blocks, source
        self.hyper = hyper_of(cfg)
        self.plane = choose_plane(cfg.staleness, os.environ.get(PLANE_ENV))
        self.exchange = None  # the collective plane's latest exchange: "shm" or "gloo"
        self.rebuilds = 0  # collective failures without a death (a gloo timeout)
        self.remote = ray.remote(UnitActor)
        self.handles: dict = {}
        self.nodes: dict = {}  # actor index -> Ray node id of its latest host
        self.hosts: set = set()  # every node that hosted a unit
        self.step, self.epoch, self.restarts, self.blocks_run = 0, 0, 0, 0
        self.ckpt_step, self.ckpt = 0, {a: None for a in range(len(blocks))}  # None: theta(0)
        self.pending_ckpt: dict = {}
        self.ok = np.array([True])
        self.on_advance = on_advance  # test hook: called after advance calls are submitted
        self.retired_traffic = {"messages": 0, "bytes": 0, "snapshots": 0}

    # --- actors ----------------------------------------------------------------------
    def _spawn(self, indices, spread: bool, timeout: float) -> None:
        opts = cluster.actor_options(self.cfg.actor_cpus, spread)
        threads = max(1, int(self.cfg.actor_cpus))
        new = {a: self.remote.options(**opts).remote(self.arch, self.hyper, self.blocks[a], self.source,
                                                     self.cfg.checkpoint_every, threads, self.plane)
               for a in indices}
        try:
            info = cluster.wait_ready(self.ray, new, timeout)
        except cluster.ClusterError:
            for h in new.values():  # never leave a pending actor behind
                self.ray.kill(h)
            raise
        self.handles.update(new)
        for a, meta in info.items():
            self.nodes[a] = meta["node"]
            self.hosts.add(meta["node"])
        self.ray.get([h.set_readers.remote(self.handles) for h in self.handles.values()])

    def start(self) -> None:
        self._spawn(range(len(self.blocks)), spread=True, timeout=READY_TIMEOUT_S)
        self._connect()

    def _connect(self) -> None:
        """(Re)build the collective: one shared-memory segment when every actor is on one node,
        else a gloo process group (rank 0 opens the store, every rank joins)."""
        if self.plane != COLLECTIVE:
            return
        self.exchange = choose_exchange(len(set(self.nodes.values())), shm.available(),
                                        os.environ.get(EXCHANGE_ENV))
        try:
            if self.exchange != SHM or not self._join_segment():
                self.exchange = GLOO  # also when the node's /dev/shm cannot hold the segment
                self._join_gloo()
        except (self.ray.exceptions.RayError, TimeoutError) as err:
            raise cluster.ClusterError(f"the unit actors could not form their {self.exchange} exchange: "
                                       f"{cluster.root_cause(err)}") from None

    def _join_gloo(self) -> None:
        world = len(self.blocks)
        address = self.ray.get(self.handles[0].open_rendezvous.remote(world))
        self.ray.get([h.join.remote(address, world) for h in self.handles.values()], timeout=JOIN_TIMEOUT_S)

    def _join_segment(self) -> bool:
        """Rank 0 creates the node's segment, every rank maps it, then its name is unlinked;
        False (nothing joined) when the node cannot hold the segment."""
        rows = slot_rows(self.blocks)
        path = self.ray.get(self.handles[0].open_segment.remote(rows, self.arch.n_params))
        if path is None:
            return False
        try:
            self.ray.get([h.join_segment.remote(path, rows) for h in self.handles.values()],
                         timeout=JOIN_TIMEOUT_S)
        finally:
            try:
                self.ray.get(self.handles[0].unlink_segment.remote(path), timeout=JOIN_TIMEOUT_S)
            except (self.ray.exceptions.RayError, TimeoutError):
                shm.unlink(path)  # rank 0 is gone: the driver shares its node on local Ray
        return True

    def resume_from(self, step: int, theta: torch.Tensor) -> None:
        """Every actor restored to `step` with its rows of theta [1, N, P] (a driver checkpoint)."""
        rows = theta[0].numpy()
        self.ckpt_step, self.pending_ckpt = step, {}
        self.ckpt = {a: (step, rows[list(b.units)].copy()) for a, b in enumerate(self.blocks)}
        self.epoch += 1
        self.ray.get([h.restore.remote(self.ckpt[a], self.epoch) for a, h in self.handles.items()])
        self.step = step

    def stop(self) -> None:
        for h in self.handles.values():
            self.ray.kill(h)

    # --- the simulation contract (decentral.simulation) ---------------------------------
    def advance(self, n: int) -> None:
        target = self.step + n
        while self.step < target:
            try:
                self._advance_all(target - self.step)
            except ActorsLost as lost:
                self._recover(lost.dead)

    def evaluate(self) -> dict[str, np.ndarray]:
        parts = self._robust("stats")
        return combine_stats(parts, self.arch.n_params)

    def finite(self) -> np.ndarray:
        return self.ok

    @property
    def theta(self) -> torch.Tensor:
        """The units' parameters gathered from the actors [1, N, P]."""
        return self.parameters()

    @property
    def state(self) -> EngineState:
        return EngineState(self.parameters(), self.step)

    def parameters(self) -> torch.Tensor:
        rows = self._robust("parameters")  # [n_a, P] per actor
        return torch.from_numpy(np.concatenate(rows)).unsqueeze(0)  # [1, N, P]

    # --- internals -------------------------------------------------------------------
    def _advance_all(self, n: int) -> None:
        refs = {a: h.advance.remote(n) for a, h in self.handles.items()}
        if self.on_advance is not None:
            self.on_advance(self.blocks_run, dict(self.handles))
        self.blocks_run += 1
        results, dead = self._collect(refs)
        if dead or any(r["aborted"] for r in results.values()):
            raise ActorsLost(dead)
        self.step = max(r["step"] for r in results.values())
        self.ok = np.array([all(r["finite"] for r in results.values())])
        self._keep_checkpoints(results)

    def _collect(self, refs: dict) -> tuple[dict, list[int]]:
        """Results of every actor; on the first death, abort the others' waits."""
        ray, results, dead, pending, aborts = self.ray, {}, [], dict(refs), []
        while pending:
            done, _ = ray.wait(list(pending.values()), num_returns=1)
            a = next(k for k, r in pending.items() if r == done[0])
            del pending[a]
            try:
                results[a] = ray.get(done[0])
                failed = isinstance(results[a], dict) and results[a].get("aborted")
            except ray.exceptions.RayActorError:
                dead.append(a)
                failed = True
            if failed and not aborts:  # a death or a broken exchange: stop the others' waits
                aborts = [self.handles[b].abort.remote() for b in pending]
        for ref in aborts:  # make sure every abort ran before any restore
            try:
                ray.get(ref)
            except ray.exceptions.RayActorError:
                pass
        return results, sorted(dead)

    def _keep_checkpoints(self, results: dict) -> None:
        for a, r in results.items():
            if r["checkpoint"] is not None:
                self.pending_ckpt[a] = r["checkpoint"]
        steps = {c[0] for c in self.pending_ckpt.values()}
        if len(self.pending_ckpt) == len(self.blocks) and len(steps) == 1:
            self.ckpt_step = steps.pop()
            self.ckpt = {a: c for a, c in self.pending_ckpt.items()}
            self.pending_ckpt = {}

    def _recover(self, dead: list[int]) -> None:
        """Replace dead actors, roll everyone back to the last common checkpoint."""
        self.restarts += len(dead)
        self.rebuilds += not dead
        if self.restarts > MAX_RESTARTS or self.rebuilds > MAX_RESTARTS:
            raise cluster.ClusterError(f"unit actors kept dying or their exchanges kept failing "
                                       f"({self.restarts} restarts, {self.rebuilds} rebuilds); giving up")
        for a in dead:
            self._retire(a)
        self._spawn(dead, spread=False, timeout=RESTART_TIMEOUT_S)
        self.epoch += 1
        self.pending_ckpt = {}
        refs = [h.restore.remote(self.ckpt[a], self.epoch) for a, h in self.handles.items()]
        self.ray.get(refs)
        self.step = self.ckpt_step
        self._connect()

    def _retire(self, a: int) -> None:
        self.handles.pop(a, None)

    def _robust(self, method: str) -> list:
        """Call `method` on every actor (in block order), recovering from deaths first."""
        while True:
            refs = {a: getattr(h, method).remote() for a, h in self.handles.items()}
            results, dead = self._collect(refs)
            if not dead:
                return [results[a] for a in range(len(self.blocks))]
            target = self.step
            self._recover(dead)
            self.advance(target - self.step)

    def traffic(self) -> dict:
        counts = self.ray.get([h.traffic_counts.remote() for h in self.handles.values()])
        return {k: sum(c[k] for c in counts) for k in ("messages", "bytes", "snapshots", "comm_seconds")}


def fit_layout(ray, cfg):
    """cfg with units per actor and actor CPUs settled (plan.choose_layout), and the reason."""
    local_cpus = None if cfg.address else ray.cluster_resources().get("CPU", 1.0)
    layout = choose_layout(cfg.units, local_cpus, cfg.units_per_actor, cfg.actor_cpus)
    return dataclasses.replace(cfg, units_per_actor=layout.units_per_actor,
                               actor_cpus=layout.actor_cpus), layout.reason


def run_ray(cfg, problem, source=None, on_advance=None, resume=None, after_block=None):
    """Train on Ray (from `resume`, a checkpoint.Checkpoint, when given; checkpointing into
    cfg.out when set; after_block(step, meas) after every block, e.g. the event log); returns
    (theta [1, N, P], Measurement, extra summary fields)."""
    if problem.coupling.n_units != cfg.units:
        raise cluster.UserInputError(f"the topology has {problem.coupling.n_units} nodes but --units is {cfg.units}")
    source = source if source is not None else mnist_source(cfg)
    with cluster.connected(cfg.address) as ray:
        given, (cfg, layout_reason) = cfg, fit_layout(ray, cfg)
        blocks = make_blocks(problem.coupling, cfg.units_per_actor)  # sparse: no N x N
        cluster.check_capacity(ray, len(blocks), cfg.actor_cpus)
        fleet = Fleet(ray, cfg, problem.arch, blocks, source, on_advance)
        try:
            fleet.start()
            if resume is not None:
                fleet.resume_from(resume.step, resume.theta)
            meas = _phases(fleet, given, resume, after_block)
            theta = fleet.parameters()
            extra = {**summary_fields(cfg, fleet, blocks), "actor_layout": layout_reason}
        finally:
            fleet.stop()
    return theta, meas, extra


def _phases(fleet: Fleet, cfg, resume, after_block=None):
    """The runner over the fleet, checkpointing into cfg.out when set (config as given)."""
    from ..checkpoint import Keeper
    from ..eventlog import chain

    phases = cfg.phases()
    step0 = resume.step if resume is not None else 0
    keeper = Keeper(cfg, fleet.parameters, step0) if cfg.out else None
    with progress_bar(cfg.transient + cfg.steps, "ray run") as bar, \
            keeper.catching_sigint() if keeper else contextlib.nullcontext():
        bar.update(step0)
        return run_phases(fleet, phases, step0=step0, progress=bar, resumed=resume and resume.meas,
                          after_block=chain(after_block, keeper))


def summary_fields(cfg, fleet: Fleet, blocks) -> dict:
    traffic = fleet.traffic()
    return {
        "nodes": len(fleet.hosts), "actors": len(blocks), "units_per_actor": cfg.units_per_actor,
        "actor_cpus": cfg.actor_cpus, "gossip_period": cfg.gossip_period, "staleness": cfg.staleness,
        "synchronous": cfg.staleness == 0, "checkpoint_every": cfg.checkpoint_every,
        "restarts": fleet.restarts, "messages": traffic["messages"], "bytes": traffic["bytes"],
        "snapshots": traffic["snapshots"], "messages_per_coupling": messages_per_coupling(blocks),
        "address": cfg.address or "local", "data_plane": fleet.plane, "exchange": fleet.exchange,
        "comm_seconds": traffic["comm_seconds"],  # summed over actors, waiting included
    }

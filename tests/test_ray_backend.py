"""The Ray backend against the local engine, on one shared local Ray session (loopback only)."""

from __future__ import annotations

import glob

import numpy as np
import pytest
import torch

from decentral import topology
from decentral.config import RunConfig
from decentral.data import make_shards
from decentral.errors import UserInputError
from decentral.model import Architecture
from decentral.problem import Problem
from decentral.jobs.run import run_local

pytestmark = pytest.mark.ray

N = 4


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    from decentral.ray_backend.cluster import LOCAL_IP, loopback_only

    started = not ray.is_initialized()
    with loopback_only(started):  # local Ray on loopback only, as `decentral run` starts it
        if started:
            ray.init(_node_ip_address=LOCAL_IP, num_cpus=2, include_dashboard=False,
                     logging_level="WARNING", log_to_driver=False)
        yield ray
        if started:
            ray.shutdown()


def make_problem(synthetic_data, q=None) -> Problem:
    train, test = synthetic_data
    assignment = [np.flatnonzero(train.y.numpy() % N == u) for u in range(N)]
    coupling = topology.Coupling.complete(N) if q is None else topology.Coupling.from_matrix(np.asarray(q, dtype=float))
    return Problem(Architecture(1, 20), make_shards(train, assignment), test, coupling)


def config(**kw) -> RunConfig:
    base = dict(backend="ray", units=N, sigma=30.0, transient=0, steps=30, eval_every=10,
                actor_cpus=0.25, seed=3)
    return RunConfig(**{**base, **kw}).validate()


def ray_run(problem, cfg, on_advance=None):
    from decentral.ray_backend import run_ray
    from decentral.ray_backend.sources import InlineSource

    return run_ray(cfg, problem, source=InlineSource(problem.shards, problem.test), on_advance=on_advance)


def local_run(problem, cfg):
    local = RunConfig(**{**cfg.__dict__, "backend": "local"})
    return run_local(local, problem)


def directed_ring() -> np.ndarray:
    q = np.zeros((N, N))
    for i in range(N):
        q[i, (i + 1) % N] = 1.0
        q[i, (i + 2) % N] = 0.5
    return q


@pytest.fixture(scope="module")
def reference(ray_session, synthetic_data):
    """An undisturbed synchronous Ray run (checkpoints every 5 steps) and the local engine."""
    problem = make_problem(synthetic_data)
    cfg = config(checkpoint_every=5)
    return problem, cfg, ray_run(problem, cfg), local_run(problem, cfg)


def test_ray_equals_local_engine_mean_field(reference):
    _, _, (theta, meas, extra), (theta_local, meas_local) = reference
    assert theta.shape == theta_local.shape == (1, N, Architecture(1, 20).n_params)
    torch.testing.assert_close(theta, theta_local, atol=1e-5, rtol=0)
    for got, want in zip(meas.records, meas_local.records, strict=True):
        assert got["step"] == want["step"]
        for name in ("loss", "accuracy", "magnetization", "mean_sq_param", "consensus_distance"):
            assert got[name] == pytest.approx(want[name], rel=1e-4, abs=1e-9), name
    assert extra["nodes"] == 1 and extra["actors"] == N and extra["restarts"] == 0
    assert extra["data_plane"] == "collective"  # synchronous: one all-reduce per step
    assert extra["exchange"] == "shm"  # one node: the block sums meet in shared memory
    assert extra["messages"] == 30 * N  # each rank publishes its sum once per step
    assert extra["bytes"] == extra["messages"] * Architecture(1, 20).n_params * 4
    assert extra["comm_seconds"] > 0


def test_ray_equals_local_engine_on_a_directed_graph_with_blocks(ray_session, synthetic_data):
    problem = make_problem(synthetic_data, directed_ring())
    cfg = config(units_per_actor=3)  # blocks (0, 1, 2) and (3,): partial sources
    theta, _, extra = ray_run(problem, cfg)
    theta_local, _ = local_run(problem, cfg)
    torch.testing.assert_close(theta, theta_local, atol=1e-5, rtol=0)
    assert extra["actors"] == 2 and extra["messages"] == 30 * 2
    # unit 3 needs only q_30 theta_0 + q_31 theta_1 from block (0, 1, 2): one row, not three
    assert extra["bytes"] == 30 * 2 * Architecture(1, 20).n_params * 4


def mixed_blocks() -> np.ndarray:
    """Blocks (0, 1) and (2, 3): (2, 3) is read through one row (compressed), (0, 1) through
    two distinct rows (sent raw)."""
    q = np.zeros((N, N))
    q[0, 1] = q[1, 0] = q[2, 3] = q[3, 2] = 1.0
    q[:2, 2:] = 0.5  # units 0 and 1 both need 0.5 (theta_2 + theta_3)
    q[2, 0], q[3, 1] = 1.0, 2.0  # units 2 and 3 need different rows of block (0, 1)
    return q


def test_ray_equals_local_engine_when_some_blocks_compress_and_some_do_not(ray_session, synthetic_data):
    problem = make_problem(synthetic_data, mixed_blocks())
    cfg = config(units_per_actor=2)
    theta, _, extra = ray_run(problem, cfg)
    theta_local, _ = local_run(problem, cfg)
    torch.testing.assert_close(theta, theta_local, atol=1e-5, rtol=0)
    assert extra["messages"] == 30 * 2
    assert extra["bytes"] == 30 * (1 + 2) * Architecture(1, 20).n_params * 4  # rows sent: 1 and 2


def test_killed_actor_is_restarted_and_the_run_ends_with_the_same_numbers(reference):
    problem, cfg, (theta, meas, _), _ = reference
    killed = []

    def kill_second_block(block, handles):
        if block == 1:
            import ray

            ray.kill(handles[1])
            killed.append(1)

    segments = set(glob.glob("/dev/shm/decentral-*"))
    theta2, meas2, extra2 = ray_run(problem, cfg, on_advance=kill_second_block)
    assert killed and extra2["restarts"] == 1 and extra2["exchange"] == "shm"
    assert set(glob.glob("/dev/shm/decentral-*")) <= segments  # both segments unlinked
    torch.testing.assert_close(theta2, theta, atol=0, rtol=0)
    assert meas2.records == meas.records  # every measurement kept, none duplicated


def test_run_stops_clearly_when_the_cluster_cannot_host_a_replacement(ray_session, synthetic_data,
                                                                      monkeypatch):
    from decentral.ray_backend import driver

    monkeypatch.setattr(driver, "RESTART_TIMEOUT_S", 5.0)
    problem = make_problem(synthetic_data)
    blocker = []

    class Sleeper:  # defined here so that Ray pickles it by value for its workers
        def ping(self) -> bool:
            return True

    def kill_and_take_its_cpu(block, handles):
        if block == 1:
            ray_session.kill(handles[1])
            blocker.append(ray_session.remote(num_cpus=1.0)(Sleeper).remote())
            # hold the freed CPU before the driver notices the death and asks for a replacement
            ray_session.get(blocker[-1].ping.remote(), timeout=120)

    try:
        with pytest.raises(UserInputError, match=r"could not start unit actors \[1\]"):
            ray_run(problem, config(units_per_actor=2, actor_cpus=1.0), on_advance=kill_and_take_its_cpu)
    finally:
        for handle in blocker:
            ray_session.kill(handle)


def test_gossip_period_couples_every_tau_steps_with_tau_sigma(ray_session, synthetic_data):
    problem = make_problem(synthetic_data)
    theta, _, extra = ray_run(problem, config(gossip_period=10, units_per_actor=2))
    assert extra["messages"] == 3 * 2  # steps 9, 19, 29 only, two actors
    assert extra["bytes"] == 3 * 2 * Architecture(1, 20).n_params * 4  # mean field: block sums
    theta_one_actor, _, extra_one = ray_run(problem, config(gossip_period=10, units_per_actor=N))
    assert extra_one["messages"] == 0
    torch.testing.assert_close(theta, theta_one_actor, atol=1e-5, rtol=0)


def test_bounded_staleness_runs_asynchronously(ray_session, synthetic_data):
    problem = make_problem(synthetic_data)
    theta, meas, extra = ray_run(problem, config(staleness=2, units_per_actor=2))
    assert torch.isfinite(theta).all() and not meas.diverged[0]
    assert extra["synchronous"] is False and extra["staleness"] == 2


def test_too_few_cpus_is_a_one_line_error(ray_session, synthetic_data):
    problem = make_problem(synthetic_data)
    with pytest.raises(UserInputError, match=r"free CPUs .* need 8"):
        ray_run(problem, config(actor_cpus=2.0, units_per_actor=1))  # explicit values win


def test_local_ray_with_more_units_than_cpus_starts_with_defaults(ray_session, synthetic_data):
    problem = make_problem(synthetic_data)  # 4 units on the session's 2 CPUs
    cfg = config(actor_cpus=None, steps=10)
    theta, _, extra = ray_run(problem, cfg)
    assert (extra["actors"], extra["units_per_actor"], extra["actor_cpus"]) == (2, 2, 1.0)
    assert extra["actor_layout"] == "fitted to 2 local CPUs"
    torch.testing.assert_close(theta, local_run(problem, cfg)[0], atol=1e-5, rtol=0)


def test_topology_of_another_size_is_refused(ray_session, synthetic_data):
    problem = make_problem(synthetic_data)
    with pytest.raises(UserInputError, match="topology has 4 nodes but --units is 5"):
        ray_run(problem, config(units=5))


def test_ray_equals_local_engine_with_window_batches(ray_session, synthetic_data):
    problem = make_problem(synthetic_data)
    cfg = config(batches="window", units_per_actor=2, steps=20)
    theta, _, _ = ray_run(problem, cfg)
    theta_local, _ = local_run(problem, cfg)
    torch.testing.assert_close(theta, theta_local, atol=1e-5, rtol=0)
    assert not torch.allclose(theta_local, local_run(problem, config(units_per_actor=2, steps=20))[0])


@pytest.mark.parametrize("exchange", ["shm", "gloo"])
@pytest.mark.parametrize("graph", ["mean_field", "ring"])
def test_one_unit_per_actor_at_n10_equals_the_local_engine(ray_session, synthetic_data, graph, exchange,
                                                           monkeypatch):
    """Ten actors of one unit on the collective plane, through shared memory and through gloo:
    mean field (one all-reduce per step) and a ring (each actor reads its two neighbours only)."""
    if exchange == "gloo":
        monkeypatch.setenv("DECENTRAL_RAY_EXCHANGE", "gloo")  # the driver reads it
    train, test = synthetic_data  # 10 classes: unit u owns class u
    q = None if graph == "mean_field" else np.roll(np.eye(10), 1, axis=1) + np.roll(np.eye(10), -1, axis=1)
    coupling = topology.Coupling.complete(10) if q is None else topology.Coupling.from_matrix(q)
    problem = Problem(Architecture(1, 20), make_shards(train, [np.flatnonzero(train.y.numpy() == u)
                                                              for u in range(10)]), test, coupling)
    cfg = config(units=10, units_per_actor=1, actor_cpus=0.2, steps=20)
    theta, _, extra = ray_run(problem, cfg)
    torch.testing.assert_close(theta, local_run(problem, cfg)[0], atol=1e-5, rtol=0)
    assert extra["actors"] == 10 and extra["data_plane"] == "collective" and extra["exchange"] == exchange
    if exchange == "shm":  # one publish per rank and step
        assert extra["messages"] == 20 * 10
    else:  # ring: 2 neighbours each; mean field (recursive doubling): 8 core ranks x 3 rounds,
        # 2 folded ranks send in and get the sum back
        assert extra["messages"] == 20 * (10 * 2 if q is not None else 8 * 3 + 2 + 2)


def test_the_actor_call_plane_still_equals_the_local_engine(ray_session, synthetic_data, monkeypatch):
    monkeypatch.setenv("DECENTRAL_RAY_PLANE", "calls")  # the driver reads it; actors get the plane
    problem = make_problem(synthetic_data, directed_ring())
    cfg = config(units_per_actor=2, steps=20)
    theta, _, extra = ray_run(problem, cfg)
    assert extra["data_plane"] == "calls"
    torch.testing.assert_close(theta, local_run(problem, cfg)[0], atol=1e-5, rtol=0)

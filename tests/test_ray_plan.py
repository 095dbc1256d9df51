"""The Ray backend's pure parts, without Ray: blocks, schedule, inbox, observables, sources."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from decentral import topology
from decentral.data import make_shards
from decentral.model import Architecture
from decentral import observables
from decentral.ray_backend import plan
from decentral.ray_backend.block import BlockHyper, block_stats, combine_stats, coupled_step, payload
from decentral.update import euler_step
from decentral.ray_backend.gossip import Aborted, Inbox
from decentral.ray_backend.sources import InlineSource


def ring(n: int) -> np.ndarray:
    q = np.zeros((n, n))
    for i in range(n):
        q[i, (i + 1) % n] = q[i, (i - 1) % n] = 1.0
    return q


def test_blocks_read_exactly_the_neighbours_of_their_units():
    blocks = plan.make_blocks(ring(6), units_per_actor=2)
    assert [b.units for b in blocks] == [(0, 1), (2, 3), (4, 5)]
    assert blocks[0].sources == (1, 2) and blocks[0].readers == (1, 2)
    b = blocks[1]  # readers need Q[1, (2, 3)] = [1, 0] and Q[4, (2, 3)] = [0, 1]: k = 2, raw
    assert b.raw and b.source_rows == (2, 2)
    np.testing.assert_array_equal(b.q_rows.toarray(), ring(6)[np.ix_(b.units, (2, 3, 0, 1, 4, 5))])


def two_communities() -> np.ndarray:
    """Two complete 4-cliques joined by one weighted edge each way (3 -> 4 and 4 -> 3)."""
    q = np.zeros((8, 8))
    q[:4, :4] = q[4:, 4:] = 1.0
    np.fill_diagonal(q, 0.0)
    q[3, 4], q[4, 3] = 0.5, 2.0
    return q


def weighted_directed(n: int = 7, seed: int = 0) -> np.ndarray:
    """A random sparse directed graph with repeated and distinct weights."""
    rng = np.random.default_rng(seed)
    q = rng.choice([0.0, 0.0, 0.5, 1.0, 3.0], size=(n, n))
    np.fill_diagonal(q, 0.0)
    return q


GRAPHS = {"mean_field": topology.mean_field(10), "ring": ring(9), "communities": two_communities(),
          "weighted_directed": weighted_directed()}


@pytest.mark.parametrize("name", GRAPHS)
@pytest.mark.parametrize("upa", [1, 2, 3, 4, 5])
def test_compressed_sources_reproduce_every_coupling_sum_exactly(name, upa):
    q = GRAPHS[name]
    as_given = [q, sp.csr_array(q)] + ([topology.Coupling.complete(10)] if name == "mean_field" else [])
    for given in as_given:  # numpy, scipy.sparse, or the complete graph planned without a matrix
        check_blocks(q, plan.make_blocks(given, upa))  # uneven blocks whenever upa does not divide N


def check_blocks(q: np.ndarray, blocks):
    for a in blocks:
        q_rows = a.q_rows.toarray()
        assert q_rows.shape == (len(a.units), len(a.units) + sum(a.source_rows))
        np.testing.assert_array_equal(a.degree, q[list(a.units)].sum(axis=1))
        np.testing.assert_array_equal(q_rows[:, :len(a.units)], q[np.ix_(a.units, a.units)])
        start = len(a.units)
        for b, k in zip(a.sources, a.source_rows, strict=True):
            src = blocks[b]
            assert k == src.send_rows.shape[0] and k <= len(src.units)
            cols = q_rows[:, start:start + k]  # [n_A, k]
            start += k
            np.testing.assert_array_equal(cols @ src.send_rows.toarray(), q[np.ix_(a.units, src.units)])
            if not src.raw:
                assert set(np.unique(cols)) <= {0.0, 1.0} and (cols.sum(axis=1) <= 1).all()
        assert a.raw == (a.send_rows.shape[0] == len(a.units))  # compressed: k < n
        if a.raw:
            np.testing.assert_array_equal(a.send_rows.toarray(), np.eye(len(a.units)))


def test_mean_field_blocks_send_their_sum():
    blocks = plan.make_blocks(topology.mean_field(10), 5)
    for b in blocks:
        assert not b.raw and b.source_rows == (1,)
        np.testing.assert_array_equal(b.send_rows.toarray(), np.ones((1, 5)))
        np.testing.assert_array_equal(b.q_rows.toarray()[:, 5:], np.ones((5, 1)))
    assert plan.rows_per_coupling(blocks) == 2
    assert all(b.raw for b in plan.make_blocks(topology.mean_field(10), 1))  # one unit: unchanged
    assert plan.rows_per_coupling(plan.make_blocks(topology.mean_field(10), 1)) == 90


def test_mean_field_payload_is_a_fifth_of_the_block_and_gives_the_same_step():
    arch = Architecture(1, 20)
    q = topology.mean_field(10)
    blocks = plan.make_blocks(q, 5)
    theta = torch.randn(10, arch.n_params, dtype=torch.float64)  # [N, P]
    grad = torch.randn_like(theta)
    hyper = BlockHyper(lr=0.1, weight_decay=1e-3, batch_size=8, sigma=30.0, n_units=10,
                       gossip_period=1, staleness=0, seed=0, init="pytorch")
    sent = [payload(theta[list(b.units)], torch.from_numpy(b.send_rows.toarray())) for b in blocks]  # [1, P]
    assert sent[0].numpy().nbytes * 5 == theta[:5].numpy().nbytes
    mine, other = blocks[0], sent[1]
    new = coupled_step(theta[:5], grad[:5], torch.from_numpy(mine.q_rows.toarray()), torch.cat([theta[:5], other]),
                       torch.from_numpy(mine.degree).unsqueeze(1), hyper)
    want = euler_step(theta, grad, torch.from_numpy(q), theta, lr=0.1, sigma=30.0, n_units=10,
                      weight_decay=1e-3)[:5]
    torch.testing.assert_close(new, want, rtol=1e-12, atol=1e-12)
    one = theta[:1]
    assert payload(one, None) is one  # raw: the block itself, no product


def test_directed_edges_send_only_to_readers():
    q = np.zeros((3, 3))
    q[0, 1] = q[1, 2] = 1.0  # 0 reads 1, 1 reads 2
    blocks = plan.make_blocks(q, 1)
    assert [b.sources for b in blocks] == [(1,), (2,), ()]
    assert [b.readers for b in blocks] == [(), (0,), (1,)]
    assert plan.messages_per_coupling(blocks) == 2


def test_mean_field_message_count_and_uneven_blocks():
    assert plan.messages_per_coupling(plan.make_blocks(topology.mean_field(10), 1)) == 90
    blocks = plan.make_blocks(topology.mean_field(10), 4)
    assert [len(b.units) for b in blocks] == [4, 4, 2]
    assert plan.messages_per_coupling(blocks) == 6
    assert [b.source_rows for b in blocks] == [(1, 1)] * 3  # each block sends its sum


def test_gossip_period_schedule_and_staleness_window():
    assert [t for t in range(10) if plan.is_coupling_step(t, 1)] == list(range(10))
    assert [t for t in range(30) if plan.is_coupling_step(t, 10)] == [9, 19, 29]
    assert plan.coupling_sigma(3.0, 10) == 30.0
    assert plan.acceptable(8, 10, 2) and not plan.acceptable(7, 10, 2) and not plan.acceptable(11, 10, 2)


def test_inbox_waits_for_every_source_and_takes_the_newest_acceptable():
    async def scenario():
        inbox = Inbox((1, 2))
        inbox.put(1, 5, "a5", epoch=0)
        task = asyncio.create_task(inbox.gather(5, staleness=0))
        await asyncio.sleep(0)
        assert not task.done()  # source 2 missing
        inbox.put(2, 4, "b4", epoch=0)  # too old for sync
        inbox.put(2, 5, "b5", epoch=1)  # wrong epoch: ignored
        await asyncio.sleep(0)
        assert not task.done()
        inbox.put(2, 5, "b5", epoch=0)
        assert await task == ["a5", "b5"]
        inbox.put(1, 6, "a6", epoch=0)
        assert await inbox.gather(7, staleness=2) == ["a6", "b5"]  # bounded staleness
        waiting = asyncio.create_task(inbox.gather(20, staleness=0))
        await asyncio.sleep(0)
        inbox.abort()
        with pytest.raises(Aborted):
            await waiting
        inbox.reset(epoch=1)
        assert inbox.pick(5, 0) is None and not inbox.aborted

    asyncio.run(scenario())


def test_combined_block_stats_equal_the_local_observables(synthetic_data):
    arch = Architecture(1, 20)
    theta = torch.randn(5, arch.n_params) * 0.1  # [N, P]
    test = synthetic_data[1]
    parts = [block_stats(arch, theta[:2], test), block_stats(arch, theta[2:], test)]
    got = combine_stats(parts, arch.n_params)
    want = {**observables.test_metrics(arch, theta[None], test), **observables.parameter_stats(theta[None])}
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value.numpy(), rtol=1e-6, atol=1e-12, err_msg=name)


def test_inline_source_keeps_only_the_block_rows(synthetic_data):
    train, test = synthetic_data
    assignment = [np.flatnonzero(train.y.numpy() % 3 == u) for u in range(3)]
    shards = make_shards(train, assignment)
    data = InlineSource(shards, test).load((1, 2))
    assert len(data.train.y) == shards.sizes[1] + shards.sizes[2]
    assert data.offsets[1] == 0 and data.offsets[2] == shards.sizes[1]
    start = shards.offsets[2]
    assert torch.equal(data.train.x[shards.sizes[1]:], shards.train.x[start:start + shards.sizes[2]])


def test_mnist_source_partitions_exactly_like_the_driver(mnist_root, mnist):
    from decentral.data import partition
    from decentral.ray_backend.sources import MnistSource

    source = MnistSource(mnist_root, None, 10, "class", 0, 2, 0.5, 100)
    data = source.load((3, 7))
    shards = partition(mnist[0], 10, "class", 0)
    rows = slice(int(shards.offsets[7]), int(shards.offsets[7] + shards.sizes[7]))
    assert torch.equal(data.train.x[int(data.offsets[7]):], shards.train.x[rows])
    assert set(data.train.y.tolist()) == {3, 7} and len(data.test.y) == 100


def test_local_layout_fits_the_machine_and_keeps_explicit_values():
    def fit(*args):
        layout = plan.choose_layout(*args)
        return layout.units_per_actor, layout.actor_cpus, layout.reason
    assert fit(10, 2, None, None) == (5, 1.0, "fitted to 2 local CPUs")
    assert fit(4, 8, None, None)[:2] == (1, 1.0)  # enough CPUs: one unit per actor
    assert fit(10, 2, 1, None)[:2] == (1, 0.2)  # given units per actor: actors share cores
    assert fit(10, 2, 3, None)[:2] == (3, 0.5)
    assert fit(10, 2, None, 0.5)[:2] == (3, 0.5)  # given CPUs: 4 actors fit
    assert fit(10, 3, 1, None)[1] * 10 <= 3
    assert fit(10, 2, 1, 1.0) == (1, 1.0, "as given")  # may not fit: the capacity error says so
    assert fit(10, None, None, None) == (1, 1.0, "cluster default")
    assert fit(10, None, 2, None) == (2, 1.0, "cluster default")


@pytest.mark.parametrize("kernels", ["fused", "torch"])
@pytest.mark.parametrize("graph, upa", [("mean_field", 4), ("mean_field", 1), ("ring", 4), ("communities", 3)])
def test_block_steppers_with_their_cross_terms_equal_the_local_engine(synthetic_data, monkeypatch, kernels,
                                                                      graph, upa):
    """What each actor computes, without Ray: every block steps with `BlockStepper` and adds the
    cross-block sum its data plane delivers (all-reduce minus own sum, or cross @ payloads)."""
    from decentral.config import Hyper
    from decentral.engine import init_state, make_stepper, sigma_tensor
    from decentral.ray_backend.stepper import BlockStepper
    from decentral import backends

    monkeypatch.setenv(backends.KERNELS_ENV, kernels)
    q = GRAPHS[graph]
    n, arch, hyper = len(q), Architecture(1, 20), Hyper()
    train, test = synthetic_data
    shards = make_shards(train, [np.flatnonzero(train.y.numpy() % n == u) for u in range(n)])
    coupling = topology.Coupling.complete(n) if graph == "mean_field" else topology.Coupling.from_matrix(q)
    block_hyper = BlockHyper(hyper.lr, hyper.weight_decay, hyper.batch_size, 30.0, n, 1, 0, 3, "pytorch")
    blocks = plan.make_blocks(coupling, upa)
    backend = backends.select("cpu")
    steppers = [BlockStepper(arch, block_hyper, b, InlineSource(shards, test).load(b.units), backend) for b in blocks]
    state = init_state(arch, [3], n)
    engine = make_stepper(arch, shards, coupling, sigma_tensor(30.0, 1, "cpu"), [3], hyper)
    theta = state.theta[0].clone()  # [N, P]
    for t in range(5):
        cross = []
        for b in blocks:
            mine = theta[list(b.units)]
            if b.mean_field:
                cross.append(theta.sum(0, keepdim=True) - mine.sum(0, keepdim=True))  # [1, P]
            else:
                sent = [torch.from_numpy(blocks[s].send_rows.toarray()).float() @ theta[list(blocks[s].units)]
                        for s in b.sources]
                cross.append(torch.from_numpy(b.cross.toarray()).float() @ torch.cat(sent) if sent else None)
        theta = torch.cat([s.step(theta[list(b.units)].clone(), t, True, x) for s, b, x in zip(steppers, blocks, cross)])
        state = engine.step(state)
    torch.testing.assert_close(theta, state.theta[0], atol=1e-5, rtol=0)


def test_forcing_variables_accept_their_values_and_refuse_typos():
    from decentral.errors import UserInputError

    assert plan.choose_plane(0, None) == plan.COLLECTIVE and plan.choose_plane(0, "calls") == plan.CALLS
    assert plan.choose_exchange(1, True, "auto") == plan.SHM and plan.choose_exchange(1, True, "gloo") == plan.GLOO
    with pytest.raises(UserInputError, match=r"\$DECENTRAL_RAY_PLANE='colective': expected collective, calls or auto"):
        plan.choose_plane(0, "colective")
    with pytest.raises(UserInputError, match=r"\$DECENTRAL_RAY_EXCHANGE='glo'"):
        plan.choose_exchange(1, True, "glo")

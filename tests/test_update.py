"""Eq. 2 on stacked parameters: against a per-unit nn.Module loop, and its invariants."""

from __future__ import annotations

import numpy as np
import torch

from decentral.topology import Coupling, mean_field
from decentral.data import partition
from decentral.engine import Hyper, init_state, make_stepper, sigma_tensor
from decentral.model import Architecture
from decentral.streams import BatchIndexer
from decentral import engine, forms
from decentral.update import apply_operator, diffusion, euler_step, mean_field_step, step_operator


def _reference_loop(arch, shards, theta0, q, sigma, hyper, seed, n_steps):
    """The paper's notebook: N nn.Modules, N SGD optimizers, coupling by a loop over pairs."""
    n = shards.n_units
    nets = [arch.to_module(theta0[u]) for u in range(n)]
    opts = [torch.optim.SGD(net.parameters(), lr=hyper.lr, weight_decay=hyper.weight_decay)
            for net in nets]
    indexer = BatchIndexer([(seed, u) for u in range(n)], shards.offsets, shards.sizes, hyper.batch_size)
    for step in range(n_steps):
        snapshot = [torch.nn.utils.parameters_to_vector(net.parameters()).detach().clone() for net in nets]
        idx = indexer.indices(step)
        for u in range(n):
            opts[u].zero_grad()
            loss = torch.nn.functional.cross_entropy(nets[u](shards.train.x[idx[u]]), shards.train.y[idx[u]])
            loss.backward()
            opts[u].step()
        for i in range(n):
            pull = sum(q[i, j] * (snapshot[j] - snapshot[i]) for j in range(n) if q[i, j] != 0)
            with torch.no_grad():
                vec = torch.nn.utils.parameters_to_vector(nets[i].parameters())
                torch.nn.utils.vector_to_parameters(vec + hyper.lr * sigma / n * pull, nets[i].parameters())
    return torch.stack([torch.nn.utils.parameters_to_vector(net.parameters()).detach() for net in nets])


def _assert_engine_matches_module_loop(shards, q, sigma, seed, depths):
    """The engine's 20 steps equal the notebook-style loop's to 1e-5, for each depth."""
    hyper, n = Hyper(lr=0.05, weight_decay=1e-3, batch_size=8), shards.n_units
    for depth in depths:
        arch = Architecture(depth=depth)
        state = init_state(arch, [seed], n)
        expected = _reference_loop(arch, shards, state.theta[0], q, sigma, hyper, seed, 20)
        stepper = make_stepper(arch, shards, Coupling.from_matrix(q), sigma_tensor(sigma, 1, "cpu"),
                               [seed], hyper)
        got = stepper.advance(state, 20).theta[0]
        assert torch.allclose(got, expected, atol=1e-5, rtol=0), (depth, (got - expected).abs().max())


def test_stacked_update_equals_per_unit_module_loop(synthetic_data):
    train, _ = synthetic_data
    shards = partition(train, 4, "k-classes", seed=3, k=3)
    q = np.array([[0, 1, 0.5, 0], [1, 0, 1, 0], [0.5, 1, 0, 2], [0, 0, 2, 0]])
    _assert_engine_matches_module_loop(shards, q, sigma=7.0, seed=11, depths=(0, 1, 2))


def test_sigma_zero_units_evolve_independently(synthetic_data):
    train, _ = synthetic_data
    shards = partition(train, 3, "class", seed=0)
    arch = Architecture(depth=1)
    stepper = make_stepper(arch, shards, Coupling.from_matrix(mean_field(3)),
                           sigma_tensor(0.0, 1, "cpu"), [5], Hyper(batch_size=8))
    a = init_state(arch, [5], 3)
    b = init_state(arch, [5], 3)
    b.theta[0, 2] = torch.randn(arch.n_params)  # perturb only unit 2
    a, b = stepper.advance(a, 15), stepper.advance(b, 15)
    assert torch.equal(a.theta[0, :2], b.theta[0, :2])
    assert not torch.equal(a.theta[0, 2], b.theta[0, 2])


def _zero_gradient_steps(theta, q, sigma, n_steps, lr=0.005):
    zeros = torch.zeros_like(theta)
    history = [theta]
    for _ in range(n_steps):
        theta = euler_step(theta, zeros, q, theta, lr=lr, sigma=sigma, n_units=len(q), weight_decay=0.0)
        history.append(theta)
    return history


def test_zero_gradient_conserves_mean_for_symmetric_q():
    gen = torch.Generator().manual_seed(0)
    w = torch.rand(6, 6, generator=gen, dtype=torch.float64)
    q = (w + w.T) * (1 - torch.eye(6, dtype=torch.float64))
    theta = torch.randn(6, 40, generator=gen, dtype=torch.float64)
    for state in _zero_gradient_steps(theta, q, sigma=50.0, n_steps=30):
        assert torch.allclose(state.mean(dim=0), theta.mean(dim=0), atol=1e-12)


def test_mean_field_consensus_decays_by_one_minus_lr_sigma_squared():
    n, lr, sigma = 10, 0.005, 40.0
    q = torch.as_tensor(mean_field(n), dtype=torch.float64)
    theta = torch.randn(n, 25, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    distances = [(s - s.mean(0)).pow(2).sum(1).mean() for s in _zero_gradient_steps(theta, q, sigma, 12, lr)]
    ratios = torch.stack([b / a for a, b in zip(distances[:-1], distances[1:])])
    assert torch.allclose(ratios, torch.full_like(ratios, (1 - lr * sigma) ** 2), rtol=1e-10)


def test_fused_and_general_paths_agree():
    gen = torch.Generator().manual_seed(2)
    theta = torch.randn(2, 5, 30, generator=gen)  # [R, N, P]
    grad = torch.randn(2, 5, 30, generator=gen)
    q = torch.rand(5, 5, generator=gen)
    sigma = torch.tensor([3.0, 80.0]).view(2, 1, 1)
    kw = dict(lr=0.01, sigma=sigma, n_units=5, weight_decay=1e-3)
    fused = euler_step(theta, grad, q, theta, **kw)
    general = theta - 0.01 * (grad + 1e-3 * theta) + 0.01 * sigma / 5 * diffusion(q, theta, theta)
    assert torch.allclose(fused, general, atol=1e-6)
    sparse = euler_step(theta[0], grad[0], q.to_sparse(), theta[0].clone(), **{**kw, "sigma": 3.0})
    assert torch.allclose(sparse, general[0], atol=1e-6)


def test_same_seed_same_result_bitwise(synthetic_data):
    train, _ = synthetic_data
    shards = partition(train, 10, "class", seed=0)
    arch = Architecture(depth=2)
    make = lambda: make_stepper(arch, shards, Coupling.from_matrix(mean_field(10)),
                                sigma_tensor(30.0, 1, "cpu"), [4], Hyper())
    a = make().advance(init_state(arch, [4], 10), 25)
    b = make().advance(init_state(arch, [4], 10), 25)
    c = make().advance(init_state(arch, [5], 10), 25)
    assert torch.equal(a.theta, b.theta)
    assert not torch.equal(a.theta, c.theta)


def _mean_field_form(op: torch.Tensor):
    """(alpha [R], c [R]) read off operators op [R, N, N] that are alpha I + c 11^T, else None."""
    n = op.shape[-1]
    diag, c = op.diagonal(dim1=-2, dim2=-1), op[:, 0, 1]  # [R, N], [R]
    off = op[:, ~torch.eye(n, dtype=torch.bool)]  # [R, N*(N-1)]
    same = bool((diag == diag[:, :1]).all()) and bool((off == c.unsqueeze(1)).all())
    return (diag[:, 0] - c, c) if same else None


def test_mean_field_coefficients_are_the_complete_graph_operator_entries_bitwise():
    """The fused kernel's alpha and c equal step_operator's entries on the complete graph exactly,
    for every (N, sigma): the kernel and the dense GEMM apply the same A."""
    for n in (2, 5, 10, 37):
        hyper = Hyper(lr=0.005, weight_decay=1e-3)
        sigma = sigma_tensor(np.linspace(0.0, 400.0, 101), 101, "cpu")
        op = step_operator(torch.as_tensor(mean_field(n), dtype=torch.float32), sigma, lr=hyper.lr,
                           n_units=n, weight_decay=hyper.weight_decay)
        alpha, c = forms.mean_field_coefficients(Coupling.complete(n), sigma, hyper.lr, hyper.weight_decay)
        expected_alpha, expected_c = _mean_field_form(op)
        assert torch.equal(alpha, expected_alpha) and torch.equal(c, expected_c), n


def test_mean_field_coefficients_only_for_the_complete_graph():
    sigma, hyper = sigma_tensor([2.0, 40.0], 2, "cpu"), Hyper()
    ring = np.roll(np.eye(6), 1, axis=1) + np.roll(np.eye(6), -1, axis=1)
    assert forms.mean_field_coefficients(Coupling.from_matrix(ring), sigma, hyper.lr, hyper.weight_decay) is None
    assert forms.mean_field_coefficients(Coupling.from_matrix(2 * mean_field(6)), sigma, hyper.lr, hyper.weight_decay) is None
    assert Coupling.from_matrix(mean_field(6)).kind == "complete"  # a complete-graph file keeps the form
    mixed = [Coupling.complete(6), Coupling.from_matrix(ring)]
    assert forms.mean_field_coefficients(mixed, sigma, hyper.lr, hyper.weight_decay) is None


def test_mean_field_step_equals_the_operator_form():
    gen = torch.Generator().manual_seed(4)
    theta, grad = torch.randn(2, 5, 30, generator=gen), torch.randn(2, 5, 30, generator=gen)
    op = step_operator(torch.as_tensor(mean_field(5), dtype=torch.float32), torch.tensor([3.0, 80.0]).view(2, 1, 1),
                       lr=0.01, n_units=5, weight_decay=1e-3)
    hyper, sigma = Hyper(lr=0.01, weight_decay=1e-3), torch.tensor([3.0, 80.0]).view(2, 1, 1)
    got = mean_field_step(theta, grad, *forms.mean_field_coefficients(Coupling.complete(5), sigma, hyper.lr, hyper.weight_decay), lr=0.01)
    assert torch.allclose(got, apply_operator(op, theta, grad, lr=0.01), atol=1e-6)


def test_mean_field_engine_equals_per_unit_module_loop(synthetic_data):
    """The default coupling takes the engine's one-pass kernel (gradient and Eq. 2 together)."""
    train, _ = synthetic_data
    shards = partition(train, 5, "class", seed=0)
    _assert_engine_matches_module_loop(shards, mean_field(5), sigma=9.0, seed=3, depths=(0, 2))


def test_mean_field_kernel_equals_the_gemm_path_for_replicas(synthetic_data, monkeypatch):
    train, _ = synthetic_data
    shards = partition(train, 4, "class", seed=0)
    arch, seeds = Architecture(depth=1), [1, 2]
    sigma = sigma_tensor([5.0, 60.0], 2, "cpu")

    def run():
        stepper = make_stepper(arch, shards, Coupling.from_matrix(mean_field(4)), sigma, seeds, Hyper(batch_size=8))
        return stepper.advance(init_state(arch, seeds, 4), 10).theta

    fused = run()
    monkeypatch.setenv("DECENTRAL_KERNELS", "torch")  # the dense GEMM path
    assert torch.allclose(fused, run(), atol=1e-6, rtol=0)


def _mean_field_problem(train, n_units, depth, sigma, seed):
    """(stepper, initial state) of one run on the complete graph, batch 8."""
    shards = partition(train, n_units, "class", seed=0)
    arch = Architecture(depth=depth)
    stepper = make_stepper(arch, shards, Coupling.from_matrix(mean_field(n_units)),
                           sigma_tensor(sigma, 1, "cpu"), [seed], Hyper(batch_size=8))
    return stepper, init_state(arch, [seed], n_units)


def test_fused_step_reads_a_non_contiguous_state(synthetic_data):
    stepper, state = _mean_field_problem(synthetic_data[0], 3, depth=1, sigma=4.0, seed=2)
    wide = torch.zeros(*state.theta.shape[:2], 2 * state.theta.shape[2])
    wide[..., ::2] = state.theta
    strided = wide[..., ::2]  # same values, every other float
    assert not strided.is_contiguous()
    assert torch.equal(stepper.step(engine.EngineState(strided, 0)).theta, stepper.step(state).theta)


def test_fused_blocks_equal_single_steps_and_leave_the_input_state_untouched(synthetic_data):
    stepper, state = _mean_field_problem(synthetic_data[0], 4, depth=2, sigma=6.0, seed=3)
    assert isinstance(stepper, engine.FusedKernel)  # the complete graph on CPU takes the fused step
    before = state.theta.clone()
    block = stepper.advance(state, 7)
    single = state
    for _ in range(7):
        single = stepper.step(single)
    assert torch.equal(state.theta, before)
    assert block.step == single.step == 7 and torch.equal(block.theta, single.theta)


def test_local_simulation_meets_the_contract_and_resumes_from_an_assigned_state(synthetic_data):
    """run_phases drives LocalSimulation; a simulation given the state after k steps continues
    exactly as the one that took them (the contract checkpoint/resume builds on)."""
    from decentral.runner import OBSERVABLES, Phases, run_phases
    from decentral.simulation import LocalSimulation

    stepper, state = _mean_field_problem(synthetic_data[0], 4, depth=1, sigma=6.0, seed=1)
    scores = lambda theta: {name: theta.double().mean(dim=(1, 2)).numpy() for name in OBSERVABLES}  # noqa: E731
    whole, kept = LocalSimulation(stepper, state, scores), state.theta.clone()
    meas = run_phases(whole, Phases(transient=6, steps=9, eval_every=3))
    assert torch.equal(state.theta, kept)  # a state given from outside is never donated
    assert whole.state.step == 15 and [r["step"] for r in meas.records] == [9, 12, 15]
    assert whole.finite().tolist() == [True] and whole.theta is whole.state.theta
    first = LocalSimulation(stepper, state, scores)
    first.advance(6)
    resumed = LocalSimulation(stepper, init_state(Architecture(depth=1), [1], 4), scores)
    resumed.state = first.state
    resumed.advance(9)
    assert torch.equal(resumed.theta, whole.theta)

"""Eq. 2 on sparse supra-networks: the sparse form against the reference `euler_step` and the
dense operator, the fused kernel's sparse rows against the PyTorch path, and a 10,000-unit ring
built and stepped without any N x N array."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from decentral import forms, topology
from decentral.data import Split, make_shards
from decentral.engine import FusedKernel, Hyper, init_state, make_stepper, sigma_tensor
from decentral.model import Architecture
from decentral.topology import Coupling
from decentral.update import apply_operator, euler_step, mean_field_step, sparse_operator, sparse_step, step_operator

LR, WD = 0.01, 1e-3


def _graphs(n: int) -> dict[str, np.ndarray]:
    gen = np.random.default_rng(0)
    weighted = topology.coupling_matrix(topology.generate("weighted", n, seed=1))
    random = (gen.random((n, n)) < 0.3) * gen.uniform(0.2, 2.0, (n, n))
    np.fill_diagonal(random, 0)
    return {"ring": topology.coupling_matrix(nx.cycle_graph(n)),
            "star": topology.coupling_matrix(nx.star_graph(n - 1)),
            "directed": topology.coupling_matrix(topology.generate("directed", n, seed=2)),
            "directed_ring": topology.coupling_matrix(topology.generate("directed_ring", n)),
            "weighted": weighted, "random": random}  # fmt: skip


def _parts(q: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    csr = sp.csr_array(q)
    return (torch.as_tensor(csr.indptr, dtype=torch.int64), torch.as_tensor(csr.indices, dtype=torch.int64),
            torch.as_tensor(csr.data, dtype=torch.float64))


@pytest.mark.parametrize("name", ["ring", "star", "directed", "directed_ring", "weighted", "random"])
def test_sparse_form_equals_reference_and_dense_operator_with_per_replica_sigma(name):
    n, p = 12, 30
    q = _graphs(n)[name]
    gen = torch.Generator().manual_seed(3)
    theta, grad = torch.randn(3, n, p, generator=gen, dtype=torch.float64), torch.randn(3, n, p, generator=gen, dtype=torch.float64)
    sigmas = torch.tensor([0.0, 7.0, 90.0], dtype=torch.float64).view(3, 1, 1)
    op = sparse_operator([_parts(q)] * 3, sigmas, lr=LR, n_units=n, weight_decay=WD)
    got = sparse_step(op, theta, grad.clone(), lr=LR)
    q_t = torch.as_tensor(q)
    dense = apply_operator(step_operator(q_t, sigmas, lr=LR, n_units=n, weight_decay=WD), theta, grad.clone(), lr=LR)
    for r in range(3):
        ref = euler_step(theta[r], grad[r], q_t, theta[r], lr=LR, sigma=float(sigmas[r]), n_units=n, weight_decay=WD)
        torch.testing.assert_close(got[r], ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(got, dense, rtol=0, atol=1e-6)


def test_sparse_form_with_one_q_per_replica():
    n, p, graphs = 10, 20, _graphs(10)
    names = ["ring", "directed", "weighted"]
    gen = torch.Generator().manual_seed(4)
    theta, grad = torch.randn(3, n, p, generator=gen, dtype=torch.float64), torch.randn(3, n, p, generator=gen, dtype=torch.float64)
    sigmas = torch.tensor([3.0, 40.0, 11.0], dtype=torch.float64)
    op = sparse_operator([_parts(graphs[k]) for k in names], sigmas, lr=LR, n_units=n, weight_decay=WD)
    got = sparse_step(op, theta, grad, lr=LR)
    for r, name in enumerate(names):
        q_t = torch.as_tensor(graphs[name])
        ref = euler_step(theta[r], grad[r], q_t, theta[r], lr=LR, sigma=float(sigmas[r]), n_units=n, weight_decay=WD)
        torch.testing.assert_close(got[r], ref, rtol=0, atol=1e-6)


def test_mean_field_form_equals_reference_above_the_dense_size():
    n = forms.DENSE_MAX_UNITS + 50  # above it the complete graph takes the mean-field form
    gen = torch.Generator().manual_seed(5)
    theta, grad = torch.randn(2, n, 8, generator=gen), torch.randn(2, n, 8, generator=gen)
    sigma = sigma_tensor([5.0, 300.0], 2, "cpu")
    apply = forms.step_apply(Coupling.complete(n), sigma, n, LR, WD, "cpu")
    got = apply(theta, grad.clone())
    for r in range(2):
        ref = euler_step(theta[r], grad[r], torch.as_tensor(topology.mean_field(n), dtype=torch.float32), theta[r],
                         lr=LR, sigma=float(sigma[r]), n_units=n, weight_decay=WD)
        torch.testing.assert_close(got[r], ref, rtol=0, atol=1e-5)
    alpha, c = forms.mean_field_coefficients(Coupling.complete(n), sigma, LR, WD)
    torch.testing.assert_close(got, mean_field_step(theta, grad, alpha, c, lr=LR), rtol=0, atol=0)


def test_coupling_kinds_follow_structure_and_size():
    ring = lambda n: topology.coupling_matrix(nx.cycle_graph(n))  # noqa: E731
    assert Coupling.from_matrix(ring(10)).kind == "dense"
    even = 2 * (forms.DENSE_MAX_UNITS // 2 + 1)  # the smallest even N above the dense size
    big = Coupling.from_matrix(ring(even))
    assert big.kind == "sparse" and sp.issparse(big.q) and big.q.nnz == 2 * even
    assert Coupling.from_matrix(topology.mean_field(7)).kind == "complete"
    assert Coupling.complete(5000).lambda_max == 5000.0 and Coupling.complete(5000).q is None
    assert big.lambda_max == pytest.approx(4.0, rel=1e-8)  # ring of even N: lambda_max = 4


def _shards_for(n_units: int, n_in: int = 16, per_unit: int = 4, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n_units * per_unit) % 10
    x = torch.rand(n_units * per_unit, n_in, generator=gen) + 0.1 * y.unsqueeze(1)
    train = Split(x.float(), y)
    assignment = [np.arange(u * per_unit, (u + 1) * per_unit) for u in range(n_units)]
    return make_shards(train, assignment)


@pytest.mark.parametrize("graph", ["small_world", "directed", "weighted"])
def test_fused_sparse_kernel_equals_the_torch_sparse_path_with_replicas(graph, monkeypatch):
    n = forms.DENSE_MAX_UNITS + 16  # above it: the sparse form on both paths
    shards = _shards_for(n)
    arch = Architecture(depth=1, width=6, n_in=16, n_out=10)
    couplings = [Coupling.from_matrix(topology.coupling_matrix(topology.generate(graph, n, seed=s)))
                 for s in (0, 1)]  # one Q per replica
    assert {c.kind for c in couplings} == {"sparse"}
    sigma, seeds, hyper = sigma_tensor([20.0, 150.0], 2, "cpu"), [1, 2], Hyper(lr=0.02, batch_size=4)

    def run():
        stepper = make_stepper(arch, shards, couplings, sigma, seeds, hyper)
        return stepper, stepper.advance(init_state(arch, seeds, n), 6).theta

    fused_stepper, fused = run()
    assert isinstance(fused_stepper, FusedKernel)  # the fused kernel serves this graph
    monkeypatch.setenv("DECENTRAL_KERNELS", "torch")
    torch_stepper, reference = run()
    assert not isinstance(torch_stepper, FusedKernel)
    torch.testing.assert_close(fused, reference, rtol=0, atol=1e-5)


@pytest.mark.parametrize("graph", ["ring", "directed_ring", "small_world", "directed"])
def test_fused_sparse_kernel_in_place_equals_two_buffers_bitwise(graph, monkeypatch):
    """`backends.inplace`: one buffer, rows written back once no unit reads them, parked rows
    last; forced on for every graph (any share parked) at a small N, with one Q per replica."""
    from decentral.backends import inplace

    n = 150  # not a multiple of the run length: the last run is short
    shards, arch = _shards_for(n), Architecture(depth=1, width=6, n_in=16, n_out=10)
    couplings = [Coupling.from_matrix(topology.coupling_matrix(topology.generate(graph, n, seed=s)))
                 for s in (0, 1)]
    sigma, seeds, hyper = sigma_tensor([20.0, 150.0], 2, "cpu"), [1, 2], Hyper(lr=0.02, batch_size=4)

    def run(min_units, max_parked):
        monkeypatch.setattr(inplace, "MIN_UNITS", min_units)
        monkeypatch.setattr(inplace, "MAX_PARKED", max_parked)
        stepper = make_stepper(arch, shards, couplings, sigma, seeds, hyper)
        return stepper.kernel.in_place, stepper.advance(init_state(arch, seeds, n), 5).theta

    assert run(0, 0.25)[0] == (graph in ("ring", "directed_ring"))  # lattice-like graphs qualify
    one_buffer, in_place = run(0, 1.0)
    two_buffers, reference = run(10**9, 1.0)
    assert one_buffer and not two_buffers
    assert torch.equal(in_place, reference)


@pytest.mark.parametrize("graph", ["scale_free", "directed"])
def test_fused_sparse_kernel_in_any_order_equals_plain_bitwise(graph, monkeypatch):
    """The unit order (`backends.locality`, or reversed) changes no number, with one Q per
    replica."""
    from decentral.backends import locality

    n = 150
    shards, arch = _shards_for(n), Architecture(depth=1, width=6, n_in=16, n_out=10)
    couplings = [Coupling.from_matrix(topology.coupling_matrix(topology.generate(graph, n, seed=s)))
                 for s in (0, 1)]
    sigma, seeds, hyper = sigma_tensor([20.0, 150.0], 2, "cpu"), [1, 2], Hyper(lr=0.02, batch_size=4)

    def run(reverse=False):
        if reverse:
            monkeypatch.setattr(locality, "unit_order", lambda crow, col: np.arange(len(crow) - 2, -1, -1))
        stepper = make_stepper(arch, shards, couplings, sigma, seeds, hyper)
        assert not stepper.kernel.in_place
        return stepper.advance(init_state(arch, seeds, n), 4).theta

    plain = run()  # before the reversed order is patched in (it stays for the rest of the test)
    assert torch.equal(run(reverse=True), plain)


def test_locality_order_takes_every_unit_once_neighbours_together():
    from decentral.backends import locality

    parts = [nx.cycle_graph(40), nx.cycle_graph(30), nx.empty_graph(5), topology.generate("directed", 25, seed=3)]
    q = sp.csr_array(sp.block_diag([sp.csr_array(topology.coupling_matrix(g)) for g in parts]))
    crow, col = q.indptr.astype(np.int64), q.indices.astype(np.int64)
    for order in (locality.depth_first(crow, col), locality.unit_order(crow, col)):
        assert np.array_equal(np.sort(order), np.arange(100))
    visit = locality.depth_first(crow, col)
    ring = visit[np.isin(visit, np.arange(40))]  # the first ring, walked neighbour after neighbour
    assert all((b - a) % 40 in (1, 39) for a, b in zip(ring[:-1], ring[1:]))
    for graph, searched in (("scale_free", True), ("small_world", False)):  # id order kept where local
        q = sp.csr_array(topology.coupling_matrix(topology.generate(graph, 640, seed=0, degree=4)))
        order = locality.unit_order(q.indptr.astype(np.int64), q.indices.astype(np.int64))
        runs = order.reshape(-1, locality.RUN)
        assert np.array_equal(runs, runs[:, :1] + np.arange(locality.RUN)) != searched


def test_ten_thousand_unit_ring_steps_without_any_n_by_n_array(tmp_path, monkeypatch):
    n = 10_000
    path = topology.write_graph(topology.generate("ring", n), tmp_path / "ring.edgelist")
    limit = n * n // 4  # no array anywhere near N x N

    def guard(make):
        def checked(shape, *args, **kwargs):
            size = int(np.prod(shape))
            assert size < limit, f"{make.__name__}{shape}: an N x N allocation"
            return make(shape, *args, **kwargs)
        return checked

    for name in ("zeros", "ones", "empty", "full"):
        monkeypatch.setattr(np, name, guard(getattr(np, name)))
    eye = np.eye

    def checked_eye(rows, *args, **kwargs):
        assert rows * rows < limit, f"eye({rows}): an N x N allocation"
        return eye(rows, *args, **kwargs)

    monkeypatch.setattr(np, "eye", checked_eye)
    coupling = Coupling.from_file(path, n)
    assert coupling.kind == "sparse" and sp.issparse(coupling.q) and coupling.q.nnz == 2 * n
    assert coupling.lambda_max == pytest.approx(4.0, rel=1e-4)  # ARPACK, to ARPACK_TOL
    shards = _shards_for(n, per_unit=2)
    arch = Architecture(depth=0, n_in=16, n_out=10)
    stepper = make_stepper(arch, shards, coupling, sigma_tensor(50.0, 1, "cpu"), [0], Hyper(batch_size=2))
    state = stepper.advance(init_state(arch, [0], n), 2)
    assert state.theta.shape == (1, n, arch.n_params) and torch.isfinite(state.theta).all()
    held = _held_arrays(stepper)
    assert any(isinstance(a, np.ndarray) and a.shape == (n + 1,) for a in held)  # the CSR row pointers
    assert max(a.size if isinstance(a, np.ndarray) else a.numel() for a in held) < limit


def _held_arrays(obj, depth: int = 4) -> list:
    """Every numpy array or tensor a stepper holds: its attributes, closures' contents and theirs."""
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return [obj]
    if depth == 0:
        return []
    children = [c.cell_contents for c in getattr(obj, "__closure__", None) or ()]
    if not callable(obj) or hasattr(obj, "__dict__") and not hasattr(obj, "__code__"):
        children += list(getattr(obj, "__dict__", {}).values())
    children += list(getattr(obj, "__dict__", {}).values()) if hasattr(obj, "__code__") else []
    children += list(obj) if isinstance(obj, (list, tuple)) else []
    return [a for child in children for a in _held_arrays(child, depth - 1)]


def test_theory_on_a_sparse_q_equals_the_dense_q():
    from decentral.theory import TheoryConfig, run_theory, stationary_linear

    n = 300
    q = topology.coupling_matrix(topology.generate("small_world", n, seed=3), sparse=True)
    cfg = dict(depths=(0,), sigmas=np.array([0.5, 20.0]), protocols=("non-adiabatic",), n_units=n,
               realizations=2, t_end=2.0, workers=1)
    sparse_table = run_theory(TheoryConfig(q=q, **cfg))
    dense_table = run_theory(TheoryConfig(q=q.toarray(), **cfg))
    for column in ("m_abs_mean", "loss_mean", "accuracy_eff"):
        np.testing.assert_allclose(sparse_table[column], dense_table[column], rtol=1e-6, atol=1e-9)
    delta = np.random.default_rng(0).normal(size=n)
    np.testing.assert_allclose(stationary_linear(delta, 30.0, 1e-3, q), stationary_linear(delta, 30.0, 1e-3, q.toarray()),
                               rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("form", ["mean_field", "two_buffers", "in_place"])
def test_donated_blocks_equal_one_block_bitwise_and_reuse_their_buffers(form, monkeypatch):
    """`FusedKernel.advance`: blocks that donate their state to the next one give bitwise the
    numbers of one block; a state not donated is never written; after the first block no new
    [R, N, P] buffer is made (two buffers in turn, or one in place)."""
    from decentral.backends import inplace

    n = 150
    shards, arch = _shards_for(n), Architecture(depth=1, width=6, n_in=16, n_out=10)
    monkeypatch.setattr(inplace, "MIN_UNITS", 0 if form == "in_place" else 10**9)
    graph = None if form == "mean_field" else Coupling.from_matrix(topology.coupling_matrix(nx.cycle_graph(n)))
    coupling = Coupling.complete(n) if graph is None else graph
    sigma, seeds, hyper = sigma_tensor([20.0, 150.0], 2, "cpu"), [1, 2], Hyper(lr=0.02, batch_size=4)
    stepper = make_stepper(arch, shards, coupling, sigma, seeds, hyper)
    assert isinstance(stepper, FusedKernel) and stepper.kernel.in_place == (form != "two_buffers")
    start = init_state(arch, seeds, n)
    kept = start.theta.clone()
    whole = stepper.advance(start, 9)
    state, buffers = stepper.advance(start, 2), set()
    for block in (3, 1, 3):
        state = stepper.advance(state, block, donate=True)
        buffers.add(state.theta.data_ptr())
    assert torch.equal(start.theta, kept)  # never donated: untouched
    assert state.step == whole.step == 9 and torch.equal(state.theta, whole.theta)
    assert len(buffers) == (2 if form == "two_buffers" else 1)

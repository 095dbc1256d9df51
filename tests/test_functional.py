"""The generic torch.func model path: equal to the MLP's fast paths on an MLP, and any model
(a CNN) through the engine, ensembles, evaluation and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.func import functional_call

from decentral import backends, models
from decentral.data import partition
from decentral.engine import Hyper, init_state, make_stepper, sigma_tensor
from decentral.ensemble import init_ensemble, make_ensemble_stepper
from decentral.evaluation import make_evaluator
from decentral.functional import FUNCTIONAL, ModuleArch
from decentral.model import Architecture, loss_and_grad
from decentral.observables import cross_scores
from decentral.topology import Coupling, mean_field

HYPER = Hyper(lr=0.05, weight_decay=1e-3, batch_size=8)


def _ring(n: int) -> np.ndarray:
    q = np.zeros((n, n))
    for i in range(n):
        q[i, (i + 1) % n] = q[(i + 1) % n, i] = 1.0
    return q


def _generic_mlp(arch: Architecture) -> ModuleArch:
    return ModuleArch("mlp-generic", models.mlp_factory(arch.depth, arch.width), (1, 28, 28), arch.n_out)


def test_generic_loss_and_grad_equal_the_mlp_reference(synthetic_data):
    train, _ = synthetic_data
    x, y = train.x[:48].view(6, 8, -1), train.y[:48].view(6, 8)
    for depth in (0, 1, 2):
        arch = Architecture(depth=depth)
        generic = _generic_mlp(arch)
        assert generic.n_params == arch.n_params
        theta = init_state(arch, [3], 6).theta[0]  # [6, P]
        want_loss, want_grad = loss_and_grad(arch, theta, x, y)
        loss, grad = FUNCTIONAL.loss_and_grad(generic, theta, x, y)
        assert torch.allclose(loss, want_loss, atol=1e-6) and torch.allclose(grad, want_grad, atol=1e-6)


def _pooled_net(input_shape, n_classes):  # nested Sequentials, pools, other activations, no bias
    nn = torch.nn
    channels = input_shape[0]
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1, bias=False), nn.Tanh(), nn.MaxPool2d(2)),
        nn.Conv2d(4, 6, 3, stride=2), nn.GELU(), nn.AvgPool2d(2),  # 28 -> 14 -> 6 -> 3; 32 -> 16 -> 7 -> 3
        nn.Flatten(), nn.Linear(6 * 3 * 3, 12, bias=False), nn.ReLU(),
        nn.Dropout(0.5), nn.Linear(12, n_classes))


def _grouped_net(input_shape, n_classes):  # a grouped first convolution (groups = channels)
    nn = torch.nn
    channels = input_shape[0]
    return nn.Sequential(nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1,
                                   groups=channels), nn.ReLU(), nn.Flatten(),
                         nn.Linear(2 * channels * (-(-input_shape[1] // 2)) ** 2, n_classes))


def _options_net(input_shape, n_classes):  # convolution and pool options other than the defaults
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(input_shape[0], 4, 3, stride=2, padding=2, dilation=2), nn.LeakyReLU(0.1),
        nn.Conv2d(4, 4, 4, padding="same", groups=2, bias=False), nn.ELU(),
        nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), nn.AvgPool2d(2, ceil_mode=True, divisor_override=3),
        nn.AdaptiveMaxPool2d((3, 2)), nn.Flatten(), nn.Linear(4 * 3 * 2, n_classes))


class _Residual(torch.nn.Module):  # not a Sequential: vmap steps it
    def __init__(self, n_in, n_classes):
        super().__init__()
        self.a, self.b = torch.nn.Linear(n_in, 16), torch.nn.Linear(16, n_classes)

    def forward(self, x):
        h = torch.relu(self.a(x.flatten(1)))
        return self.b(h + h.flip(1))


@pytest.mark.parametrize("name, shape", [("cnn", (1, 28, 28)), ("cnn", (3, 32, 32)), ("pooled", (1, 28, 28)),
                                         ("pooled", (3, 32, 32)), ("mlp2", (1, 28, 28)), ("grouped", (3, 32, 32)),
                                         ("options", (3, 32, 32))])
def test_the_stacked_forward_gives_the_vmap_gradients_and_scores(name, shape):
    factories = {"cnn": models.small_cnn, "pooled": _pooled_net, "mlp2": models.mlp_factory(2), "grouped": _grouped_net,
                 "options": _options_net}
    arch = ModuleArch(name, factories[name], shape, 10)
    assert arch.stacked is not None
    gen = torch.Generator().manual_seed(1)
    theta = arch.init_params([torch.Generator().manual_seed(u) for u in range(5)], "pytorch")
    x, y = torch.rand(5, 7, arch.n_in, generator=gen), torch.randint(0, 10, (5, 7), generator=gen)
    test_x, test_y = torch.rand(9, arch.n_in, generator=gen), torch.randint(0, 10, (9,), generator=gen)
    loss, grad = arch.loss_and_grad(theta, x, y)
    scores = arch.per_sample_scores(theta, test_x, test_y)
    arch.stacked = None  # the vmap path
    want_loss, want_grad = arch.loss_and_grad(theta, x, y)
    assert torch.allclose(loss, want_loss, atol=1e-6) and torch.allclose(grad, want_grad, atol=1e-6)
    want_scores = arch.per_sample_scores(theta, test_x, test_y)
    assert torch.allclose(scores[0], want_scores[0], atol=1e-6) and torch.equal(scores[1], want_scores[1])


class _ClampedLinear(torch.nn.Linear):  # its own forward: differs from Linear's only for weights beyond 1
    def forward(self, x):
        return torch.nn.functional.linear(x, self.weight.clamp(-1.0, 1.0), self.bias)


class _ClampedInput(torch.nn.Sequential):  # a Sequential with its own forward
    def forward(self, x):
        return super().forward(x.clamp(max=2.0))


def _hooked(n_in, n_classes):
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(n_in, n_classes))
    module[1].register_forward_hook(lambda _module, _inputs, out: out.clamp(max=50.0))
    return module


@pytest.mark.parametrize("build", [
    lambda n_in, n_classes: torch.nn.Sequential(torch.nn.Flatten(), _ClampedLinear(n_in, n_classes)),
    lambda n_in, n_classes: torch.nn.Sequential(_ClampedInput(torch.nn.Flatten(), torch.nn.Linear(n_in, n_classes))),
    _hooked,
    lambda n_in, n_classes: torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"),
                                                torch.nn.Flatten(), torch.nn.Linear(2 * n_in, n_classes))])
def test_subclassed_or_hooked_layers_are_left_to_vmap(build):
    """Forwards the stacked one would not run (a subclass's own forward, a hook, a padding mode)
    get no plan, even where they agree with it on the build check's small random inputs."""
    arch = ModuleArch("custom", lambda shape, n_classes: build(16, n_classes), (1, 4, 4), 10)
    assert arch.stacked is None
    theta = torch.randn(2, arch.n_params, generator=torch.Generator().manual_seed(0)) * 3
    x, y = torch.full((2, 5, 16), 3.0), torch.zeros(2, 5, dtype=torch.long)
    loss, _ = arch.loss_and_grad(theta, x, y)
    want = [torch.nn.functional.cross_entropy(functional_call(arch.template, arch.unflatten(row), arch.images(x[u])), y[u])
            for u, row in enumerate(theta)]  # each unit alone, through the module's own forward
    assert torch.allclose(loss, torch.stack(want), atol=1e-5)


def test_a_module_the_stacked_forward_does_not_know_is_stepped_by_vmap(synthetic_data):
    import decentral

    arch = ModuleArch("residual", lambda shape, n_classes: _Residual(784, n_classes), (1, 28, 28), 10)
    assert arch.stacked is None
    def residual(shape, n_classes):
        return _Residual(784, n_classes)

    result = decentral.run(model=residual, units=3, transient=0, steps=5, eval_every=5, data=synthetic_data)
    assert result.params.shape == (3, arch.n_params) and torch.isfinite(result.params).all()


@pytest.mark.parametrize("graph", ["mean-field", "ring"])
def test_generic_path_equals_the_mlp_fast_path(synthetic_data, graph):
    """30 coupled steps of the generic path on an MLP equal the fast path's (numba kernel where
    it runs, else the PyTorch one) to 1e-5, D = 0, 1, 2, and so do the observables (both
    evaluation schemes) and L_x, A_x."""
    train, test = synthetic_data
    shards = partition(train, 5, "class", seed=0)
    q = mean_field(5) if graph == "mean-field" else _ring(5)
    coupling, sigma = Coupling.from_matrix(q), sigma_tensor(20.0, 1, "cpu")
    for depth in (0, 1, 2):
        arch = Architecture(depth=depth)
        generic = _generic_mlp(arch)
        state = init_state(arch, [7], 5)
        fast = make_stepper(arch, shards, coupling, sigma, [7], HYPER).advance(state, 30)
        stepper = make_stepper(generic, shards, coupling, sigma, [7], HYPER)
        assert backends.select("cpu", arch=generic) is FUNCTIONAL
        got = stepper.advance(state, 30)
        diff = (got.theta - fast.theta).abs().max()
        assert diff < 1e-5, (depth, graph, float(diff))
        for scheme in ("full", "rotating"):
            want = make_evaluator(arch, test, scheme, 2)(fast.theta)
            have = make_evaluator(generic, test, scheme, 2)(got.theta)
            for key in want:
                assert np.allclose(have[key], want[key], atol=1e-5), (scheme, key)
        for mine, theirs in zip(cross_scores(generic, got.theta, test), cross_scores(arch, fast.theta, test)):
            assert torch.allclose(mine, theirs, atol=1e-5)  # L_x, A_x [1, N, C]


def test_generic_init_draws_each_unit_from_its_own_stream():
    cnn = models.build("cnn", 1, 20, (1, 28, 28), 10)
    a = init_state(cnn, [4], 3).theta[0]  # [3, P]
    b = init_state(cnn, [4], 5).theta[0]
    assert a.shape == (3, 9098) and torch.equal(a, b[:3])  # unit u's row depends on (seed, u) only
    assert not torch.equal(a[0], a[1])
    assert not torch.equal(a, init_state(cnn, [5], 3).theta[0])


def test_cnn_ensemble_replicas_equal_their_single_runs(synthetic_data):
    """A stacked ensemble (two seeds x two sigma, per-replica sigma, shared batches) steps each
    replica as its own single run does."""
    train, _ = synthetic_data
    shards = partition(train, 4, "class", seed=0)
    cnn = models.build("cnn", 1, 20, (1, 28, 28), 10)
    coupling, sigmas, seeds = Coupling.from_matrix(_ring(4)), [0.0, 30.0, 0.0, 30.0], [1, 2]
    state = init_ensemble(cnn, seeds, 2, 4, "pytorch", "cpu")
    stepper = make_ensemble_stepper(cnn, shards, coupling, sigma_tensor(sigmas, 4, "cpu"), seeds, 2, HYPER)
    got = stepper.advance(state, 10).theta  # [4, 4, P]
    for r, (seed, sigma) in enumerate(zip([1, 1, 2, 2], sigmas)):
        single = make_stepper(cnn, shards, coupling, sigma_tensor(sigma, 1, "cpu"), [seed], HYPER)
        alone = single.advance(init_state(cnn, [seed], 4), 10).theta[0]
        assert torch.allclose(got[r], alone, atol=1e-5), r
    assert not torch.allclose(got[0], got[1])  # sigma matters


def test_a_custom_module_trains_through_the_api_and_saves_its_layout(synthetic_data, tmp_path):
    import decentral
    from decentral import params

    def two_layer(input_shape, n_classes):
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 6), torch.nn.Tanh(),
                                   torch.nn.Linear(6, n_classes))

    result = decentral.run(units=4, transient=10, steps=20, eval_every=10, seed=1, model=two_layer,
                           data=synthetic_data, out=str(tmp_path / "run"))
    assert result.config.model == "two_layer" and result.summary["n_params"] == 784 * 6 + 6 + 6 * 10 + 10
    saved = params.load(tmp_path / "run")
    assert saved.architecture["kind"] == "two_layer" and torch.equal(saved.theta, result.params)
    layers = [entry["name"] for entry in json.loads(saved.metadata["layers"])]
    assert layers == ["1.weight", "1.bias", "3.weight", "3.bias"]
    again = decentral.run(result.config, transient=0, init_from=str(tmp_path / "run"), out=None,
                          data=synthetic_data)
    assert again.summary["start_step"] == 30


def test_cnn_sweep_points_equal_their_single_runs(synthetic_data, tmp_path):
    import decentral

    tiny = dict(units=4, transient=10, steps=20, eval_every=10, test_samples=50, seed=3, model="cnn")
    table = decentral.api.sweep(tiny, sigma=[0.0, 40.0], depth=[1], out=str(tmp_path / "s"), quiet=True,
                            data=synthetic_data)
    assert set(table.model) == {"cnn"}
    for sigma in (0.0, 40.0):
        alone = decentral.run(tiny, sigma=sigma, data=synthetic_data).summary
        row = table[table.sigma == sigma].iloc[0]
        assert row.accuracy == pytest.approx(alone["accuracy"], abs=1e-6)
        assert row.magnetization == pytest.approx(alone["magnetization"], rel=1e-4)


def test_model_at_its_default_leaves_config_hashes_alone():
    from decentral.checkpoint import config_hash
    from decentral.config import RunConfig, to_dict

    values = to_dict(RunConfig())
    assert values["model"] == "mlp"
    old = {k: v for k, v in values.items() if k != "model"}
    assert config_hash(values) == config_hash(old)
    assert config_hash({**values, "model": "cnn"}) != config_hash(old)


def test_bad_model_is_one_line_and_exit_2(capsys):
    from decentral.cli import main

    assert main(["run", "--model", "resnet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("decentral: error: --model must be one of mlp, cnn") and "got 'resnet'" in err
    assert "\n" not in err


@pytest.mark.slow
def test_coupling_raises_cnn_accuracy_on_class_private_mnist_shards(mnist_root):
    """Ten CNN units, unit k owning MNIST class k: alone each predicts its class (<A> = 0.1);
    coupled (Eq. 2, mean field) they learn together."""
    import decentral

    base = dict(model="cnn", units=10, lr=0.02, transient=150, steps=50, eval_every=50,
                test_samples=500, data_root=mnist_root, threads=1)
    alone = decentral.run(base, sigma=0.0).summary["accuracy"]
    coupled = decentral.run(base, sigma=50.0).summary["accuracy"]
    assert alone == pytest.approx(0.1, abs=0.02) and coupled > alone + 0.08, (alone, coupled)


def test_the_models_example_runs(run_example, tmp_path):
    done = run_example("models_example.py", tmp_path)
    assert "cnn: 9098 parameters per unit" in done.stdout and "tiny_convnet: 90 parameters" in done.stdout
    assert (tmp_path / "cnn" / "params.safetensors").is_file() and (tmp_path / "sweep" / "results.parquet").is_file()


@pytest.mark.ray
def test_ray_runs_a_cnn_as_the_local_engine_does(synthetic_data):
    ray = pytest.importorskip("ray")
    from decentral.config import RunConfig
    from decentral.problem import prepare
    from decentral.ray_backend import run_ray
    from decentral.ray_backend.cluster import LOCAL_IP, loopback_only
    from decentral.ray_backend.sources import InlineSource
    from decentral.jobs.run import run_local

    cfg = RunConfig(backend="ray", model="cnn", units=4, sigma=30.0, transient=0, steps=10, eval_every=5,
                    actor_cpus=0.25, seed=3, test_samples=40).validate()
    problem = prepare(cfg, synthetic_data)
    started = not ray.is_initialized()
    with loopback_only(started):
        if started:
            ray.init(_node_ip_address=LOCAL_IP, num_cpus=2, include_dashboard=False,
                     logging_level="WARNING", log_to_driver=False)
        try:
            theta, meas, _ = run_ray(cfg, problem, source=InlineSource(problem.shards, problem.test))
        finally:
            if started:
                ray.shutdown()
    local, local_meas = run_local(RunConfig(**{**cfg.__dict__, "backend": "local"}), problem)
    torch.testing.assert_close(theta, local, atol=1e-5, rtol=0)
    assert [r["step"] for r in meas.records] == [r["step"] for r in local_meas.records]


@pytest.mark.parametrize("name", ["fashion-mnist", "cifar10"])
def test_coupling_raises_cnn_accuracy_on_generated_datasets(name, tmp_path):
    """The CNN on a generated Fashion-MNIST-format (1x28x28) and CIFAR-10-format (3x32x32)
    dataset, one class per unit: coupling lifts <A> far above the uncoupled 0.1."""
    import decentral
    from tests.datagen import make_dataset

    root = make_dataset(name, tmp_path, n_train=200, n_test=100)
    base = dict(model="cnn", dataset=name, data_root=str(root), units=10, transient=100, steps=50,
                eval_every=50, lr=0.1, threads=1)
    alone = decentral.run(base, sigma=0.0)
    coupled = decentral.run(base, sigma=10.0)
    shape = (1, 28, 28) if name == "fashion-mnist" else (3, 32, 32)
    assert coupled.summary["n_params"] == models.build("cnn", 1, 20, shape, 10).n_params
    assert coupled.summary["model"] == "cnn" and coupled.summary["input_shape"] == list(shape)
    assert alone.summary["accuracy"] < 0.3 and coupled.summary["accuracy"] > alone.summary["accuracy"] + 0.5, \
        (alone.summary["accuracy"], coupled.summary["accuracy"])


def test_a_sweep_of_a_depthless_model_takes_one_depth(capsys):
    from decentral.cli import main

    assert main(["sweep", "--model", "cnn", "--sigma", "0,10", "--out", "never"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "decentral: error: sweep: --model cnn has no depth; give one --depth (e.g. --depth 1) " \
                  "instead of the list 0,1,2"


def test_a_ray_sweep_refuses_a_model_registered_in_this_process_only():
    import decentral

    models.register("only_here", models.small_cnn)
    with pytest.raises(decentral.UserInputError, match="--model only_here is registered in this process only"):
        decentral.api.sweep(model="only_here", backend="ray", sigma=[0.0], depth=[1], out="never")


def test_a_cnn_continued_from_its_saved_parameters_ends_where_one_longer_run_ends(synthetic_data, tmp_path):
    """A generic step is a pure function of (theta, batch): --init-from continues bitwise."""
    import decentral

    base = dict(model="cnn", units=4, sigma=20.0, test_samples=50, eval_every=10, seed=5)
    decentral.run(base, transient=10, steps=10, data=synthetic_data, out=str(tmp_path / "a"))
    continued = decentral.run(base, transient=0, steps=20, init_from=str(tmp_path / "a"), data=synthetic_data)
    longer = decentral.run(base, transient=10, steps=30, data=synthetic_data)
    assert torch.equal(continued.params, longer.params)


def test_a_factory_that_changes_its_structure_is_refused_with_one_line(synthetic_data):
    import decentral

    calls = []

    def shifty(input_shape, n_classes):  # a second call builds a wider head
        calls.append(1)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, n_classes + len(calls)))

    with pytest.raises(decentral.UserInputError) as err:
        decentral.run(model=shifty, units=2, transient=0, steps=2, eval_every=1, data=synthetic_data)
    message = str(err.value)
    assert "'shifty' built modules of different structures" in message and "\n" not in message


def test_the_model_registry_is_the_one_the_config_validates_against(monkeypatch):
    import decentral

    monkeypatch.setitem(models._FACTORIES, "not_registered_yet", None)  # so that it is removed after
    del models._FACTORIES["not_registered_yet"]

    assert "cnn" in models.NAMES and "mlp" in models.NAMES
    with pytest.raises(decentral.UserInputError, match="--model must be one of mlp, cnn"):
        decentral.api.run_config(model="not_registered_yet")
    models.register("not_registered_yet", models.small_cnn)
    assert decentral.api.run_config(model="not_registered_yet").model == "not_registered_yet"
    with pytest.raises(TypeError):
        models.NAMES["other"] = models.small_cnn  # a read-only view: register() is the one way in


def test_the_registry_test_left_nothing_behind():
    assert "not_registered_yet" not in models.NAMES


def test_kernels_numba_with_a_generic_model_is_refused_with_one_line(synthetic_data):
    import decentral

    with pytest.raises(decentral.UserInputError) as err:
        decentral.run(model="cnn", kernels="numba", units=2, transient=0, steps=2, eval_every=1, data=synthetic_data)
    message = str(err.value)
    assert message.startswith("--kernels numba") and "\n" not in message

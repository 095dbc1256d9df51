"""`--dataset mnist|fashion-mnist|kmnist|cifar10`: generated files in each dataset's real
on-disk format (tests/datagen.py) load as torchvision reads them, partition, train, and
missing or damaged files are one line, exit 2."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torchvision.datasets

import decentral
from decentral.data import load, partition
from decentral.datasets import NAMES, get
from tests.contract import assert_one_line_error
from tests.datagen import cifar_batch_bytes, idx_bytes, make_dataset

RUN = ["--steps", "20", "--transient", "0", "--eval-every", "20"]


def torchvision_pixels(name: str, root, train: bool) -> tuple[torch.Tensor, list[int]]:
    """Pixels [M, C*H*W] and labels as torchvision's own dataset class reads the files (its
    CIFAR-10 md5 check against the official release switched off)."""
    cls = getattr(torchvision.datasets, get(name).torchvision_class)
    if name == "cifar10":
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
            data = cls(str(root), train=train)
        return torch.from_numpy(data.data).permute(0, 3, 1, 2).reshape(len(data.data), -1), data.targets
    data = cls(str(root), train=train)
    return data.data.reshape(len(data.data), -1), data.targets.tolist()


@pytest.mark.parametrize("name", NAMES)
def test_generated_files_read_as_torchvision_reads_them(name, tmp_path):
    spec = get(name)
    root = make_dataset(name, tmp_path, n_train=120, n_test=50)
    train, test = load(name, root)
    assert train.x.shape == (120, spec.n_inputs) and test.x.shape == (50, spec.n_inputs)
    assert train.x.dtype == torch.float32 and train.y.dtype == torch.int64
    assert torch.bincount(train.y).tolist() == [12] * 10
    for split, is_train in ((train, True), (test, False)):
        pixels, labels = torchvision_pixels(name, root, is_train)
        expected = pixels.float() / 255  # [M, C*H*W] in (C, H, W) order
        if spec.mean is not None:  # CIFAR-10: standardised per channel
            per_value = spec.shape[1] * spec.shape[2]
            mean = torch.tensor(spec.mean).repeat_interleave(per_value)
            expected = (expected - mean) / torch.tensor(spec.std).repeat_interleave(per_value)
        torch.testing.assert_close(split.x, expected)
        assert split.y.tolist() == labels


def test_dataset_shapes_and_classes():
    shapes = {name: (get(name).shape, get(name).n_classes, get(name).n_inputs) for name in NAMES}
    assert shapes == {"mnist": ((1, 28, 28), 10, 784), "fashion-mnist": ((1, 28, 28), 10, 784),
                      "kmnist": ((1, 28, 28), 10, 784), "cifar10": ((3, 32, 32), 10, 3072)}


@pytest.mark.parametrize("name", ["fashion-mnist", "cifar10"])
@pytest.mark.parametrize("scheme,kw", [("class", {}), ("k-classes", {"k": 3}), ("dirichlet", {"alpha": 0.3})])
def test_every_partition_cuts_every_dataset(name, scheme, kw, tmp_path):
    train, _ = load(name, make_dataset(name, tmp_path, n_train=200, n_test=20))
    shards = partition(train, 10, scheme, seed=4, **kw)
    for unit in range(10):
        rows = slice(shards.offsets[unit], shards.offsets[unit] + shards.sizes[unit])
        assert sorted(set(shards.train.y[rows].tolist())) == shards.classes[unit]
    if scheme == "class":
        assert shards.classes == [[u] for u in range(10)] and shards.sizes.tolist() == [20] * 10
    if scheme != "k-classes":  # every image owned exactly once
        assert torch.equal(shards.train.x.sum(0), train.x.sum(0)) or \
            torch.allclose(shards.train.x.sum(0), train.x.sum(0), atol=1e-3)
        assert sorted(shards.train.y.tolist()) == sorted(train.y.tolist())


COUPLED = dict(units=10, transient=100, steps=100, eval_every=50, lr=0.05, sigma=20.0, threads=1)


@pytest.mark.parametrize("name", NAMES)
def test_a_coupled_mlp_learns_each_dataset_and_the_run_records_it(name, tmp_path):
    spec = get(name)
    root = make_dataset(name, tmp_path / "data", n_train=400, n_test=200)
    result = decentral.run(dataset=name, data_root=str(root), out=str(tmp_path / "run"), **COUPLED)
    summary = result.summary
    assert summary["accuracy"] > 0.6, summary["accuracy"]  # one class per unit: 0.1 uncoupled
    assert summary["n_params"] == (spec.n_inputs + 1) * 20 + 21 * 10  # D = 1, width 20
    assert result.cross_accuracy.shape == (10, 10)
    loaded = decentral.load(tmp_path / "run")
    assert loaded.config.dataset == name and 'dataset = "' + name + '"' in \
        (tmp_path / "run" / "config.toml").read_text()
    if name != "mnist":  # MNIST summaries keep the keys they always had
        assert summary["dataset"] == name and summary["input_shape"] == list(spec.shape)
    else:
        assert "dataset" not in summary


def test_uncoupled_units_on_private_classes_stay_near_chance(tmp_path):
    root = make_dataset("cifar10", tmp_path, n_train=400, n_test=200)
    result = decentral.run(dataset="cifar10", data_root=str(root), **{**COUPLED, "sigma": 0.0})
    assert result.summary["accuracy"] < 0.3  # each unit knows one class; coupled: > 0.6 above


def test_a_sweep_on_a_dataset_records_it(tmp_path):
    root = make_dataset("kmnist", tmp_path / "data", n_train=200, n_test=50)
    table = decentral.api.sweep(dataset="kmnist", data_root=str(root), sigma=[0, 20], depth=[1], units=10,
                            transient=20, steps=20, eval_every=20, lr=0.05, out=str(tmp_path / "s"),
                            quiet=True, threads=1)
    assert table.dataset.tolist() == ["kmnist", "kmnist"] and len(table) == 2


def test_the_default_dataset_leaves_config_hashes_alone():
    """Sweep manifests, checkpoints and saved parameters hash the config without `dataset` at
    its default, so directories written before the field keep their hashes."""
    from decentral import checkpoint
    from decentral.config import RunConfig, to_dict
    from decentral.sweep.config import config_hash, load_sweep_config, science_dict

    values = {"sigma": "1,2", "depth": "1", "out": "x"}
    mnist = science_dict(load_sweep_config({}, values))
    assert "dataset" not in mnist
    assert config_hash(science_dict(load_sweep_config({}, {**values, "dataset": "cifar10"}))) != config_hash(mnist)
    run_values = to_dict(RunConfig())
    before = {k: v for k, v in run_values.items() if k != "dataset"}
    assert checkpoint.config_hash(run_values) == checkpoint.config_hash(before)
    assert checkpoint.config_hash({**run_values, "dataset": "kmnist"}) != checkpoint.config_hash(before)
    resumed = checkpoint.resumed_config("out", before, {})  # a checkpoint written before the field
    assert resumed.dataset == "mnist"


def test_an_unknown_dataset_is_one_line(capsys):
    assert_one_line_error(["run", "--dataset", "svhn"], capsys,
                          "--dataset must be one of mnist, fashion-mnist, kmnist, cifar10; got 'svhn'")
    with pytest.raises(decentral.UserInputError, match="--dataset must be one of"):
        decentral.run(dataset="svhn")


# --- missing and damaged files --------------------------------------------------------------


@pytest.mark.parametrize("name,folder,files", [
    ("kmnist", "KMNIST/raw", "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
                             "t10k-labels-idx1-ubyte; put them there (uncompressed)"),
    ("cifar10", "cifar-10-batches-py", "data_batch_1, data_batch_2, data_batch_3, data_batch_4, "
                                       "data_batch_5, test_batch, batches.meta; put them there"),
])
def test_missing_files_name_the_files_and_the_folder(name, folder, files, tmp_path, capsys):
    line = assert_one_line_error(["run", "--dataset", name, "--data-root", tmp_path, *RUN], capsys,
                                 "files missing in")
    assert f"{get(name).title} files missing in {tmp_path / folder}: {files}" in line and "--download" in line


def test_a_sweep_without_its_dataset_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert_one_line_error(["sweep", "--dataset", "kmnist", "--data-root", tmp_path, "--out", out, "--sigma", "1",
                           "--depth", "1", "--quiet"], capsys, "KMNIST files missing in")
    assert not out.exists()


def test_a_failed_download_is_one_line(tmp_path, monkeypatch, capsys):
    def offline(self):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", offline)
    line = assert_one_line_error(["run", "--dataset", "cifar10", "--data-root", tmp_path, "--download", *RUN],
                                 capsys, "Temporary failure in name resolution")
    assert f"CIFAR-10 files missing in {tmp_path / 'cifar-10-batches-py'}: data_batch_1" in line
    assert "cifar-10-python.tar.gz failed" in line


def _edit(path, change):
    path.write_bytes(change(path.read_bytes()))


class Remove:
    """Unpickling this calls os.remove on the path: what a hostile 'batch' could do."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        import os

        return os.remove, (self.path,)


def _idx_labels(value):
    return lambda data: idx_bytes(np.concatenate([np.frombuffer(data[8:9], np.uint8), [value],
                                                  np.frombuffer(data[10:], np.uint8)]).astype(np.uint8))


def _cifar_edit(kind, sentinel):
    def change(data: bytes) -> bytes:
        rows = 10
        pixels = np.zeros((rows, 3072), np.uint8)
        labels = np.arange(rows) % 10
        if kind == "truncated":
            return data[: len(data) // 2]
        if kind == "label":
            return cifar_batch_bytes(pixels, np.where(labels == 3, 10, labels), "x")
        if kind == "shape":
            return cifar_batch_bytes(np.zeros((rows, 1024), np.uint8), labels, "x")
        return pickle.dumps({"data": pixels, "labels": labels.tolist(), "x": Remove(sentinel)}, protocol=2)
    return change


@pytest.mark.parametrize("name,file,change,pattern", [
    ("fashion-mnist", "train-images-idx3-ubyte", lambda d: d[:-7],
     r"Fashion-MNIST file \S+/FashionMNIST/raw/train-images-idx3-ubyte is damaged: 78,409 bytes, expected 78,416"),
    ("kmnist", "t10k-labels-idx1-ubyte", _idx_labels(42),
     r"KMNIST file \S+/t10k-labels-idx1-ubyte: label 42 at index 1 is outside 0..9"),
    ("kmnist", "t10k-images-idx3-ubyte", lambda d: idx_bytes(np.zeros((10, 32, 32), np.uint8)),
     r"t10k-images-idx3-ubyte is damaged: its header gives items of shape \(32, 32\), expected \(28, 28\)"),
    ("mnist", "t10k-images-idx3-ubyte", lambda d: d[:2] + b"\x0c" + d[3:],
     r"t10k-images-idx3-ubyte is damaged: header 00000c03 is not that of 3-dimensional unsigned bytes"),
    ("cifar10", "data_batch_3", "truncated", r"data_batch_3 is damaged: it cannot be unpickled"),
    ("cifar10", "test_batch", "label", r"CIFAR-10 file \S+/test_batch: label 10 at index 3 is outside 0..9"),
    ("cifar10", "data_batch_1", "shape", r"data_batch_1 is damaged: its data is a uint8 array of shape "
                                         r"\(10, 1024\), expected uint8 \[n, 3072\]"),
    ("cifar10", "batches.meta", lambda d: pickle.dumps({"label_names": ["a"]}, protocol=2),
     r"batches.meta is damaged: its label_names are not a list of 10 class names"),
    ("cifar10", "data_batch_5", "hostile", r"data_batch_5 is damaged: it cannot be unpickled "
                                           r"\(UnpicklingError: it refers to posix.remove"),
])
def test_damaged_files_are_one_line(name, file, change, pattern, tmp_path, capsys):
    sentinel = tmp_path / "sentinel"
    sentinel.write_text("still here")
    root = make_dataset(name, tmp_path / "data", n_train=100, n_test=10)
    _edit(get(name).raw_folder(root) / file, _cifar_edit(change, sentinel) if isinstance(change, str) else change)
    assert_one_line_error(["run", "--dataset", name, "--data-root", root, "--units", "4", *RUN], capsys, pattern)
    assert sentinel.read_text() == "still here"  # the hostile pickle ran nothing


def test_memory_is_estimated_for_the_dataset_inputs(tmp_path, monkeypatch, capsys):
    from decentral import resources

    mnist = resources.run_bytes(1000, 1, 20, None, dense_coupling=False)
    cifar = resources.run_bytes(1000, 1, 20, None, dense_coupling=False, n_in=3072)
    # first layer 3,072 x 20 instead of 784 x 20 (theta, gradient, update, copy), bigger images
    images = resources.TRAIN_BYTES * 3072 // 784 - resources.TRAIN_BYTES
    assert cifar - mnist == 1000 * (3072 - 784) * 20 * 4 * 4 + images
    monkeypatch.setattr(resources, "available_bytes", lambda: mnist + 1)
    assert_one_line_error(["run", "--dataset", "cifar10", "--units", "1000", "--data-root", tmp_path, *RUN],
                          capsys, r"this run \(N=1000, D=1, width=20\) needs about")  # before reading data


# --- downloads (torchvision's downloaders replaced by writers of generated files) ------------


@pytest.mark.parametrize("name", ["kmnist", "cifar10"])
def test_a_first_run_downloads_the_dataset_into_the_default_folder(name, default_data_folder, monkeypatch, capsys):
    cls = getattr(torchvision.datasets, get(name).torchvision_class)
    monkeypatch.setattr(cls, "download", lambda self: make_dataset(name, self.root, 100, 20))
    if name == "cifar10":  # our files are not the release's: skip its md5 check after the download
        monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    train, test = load(name, default_data_folder)
    assert len(train.y) == 100 and len(test.y) == 20
    captured = capsys.readouterr()
    assert captured.out == "" and f"downloaded {get(name).title} into {get(name).raw_folder(default_data_folder)}" \
        in captured.err


@pytest.mark.ray
def test_ray_sweep_tasks_load_the_dataset_from_the_data_root(tmp_path):
    """Sweep groups as local Ray tasks read a generated CIFAR-10 themselves; same table as local."""
    pytest.importorskip("ray")
    root = make_dataset("cifar10", tmp_path / "data", n_train=200, n_test=50)
    values = dict(dataset="cifar10", data_root=str(root), sigma=[0, 20], depth=[1], units=10, transient=20,
                  steps=20, eval_every=20, lr=0.05, max_batch=1, quiet=True, threads=1)
    local = decentral.api.sweep(**values, out=str(tmp_path / "local")).sort_values("point_id")
    remote = decentral.api.sweep(**values, out=str(tmp_path / "ray"), backend="ray").sort_values("point_id")
    assert remote.dataset.tolist() == ["cifar10", "cifar10"]
    for name in ("accuracy", "loss", "magnetization", "consensus_distance"):
        np.testing.assert_allclose(remote[name], local[name], rtol=1e-5, atol=1e-6, err_msg=name)

"""Fuzz: seeded byte flips, truncations and garbage in every input kind (config files, graph
files, MNIST idx files, sweep directory files) end in exit 0 or 2, never another code or an
exception, each within a time bound. The CLI runs in-process (cli.main with argv); the
kernels' memory safety rests on the data checks tested in test_data_validation."""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path

import pytest

from decentral.errors import UserInputError
from tests.contract import run_cli

REPO = Path(__file__).resolve().parents[1]
PER_CASE_S = 30.0  # no single mutated input may take longer than this
# seconds of mutations per file (at least one always runs): the whole module stays ~20 s
BUDGET_S = {"config": 2.0, "graph": 0.6, "idx": 2.0, "sweep": 1.0, "cifar": 1.5}


def mutations(data: bytes, rng: random.Random, count: int):
    """`count` damaged variants: flipped bytes, truncations, inserted garbage, emptied."""
    for i in range(count):
        kind = i % 4
        out = bytearray(data)
        if kind == 0 and out:
            for _ in range(rng.randint(1, 4)):
                out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        elif kind == 1:
            out = out[: rng.randrange(len(out) + 1)]
        elif kind == 2:
            at = rng.randrange(len(out) + 1)
            out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        else:
            out = out[:0] if rng.random() < 0.3 else out[: len(out) // 2] + out[len(out) // 2:][::-1]
        yield bytes(out)


def _fuzz(path: Path, original: bytes, count: int, seed: int, call, budget: float) -> int:
    """Write each mutation of `original` to path and call() until `budget` seconds have
    passed (at least once); returns how many ran."""
    rng, start, ran = random.Random(seed), time.monotonic(), 0
    for variant in mutations(original, rng, count):
        if ran and time.monotonic() - start > budget:
            break
        path.write_bytes(variant)
        began = time.monotonic()
        code = call()
        assert code in (0, 2), f"exit {code} for {path.name} = {variant[:80]!r}"
        assert time.monotonic() - began < PER_CASE_S, f"{path.name} took too long"
        ran += 1
    return ran


def _cli_code(argv, capsys) -> int:
    code, _, err = run_cli(argv, capsys)
    assert "Traceback" not in err, err[-2000:]
    return code


CONFIG_TOML = b'units = 4\nsteps = 50\ntransient = 0\neval_every = 50\nsigma = 3.5\ndownload = false\ntopology = "x.edgelist"\n'
CONFIG_YAML = b"units: 4\nsteps: 50\nsigma: [1, 2]\ninit: normal\nbatches: iid\n"


def test_fuzzed_config_files(tmp_path, capsys):
    for seed, (name, text) in enumerate([("c.toml", CONFIG_TOML), ("c.yaml", CONFIG_YAML)]):
        path = tmp_path / name
        argv = ["run", "--config", path, "--data-root", tmp_path / "no-data"]  # stops before any data
        _fuzz(path, text, 60, seed, lambda: _cli_code(argv, capsys), BUDGET_S["config"])


GRAPHS = ["ring_n10.edgelist", "complete_n10.csv", "weighted_n10.edgelist", "directed_n10.edgelist"]


def test_fuzzed_graph_files(tmp_path, capsys):
    files = {name: (REPO / "topologies" / name).read_bytes() for name in GRAPHS}
    for fmt in ("graphml", "gml", "npy"):
        path = tmp_path / f"g.{fmt}"
        assert _cli_code(["topology", "generate", "small_world", "--nodes", "8", "--out", path], capsys) == 0
        files[path.name] = path.read_bytes()
    for seed, (name, original) in enumerate(files.items()):
        path = tmp_path / name
        _fuzz(path, original, 40, seed, lambda: _cli_code(["topology", path, "--json"], capsys), BUDGET_S["graph"])


def _load_code(root: Path) -> int:
    from decentral.data import load_mnist_split

    try:
        load_mnist_split(root, train=False)
    except UserInputError:
        return 2
    return 0


def test_fuzzed_idx_files(mnist_root, tmp_path):
    """Headers and labels: the images file is fuzzed in its first 4 KB (header and first
    rows) and otherwise kept, so every variant is the right size or damaged in size."""
    from decentral.data import _load_cached

    for seed, (name, keep) in enumerate([("t10k-labels-idx1-ubyte", None), ("t10k-images-idx3-ubyte", 4096)]):
        raw = tmp_path / name / "MNIST" / "raw"
        raw.mkdir(parents=True)
        for file in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                     "t10k-labels-idx1-ubyte"):
            if file != name:
                (raw / file).symlink_to(Path(mnist_root) / "MNIST" / "raw" / file)
        original = (Path(mnist_root) / "MNIST" / "raw" / name).read_bytes()
        head, tail = (original, b"") if keep is None else (original[:keep], original[keep:])
        rng, ran, start = random.Random(seed), 0, time.monotonic()
        for variant in mutations(head, rng, 16):
            if ran and time.monotonic() - start > BUDGET_S["idx"]:
                break
            (raw / name).write_bytes(variant + tail)
            _load_cached.cache_clear()
            assert _load_code(tmp_path / name) in (0, 2)
            ran += 1


def test_fuzzed_cifar_batches(tmp_path):
    """CIFAR-10's pickled test batch and batches.meta, fuzzed in the pickle's opcodes (the
    batch's first and last 1 KB: keys, labels, array header; the filenames list), the pixels
    between kept: every variant loads or is one line (UserInputError), never another error."""
    from decentral.data import _load_cached, load_split
    from tests.datagen import make_cifar10

    folder = make_cifar10(tmp_path, n_train=20, n_test=10) / "cifar-10-batches-py"
    for seed, name in enumerate(("test_batch", "batches.meta")):
        original = (folder / name).read_bytes()
        cut = min(1024, len(original) // 2)
        head, middle, end = original[:cut], original[cut:-cut], original[-cut:]
        rng, ran, start = random.Random(seed), 0, time.monotonic()
        for i, variant in enumerate(mutations(head + end, rng, 40)):
            if ran and time.monotonic() - start > BUDGET_S["cifar"]:
                break
            damaged = variant[:cut] + middle + variant[cut:] if i % 2 else variant
            (folder / name).write_bytes(damaged)
            _load_cached.cache_clear()
            try:
                load_split("cifar10", tmp_path, train=False)
            except UserInputError:
                pass
            ran += 1
        (folder / name).write_bytes(original)


@pytest.fixture(scope="module")
def small_sweep(tmp_path_factory, synthetic_data):
    from decentral.sweep import run_sweep
    from decentral.sweep.config import load_sweep_config

    root = tmp_path_factory.mktemp("fuzz") / "sweep"
    run_sweep(load_sweep_config({}, dict(sigma="0.5,5", depth="0", units=3, transient=0, steps=4,
                                         eval_every=2, protocol="both", out=str(root), quiet=True)),
              data=synthetic_data)
    return root


def test_fuzzed_sweep_directory_files(small_sweep, tmp_path, capsys):
    for seed, relative in enumerate(["sweep.json", "points/*.json", "results.parquet", "cross_accuracy.npz"]):
        copy = tmp_path / f"copy{seed}"
        shutil.copytree(small_sweep, copy)
        target = next(copy.glob(relative))
        argv = ["plot", copy, "--out", tmp_path / "figures", "--overwrite"]
        _fuzz(target, target.read_bytes(), 6, seed, lambda: _cli_code(argv, capsys), BUDGET_S["sweep"])

"""Small datasets written in each dataset's REAL on-disk format, for tests (no download here).

    from tests.datagen import make_dataset, make_fashion_mnist, make_cifar10
    root = make_cifar10(tmp_path, n_train=200, n_test=100)   # -> tmp_path/cifar-10-batches-py/...
    decentral.run(dataset="cifar10", data_root=root, ...)

The MNIST family (MNIST, Fashion-MNIST, KMNIST) is four uncompressed idx files in
ROOT/<MNIST|FashionMNIST|KMNIST>/raw (big-endian header: magic 0x00000803 / 0x00000801, then
the dimensions), as torchvision keeps them; CIFAR-10 is ROOT/cifar-10-batches-py with
data_batch_1..5, test_batch and batches.meta, pickled dicts (protocol 2, latin1 strings, as the
official release) with `data` [n, 3072] uint8 in (C, H, W) order and `labels` a list of ints.

Images are learnable: each class has its own mean image (fixed by `seed`; for the MNIST family
a dark background with a fifth of the pixels lit, for CIFAR-10 every pixel), and every image is
that mean plus Gaussian noise, clipped to 0..255; labels are balanced over the 10 classes
(label i mod 10, shuffled). The test split draws other images around the same means. A short
coupled run learns them (e.g. N = 10, one class per unit, 200 steps at lr 0.05, sigma 20:
accuracy near 1, against 0.1 uncoupled).
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np

from decentral.datasets import CIFAR_META, DATASETS

N_CLASSES = 10
IDX_LIT = 0.2  # the MNIST family's class means: a dark background, a fifth of the pixels lit


def class_images(n: int, n_inputs: int, seed: int, split_seed: int, lit: float = 1.0,
                 noise: float = 40.0) -> tuple[np.ndarray, np.ndarray]:
    """(pixels [n, n_inputs] uint8, labels [n] uint8): class means from `seed` (a fraction `lit`
    of each mean's pixels uniform in 0..255, the rest 0), images around them (Gaussian noise of
    std `noise`, clipped) drawn from `split_seed`."""
    gen = np.random.default_rng(seed)
    means = gen.uniform(0, 255, size=(N_CLASSES, n_inputs)) * (gen.random((N_CLASSES, n_inputs)) < lit)
    rng = np.random.default_rng((seed, split_seed))
    labels = rng.permutation(np.arange(n) % N_CLASSES).astype(np.uint8)
    pixels = means[labels] + noise * rng.standard_normal((n, n_inputs))
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8), labels


def idx_bytes(array: np.ndarray) -> bytes:
    """An idx file of unsigned bytes: 0, 0, type 0x08, ndim, then each dimension (>u4), then data."""
    header = bytes((0, 0, 0x08, array.ndim)) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def make_idx_dataset(name: str, root, n_train: int = 200, n_test: int = 100, seed: int = 0) -> Path:
    """A dataset of the MNIST family (`name`: mnist, fashion-mnist, kmnist) under root; returns root."""
    spec = DATASETS[name]
    folder = spec.raw_folder(root)
    folder.mkdir(parents=True, exist_ok=True)
    _, height, width = spec.shape
    for prefix, n, split_seed in (("train", n_train, 1), ("t10k", n_test, 2)):
        pixels, labels = class_images(n, height * width, seed, split_seed, lit=IDX_LIT)
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(idx_bytes(pixels.reshape(n, height, width)))
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    return Path(root)


def make_mnist(root, n_train: int = 200, n_test: int = 100, seed: int = 0) -> Path:
    return make_idx_dataset("mnist", root, n_train, n_test, seed)


def make_fashion_mnist(root, n_train: int = 200, n_test: int = 100, seed: int = 0) -> Path:
    return make_idx_dataset("fashion-mnist", root, n_train, n_test, seed)


def make_kmnist(root, n_train: int = 200, n_test: int = 100, seed: int = 0) -> Path:
    return make_idx_dataset("kmnist", root, n_train, n_test, seed)


def cifar_batch_bytes(pixels: np.ndarray, labels: np.ndarray, label: str) -> bytes:
    """One python batch as the official release pickles it (protocol 2)."""
    batch = {"batch_label": label, "labels": [int(v) for v in labels], "data": pixels,
             "filenames": [f"image_{i:05d}.png" for i in range(len(labels))]}
    return pickle.dumps(batch, protocol=2)


def make_cifar10(root, n_train: int = 200, n_test: int = 100, seed: int = 0) -> Path:
    """CIFAR-10's python batches under root/cifar-10-batches-py: the n_train training images
    spread over data_batch_1..5 (as evenly as possible), n_test in test_batch; returns root."""
    spec = DATASETS["cifar10"]
    folder = spec.raw_folder(root)
    folder.mkdir(parents=True, exist_ok=True)
    pixels, labels = class_images(n_train, spec.n_inputs, seed, 1)
    for i, part in enumerate(np.array_split(np.arange(n_train), len(spec.train_files))):
        data = cifar_batch_bytes(pixels[part], labels[part], f"training batch {i + 1} of 5")
        (folder / spec.train_files[i]).write_bytes(data)
    pixels, labels = class_images(n_test, spec.n_inputs, seed, 2)
    (folder / spec.test_files[0]).write_bytes(cifar_batch_bytes(pixels, labels, "testing batch 1 of 1"))
    meta = {"num_cases_per_batch": 10000, "num_vis": spec.n_inputs,
            "label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                            "ship", "truck"]}
    (folder / CIFAR_META).write_bytes(pickle.dumps(meta, protocol=2))
    return Path(root)


MAKERS = {"mnist": make_mnist, "fashion-mnist": make_fashion_mnist, "kmnist": make_kmnist,
          "cifar10": make_cifar10}


def make_dataset(name: str, root, n_train: int = 200, n_test: int = 100, seed: int = 0) -> Path:
    """The generated dataset `name` (a --dataset value) under root; returns root."""
    return MAKERS[name](root, n_train, n_test, seed)

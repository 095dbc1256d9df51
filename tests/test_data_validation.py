"""MNIST files are checked at the edge (headers, sizes, labels) before any kernel sees them;
the numba kernels raise instead of indexing out of bounds in the bounds-checked test mode."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.contract import assert_one_line_error

REPO = Path(__file__).resolve().parents[1]
SMALL_RUN = ["--units", "4", "--steps", "50", "--transient", "0", "--eval-every", "50", "--test-samples", "200"]
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def damaged_root(mnist_root: str, tmp_path: Path, name: str, edit) -> Path:
    """A data root whose files link to the real ones, except `name`: a copy changed by edit(bytes)."""
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for file in FILES:
        source = Path(mnist_root) / "MNIST" / "raw" / file
        if file == name:
            (raw / file).write_bytes(edit(bytearray(source.read_bytes())))
        else:
            (raw / file).symlink_to(source)
    return tmp_path / "data"


def _set(offset: int, value: int):
    def edit(data: bytearray) -> bytes:
        data[offset] = value
        return bytes(data)
    return edit


@pytest.mark.parametrize("name,edit,pattern", [
    ("t10k-labels-idx1-ubyte", _set(8 + 17, 99), "t10k-labels-idx1-ubyte: label 99 at index 17"),
    ("train-labels-idx1-ubyte", _set(8 + 5, 200), "train-labels-idx1-ubyte: label 200 at index 5"),
    ("t10k-images-idx3-ubyte", _set(2, 0x0C), "cannot be read|t10k-images"),
    ("t10k-labels-idx1-ubyte", _set(3, 0x03), "cannot be read|t10k-labels"),
    ("t10k-labels-idx1-ubyte", lambda d: b"", "t10k-labels-idx1-ubyte"),
    ("t10k-images-idx3-ubyte", lambda d: bytes(d[: len(d) // 2]), "t10k-images-idx3-ubyte"),
    ("t10k-labels-idx1-ubyte", lambda d: bytes(d[:8]) + bytes(len(d) - 8) + b"\x00", "t10k-labels"),
])
def test_damaged_mnist_files_are_one_line(mnist_root, tmp_path, capsys, name, edit, pattern):
    root = damaged_root(mnist_root, tmp_path, name, edit)
    assert_one_line_error(["run", "--data-root", root, *SMALL_RUN, "--partition", "dirichlet"], capsys, pattern)


def test_kernel_refuses_labels_it_would_index_past():
    import torch

    from decentral.backends import kernels

    if kernels.numba is None:
        pytest.skip("numba not installed")
    with pytest.raises(ValueError, match="out of bounds"):
        kernels.LocalGrad(((784, 10),), torch.zeros(3, 784), torch.tensor([0, 10, 1]))


BOUNDSCHECKED = textwrap.dedent("""
    import numpy as np
    from decentral.backends import layers
    assert layers.BOUNDSCHECK
    z, d = np.zeros((10, 2), np.float32), np.zeros((10, 2), np.float32)
    print("ok", layers._softmax_delta(z, np.array([3, 4]), d) > 0, flush=True)
    try:
        layers._softmax_delta(z, np.array([3, 99]), d)  # label 99: logits row 99 of 10
    except IndexError as err:
        print("IndexError", err, flush=True)
""")


def test_boundschecked_kernels_raise_instead_of_reading_past_arrays():
    """DECENTRAL_NUMBA_BOUNDSCHECK=1: a label past the logits raises IndexError (no segfault)."""
    env = {**os.environ, "DECENTRAL_NUMBA_BOUNDSCHECK": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", BOUNDSCHECKED], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]  # a segfault would be -11
    assert "ok True" in done.stdout and "IndexError" in done.stdout, done.stdout + done.stderr[-2000:]

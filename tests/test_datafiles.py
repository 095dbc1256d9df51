"""The data root: default folder, download, and one line for each way MNIST can be missing."""

from __future__ import annotations

import struct

from torchvision.datasets import MNIST

from decentral import datafiles
from decentral.cli import main

COUNTS = {"train": 60_000, "t10k": 10_000}


def fake_mnist(root, names=tuple(datafiles.FILES)) -> None:
    """Valid idx files of the right sizes, all zero images and labels (sparse on disk)."""
    raw = datafiles.raw_folder(root)
    raw.mkdir(parents=True, exist_ok=True)
    for name in names:
        count = COUNTS[name.split("-")[0]]
        header = (struct.pack(">iiii", 0x803, count, 28, 28) if "images" in name
                  else struct.pack(">ii", 0x801, count))
        with open(raw / name, "wb") as f:
            f.write(header)
            f.truncate(datafiles.FILES[name])


def offline(self):
    raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://x/, got:\n"
                       "<urlopen error [Errno -3] Temporary failure in name resolution>")


def one_line_error(capsys, args) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("decentral: error: ") and err.count("\n") == 1, err
    return err


def test_no_data_root_offline_names_every_missing_file_and_the_folder(default_data_folder, monkeypatch, capsys):
    monkeypatch.setattr(MNIST, "download", offline)
    err = one_line_error(capsys, ["run", "--steps", "1"])
    assert str(default_data_folder / "MNIST" / "raw") in err and "Temporary failure in name resolution" in err
    assert all(name in err for name in datafiles.FILES)


def test_first_run_downloads_into_the_default_folder(default_data_folder, monkeypatch, capsys):
    monkeypatch.setattr(MNIST, "download", lambda self: fake_mnist(default_data_folder))
    assert datafiles.resolve_root(None) == default_data_folder
    datafiles.ensure(default_data_folder, download=False)
    assert datafiles.missing_files(default_data_folder) == []
    captured = capsys.readouterr()
    assert captured.out == "" and "downloaded MNIST" in captured.err  # stdout stays clean


def test_a_given_root_without_files_is_not_filled_unasked(tmp_path, capsys):
    err = one_line_error(capsys, ["run", "--data-root", str(tmp_path)])
    assert f"MNIST files missing in {tmp_path / 'MNIST' / 'raw'}: " in err and "--download" in err
    assert all(name in err for name in datafiles.FILES)


def test_partial_files_name_exactly_the_missing_ones(tmp_path, capsys):
    fake_mnist(tmp_path, ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"))
    err = one_line_error(capsys, ["run", "--data-root", str(tmp_path), "--steps", "1"])
    assert "missing" in err and "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte;" in err
    assert "train-" not in err


def test_a_damaged_file_is_named(tmp_path, capsys):
    fake_mnist(tmp_path)
    with open(datafiles.raw_folder(tmp_path) / "train-labels-idx1-ubyte", "r+b") as f:
        f.truncate(100)  # a partial download
    err = one_line_error(capsys, ["run", "--data-root", str(tmp_path)])
    assert "train-labels-idx1-ubyte is damaged: 100 bytes, expected 60,008" in err


def test_a_data_root_that_is_not_a_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DECENTRAL_DATA", str(tmp_path / "nowhere"))
    err = one_line_error(capsys, ["run"])
    assert "nowhere" in err and "$DECENTRAL_DATA" in err and "does not exist" in err

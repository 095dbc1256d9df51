"""Python 3.10: TOML files are read through tomli, the package tomllib came from."""

from __future__ import annotations

import importlib.util
import sys
import tomllib
from pathlib import Path

import decentral
from decentral import config, storage


def test_toml_is_read_through_tomli_before_python_311(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "version_info", (3, 10, 13, "final", 0))
    monkeypatch.setitem(sys.modules, "tomllib", None)  # absent before 3.11
    monkeypatch.setitem(sys.modules, "tomli", tomllib)  # the same parser, published as tomli
    path = Path(decentral.__file__).with_name("storage.py")
    spec = importlib.util.spec_from_file_location("decentral._storage_py310", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)  # a private copy: decentral.storage itself stays as it is
    assert module.tomllib is tomllib
    (tmp_path / "c.toml").write_text('units = 4\nsigma = 2.5\n')
    assert module.read_toml(tmp_path / "c.toml") == {"units": 4, "sigma": 2.5}


def test_config_files_use_the_same_parser():
    assert config.tomllib is storage.tomllib

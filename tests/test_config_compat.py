"""Python 3.10: config files are read through tomli, the package tomllib came from."""

from __future__ import annotations

import importlib.util
import sys
import tomllib
from pathlib import Path

import decentral


def test_config_reads_toml_through_tomli_before_python_311(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "version_info", (3, 10, 13, "final", 0))
    monkeypatch.setitem(sys.modules, "tomllib", None)  # absent before 3.11
    monkeypatch.setitem(sys.modules, "tomli", tomllib)  # the same parser, published as tomli
    path = Path(decentral.__file__).with_name("config.py")
    spec = importlib.util.spec_from_file_location("decentral._config_py310", path)
    config = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, config)
    spec.loader.exec_module(config)  # a private copy: decentral.config itself stays as it is
    assert config.tomllib is tomllib
    (tmp_path / "c.toml").write_text('units = 4\nsigma = 2.5\n')
    assert config.read_config_file(tmp_path / "c.toml") == {"units": 4, "sigma": 2.5}

"""The fixed runs, sweep and theory table of tools/golden.py still give their recorded numbers.

tools/golden.py check compares them bitwise on one machine (what a refactor must keep); here
they are compared to a float tolerance, as another CPU or BLAS may round differently.
"""

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import golden  # noqa: E402

pytestmark = pytest.mark.slow


def _close(a, b, path="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{path}: keys {sorted(set(a) ^ set(b))}"]
        return [m for k in a for m in _close(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} != {len(b)}"]
        return [m for i, (x, y) in enumerate(zip(a, b)) for m in _close(x, y, f"{path}[{i}]")]
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None or not math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-5):
            return [f"{path}: {a} != {b}"]
        return []
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def test_golden_outputs_unchanged(mnist_root, monkeypatch):
    monkeypatch.setenv("DECENTRAL_DATA", str(mnist_root))
    current = golden.collect()
    for name, value in current.items():
        recorded = json.loads((golden.GOLDEN / f"{name}.json").read_text())
        mismatches = _close(json.loads(json.dumps(value)), recorded, name)
        assert not mismatches, mismatches[:5]

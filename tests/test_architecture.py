"""The import graph of `decentral`: every module imports, no cycles, no upward imports.

Job and CLI modules (`decentral.jobs`, the sweep job and its executors, the CLI, the API) sit on top;
library modules never import them. In the sweep package, the worker that executors run
imports neither the job nor an executor. Imports inside functions count too.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "decentral"
# modules that run jobs or parse the command line: nothing below may import them
TOP = {"decentral.__main__", "decentral.cli", "decentral.api", "decentral.jobs", "decentral.jobs.common",
       "decentral.jobs.run", "decentral.jobs.sweep", "decentral.jobs.theory", "decentral.jobs.topology",
       "decentral.jobs.plot", "decentral.sweep", "decentral.sweep.job", "decentral.sweep.ray_tasks"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Modules of the package that `name` imports (at module level or inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            base = base[: len(base) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            submodules = {f"{target}.{a.name}" for a in node.names} & known
            if len(submodules) < len(node.names):  # some names come from target itself
                found.add(target)
            found.update(submodules)
    return {m for m in found if m in known and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(frozenset(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


@pytest.mark.parametrize("name", sorted(set(_modules()) - {"decentral.__main__"}))
def test_every_module_imports(name):
    if name.startswith("decentral.ray_backend") or name.endswith("plots"):
        pytest.importorskip("ray" if "ray" in name else "matplotlib")
    importlib.import_module(name)


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_no_upward_imports():
    graph = _graph()
    upward = {(a, b) for a, targets in graph.items() if a not in TOP for b in targets if b in TOP}
    assert upward == set()


def test_relative_imports_name_existing_modules():
    """Imports inside functions run late; a stale one (e.g. after a module moved) fails here."""
    modules = _modules()
    missing = []
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                if target not in modules:
                    missing.append(f"{name}: {target}")
    assert missing == []


def test_every_job_module_is_listed_on_top():
    jobs = {name for name in _modules() if name.startswith("decentral.jobs")}
    assert jobs <= TOP


def test_sweep_worker_imports_no_executor():
    graph = _graph()
    assert not graph["decentral.sweep.worker"] & {"decentral.sweep.job", "decentral.sweep.ray_tasks"}

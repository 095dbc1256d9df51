"""Topology files as coupling matrices Q: one file drives the local engine, Ray and the theory.

Conventions (the same everywhere in decentral):

* **q_ij** is the weight of the edge i -> j exactly as :func:`networkx.to_numpy_array`
  gives it in unit order: in Eq. 2, unit i is pulled toward unit j with weight q_ij.
  An undirected edge counts both ways (q_ij = q_ji). A missing ``weight`` attribute
  means 1. Parallel edges add up.
* **Unit order.** If every node label is an integer or an integer-looking string
  (``"7"``, ``" 7"``), the labels must be exactly 0..N-1 and unit i is the node labelled i;
  anything else (gaps, 1..N, duplicates such as ``"1"`` and ``"01"``) is an error naming
  the missing and unexpected labels. Otherwise units follow the labels sorted as strings
  (unit 0 is the smallest label). Matrix files (.csv, .npy): unit i is row/column i.
* **Validation** (``UserInputError``, one line; the CLI exits with code 2): unreadable
  or malformed file, unknown extension, no nodes, node count different from the number
  of units, weights that are negative, NaN, infinite or not numbers, and self-loops:
  **self-loops are rejected** (q_ii has no effect in Eq. 2), naming the node.
* A **disconnected** graph is allowed; reading it warns and names the components
  (weakly connected components for directed graphs); a connected directed graph whose
  coupling alone cannot bring all units together (several groups pulled only among
  themselves, see :func:`leader_groups`) warns too.
* Stability of the explicit Euler coupling: lr * sigma * lambda_max / N < 2, with
  lambda_max the largest Laplacian eigenvalue modulus (:mod:`decentral.coupling`).

File formats and generators live in :mod:`decentral.graphs`, re-exported here.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import networkx as nx
import numpy as np
from scipy.sparse.csgraph import connected_components

from . import coupling
from .errors import UserInputError
from .graphs import FORMATS, KINDS, file_format, format_edgelist, generate, read_graph, write_graph
from .storage import file_digest

__all__ = [
    "FORMATS", "KINDS", "components", "coupling_matrix", "describe", "file_digest",
    "format_edgelist", "format_report", "generate", "inspect_file", "leader_groups",
    "read_coupling_matrix", "read_graph", "sigma_max_euler", "unit_order", "write_graph",
]  # fmt: skip

DEFAULT_LR = 0.005


def _short(items, limit: int = 6) -> str:
    items = [str(item) for item in items]
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def _as_int(label) -> int | None:
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
        return int(label)
    if isinstance(label, str) and re.fullmatch(r"\s*[+-]?\d+\s*", label):
        return int(label)
    return None


def unit_order(graph: nx.Graph) -> list:
    """Node labels in unit order: unit i is ``unit_order(graph)[i]`` (see module docstring)."""
    labels = list(graph.nodes)
    if not labels:
        raise UserInputError("graph has no nodes")
    numbers = [_as_int(label) for label in labels]
    if any(number is None for number in numbers):
        return _string_order(labels)
    by_number: dict[int, object] = {}
    for label, number in zip(labels, numbers):
        if number in by_number:
            raise UserInputError(f"node labels {by_number[number]!r} and {label!r} both mean unit {number}")
        by_number[number] = label
    n = len(labels)
    missing = sorted(set(range(n)) - set(by_number))
    extra = sorted(set(by_number) - set(range(n)))
    if missing or extra:
        hint = " (renumber 1..N as 0..N-1)" if sorted(by_number) == list(range(1, n + 1)) else ""
        raise UserInputError(
            f"integer node labels must be exactly 0..{n - 1}: missing {_short(missing) or 'none'}, "
            f"unexpected {_short(extra) or 'none'}{hint}"
        )
    return [by_number[i] for i in range(n)]


def _string_order(labels: list) -> list:
    seen: dict[str, object] = {}
    for label in labels:
        if str(label) in seen:
            raise UserInputError(f"node labels {seen[str(label)]!r} and {label!r} are the same as text")
        seen[str(label)] = label
    return sorted(labels, key=str)


def _edge_weight(graph: nx.Graph, u, v, data: dict) -> float:
    """The validated float weight of one edge; UserInputError names the bad edge."""
    arrow = "->" if graph.is_directed() else "--"
    if u == v:
        raise UserInputError(
            f"self-loop on node {u} rejected (q_ii has no effect in Eq. 2); remove the edge {u} {arrow} {u}"
        )
    raw = data.get("weight", 1.0)
    try:
        weight = float(raw)
    except (TypeError, ValueError):
        raise UserInputError(f"edge {u} {arrow} {v} has a weight that is not a number: {raw!r}") from None
    if not np.isfinite(weight) or weight < 0:
        raise UserInputError(f"edge {u} {arrow} {v} has weight {weight:g}; weights must be finite and >= 0")
    return weight


def coupling_matrix(graph: nx.Graph, n_units: int | None = None, source: str = "graph") -> np.ndarray:
    """Validated Q [N, N] float64 of ``graph`` in unit order; q_ij = weight of edge i -> j."""
    if n_units is not None and graph.number_of_nodes() != n_units:
        raise UserInputError(
            f"{source} has {graph.number_of_nodes()} nodes but there are {n_units} units; "
            "the topology needs one node per unit"
        )
    try:
        order = unit_order(graph)
        clean = graph.__class__()
        clean.add_nodes_from(order)
        clean.add_edges_from(
            (u, v, {"weight": _edge_weight(graph, u, v, data)}) for u, v, data in graph.edges(data=True)
        )
    except UserInputError as err:
        raise UserInputError(f"{source}: {err}") from None
    return nx.to_numpy_array(clean, nodelist=order, weight="weight", dtype=np.float64, nonedge=0.0)


def read_coupling_matrix(path: str | Path, n_units: int | None = None) -> np.ndarray:
    """Read, validate and return Q [N, N] float64 from a topology file (module docstring).

    ``n_units``: the number of units the run or theory has; a different node count is a
    UserInputError. Warns (naming the components) when the graph is disconnected.
    """
    graph = read_graph(path)
    q = coupling_matrix(graph, n_units, source=str(path))
    _warn_if_disconnected(q, unit_order(graph), str(path))
    return q


def components(q: np.ndarray) -> list[list[int]]:
    """Weakly connected components of Q as sorted lists of unit indices, largest first."""
    count, labels = connected_components(np.asarray(q) != 0, directed=True, connection="weak")
    groups = [np.flatnonzero(labels == c).tolist() for c in range(count)]
    return sorted(groups, key=lambda g: (-len(g), g[0]))


def _ranges(indices: list[int]) -> str:
    parts, start = [], None
    for k, i in enumerate(indices):
        start = i if start is None else start
        if k + 1 == len(indices) or indices[k + 1] != i + 1:
            parts.append(str(i) if i == start else f"{start}-{i}")
            start = None
    return ",".join(parts)


def _name_components(groups: list[list[int]], labels: list) -> str:
    numeric = all(_as_int(label) == i for i, label in enumerate(labels))
    names = ["{" + (_ranges(g) if numeric else _short([labels[i] for i in g], 8)) + "}" for g in groups]
    return _short(names, 8)


def leader_groups(q: np.ndarray) -> list[list[int]]:
    """Strongly connected groups of units that are pulled only toward each other.

    Units reach consensus under Eq. 2's coupling alone exactly when there is one such group
    (the graph has a spanning tree of influence); for undirected graphs these are the components.
    """
    count, labels = connected_components(np.asarray(q) != 0, directed=True, connection="strong")
    rows, cols = np.nonzero(np.asarray(q))
    pulled_out = set(labels[rows[labels[rows] != labels[cols]]].tolist())
    groups = [np.flatnonzero(labels == c).tolist() for c in range(count) if c not in pulled_out]
    return sorted(groups, key=lambda g: (-len(g), g[0]))


def _warn_if_disconnected(q: np.ndarray, labels: list, source: str) -> None:
    groups = components(q)
    if len(groups) > 1:
        warnings.warn(
            f"{source} is disconnected: {len(groups)} components {_name_components(groups, labels)}; "
            "units in different components are never coupled",
            UserWarning,
            stacklevel=3,
        )
    elif len(leaders := leader_groups(q)) > 1:
        warnings.warn(
            f"{source} is connected but cannot reach consensus: {len(leaders)} groups are pulled only "
            f"among themselves {_name_components(leaders, labels)}",
            UserWarning,
            stacklevel=3,
        )


# --- inspection -------------------------------------------------------------------------


def _as_matrix(q) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    if q.ndim != 2 or q.shape[0] != q.shape[1] or q.shape[0] == 0:
        raise UserInputError(f"coupling matrix must be square and non-empty, got shape {q.shape}")
    if not np.all(np.isfinite(q)) or np.any(q < 0) or np.any(np.diag(q) != 0):
        raise UserInputError("coupling matrix needs finite weights >= 0 and a zero diagonal")
    return q


def sigma_max_euler(q: np.ndarray, lr: float) -> float:
    """Exact stability bound of the Euler coupling step, max over modes |1 - h lambda| < 1.

    h = lr * sigma / N; equals :func:`coupling.sigma_max_stable` when the spectrum is real
    (undirected graphs) and is smaller when a directed graph has complex eigenvalues.
    """
    values = coupling.laplacian_spectrum(q)
    values = values[np.abs(values) > 1e-9 * max(1.0, float(np.max(np.abs(values))))]
    if len(values) == 0:
        return float("inf")
    return float(np.min(2.0 * len(q) * np.real(values) / (lr * np.abs(values) ** 2)))


def _degree_stats(q: np.ndarray, directed: bool) -> dict:
    out_degree, in_degree, strength = (q != 0).sum(axis=1), (q != 0).sum(axis=0), q.sum(axis=1)
    stats = {"degree_min": int(out_degree.min()), "degree_max": int(out_degree.max()),
             "mean_degree": float(out_degree.mean()),
             "strength_min": float(strength.min()), "strength_max": float(strength.max())}  # fmt: skip
    if directed:
        strong, _ = connected_components(q != 0, directed=True, connection="strong")
        stats.update(in_degree_min=int(in_degree.min()), in_degree_max=int(in_degree.max()),
                     strong_components=int(strong))  # fmt: skip
    return stats


def describe(q_or_graph, lr: float = DEFAULT_LR) -> dict:
    """Summary of a topology (a graph, or a matrix Q) for inspection; JSON-friendly dict.

    Keys: nodes, edges, directed, symmetric, weighted, components, component_sizes,
    reaches_consensus (coupling alone drives all units together: one leader group),
    degree_min/max (out-degree: how many units each unit is pulled toward), mean_degree,
    in_degree_min/max and strong_components (directed only), strength_min/max (row sums of Q), lambda_max,
    spectral_gap, lr, sigma_max_stable (lr*sigma*lambda_max/N < 2), sigma_max_euler,
    unit_order, unit_labels.
    """
    if isinstance(q_or_graph, nx.Graph):
        graph, q = q_or_graph, coupling_matrix(q_or_graph)
        labels = unit_order(graph)
        numeric = all(_as_int(x) == i for i, x in enumerate(labels))
        order = "integer labels 0..N-1, unit i = node i" if numeric else "labels sorted as strings"
        directed, edges = graph.is_directed(), graph.number_of_edges()
    else:
        graph, q = None, _as_matrix(q_or_graph)
        labels, order = list(range(len(q))), "matrix rows, unit i = row i"
        directed = not np.array_equal(q, q.T)
        edges = int(np.count_nonzero(q if directed else np.triu(q)))
    lam, gap = coupling.lambda_max(q), coupling.spectral_gap(q)
    gap = 0.0 if abs(gap) < 1e-9 * max(1.0, lam) else gap
    groups = components(q)
    info = {"nodes": len(q), "edges": edges, "directed": bool(directed),
            "symmetric": bool(np.array_equal(q, q.T)), "weighted": bool(np.any((q != 0) & (q != 1))),
            "components": len(groups), "component_sizes": [len(g) for g in groups],
            "reaches_consensus": len(leader_groups(q)) == 1}  # fmt: skip
    info.update(_degree_stats(q, directed))
    info.update(lambda_max=lam, spectral_gap=gap, lr=lr)
    info.update(sigma_max_stable=coupling.sigma_max_stable(q, lr), sigma_max_euler=sigma_max_euler(q, lr))
    info.update(unit_order=order, unit_labels=[str(x) for x in labels])
    return info


def inspect_file(path: str | Path, lr: float = DEFAULT_LR, n_units: int | None = None) -> dict:
    """:func:`describe` of a topology file plus file, format and sha256 (validates; warns)."""
    graph = read_graph(path)
    q = coupling_matrix(graph, n_units, source=str(path))
    _warn_if_disconnected(q, unit_order(graph), str(path))
    info = {"file": str(path), "format": file_format(path), "sha256": file_digest(path)}
    info.update(describe(graph, lr))
    return info


def format_report(info: dict) -> str:
    """Human-readable lines for an :func:`inspect_file` / :func:`describe` dict."""
    rows = []
    if "file" in info:
        rows.append(("file", f"{info['file']}  ({info['format']}, sha256 {info['sha256'][:12]})"))
    degree = f"{info['degree_min']} .. {info['degree_max']} (mean {info['mean_degree']:.3g})"
    if info["directed"]:
        degree = f"out {degree}, in {info['in_degree_min']} .. {info['in_degree_max']}"
    comps = f"{info['components']} (sizes {_short(info['component_sizes'])})"
    comps = "1 (connected)" if info["components"] == 1 else comps
    if info["directed"]:
        comps += f", {info['strong_components']} strongly connected"
    if not info["reaches_consensus"]:
        comps += "; coupling alone cannot reach consensus"
    rows += [
        ("unit order", f"{info['unit_order']}: {_short(info['unit_labels'])}"),
        ("nodes", str(info["nodes"])),
        ("edges", f"{info['edges']} ({'directed' if info['directed'] else 'undirected'})"),
        ("weighted", f"yes (strength {info['strength_min']:.4g} .. {info['strength_max']:.4g})"
         if info["weighted"] else "no"),  # fmt: skip
        ("components", comps),
        ("degree", degree),
        ("lambda_max", f"{info['lambda_max']:.6g}  (largest Laplacian eigenvalue modulus)"),
        ("spectral gap", f"{info['spectral_gap']:.6g}"),
        ("sigma_max", f"{info['sigma_max_stable']:.6g}  (lr*sigma*lambda_max/N < 2 at lr={info['lr']:g})"),
    ]
    if info["sigma_max_euler"] < info["sigma_max_stable"] * (1 - 1e-9):
        exact = f"{info['sigma_max_euler']:.6g}  (exact bound, complex spectrum)"
        rows.append(("sigma_max_euler", exact))
    return "\n".join(f"{key:<16}{value}" for key, value in rows)

"""Graphs as coupling matrices Q: unit order, validation, the Laplacian and connectivity.

One file drives the local engine, Ray and the theory through these conventions.

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
  lambda_max the largest Laplacian eigenvalue modulus (:mod:`decentral.topology.spectrum`).

Q is a numpy array [N, N] or, for large sparse graphs, a scipy.sparse CSR array (``sparse=True``);
every function here takes either. File formats and generators live in
:mod:`decentral.topology.files`; the run's coupling value in :mod:`decentral.topology.coupling`.
"""

from __future__ import annotations

import re
import warnings
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from ..errors import UserInputError

if TYPE_CHECKING:  # networkx is imported only where a graph becomes Q (start-up cost)
    import networkx as nx


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


def coupling_matrix(graph: nx.Graph, n_units: int | None = None, source: str = "graph",
                    sparse: bool = False):
    """Validated Q [N, N] float64 of ``graph`` in unit order; q_ij = weight of edge i -> j.
    A numpy array, or with ``sparse`` a scipy.sparse CSR array holding only the edges."""
    import networkx as nx

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
    if sparse:
        return sp.csr_array(nx.to_scipy_sparse_array(clean, nodelist=order, weight="weight",
                                                     dtype=np.float64, format="csr"))
    return nx.to_numpy_array(clean, nodelist=order, weight="weight", dtype=np.float64, nonedge=0.0)


def components(q: np.ndarray) -> list[list[int]]:
    """Weakly connected components of Q as sorted lists of unit indices, largest first."""
    count, labels = connected_components(nonzero_pattern(q), directed=True, connection="weak")
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
    count, labels = connected_components(nonzero_pattern(q), directed=True, connection="strong")
    rows, cols = nonzero_pattern(q).nonzero()
    pulled_out = set(labels[rows[labels[rows] != labels[cols]]].tolist())
    groups = [np.flatnonzero(labels == c).tolist() for c in range(count) if c not in pulled_out]
    return sorted(groups, key=lambda g: (-len(g), g[0]))


def warn_if_disconnected(q: np.ndarray, labels: list, source: str) -> None:
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

def mean_field(n_units: int) -> np.ndarray:
    """Complete graph, q_ij = 1 for i != j, 0 on the diagonal. [N, N]"""
    if n_units < 1:
        raise UserInputError(f"number of units must be >= 1, got {n_units}")
    return np.ones((n_units, n_units)) - np.eye(n_units)


def laplacian(q):
    """Graph Laplacian L = diag(rowsum Q) - Q, so that sum_j q_ij (x_j - x_i) = -(L x)_i.
    Dense [N, N] for a dense Q, CSR for a sparse one."""
    if sp.issparse(q):
        q = sp.csr_array(q, dtype=float)
        return sp.diags_array(np.asarray(q.sum(axis=1)).ravel()).tocsr() - q
    q = np.asarray(q, dtype=float)
    return np.diag(q.sum(axis=1)) - q


def nonzero_pattern(q):
    """Q != 0 as a boolean matrix of the same kind (dense or CSR)."""
    if sp.issparse(q):
        pattern = sp.csr_array(q)
        pattern.eliminate_zeros()
        return pattern.astype(bool)
    return np.asarray(q) != 0

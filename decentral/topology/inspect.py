"""The `decentral topology` command's reports: a graph's size, connectivity, degrees and spectrum.

Large graphs stay sparse here: above ``spectrum.DENSE_SPECTRUM_MAX`` nodes Q is a CSR array and
the spectral numbers come from scipy.sparse.linalg (see :mod:`decentral.topology.spectrum`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from ..config import Hyper
from ..errors import UserInputError
from . import spectrum
from .files import file_digest, file_format, read_graph
from .matrix import _as_int, _short, components, coupling_matrix, leader_groups, nonzero_pattern, unit_order
from .matrix import warn_if_disconnected

DEFAULT_LR = Hyper.lr


def _as_matrix(q):
    """A validated Q for :func:`describe`: CSR when sparse or large, else numpy float64."""
    q = sp.csr_array(q, dtype=np.float64) if sp.issparse(q) else np.asarray(q, dtype=np.float64)
    if q.ndim != 2 or q.shape[0] != q.shape[1] or q.shape[0] == 0:
        raise UserInputError(f"coupling matrix must be square and non-empty, got shape {q.shape}")
    values, diagonal = (q.data, q.diagonal()) if sp.issparse(q) else (q, np.diag(q))
    if not np.all(np.isfinite(values)) or np.any(values < 0) or np.any(diagonal != 0):
        raise UserInputError("coupling matrix needs finite weights >= 0 and a zero diagonal")
    return q


def _sum(matrix, axis: int) -> np.ndarray:
    return np.asarray(matrix.sum(axis=axis)).ravel()


def _degree_stats(q, directed: bool) -> dict:
    pattern = nonzero_pattern(q).astype(np.int64)
    out_degree, in_degree, strength = _sum(pattern, 1), _sum(pattern, 0), _sum(q, 1)
    stats = {"degree_min": int(out_degree.min()), "degree_max": int(out_degree.max()),
             "mean_degree": float(out_degree.mean()),
             "strength_min": float(strength.min()), "strength_max": float(strength.max())}  # fmt: skip
    if directed:
        strong, _ = connected_components(nonzero_pattern(q), directed=True, connection="strong")
        stats.update(in_degree_min=int(in_degree.min()), in_degree_max=int(in_degree.max()),
                     strong_components=int(strong))  # fmt: skip
    return stats


def _edge_facts(q) -> tuple[bool, bool, int]:
    """(symmetric, weighted, edges counted once per undirected pair) of a matrix Q."""
    if sp.issparse(q):
        symmetric = (q != q.T).nnz == 0
        pattern = nonzero_pattern(q)
        weighted = bool(np.any(q.data[q.data != 0] != 1))
        return symmetric, weighted, int((pattern if not symmetric else sp.triu(pattern)).nnz)
    symmetric = bool(np.array_equal(q, q.T))
    edges = int(np.count_nonzero(q if not symmetric else np.triu(q)))
    return symmetric, bool(np.any((q != 0) & (q != 1))), edges


def describe(q_or_graph, lr: float = DEFAULT_LR) -> dict:
    """Summary of a topology (a graph, or a matrix Q) for inspection; JSON-friendly dict.

    Keys: nodes, edges, directed, symmetric, weighted, components, component_sizes,
    reaches_consensus (coupling alone drives all units together: one leader group),
    degree_min/max (out-degree: how many units each unit is pulled toward), mean_degree,
    in_degree_min/max and strong_components (directed only), strength_min/max (row sums of Q), lambda_max,
    spectral_gap, lr, sigma_max_stable (lr*sigma*lambda_max/N < 2), sigma_max_euler,
    unit_order, unit_labels. Graphs above ``spectrum.DENSE_SPECTRUM_MAX`` nodes stay sparse.
    """
    import networkx as nx  # here, not at import: `decentral run` without a graph never needs it

    if isinstance(q_or_graph, nx.Graph):
        graph = q_or_graph
        q = coupling_matrix(graph, sparse=graph.number_of_nodes() > spectrum.DENSE_SPECTRUM_MAX)
        labels = unit_order(graph)
        numeric = all(_as_int(x) == i for i, x in enumerate(labels))
        order = "integer labels 0..N-1, unit i = node i" if numeric else "labels sorted as strings"
        directed, edges = graph.is_directed(), graph.number_of_edges()
        symmetric, weighted, _ = _edge_facts(q)
    else:
        q = _as_matrix(q_or_graph)
        labels, order = list(range(q.shape[0])), "matrix rows, unit i = row i"
        symmetric, weighted, edges = _edge_facts(q)
        directed = not symmetric
    lam, gap = spectrum.lambda_max(q), spectrum.spectral_gap(q)
    gap = 0.0 if abs(gap) < 1e-9 * max(1.0, lam) else gap
    groups = components(q)
    info = {"nodes": q.shape[0], "edges": edges, "directed": bool(directed),
            "symmetric": symmetric, "weighted": weighted,
            "components": len(groups), "component_sizes": [len(g) for g in groups],
            "reaches_consensus": len(leader_groups(q)) == 1}  # fmt: skip
    info.update(_degree_stats(q, directed))
    info.update(lambda_max=lam, spectral_gap=gap, lr=lr)
    info.update(sigma_max_stable=spectrum.sigma_max_stable(q, lr), sigma_max_euler=spectrum.sigma_max_euler(q, lr))
    info.update(unit_order=order, unit_labels=[str(x) for x in labels])
    return info


def inspect_file(path: str | Path, lr: float = DEFAULT_LR, n_units: int | None = None) -> dict:
    """:func:`describe` of a topology file plus file, format and sha256 (validates; warns)."""
    graph = read_graph(path)
    q = coupling_matrix(graph, n_units, source=str(path), sparse=True)
    warn_if_disconnected(q, unit_order(graph), str(path))
    info = {"file": str(path), "format": file_format(path), "sha256": file_digest(path)}
    info.update(describe(graph, lr))
    return info


def _known(value) -> bool:
    return value is not None and value == value  # None in JSON, NaN in Python: not computed


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
        ("spectral gap", f"{info['spectral_gap']:.6g}" if _known(info["spectral_gap"])
         else "not computed (directed graph above the dense-spectrum size)"),
        ("sigma_max", f"{info['sigma_max_stable']:.6g}  (lr*sigma*lambda_max/N < 2 at lr={info['lr']:g})"),
    ]
    if _known(info["sigma_max_euler"]) and info["sigma_max_euler"] < info["sigma_max_stable"] * (1 - 1e-9):
        exact = f"{info['sigma_max_euler']:.6g}  (exact bound, complex spectrum)"
        rows.append(("sigma_max_euler", exact))
    return "\n".join(f"{key:<16}{value}" for key, value in rows)

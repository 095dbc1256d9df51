"""Supra-network graph files: read and write by extension, and generate standard graphs.

Formats, chosen by the file extension (case-insensitive):

``.edgelist``, ``.edges``, ``.txt``
    One edge per line, ``i j [w]``, whitespace-separated; ``w`` is the weight, 1 when
    absent. ``#`` starts a comment. A line with a single label declares an isolated node.
    The graph is undirected unless a comment line reads exactly ``# directed``; then
    ``i j`` is the directed edge i -> j. Parsed by :func:`networkx.parse_edgelist`.
``.graphml``  networkx's :func:`~networkx.read_graphml` (``edgedefault`` sets direction).
``.gml``      networkx's :func:`~networkx.read_gml`; nodes are named by their ``label``
              (by their ``id`` when the file has no labels).
``.csv``      dense adjacency matrix, comma-separated, no header; entry (i, j) is q_ij.
``.npy``      the same matrix as a numpy array (``allow_pickle=False``).
              A matrix is read as directed exactly when it is not symmetric; row/column i
              is the node labelled i. Built by :func:`networkx.from_numpy_array`.

Edge weights live in the ``weight`` attribute. Parallel edges (multigraph GML/GraphML)
add up, as in :func:`networkx.to_numpy_array`. Reading here only parses; checking the
graph as a coupling matrix (labels, weights, self-loops) is :mod:`decentral.topology.matrix`.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import UserInputError
from ..storage import file_digest  # noqa: F401  (re-exported: provenance of graph files)
from .matrix import coupling_matrix

if TYPE_CHECKING:  # networkx is imported where a graph is built, read or written (start-up cost)
    import networkx as nx

EDGELIST, GRAPHML, GML, CSV, NPY = "edge list", "GraphML", "GML", "CSV matrix", "npy matrix"
FORMATS = {
    ".edgelist": EDGELIST, ".edges": EDGELIST, ".txt": EDGELIST,
    ".graphml": GRAPHML, ".gml": GML, ".csv": CSV, ".npy": NPY,
}  # fmt: skip
DIRECTED_MARK = "# directed"


def file_format(path: str | Path) -> str:
    """The format name for ``path``'s extension; UserInputError for an unknown one."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        known = ", ".join(FORMATS)
        shown = f"'{suffix}'" if suffix else "no extension"
        raise UserInputError(f"{path}: unknown topology file extension ({shown}); use one of {known}")
    return FORMATS[suffix]


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


def read_graph(path: str | Path) -> nx.Graph | nx.DiGraph:
    """Parse a graph file chosen by extension (see the module docstring); no validation.

    Raises UserInputError, one line, when the file is missing, unreadable or malformed.
    """
    import networkx as nx

    fmt = file_format(path)
    reader = {EDGELIST: _read_edgelist, GRAPHML: nx.read_graphml, GML: _read_gml,
              CSV: _read_csv, NPY: _read_npy}[fmt]  # fmt: skip
    try:
        return reader(str(path))
    except UserInputError:
        raise
    except OSError as err:
        raise UserInputError(f"cannot read {path}: {err.strerror or _one_line(err)}") from err
    except Exception as err:  # networkx/numpy/XML parsers raise many types
        raise UserInputError(f"cannot read {path} as {fmt}: {_one_line(err)}") from err


def _read_edgelist(path: str) -> nx.Graph | nx.DiGraph:
    import networkx as nx

    with open(path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    directed = any(re.fullmatch(r"#\s*directed\s*", line.strip().lower()) for line in lines)
    graph = nx.parse_edgelist(
        lines, create_using=nx.DiGraph if directed else nx.Graph, data=(("weight", float),)
    )
    for line in lines:  # parse_edgelist skips one-label lines: they are isolated nodes
        tokens = line.split("#", 1)[0].split()
        if len(tokens) == 1:
            graph.add_node(tokens[0])
    return graph


def _read_gml(path: str) -> nx.Graph:
    import networkx as nx

    try:
        return nx.read_gml(path, label="label")
    except nx.NetworkXError as err:
        if "label" not in str(err):
            raise
        return nx.read_gml(path, label="id")


def _read_csv(path: str) -> nx.Graph | nx.DiGraph:
    return _from_matrix(np.loadtxt(path, delimiter=",", dtype=float, ndmin=2), path)


def _read_npy(path: str) -> nx.Graph | nx.DiGraph:
    return _from_matrix(np.load(path, allow_pickle=False), path)


def _from_matrix(matrix: np.ndarray, path: str) -> nx.Graph | nx.DiGraph:
    import networkx as nx

    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise UserInputError(f"{path}: adjacency matrix must be square, got shape {matrix.shape}")
    if not np.issubdtype(matrix.dtype, np.number) or np.iscomplexobj(matrix):
        raise UserInputError(f"{path}: adjacency matrix must be real numbers, got {matrix.dtype}")
    matrix = matrix.astype(float)
    symmetric = np.array_equal(matrix, matrix.T, equal_nan=True)
    return nx.from_numpy_array(matrix, create_using=nx.Graph if symmetric else nx.DiGraph)


# --- writing ----------------------------------------------------------------------------


def write_graph(graph: nx.Graph | nx.DiGraph, path: str | Path) -> Path:
    """Write ``graph`` in the format its extension names; returns the path.

    Matrix formats (.csv, .npy) store Q in unit order (see :func:`decentral.topology.matrix.unit_order`)
    and so keep weights and direction but not the node labels.
    """
    import networkx as nx

    path = Path(path)
    fmt = file_format(path)
    clean = _float_weights(graph)
    if fmt == EDGELIST:
        path.write_text(format_edgelist(clean), encoding="utf-8")
    elif fmt == GRAPHML:
        nx.write_graphml(clean, path)
    elif fmt == GML:
        nx.write_gml(clean, path, stringizer=str)
    else:
        q = coupling_matrix(clean)
        if fmt == CSV:
            path.write_text("".join(",".join(map(_number, row)) + "\n" for row in q), encoding="utf-8")
        else:
            np.save(path, q, allow_pickle=False)
    return path


def _float_weights(graph: nx.Graph) -> nx.Graph:
    """Copy with plain-float weights (GraphML/GML writers reject numpy scalars)."""
    clean = graph.copy()
    for *_, data in clean.edges(data=True):
        if "weight" in data:
            data["weight"] = float(data["weight"])
    return clean


def _number(value) -> str:
    """Shortest text that reads back as the same float: 1 for 1.0, 0.973 for 0.973."""
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def format_edgelist(graph: nx.Graph | nx.DiGraph) -> str:
    """The edge-list text of ``graph``: header comments, ``i j [w]`` lines, isolated nodes."""
    lines = [f"# {graph.graph['description']}"] if graph.graph.get("description") else []
    if graph.is_directed():
        lines.append(DIRECTED_MARK)
    weighted = any("weight" in d and d["weight"] != 1 for *_, d in graph.edges(data=True))
    for u, v, data in graph.edges(data=True):
        weight = data.get("weight", 1.0)
        lines.append(f"{u} {v} {_number(weight)}" if weighted else f"{u} {v}")
    lines += [str(node) for node in graph.nodes if graph.degree(node) == 0]
    return "\n".join(lines) + "\n"


# --- generators -------------------------------------------------------------------------


def _lattice(n: int, periodic: bool = False, **_) -> nx.Graph:
    import networkx as nx

    rows = max(r for r in range(1, int(np.sqrt(n)) + 1) if n % r == 0)
    grid = nx.grid_2d_graph(rows, n // rows, periodic=periodic)
    return nx.convert_node_labels_to_integers(grid, ordering="sorted")


FAST_GNP_NODES = 2000  # above this, G(N, p) comes from networkx's O(N + edges) sampler (other draws)


def _gnp(n: int, seed, degree: float, directed: bool) -> nx.Graph:
    import networkx as nx

    p = min(1.0, degree / max(n - 1, 1))
    sampler = nx.fast_gnp_random_graph if n > FAST_GNP_NODES else nx.gnp_random_graph  # O(N^2) pairs
    return sampler(n, p, seed=seed, directed=directed)


def _erdos_renyi(n: int, seed=None, degree: float = 4, **_) -> nx.Graph:
    return _gnp(n, seed, degree, directed=False)


def _small_world(n: int, seed=None, degree: float = 4, rewire: float = 0.1, **_) -> nx.Graph:
    import networkx as nx

    return nx.connected_watts_strogatz_graph(n, int(degree), rewire, tries=1000, seed=seed)


def _scale_free(n: int, seed=None, degree: float = 4, **_) -> nx.Graph:
    import networkx as nx

    return nx.barabasi_albert_graph(n, max(1, int(degree) // 2), seed=seed)


def _directed(n: int, seed=None, degree: float = 4, **_) -> nx.DiGraph:
    return _gnp(n, seed, degree, directed=True)


def _complete(n: int, **_) -> nx.Graph:
    import networkx as nx

    return nx.complete_graph(n)


def _ring(n: int, directed: bool = False, **_) -> nx.Graph:
    import networkx as nx

    return nx.cycle_graph(n, create_using=nx.DiGraph if directed else nx.Graph)


def _star(n: int, **_) -> nx.Graph:
    import networkx as nx

    return nx.star_graph(n - 1)


KINDS = {
    "complete": (_complete, "complete graph (mean field)"),
    "ring": (_ring, "ring: unit i coupled to i-1 and i+1"),
    "star": (_star, "star with hub 0"),
    "lattice": (_lattice, "2D grid rows x cols, rows the largest divisor <= sqrt(N)"),
    "erdos_renyi": (_erdos_renyi, "Erdos-Renyi G(N, p), p = degree/(N-1)"),
    "small_world": (_small_world, "connected Watts-Strogatz, ring of degree k, rewire p"),
    "scale_free": (_scale_free, "Barabasi-Albert, m = degree/2 edges per new node"),
    "weighted": (_small_world, "small world with weights uniform in [0.5, 1.5]"),
    "directed": (_directed, "directed Erdos-Renyi, mean out-degree = degree"),
    "directed_ring": (lambda n, **_: _ring(n, directed=True), "directed ring: unit i pulled toward i+1 only"),
}  # fmt: skip


def generate(kind: str, n_nodes: int, seed: int | None = 0, **kw) -> nx.Graph | nx.DiGraph:
    """A standard graph on nodes 0..n_nodes-1. See ``KINDS`` for the kinds.

    Keyword options: ``degree`` (mean degree, default 4: erdos_renyi, small_world,
    scale_free, weighted, directed), ``rewire`` (small world, default 0.1), ``periodic``
    (lattice), ``weights=(low, high)`` (any kind: i.i.d. uniform weights rounded to 3
    decimals; the ``weighted`` kind defaults to (0.5, 1.5)). Same seed, same graph.
    """
    import networkx as nx

    if kind not in KINDS:
        raise UserInputError(f"unknown topology kind '{kind}'; choose from {', '.join(KINDS)}")
    if n_nodes < 1 or (kind in ("ring", "directed_ring") and n_nodes < 3):
        raise UserInputError(f"{kind} needs more nodes, got --nodes {n_nodes}")
    degree, rewire = kw.get("degree"), kw.get("rewire")
    if degree is not None and not (math.isfinite(degree) and 0 < degree <= max(n_nodes - 1, 1)):
        raise UserInputError(f"--degree must be > 0 and at most nodes - 1 = {n_nodes - 1}, got {degree:g}")
    if rewire is not None and not 0 <= rewire <= 1:
        raise UserInputError(f"--rewire must be a probability in [0, 1], got {rewire:g}")
    weights = kw.pop("weights", (0.5, 1.5) if kind == "weighted" else None)
    builder, description = KINDS[kind]
    try:
        graph = builder(n_nodes, seed=seed, **kw)
    except (nx.NetworkXError, ValueError) as err:
        raise UserInputError(f"cannot generate {kind} with {n_nodes} nodes: {_one_line(err)}") from err
    if weights is not None:
        rng = np.random.default_rng(seed)
        for *_, data in graph.edges(data=True):
            data["weight"] = round(float(rng.uniform(*weights)), 3)
    options = "".join(f", {k}={v}" for k, v in sorted(kw.items()))
    graph.graph["description"] = f"{kind} N={n_nodes} seed={seed}{options}: {description}"
    return graph

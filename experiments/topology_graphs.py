"""The graphs of experiments/topology_onset.py: equal mean degree (ring lattice, Watts-Strogatz,
Erdos-Renyi, all with 2N edges) beside the complete graph, the same three rescaled to the complete
graph's lambda_max, and the star; written as graph files and read back as the Q both the theory
and the MNIST engine run on. Loaded by path from topology_onset.py (both are run as scripts).
"""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
from decentral import topology
from decentral.topology import Coupling

N_UNITS = 10  # the default N (the paper's MNIST experiment)
DEGREE = 4  # mean degree of the equal-degree family (2N edges)


def _first_seed(build, accept) -> nx.Graph:
    """build(seed) with the first seed >= 0 whose graph is connected and ``accept``ed."""
    for seed in range(10_000):
        graph = build(seed)
        if nx.is_connected(graph) and accept(graph):
            return graph
    raise RuntimeError("no seed gives an acceptable graph")


def _erdos_renyi(n_units: int, edges: int) -> nx.Graph:
    """First connected Erdos-Renyi graph with exactly ``edges`` edges: G(N, p) filtered at N = 10
    (the committed N = 10 graphs), G(N, M) above (G(N, p) hits an exact count too rarely)."""
    if n_units <= N_UNITS:
        return _first_seed(lambda seed: topology.generate("erdos_renyi", n_units, seed, degree=DEGREE),
                           lambda g: g.number_of_edges() == edges)
    graph = _first_seed(lambda seed: nx.gnm_random_graph(n_units, edges, seed=seed), lambda g: True)
    graph.graph["description"] = f"erdos_renyi G(N={n_units}, M={edges}), first connected seed"
    return graph


def degree_graphs(n_units: int = N_UNITS) -> dict[str, nx.Graph]:
    """The equal-mean-degree family (degree 4, 2N edges) and the complete reference."""
    lattice = topology.generate("small_world", n_units, 0, degree=DEGREE, rewire=0.0)
    lattice.graph["description"] = f"ring lattice N={n_units} k={DEGREE} (Watts-Strogatz, p=0)"
    ring_edges = {frozenset(e) for e in lattice.edges}
    rewired = _first_seed(lambda seed: topology.generate("small_world", n_units, seed, degree=DEGREE, rewire=0.1),
                          lambda g: {frozenset(e) for e in g.edges} != ring_edges)
    return {"complete": topology.generate("complete", n_units, 0), "ring_k4": lattice,
            "small_world_k4": rewired, "erdos_renyi_k4": _erdos_renyi(n_units, n_units * DEGREE // 2)}


def rescaled(graph: nx.Graph, target: float) -> nx.Graph:
    """A copy with every weight multiplied so that its Laplacian's lambda_max is ``target``."""
    scale = target / topology.lambda_max(topology.coupling_matrix(graph))
    out = graph.copy()
    for *_, data in out.edges(data=True):
        data["weight"] = data.get("weight", 1.0) * scale
    out.graph["description"] = f"{graph.graph.get('description', '')}; weights x {scale:.6g}"
    return out


def all_graphs(n_units: int = N_UNITS) -> list[tuple[str, str, nx.Graph]]:
    """(name, family, graph): equal mean degree, then equal lambda_max (= complete's, N)."""
    base = degree_graphs(n_units)
    target = topology.lambda_max(topology.coupling_matrix(base["complete"]))
    rows = [(name, "reference" if name == "complete" else "degree", g) for name, g in base.items()]
    rows += [(f"{name}_lam", "lambda_max", rescaled(g, target))
             for name, g in base.items() if name != "complete"]
    rows.append(("star", "lambda_max", topology.generate("star", n_units, 0)))
    return rows


def write_graphs(out: Path, n_units: int = N_UNITS) -> pd.DataFrame:
    """Write every graph under out/graphs (and their sha256 to out/graphs.sha256) and describe the
    Q read back from each file (column ``coupling``: its :class:`Coupling`)."""
    folder = out / "graphs"
    folder.mkdir(parents=True, exist_ok=True)
    rows, digests = [], []
    for name, family, graph in all_graphs(n_units):
        path = topology.write_graph(graph, folder / f"{name}.edgelist")
        q = topology.read_coupling_matrix(path, n_units, sparse=n_units > N_UNITS)
        info = topology.describe(q)
        digests.append(f"{topology.file_digest(path)}  graphs/{path.name}\n")
        rows.append({"topology": name, "family": family, "file": f"graphs/{path.name}",
                     "mean_degree": info["mean_degree"], "mean_strength": float(np.asarray(q.sum(1)).mean()),
                     "lambda_max": info["lambda_max"], "spectral_gap": info["spectral_gap"],
                     "sigma_max_stable": info["sigma_max_stable"], "q": q,
                     "coupling": Coupling.from_matrix(q)})
    (out / "graphs.sha256").write_text("".join(digests))
    return pd.DataFrame(rows)



"""Regenerate the shipped topology files and print the README table.

    /work/venv/bin/python topologies/make_topologies.py

Deterministic: random kinds use the first seed >= 0 that gives a connected graph
(strongly connected for the directed example); the seed is written in each file's header.
The same files come from `decentral topology generate KIND --nodes N --seed S --out FILE`.
"""

from __future__ import annotations

from pathlib import Path

import networkx as nx

from decentral import topology

HERE = Path(__file__).resolve().parent
SIZES = (10, 200)
KINDS = ("complete", "ring", "star", "lattice", "erdos_renyi", "small_world", "scale_free",
         "weighted", "directed")  # fmt: skip


def _connected(graph: nx.Graph) -> bool:
    if graph.is_directed():
        return nx.is_strongly_connected(graph)
    return nx.is_connected(graph)


def make(kind: str, n: int) -> tuple[Path, int]:
    """Write one file; return its path and the seed used."""
    seed = 0
    graph = topology.generate(kind, n, seed)
    while not _connected(graph):
        seed += 1
        graph = topology.generate(kind, n, seed)
    suffix = ".csv" if kind == "complete" else ".edgelist"
    return topology.write_graph(graph, HERE / f"{kind}_n{n}{suffix}"), seed


def main() -> None:
    print("| file | kind | seed | nodes | edges | mean degree | lambda_max | spectral gap |")
    print("|---|---|---|---|---|---|---|---|")
    for n in SIZES:
        for kind in KINDS:
            path, seed = make(kind, n)
            info = topology.inspect_file(path)
            print(f"| `{path.name}` | {kind} | {seed} | {info['nodes']} | {info['edges']} | "
                  f"{info['mean_degree']:.3g} | {info['lambda_max']:.4g} | {info['spectral_gap']:.4g} |")


if __name__ == "__main__":
    main()

"""Supra-network topologies: graph files, the coupling matrix Q, its spectrum, and reports.

* :mod:`.files`    read and write graph files by extension; generate standard graphs; sha256.
* :mod:`.matrix`   a graph as Q in unit order (validated), the Laplacian, connectivity.
* :mod:`.spectrum` the Laplacian spectrum and the Euler step's stability bound (sparse for large N).
* :mod:`.coupling` the run's :class:`Coupling` value: kind (complete/sparse/dense), Q, provenance, bound.
* :mod:`.inspect`  the `decentral topology FILE` report.

Imports run one way: matrix <- files, spectrum <- coupling, inspect.
"""

from .coupling import COMPLETE, DENSE, SPARSE, Coupling, load_coupling, read_coupling_matrix
from .files import FORMATS, KINDS, file_digest, file_format, format_edgelist, generate, read_graph, write_graph
from .inspect import describe, format_report, inspect_file
from .matrix import components, coupling_matrix, laplacian, leader_groups, mean_field, unit_order
from .spectrum import (lambda_max, laplacian_spectrum, sigma_max_euler, sigma_max_stable, spectral_gap,
                       stability_number, stability_warning)

__all__ = [
    "COMPLETE", "DENSE", "FORMATS", "KINDS", "SPARSE", "Coupling", "components", "coupling_matrix",
    "describe", "file_digest", "file_format", "format_edgelist", "format_report", "generate",
    "inspect_file", "lambda_max", "laplacian", "laplacian_spectrum", "leader_groups", "load_coupling",
    "mean_field", "read_coupling_matrix", "read_graph", "sigma_max_euler", "sigma_max_stable",
    "spectral_gap", "stability_number", "stability_warning", "unit_order", "write_graph",
]  # fmt: skip

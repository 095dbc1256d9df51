"""The run's coupling: one frozen value built once from the graph file or the default.

A :class:`Coupling` says what Eq. 2's Q is, in its natural form, so backends branch on its
``kind`` and never recover structure from floats:

* ``"complete"``: the complete graph (the default mean field, or a file holding exactly the
  unweighted complete graph); nothing N x N is stored, lambda_max = N.
* ``"sparse"``: a scipy.sparse CSR array; Eq. 2 costs O(edges x P) per step.
* ``"dense"``: a numpy array [N, N], for small N where the dense operator is cheaper
  (N <= ``DENSE_MAX_UNITS``, see the README's measurement).

It also carries the graph's provenance (file name, path, sha256; None for the default mean
field) and the spectral bound lambda_max of its Laplacian, from which the stability number of
the explicit Euler step, lr * sigma * lambda_max / N, follows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..errors import UserInputError
from . import spectrum
from .files import file_digest, read_graph
from .matrix import coupling_matrix, mean_field, unit_order, warn_if_disconnected

COMPLETE, SPARSE, DENSE = "complete", "sparse", "dense"
DENSE_MAX_UNITS = 128  # up to this many units a non-complete Q runs as the dense operator (README)


@dataclass(frozen=True, eq=False)
class Coupling:
    """Q of Eq. 2 in its natural form, its provenance and its spectral bound."""

    kind: str  # "complete" | "sparse" | "dense"
    n_units: int  # N, the number of units
    q: np.ndarray | sp.csr_array | None  # None (complete), CSR [N, N] (sparse), numpy [N, N] (dense)
    lambda_max: float  # largest Laplacian eigenvalue modulus (N for the complete graph)
    name: str | None = None  # graph file name; None for the default mean field
    path: str | None = None  # graph file path as given
    sha256: str | None = None  # sha256 of the graph file's bytes

    @classmethod
    def complete(cls, n_units: int, **provenance) -> "Coupling":
        """The complete graph (mean field) on n_units units."""
        if n_units < 1:
            raise UserInputError(f"number of units must be >= 1, got {n_units}")
        return cls(COMPLETE, n_units, None, float(n_units), **provenance)  # lambda_max = N exactly

    @classmethod
    def from_matrix(cls, q, **provenance) -> "Coupling":
        """The coupling of a validated Q (numpy or scipy.sparse); kind from its edges and size."""
        n = q.shape[0]
        if _is_complete(q):
            return cls.complete(n, **provenance)
        if n <= DENSE_MAX_UNITS:
            q = q.toarray() if sp.issparse(q) else np.asarray(q, dtype=np.float64)
            return cls(DENSE, n, q, spectrum.lambda_max(q), **provenance)
        q = sp.csr_array(q, dtype=np.float64)
        q.eliminate_zeros()
        return cls(SPARSE, n, q, spectrum.lambda_max(q), **provenance)

    @classmethod
    def from_file(cls, path: str | Path, n_units: int | None = None) -> "Coupling":
        """Read and validate a graph file (see :mod:`decentral.topology.matrix`); warns when the
        graph is disconnected. n_units: the run's N (a different node count is a UserInputError)."""
        q = read_coupling_matrix(path, n_units, sparse=True)
        return cls.from_matrix(q, name=Path(path).name, path=str(path), sha256=file_digest(path))

    def dense(self) -> np.ndarray:
        """Q as a numpy array [N, N] (materializes N x N: small N, tests and Ray's planner)."""
        if self.kind == COMPLETE:
            return mean_field(self.n_units)
        return self.q.toarray() if sp.issparse(self.q) else self.q

    def csr(self) -> sp.csr_array:
        """Q as a CSR array [N, N] (the complete graph materialized: N*(N-1) entries)."""
        if self.kind == SPARSE:
            return self.q
        return sp.csr_array(self.dense())

    def matrix(self):
        """Q as a matrix in its stored form (CSR or numpy); the complete graph materialized."""
        return self.dense() if self.kind == COMPLETE else self.q

    def stability_number(self, lr: float, sigma: float) -> float:
        """lr * sigma * lambda_max / N; the coupled Euler step is stable only while this is < 2."""
        return spectrum.stability_number_of(self.lambda_max, self.n_units, lr, sigma)

    def sigma_max(self, lr: float) -> float:
        """Largest stable sigma (inf for an edgeless graph)."""
        return spectrum.sigma_max_of(self.lambda_max, self.n_units, lr)

    def stability_warning(self, lr: float, sigma: float) -> str | None:
        """A one-line message when sigma is unstable at lr, else None."""
        return spectrum.warning_of(self.stability_number(lr, sigma), sigma, self.sigma_max(lr))

    def provenance(self) -> dict | None:
        """Name, path and sha256 of the graph file; None for the default mean field."""
        return None if self.sha256 is None else {"name": self.name, "path": self.path, "sha256": self.sha256}


def _is_complete(q) -> bool:
    """True when Q is exactly the unweighted complete graph (every i != j an edge of weight 1)."""
    n = q.shape[0]
    if n < 2:
        return False
    if sp.issparse(q):
        q = sp.csr_array(q)
        return q.count_nonzero() == n * (n - 1) and bool(np.all(q.data[q.data != 0] == 1)) and not q.diagonal().any()
    return bool(np.array_equal(np.asarray(q), mean_field(n)))


def load_coupling(path: str | Path | None, n_units: int) -> Coupling:
    """The coupling of a run: the graph file's, or the complete graph when path is None."""
    return Coupling.complete(n_units) if path is None else Coupling.from_file(path, n_units)


def read_coupling_matrix(path: str | Path, n_units: int | None = None, sparse: bool = False):
    """Read, validate and return Q [N, N] float64 from a topology file (numpy, or CSR with sparse).

    ``n_units``: the number of units the run or theory has; a different node count is a
    UserInputError. Warns (naming the components) when the graph is disconnected.
    """
    graph = read_graph(path)
    q = coupling_matrix(graph, n_units, source=str(path), sparse=sparse)
    warn_if_disconnected(q, unit_order(graph), str(path))
    return q

"""S_x and its rank-one structure per depth, from a sweep's A_x matrices (Fig. 3d).

S_x(D) is the sum over sigma of the run-averaged A_x. Two R^2 values per depth: the authors'
(squared Pearson correlation of the off-diagonal entries of S_x(D) with the rank-one fit of
S_x(D=0), same protocol and topology) and against each depth's own rank-one fit.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..observables import measured_s_x, rank_one, rank_one_r2
from .store import atomic_write_json, load_results


def mean_cross_accuracy(frame, cross: np.ndarray, mask) -> tuple[np.ndarray, np.ndarray]:
    """sigma values [S] and run-averaged A_x [S, N, C] (NaN of diverged runs ignored)."""
    sub = frame[mask]
    sigmas = np.sort(sub["sigma"].unique())
    with warnings.catch_warnings():  # every run at a sigma diverged: its A_x is NaN, no warning
        warnings.simplefilter("ignore", RuntimeWarning)
        mats = [np.nanmean(cross[sub.index[sub["sigma"] == s]], axis=0) for s in sigmas]
    return sigmas, np.stack(mats)


def cumulative_by_depth(frame, cross: np.ndarray) -> list[dict]:
    """One entry per (protocol, topology, depth): S_x, its own rank-one fit, both R^2."""
    entries = []
    for (protocol, topology), block in frame.groupby(["protocol", "topology"], sort=True):
        s_by_depth = {}
        for depth in sorted(block["depth"].unique()):
            mask = frame.index.isin(block.index[block["depth"] == depth])
            sigmas, a_x = mean_cross_accuracy(frame, cross, mask)
            s_by_depth[int(depth)] = (measured_s_x(a_x), len(sigmas))
        reference = s_by_depth.get(0, (None,))[0]
        for depth, (s_x, n_sigma) in s_by_depth.items():
            finite = np.isfinite(s_x).all()
            entries.append({
                "protocol": protocol, "topology": topology, "depth": depth, "n_sigma": n_sigma,
                "s_x": s_x.tolist(), "rank_one_own": rank_one(s_x).tolist() if finite else None,
                "r2_own": rank_one_r2(s_x) if finite else float("nan"),
                "r2_vs_d0": rank_one_r2(s_x, reference) if finite and reference is not None
                and np.isfinite(reference).all() else float("nan"),
            })
    return entries


def write_analysis(root: str | Path) -> list[dict]:
    frame, cross = load_results(root)
    with np.errstate(invalid="ignore", divide="ignore"):  # constant S_x: R^2 is NaN
        entries = cumulative_by_depth(frame, cross) if len(frame) else []
    atomic_write_json(Path(root) / "analysis.json", entries)
    return entries

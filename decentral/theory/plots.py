"""Fig. 2 a-e style figures from a theory table (matplotlib, Agg backend, PNG files)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .learning_path import ranking  # noqa: E402
from .model import cross_accuracy_d0  # noqa: E402

RANKING_SIGMAS = (0.0, 1.0, 100.0)  # Fig. 2 c-e: no, medium and high coupling


def _depth_colors(depths):
    cmap = plt.get_cmap("Blues")
    return {d: cmap(0.4 + 0.6 * i / max(len(depths) - 1, 1)) for i, d in enumerate(depths)}


def _curves(ax, table: pd.DataFrame, mean: str, std: str) -> None:
    """Non-adiabatic: markers and a one-std band; adiabatic: dashed line."""
    depths = sorted(table["depth"].unique())
    colors, markers = _depth_colors(depths), "xo^sdv"
    for i, depth in enumerate(depths):
        rows = table[table["depth"] == depth]
        fresh = rows[rows["protocol"] == "non-adiabatic"]
        if len(fresh):
            ax.plot(fresh["sigma"], fresh[mean], markers[i % 6], ms=4, color=colors[depth],
                    label=f"D={depth}", mfc="none" if markers[i % 6] != "x" else None)
            ax.fill_between(fresh["sigma"], fresh[mean] - fresh[std], fresh[mean] + fresh[std],
                            color=colors[depth], alpha=0.2, lw=0)
        carried = rows[rows["protocol"] == "adiabatic"]
        if len(carried):
            ax.plot(carried["sigma"], carried[mean], "--", color=colors[depth],
                    label=f"D={depth} adiabatic")
    ax.set_xscale("log")
    ax.set_xlabel(r"coupling $\hat\sigma$")
    ax.legend(fontsize=7)


def plot_magnetization(table: pd.DataFrame, path: Path) -> Path:
    """Fig. 2a: |<m>| against sigma."""
    fig, ax = plt.subplots(figsize=(5, 3.6))
    _curves(ax, table, "m_abs_mean", "m_abs_std")
    ax.set_ylabel(r"$|\langle m \rangle|$")
    ax.set_title("a: magnetization")
    return _save(fig, path)


def plot_loss(table: pd.DataFrame, path: Path) -> Path:
    """Fig. 2b: L / L(sigma_min) against sigma, inset: effective accuracy."""
    fig, ax = plt.subplots(figsize=(5, 3.6))
    _curves(ax, table, "loss_mean", "loss_std")
    ax.set_ylabel(r"$\langle \hat L \rangle / \langle \hat L \rangle(\sigma_{min})$")
    ax.set_title("b: effective loss (inset: accuracy)")
    inset = ax.inset_axes([0.08, 0.12, 0.38, 0.38])
    for depth, color in _depth_colors(sorted(table["depth"].unique())).items():
        rows = table[(table["depth"] == depth) & (table["protocol"] == table["protocol"].iloc[0])]
        inset.plot(rows["sigma"], rows["accuracy_eff"], color=color)
    inset.set_xscale("log")
    inset.set_ylim(-0.1, 1.05)
    inset.tick_params(labelsize=6)
    inset.set_title(r"$\hat A = 1 - \hat L$", fontsize=7)
    return _save(fig, path)


def plot_rankings(delta: np.ndarray, gamma: float, path: Path,
                  sigmas=RANKING_SIGMAS) -> Path:
    """Fig. 2 c-e: ranks of the Eq. 8 entries in the (delta_i, delta_j) plane, delta > 0."""
    positive = np.sort(np.asarray(delta, dtype=float)[np.asarray(delta) > 0])
    fig, axes = plt.subplots(1, len(sigmas), figsize=(3.4 * len(sigmas), 3.2),
                             constrained_layout=True)
    for ax, sigma, tag in zip(np.atleast_1d(axes), sigmas, "cdefgh"):
        if positive.size:
            ranks = ranking(cross_accuracy_d0(positive, sigma, gamma))
            image = ax.pcolormesh(positive, positive, ranks, shading="nearest", cmap="viridis",
                                  vmin=0, vmax=1)
        ax.set_title(rf"{tag}: $\hat\sigma$ = {sigma:g}")
        ax.set_xlabel(r"data $\delta_j$")
        ax.set_ylabel(r"unit $\delta_i$")
    if positive.size:
        fig.colorbar(image, ax=axes, shrink=0.8, label=r"rank of $\hat A_x$")
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_fig2(table: pd.DataFrame, delta: np.ndarray, gamma: float, out_dir) -> list[Path]:
    """Write fig2a_magnetization.png, fig2b_loss.png and fig2cde_rankings.png into out_dir."""
    out_dir = Path(out_dir)
    return [plot_magnetization(table, out_dir / "fig2a_magnetization.png"),
            plot_loss(table, out_dir / "fig2b_loss.png"),
            plot_rankings(delta, gamma, out_dir / "fig2cde_rankings.png")]

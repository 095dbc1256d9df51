"""The figure of experiments/topology_onset.py: accuracy vs coupling from the theory and from
MNIST with each topology's onset circled, and the MNIST onsets against the theory's (both
relative to the complete graph's). Loaded by path from that script (`load_plot`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def _style(name: str) -> dict:
    colors = {"complete": "black", "ring": "tab:blue", "small": "tab:orange", "erdos": "tab:green",
              "star": "tab:red"}
    color = next(c for key, c in colors.items() if name.startswith(key))
    return {"color": color, "linestyle": "--" if name.endswith("_lam") else "-"}


def _panel(ax, curves: pd.DataFrame, table: pd.DataFrame, source: str) -> None:
    for name in table["topology"]:
        c = curves[(curves["source"] == source) & (curves["topology"] == name)].sort_values("sigma")
        ax.plot(c["sigma"], c["accuracy"], marker=".", label=name, **_style(name))
        onset = table.loc[table["topology"] == name, f"{source}_onset"].iloc[0]
        if np.isfinite(onset):
            ok = c["accuracy"].notna()
            level = np.interp(np.log(onset), np.log(c["sigma"][ok]), c["accuracy"][ok])
            ax.plot([onset], [level], marker="o", markersize=8, markerfacecolor="none",
                    markeredgewidth=1.5, color=_style(name)["color"])
    ax.set_xscale("log")


def plot(curves: pd.DataFrame, table: pd.DataFrame, path: Path, depth: int, n_units: int) -> None:
    """Accuracy vs sigma (theory, MNIST) with onsets circled, and theory vs MNIST onsets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    _panel(axes[0], curves, table, "theory")
    axes[0].set(xlabel=r"$\hat\sigma$ (theory units)", ylabel=r"accuracy$_{\rm eff}$ = 1 - L/L($\hat\sigma_{\min}$)",
                title=f"effective theory, Eq. 4 (D={depth}, N={n_units})")
    axes[0].legend(fontsize=7, loc="lower right", title=f"solid: mean degree 4\ndashed: lambda_max = {n_units}",
                   title_fontsize=7)
    _panel(axes[1], curves, table, "mnist")
    axes[1].set(xlabel=r"$\sigma$ (Eq. 2)", ylabel=r"test accuracy $\langle A\rangle$",
                title=f"MNIST engine (D={depth}, N={n_units})")
    _onset_panel(axes[2], table)
    fig.suptitle(r"Onset of collective learning (circles). Theory $\hat\sigma$ and MNIST $\sigma$ "
                 "agree only up to a scale: compare onsets relative to the complete graph.",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _onset_panel(ax, table: pd.DataFrame) -> None:
    for row in table.itertuples():
        ax.plot(row.theory_onset_rel, row.mnist_onset_rel, marker="s" if row.family == "lambda_max"
                else "o", linestyle="none", color=_style(row.topology)["color"], label=row.topology)
    finite = table[["theory_onset_rel", "mnist_onset_rel"]].to_numpy().ravel()
    finite = finite[np.isfinite(finite)]
    if finite.size:
        lo, hi = finite.min() / 1.5, finite.max() * 1.5
        ax.plot([lo, hi], [lo, hi], color="grey", linewidth=0.8, label="y = x")
    ax.set(xscale="log", yscale="log", xlabel="theory onset / complete's",
           ylabel="MNIST onset / complete's", title="onset shift by topology")
    ax.legend(fontsize=7)

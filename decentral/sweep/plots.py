"""`decentral plot DIR`: Fig. 3 a-g style PNGs from a sweep directory (matplotlib, Agg).

a-c: <m>, <L>, <A> against sigma/N (log axis), mean over seeds with a one-std band per depth,
adiabatic runs dashed; d: S_x entries against the rank-one fit of S_x(D=0) with R^2;
e-g: run-averaged A_x at three couplings, rows and columns ordered from lowest to highest
cumulative cross-accuracy (column sums of S_x), origin at the bottom (as Fig. 3), at the
paper's panel couplings read as sigma/N = 0, 3, 30. `--theory` overlays the effective theory
(Fig. 2) on a right-hand axis, sigma-hat drawn at sigma/N = sigma-hat (a qualitative
comparison, stated on the figure), its curves in the legend.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..observables import off_diagonal, rank_one  # noqa: E402
from .analysis import cumulative_by_depth, mean_cross_accuracy  # noqa: E402
from .store import load_results  # noqa: E402

CURVES = [("magnetization", r"$\langle m \rangle$", "a", "m_abs_mean", "theory |<m>|"),
          ("loss", r"$\langle L \rangle$", "b", "loss_mean", "theory L / L(sigma_min)"),
          ("accuracy", r"$\langle A \rangle$", "c", "accuracy_eff", "theory 1 - L / L(sigma_min)")]


def _colors(depths) -> dict[int, tuple]:
    cmap = plt.get_cmap("Blues")
    return {d: cmap(0.4 + 0.6 * i / max(1, len(depths) - 1)) for i, d in enumerate(depths)}


def _stats(frame, column: str):
    """Per sigma: sigma/N, mean and std over seeds (diverged runs excluded)."""
    ok = frame[~frame["diverged"].astype(bool)]
    grouped = ok.groupby("sigma_over_n")[column]
    as_float = lambda values: np.asarray(values, dtype=float)  # noqa: E731 (empty groups: object)
    return (as_float(grouped.mean().index), as_float(grouped.mean()),
            as_float(grouped.std(ddof=0).fillna(0)))


def plot_curve(frame, column: str, label: str, path: Path, theory=None, theory_column=None,
               theory_label=None) -> Path:
    """One of Fig. 3 a-c: `column` vs sigma/N per depth; adiabatic dashed."""
    fig, ax = plt.subplots(figsize=(5, 3.8))
    depths = sorted(frame["depth"].unique())
    colors = _colors(depths)
    for depth in depths:
        for protocol, style in (("non-adiabatic", "-o"), ("adiabatic", "--")):
            sub = frame[(frame["depth"] == depth) & (frame["protocol"] == protocol)]
            if sub.empty:
                continue
            x, mean, std = _stats(sub, column)
            if not len(x):  # every point of this curve diverged: nothing to draw
                continue
            ax.plot(x, mean, style, color=colors[depth], ms=3, label=f"D={depth}" + (" adiabatic" if protocol == "adiabatic" else ""))
            if protocol == "non-adiabatic":
                ax.fill_between(x, mean - std, mean + std, color=colors[depth], alpha=0.25, lw=0)
    ax.set_xscale("log")
    ax.set_xlabel(r"$\sigma / N$")
    ax.set_ylabel(label)
    if not ax.get_legend_handles_labels()[0]:
        ax.text(0.5, 0.5, "every point diverged", ha="center", va="center", transform=ax.transAxes)
    elif theory is not None:
        _overlay_theory(ax, theory, theory_column, theory_label, colors)
    else:
        ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


THEORY_MAPPING = r"theory (thin lines, right axis): $\hat\sigma$ drawn at $\sigma/N = \hat\sigma$ (qualitative, no fit)"


def _overlay_theory(ax, theory, column: str, label: str, colors) -> None:
    """Theory curves vs sigma-hat on a right-hand axis sharing the sigma/N axis, in the legend,
    with the sigma-hat <-> sigma/N mapping written on the figure."""
    twin = ax.twinx()
    for (depth, protocol), sub in theory.groupby(["depth", "protocol"]):
        twin.plot(sub["sigma"], sub[column], ":" if protocol == "adiabatic" else "-", lw=1.2,
                  color=colors.get(depth, "gray"), alpha=0.7,
                  label=f"theory D={depth}" + (" adiabatic" if protocol == "adiabatic" else ""))
    twin.set_ylabel(label, fontsize=7)
    ax.set_title(THEORY_MAPPING, fontsize=6)
    handles, labels = ax.get_legend_handles_labels()
    experiment = twin.legend(handles, labels, fontsize=6, loc="upper left", title="experiment",
                             title_fontsize=6)
    twin.add_artist(experiment)  # two legends on the top axis, so that no curve hides them
    twin.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.16, 1.0), title="theory", title_fontsize=6)
    ax.figure.set_size_inches(6.8, 3.8)


def plot_rank_one(frame, cross: np.ndarray, path: Path, protocol: str = "non-adiabatic") -> Path | None:
    """Fig. 3d: entries of S_x(D) (shifted by the mean) vs the rank-one fit of S_x(D=0)."""
    entries = [e for e in cumulative_by_depth(frame, cross)
               if e["protocol"] == protocol and np.isfinite(e["s_x"]).all()]  # all-diverged S_x: NaN
    ref = next((e for e in entries if e["depth"] == 0), None)
    if not entries:
        return None
    fig, ax = plt.subplots(figsize=(4.5, 4))
    colors = _colors([e["depth"] for e in entries])
    xs, ys = [], []
    for entry in entries:
        s_x = np.asarray(entry["s_x"])
        fit = rank_one(np.asarray((ref or entry)["s_x"]))
        x, y = off_diagonal(fit - fit.mean()), off_diagonal(s_x - s_x.mean())
        xs.append(x), ys.append(y)
        ax.scatter(x, y, s=10, color=colors[entry["depth"]], label=f"D={entry['depth']}: "
                   f"$R^2$={entry['r2_vs_d0']:.2f} (own fit {entry['r2_own']:.2f})")
    x, y = np.concatenate(xs), np.concatenate(ys)
    if np.isfinite(x).all() and np.isfinite(y).all() and np.ptp(x) > 0:
        slope, icept = np.polyfit(x, y, 1)
        grid = np.linspace(x.min(), x.max(), 2)
        ax.plot(grid, slope * grid + icept, color="red", lw=1)
    ax.set_xlabel(r"rank-one fit of $S_x$(D=" + ("0" if ref else "D") + ") (shifted)")
    ax.set_ylabel(r"$S_x$ entries (shifted by mean)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def nearest_couplings(sigmas: np.ndarray, units: float, sigmas_over_n) -> list[int]:
    """Indices into the sweep's sigma values [S] whose sigma/N is nearest each wanted sigma/N."""
    return [int(np.argmin(np.abs(np.asarray(sigmas) / units - s))) for s in sigmas_over_n]


def plot_cross_accuracy(frame, cross: np.ndarray, path: Path, depth: int, sigmas_over_n) -> Path | None:
    """Fig. 3 e-g: run-averaged A_x at the sweep couplings whose sigma/N is nearest
    `sigmas_over_n` (the paper's panel values are sigma/N, see PANEL_SIGMA_OVER_N), one ordering."""
    mask = ((frame["depth"] == depth) & (frame["protocol"] == "non-adiabatic")).to_numpy()
    if not mask.any():
        return None
    grid, a_x = mean_cross_accuracy(frame, cross, mask)  # [S] sigma, [S, N, C]
    units = float(frame["units"].iloc[0])
    picks = nearest_couplings(grid, units, sigmas_over_n)
    cols, rows = _orders(a_x)
    fig, axes = plt.subplots(1, len(picks), figsize=(4 * len(picks), 3.8))
    for ax, pick, asked, tag in zip(np.atleast_1d(axes), picks, sigmas_over_n, "efg"):
        image = ax.imshow(a_x[pick][np.ix_(rows, cols)], origin="lower", cmap="viridis", vmin=0, vmax=1)
        ax.set_xticks(range(len(cols)), cols), ax.set_yticks(range(len(rows)), rows)
        ax.set_xlabel("class evaluated"), ax.set_ylabel("unit (its class)")
        ax.set_title(f"{tag}: D={depth}, $\\sigma/N$={grid[pick] / units:.3g} ($\\sigma$={grid[pick]:.3g})\n"
                     f"nearest to $\\sigma/N$={asked:g}", fontsize=9)
    fig.colorbar(image, ax=np.atleast_1d(axes).tolist(), shrink=0.8, label="cross-accuracy")
    return _save(fig, path, tight=False)


def _orders(a_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Columns (classes) by S_x column sum, increasing; rows (units) the same when unit k owns
    class k (N = C), else by their own row sums. All-NaN sums (every run diverged) sort as 0."""
    with np.errstate(invalid="ignore"):
        cols = np.argsort(np.nan_to_num(np.nansum(a_x, axis=(0, 1))), kind="stable")  # [C]
        if a_x.shape[1] == a_x.shape[2]:
            return cols, cols
        return cols, np.argsort(np.nan_to_num(np.nansum(a_x, axis=(0, 2))), kind="stable")  # [N]


def _save(fig, path: Path, tight: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def theory_curves(depths, realizations: int = 20):
    """The effective theory's Fig. 2 table for `depths` (both protocols, few realizations)."""
    from ..theory import TheoryConfig, run_theory

    return run_theory(TheoryConfig(depths=tuple(int(d) for d in depths), realizations=realizations))


# Fig. 3 e-g's couplings "sigma = 0, 3, 30", read as sigma/N (the figure's x axis): at Eq. 2's
# sigma = 3 (sigma/N = 0.3) D = 1 is still in the local phase, not the "collective learning
# phase ... above the critical point" the caption and text give for panel f (experiments/README.md).
PANEL_SIGMA_OVER_N = (0.0, 3.0, 30.0)


def plot_sweep(sweep_dir, out=None, theory: bool = False, heatmap_depth: int = 1,
               heatmap_sigmas=None, overwrite: bool = False,
               heatmap_sigma_over_n=PANEL_SIGMA_OVER_N) -> list[Path]:
    """All Fig. 3 panels of a sweep directory; returns the PNG paths written.

    A_x panels at the couplings nearest heatmap_sigma_over_n (sigma/N), or nearest Eq. 2's
    heatmap_sigmas when given.

    The figures directory is written whole (storage.atomic_dir); the default DIR/figures is
    replaced on every call, an explicit `out` only with `overwrite`.
    """
    from ..storage import atomic_dir, check_output_dir

    if out is None:
        out, overwrite = Path(sweep_dir) / "figures", True
    out = check_output_dir(out, overwrite)
    frame, cross = load_results(sweep_dir)
    if frame.empty:
        from ..errors import UserInputError

        raise UserInputError(f"plot: {sweep_dir} has no finished points yet")
    table = theory_curves(sorted(frame["depth"].unique())) if theory else None
    with atomic_dir(out, overwrite) as tmp:
        paths = [plot_curve(frame, col, label, tmp / f"fig3{tag}_{col}.png", table, tcol, tlabel)
                 for col, label, tag, tcol, tlabel in CURVES]
        paths.append(plot_rank_one(frame, cross, tmp / "fig3d_rank_one.png"))
        depth = heatmap_depth if heatmap_depth in set(frame["depth"]) else int(frame["depth"].min())
        units = float(frame["units"].iloc[0])
        panels = heatmap_sigma_over_n if heatmap_sigmas is None else [s / units for s in heatmap_sigmas]
        paths.append(plot_cross_accuracy(frame, cross, tmp / "fig3efg_cross_accuracy.png", depth, panels))
    return [out / p.name for p in paths if p is not None]

"""Side-by-side comparison of a Fig. 3 sweep with the paper's Fig. 3, as a README.

    decentral plot experiments/results/fig3_paper/sweep --out experiments/results/fig3_paper/figures --overwrite
    python experiments/fig3_compare.py experiments/results/fig3_paper/sweep \
        [--config experiments/fig3_paper.toml] [--out experiments/results/fig3_paper/README.md] [--eval-error FILE]

Reads only the sweep directory (sweep.json, results.parquet, cross_accuracy.npz via
decentral's loader, analysis.json) and, when present, the rotating evaluation's error
measurement (eval_error.json beside the README). Works on a partial sweep: every table says
how many points and seeds it rests on. The README links the figures of `decentral plot` in
figures/ beside it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from decentral.sweep.analysis import mean_cross_accuracy
from decentral.sweep.store import load_results, read_manifest

PANELS_OVER_N = (0.0, 3.0, 30.0)  # Fig. 3 e-g, read as sigma/N (see decentral.sweep.plots)
ONSET = 0.2  # <A> above this: collective learning has begun (chance, the local phase, is 0.1)

PAPER = {
    "a": "for D > 0, disorder-order-disorder transitions: <m> rises from ~0 and falls back as "
         "coupling grows (D = 0: no transition)",
    "b": "the transitions make the mean loss non-monotonous, and its decay is delayed, more so "
         "with depth",
    "c": "<A> ~ 0.1 in the local phase, an abrupt rise at a depth-delayed critical coupling, up to "
         "<A> ~ 1 (collective phase); D = 2 adiabatic (dashed) rises abruptly later than non-adiabatic",
    "d": "a 'considerable high R^2' of S_x(D) against the rank-one fit of S_x(D = 0), sustained "
         "for D = 0, 1, 2 (values printed in the figure)",
    "efg": "D = 1 A_x: e (sigma = 0) diagonal, local phase; f (sigma = 3) symmetric collective "
           "phase above the critical point; g (sigma = 30) column-dependent: accuracy depends only "
           "on the class evaluated",
}


def seed_means(frame, protocol: str, depth: int, column: str):
    """sigma/N [S], seed mean and std [S], seeds per sigma [S] (diverged runs left out)."""
    sub = frame[(frame["protocol"] == protocol) & (frame["depth"] == depth) & ~frame["diverged"].astype(bool)]
    grouped = sub.groupby("sigma_over_n")[column]
    return (grouped.mean().index.to_numpy(float), grouped.mean().to_numpy(float),
            grouped.std(ddof=0).fillna(0).to_numpy(float), grouped.count().to_numpy(int))


def onset(x, acc) -> float | None:
    """First sigma/N where the seed-mean <A> exceeds ONSET (linear interpolation in log sigma)."""
    above = np.nonzero(acc > ONSET)[0]
    if not len(above):
        return None
    k = above[0]
    if k == 0:
        return float(x[0])
    t = (ONSET - acc[k - 1]) / (acc[k] - acc[k - 1])
    return float(np.exp(np.log(x[k - 1]) + t * (np.log(x[k]) - np.log(x[k - 1]))))


def fmt(value, spec=".3g") -> str:
    return "-" if value is None or not np.isfinite(value) else format(value, spec)


def coverage(frame, manifest: dict, target_seeds: list[int] | None) -> list[str]:
    """Points per (protocol, depth) against the plan: the manifest's seeds, or the target's
    (a run started seed by seed extends its manifest as it goes)."""
    config = manifest["config"]
    n_sigma, depths = len(config["sigma"]), config["depth"]
    seeds = target_seeds or config["seeds"]
    protocols = ["non-adiabatic", "adiabatic"] if config["protocol"] == "both" else [config["protocol"]]
    lines = ["| protocol | depth | points | seeds with points | couplings with points | planned |",
             "|---|---|---|---|---|---|"]
    planned_total = 0
    for protocol in protocols:
        for depth in (config["adiabatic_depths"] if protocol == "adiabatic" and config["protocol"] == "both" else depths):
            sub = frame[(frame["protocol"] == protocol) & (frame["depth"] == depth)]
            planned = n_sigma * len(seeds)
            planned_total += planned
            lines.append(f"| {protocol} | {depth} | {len(sub)} | {sorted(sub['seed'].unique().tolist())} | "
                         f"{sub['sigma'].nunique()} of {n_sigma} | {planned} |")
    lines.append(f"\n**{len(frame)} of {planned_total} points finished** ({len(frame) / planned_total:.0%}; "
                 f"seeds {seeds[0]}-{seeds[-1]} planned, the manifest holds {config['seeds']}); "
                 f"{config['transient']:,} + {config['steps']:,} steps, evaluation every {config['eval_every']} "
                 f"({config.get('eval_scheme', 'full')} scheme"
                 + (f", K = {config['eval_folds']}" if config.get("eval_scheme") == "rotating" else "") + ").")
    return lines


def curves_table(frame) -> list[str]:
    """Panels a-c: per (protocol, depth) the <m> peak, <L> shape, <A> onset and plateau."""
    lines = ["| curve | <m> peak at sigma/N (value) | <m> at ends | <L> min at sigma/N (value) | "
             "<L> non-monotonous | <A> onset sigma/N (<A> > 0.2) | <A> max (at sigma/N) | <A> at largest sigma |",
             "|---|---|---|---|---|---|---|---|"]
    for (protocol, depth), _ in frame.groupby(["protocol", "depth"]):
        x, m, _, n = seed_means(frame, protocol, depth, "magnetization")
        if not len(x):
            continue
        _, loss, _, _ = seed_means(frame, protocol, depth, "loss")
        _, acc, _, _ = seed_means(frame, protocol, depth, "accuracy")
        k, j, a = int(np.argmax(m)), int(np.argmin(loss)), int(np.argmax(acc))
        bumps = bool(np.any(np.diff(loss[: j + 1]) > 0.01)) if j > 0 else False
        lines.append(f"| {protocol} D={depth} ({n.min()}-{n.max()} seeds) | {x[k]:.3g} ({m[k]:.4f}) | "
                     f"{m[0]:.4f} / {m[-1]:.4f} | {x[j]:.3g} ({loss[j]:.3f}) | {'yes' if bumps else 'no'} | "
                     f"{fmt(onset(x, acc))} | {acc[a]:.3f} ({x[a]:.3g}) | {acc[-1]:.3f} |")
    return lines


def adiabatic_gap(frame) -> list[str]:
    ad = frame[frame["protocol"] == "adiabatic"]
    lines = []
    for depth in sorted(ad["depth"].unique()):
        xa, aa, _, _ = seed_means(frame, "adiabatic", depth, "accuracy")
        xn, an, _, _ = seed_means(frame, "non-adiabatic", depth, "accuracy")
        common = np.intersect1d(xa, xn)
        if not len(common):
            continue
        gap = an[np.isin(xn, common)] - aa[np.isin(xa, common)]  # non-adiabatic minus adiabatic
        k = int(np.argmax(np.abs(gap)))
        lines.append(f"- D = {depth}: onset (<A> > {ONSET}) non-adiabatic sigma/N = {fmt(onset(xn, an))}, "
                     f"adiabatic {fmt(onset(xa, aa))}; largest gap <A>(non-adiabatic) - <A>(adiabatic) = "
                     f"{gap[k]:+.3f} at sigma/N = {common[k]:.3g} ({len(common)} common couplings)")
    return lines or ["- no adiabatic points yet"]


def rank_one_lines(root: Path) -> list[str]:
    path = root / "analysis.json"
    entries = json.loads(path.read_text()) if path.is_file() else []
    lines = ["| protocol | depth | couplings in S_x | R^2 vs rank-one of S_x(D=0) | R^2 vs own rank-one |",
             "|---|---|---|---|---|"]
    for e in entries:
        lines.append(f"| {e['protocol']} | {e['depth']} | {e['n_sigma']} | {fmt(e['r2_vs_d0'], '.3f')} | "
                     f"{fmt(e['r2_own'], '.3f')} |")
    return lines


def phase_metrics(a_x: np.ndarray) -> dict[str, float]:
    """Diagonal excess, share of variance explained by columns (classes) and by rows (units)."""
    n = len(a_x)
    off = ~np.eye(n, dtype=bool)
    total = np.var(a_x)
    col = np.var(np.broadcast_to(a_x.mean(axis=0), a_x.shape)) / total if total > 0 else float("nan")
    row = np.var(np.broadcast_to(a_x.mean(axis=1)[:, None], a_x.shape)) / total if total > 0 else float("nan")
    return {"diag": float(np.mean(np.diag(a_x))), "off": float(np.mean(a_x[off])), "col_share": float(col),
            "row_share": float(row), "symmetry": _corr(a_x[off], a_x.T[off])}


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation, NaN when either side is constant."""
    return float(np.corrcoef(x, y)[0, 1]) if np.std(x) > 0 and np.std(y) > 0 else float("nan")


def phase_name(p: dict) -> str:
    """A guide to the three patterns of Fig. 2c-e / 3e-g (the numbers are the measurement)."""
    if p["off"] < 0.05 and p["diag"] > 0.5:
        return "local (diagonal)"
    if p["col_share"] > 0.8:
        return "column-dependent"
    if p["diag"] - p["off"] > 0.5:
        return "mostly diagonal, partly collective"
    return "collective, symmetric" if p["symmetry"] > 0.5 else "collective"


def heatmap_lines(frame, cross, depth: int = 1) -> list[str]:
    mask = ((frame["depth"] == depth) & (frame["protocol"] == "non-adiabatic")).to_numpy()
    if not mask.any():
        return [f"- no non-adiabatic D = {depth} points yet"]
    grid, a_x = mean_cross_accuracy(frame, cross, mask)
    units = float(frame["units"].iloc[0])
    lines = ["| panel | paper sigma/N | sweep sigma/N (sigma) | seeds | diag mean | off-diag mean | "
             "variance by class (columns) | by unit (rows) | symmetry corr | reads as |", "|---|---|---|---|---|---|---|---|---|---|"]
    for tag, target in zip("efg", PANELS_OVER_N):
        k = int(np.argmin(np.abs(grid / units - target)))
        seeds = int(((frame["sigma"] == grid[k]) & pd_mask(frame, depth)).sum())
        p = phase_metrics(a_x[k])
        lines.append(f"| {tag} | {target:g} | {grid[k] / units:.3g} ({grid[k]:.3g}) | {seeds} | {p['diag']:.3f} | "
                     f"{p['off']:.3f} | {p['col_share']:.2f} | {p['row_share']:.2f} | {p['symmetry']:.2f} | "
                     f"{phase_name(p)} |")
    return lines


def pd_mask(frame, depth):
    return (frame["depth"] == depth) & (frame["protocol"] == "non-adiabatic")


def eval_error_lines(path: Path) -> list[str]:
    if not path.is_file():
        return ["(no eval_error.json yet: `python experiments/eval_error.py`)"]
    data = json.loads(path.read_text())
    lines = [f"Same trajectory scored both ways (seed {data['seed']}, {data['transient']:,} + {data['steps']:,} "
             f"steps, evaluation every {data['eval_every']}, K = {data['folds']}): the exact full-set time "
             "average, the rotating estimate, their difference, the bound (2) of decentral/evaluation.py, "
             "and for scale the rms error of a single fold evaluation.", "",
             "| D | sigma | <A> exact | <A> rotating - exact | bound | single-fold rms | <L> exact | <L> rotating - exact | bound |",
             "|---|---|---|---|---|---|---|---|---|"]
    for p in data["points"]:
        a, l = p["accuracy"], p["loss"]
        lines.append(f"| {p['depth']} | {p['sigma']:.4g} | {a['exact']:.4f} | {a['error']:+.1e} | {a['bound']:.1e} | "
                     f"{a['single_eval_rms']:.1e} | {l['exact']:.4f} | {l['error']:+.1e} | {l['bound']:.1e} |")
    return lines


def write_readme(root: Path, out: Path, eval_error: Path, target_seeds: list[int] | None = None) -> str:
    manifest = read_manifest(root)
    frame, cross = load_results(root)
    rel = lambda name: Path("figures") / name  # noqa: E731
    text = ["# Fig. 3 at the paper's protocol: measured vs the paper", "",
            f"Generated by `python experiments/fig3_compare.py {root}` from the sweep directory "
            f"`{root.name}/`; figures by `decentral plot {root} --out {out.parent}/figures --overwrite`. "
            "The paper's statements are quoted or paraphrased from its text and caption (its figure's "
            "numbers are not in the text). Seed means over the points present; sigma/N on the axis as "
            "in the paper. How the run was made, its cost with the rotating and the exact evaluation, "
            "and how to resume or add seeds: experiments/README.md, section 'The paper's protocol'.",
            "", "## Coverage", "", *coverage(frame, manifest, target_seeds), "",
            "## Panels a-c: <m>, <L>, <A> against sigma/N", "",
            f"Paper, a: {PAPER['a']}.  ", f"Paper, b: {PAPER['b']}.  ", f"Paper, c: {PAPER['c']}.", "",
            *curves_table(frame), "",
            f"![a]({rel('fig3a_magnetization.png')}) ![b]({rel('fig3b_loss.png')}) ![c]({rel('fig3c_accuracy.png')})", "",
            "Adiabatic vs non-adiabatic (the dashed line of c):", "", *adiabatic_gap(frame), "",
            "## Panel d: S_x against its rank-one fit", "", f"Paper: {PAPER['d']}.", "", *rank_one_lines(root), "",
            f"![d]({rel('fig3d_rank_one.png')})", "",
            "## Panels e-g: A_x for D = 1", "", f"Paper: {PAPER['efg']}.", "",
            "Reading: the paper's panel couplings sigma = 0, 3, 30 are sigma/N, the figure's x axis: at "
            "Eq. 2's sigma = 3 (sigma/N = 0.3) D = 1 is still in the local phase (<A> = 0.100 in the quick "
            "variant, experiments/README.md), while the caption and text place f 'above the critical point'. Variance by class: the "
            "share of A_x's variance explained by its column means (1 for a purely column-dependent matrix).",
            "", *heatmap_lines(frame, cross), "", f"![e-g]({rel('fig3efg_cross_accuracy.png')})", "",
            "## Rotating evaluation: error against the exact full-set average", "", *eval_error_lines(eval_error), ""]
    out.write_text("\n".join(text))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir")
    parser.add_argument("--out", default=None, help="README path (default: beside the sweep directory)")
    parser.add_argument("--eval-error", default=None, help="eval_error.json (default: beside the README)")
    parser.add_argument("--config", default=None, help="the sweep's config file: plan with its seeds "
                        "(e.g. experiments/fig3_paper.toml while the manifest holds fewer)")
    args = parser.parse_args()
    target = None
    if args.config:
        from decentral.config import read_config_file
        from decentral.sweep.config import load_sweep_config

        target = load_sweep_config(read_config_file(args.config), {"out": args.sweep_dir}).seed_list()
    root = Path(args.sweep_dir)
    out = Path(args.out) if args.out else root.parent / "README.md"
    eval_error = Path(args.eval_error) if args.eval_error else out.parent / "eval_error.json"
    print(write_readme(root, out, eval_error, target))


if __name__ == "__main__":
    main()

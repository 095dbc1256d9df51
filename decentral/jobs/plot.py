"""`decentral plot`: Fig. 3 a-g style figures from a sweep directory (`sweep.plots.plot_sweep`)."""

from __future__ import annotations

from ..config import parse_list


def main(args) -> int:
    """`decentral plot DIR`: the PNGs written; their paths printed."""
    from ..sweep.plots import plot_sweep  # matplotlib, loaded only to plot

    sigmas = None if args.heatmap_sigmas is None else parse_list(args.heatmap_sigmas, float, "--heatmap-sigmas")
    over_n = parse_list(args.heatmap_sigma_over_n, float, "--heatmap-sigma-over-n")
    paths = plot_sweep(args.sweep_dir, args.out, theory=args.theory, heatmap_depth=args.heatmap_depth,
                       heatmap_sigmas=sigmas, overwrite=args.overwrite, heatmap_sigma_over_n=over_n)
    for path in paths:
        print(path)
    return 0

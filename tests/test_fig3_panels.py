"""Fig. 3 e-g couplings: the paper's panel values read as sigma/N (the default), or Eq. 2's sigma."""

from __future__ import annotations

import numpy as np

from decentral.sweep.grids import paper_grid
from decentral.sweep.plots import PANEL_SIGMA_OVER_N, nearest_couplings


def test_panels_pick_the_paper_grid_by_sigma_over_n():
    grid = paper_grid()  # Eq. 2's sigma, N = 10
    picks = nearest_couplings(grid, 10, PANEL_SIGMA_OVER_N)
    assert [float(grid[k]) for k in picks] == [1e-4, 25.2, 298.8]  # sigma/N 1e-5, 2.52, 29.88
    as_sigma = nearest_couplings(grid, 10, [s / 10 for s in (0.0, 3.0, 30.0)])  # --heatmap-sigmas 0,3,30
    assert np.allclose([grid[k] for k in as_sigma], [1e-4, 2.371373705661655, 25.2])

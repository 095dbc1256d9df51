"""Named coupling grids for `decentral sweep --sigma-grid NAME`.

"paper" is the authors' Fig. 3 grid: logspace(-4, 1, 25) followed by linspace(10, 390, 26)[1:]
(50 values, sigma itself, not sigma/N). "quick" keeps the paper's range (1e-4 to 390) with 14 values
placed where the effects of Fig. 3 happen in short runs (the onset of collective learning lies
between sigma ~ 1 and ~ 10 for D = 0 and moves to ~ 100 or beyond for D = 1, 2). "tiny" is for smoke tests.
"""

from __future__ import annotations

import numpy as np

from ..errors import UserInputError


def paper_grid() -> np.ndarray:
    return np.concatenate([np.logspace(-4, 1, 25), np.linspace(10, 390, 26)[1:]])


def quick_grid() -> np.ndarray:
    return np.array([1e-4, 0.01, 0.1, 0.3, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 120.0, 240.0, 390.0])


def tiny_grid() -> np.ndarray:
    return np.array([1e-4, 1.0, 30.0])


GRIDS = {"paper": paper_grid, "quick": quick_grid, "tiny": tiny_grid}


def named_grid(name: str) -> np.ndarray:
    """The sigma values of grid `name` (increasing)."""
    if name not in GRIDS:
        raise UserInputError(f"--sigma-grid: unknown grid {name!r} (known: {', '.join(GRIDS)})")
    return GRIDS[name]()

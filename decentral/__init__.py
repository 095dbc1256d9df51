"""decentral: collective learning of coupled neural units (Arola-Fernandez & Lacasa).

The embedded default is a vectorized local engine (:mod:`decentral.engine`); the Ray
backend (:mod:`decentral.ray_backend`) runs the same update rule on a cluster, and the
effective theory (:mod:`decentral.theory`) predicts what both measure.
"""

import os as _os

# Idle OpenMP threads (PyTorch's and numba's share one runtime) sleep instead of spinning after
# every parallel region: on a busy machine spinning made training blocks 4-5x and evaluations 7x
# slower, with identical numbers. Set before torch or numba loads; a user's own value wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

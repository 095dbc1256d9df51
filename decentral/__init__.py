"""decentral: collective learning of coupled neural units (Arola-Fernandez & Lacasa).

The embedded default is a vectorized local engine (:mod:`decentral.engine`); the Ray
backend (:mod:`decentral.ray_backend`) runs the same update rule on a cluster, and the
effective theory (:mod:`decentral.theory`) predicts what both measure.
"""

__version__ = "0.1.0"

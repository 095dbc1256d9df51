"""decentral: collective learning of coupled neural units (Arola-Fernandez & Lacasa).

The embedded default is a vectorized local engine (:mod:`decentral.engine`); the Ray
backend (:mod:`decentral.ray_backend`) runs the same update rule on a cluster, and the
effective theory (:mod:`decentral.theory`) predicts what both measure.

The Python API is :mod:`decentral.api` (loaded on first use, so that `import decentral` stays
cheap)::

    from decentral import api
    api.run(config=None, **keys) -> RunResult        # one point, as `decentral run`
    api.sweep(config=None, **keys) -> DataFrame      # a sweep's results table
    api.theory(config=None, **keys) -> DataFrame     # Eq. 4-8, as `decentral theory`
    api.load(directory) -> RunResult | SweepResult   # a run or sweep directory read back

`decentral.run` and `decentral.load` are the same two functions, for short (`decentral.sweep`
and `decentral.theory` are the packages of those subsystems); `decentral.RunConfig`,
`decentral.SweepConfig`, `decentral.TheoryConfig` the typed configs; `decentral.UserInputError`
bad input (a ValueError), never an exit; `decentral.models.register(name, factory)` an
nn.Module factory as a `--model` name.
"""

import os as _os

# Idle OpenMP threads (PyTorch's and numba's share one runtime) sleep instead of spinning after
# every parallel region: on a busy machine spinning made training blocks 4-5x and evaluations 7x
# slower, with identical numbers. Set before torch or numba loads; a user's own value wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .errors import Interrupted, UserInputError  # noqa: E402

__version__ = "0.1.0"

# names of the API, each imported on first use from the module given
_API = {"api": None, "models": None, "run": "api", "load": "api", "RunResult": "api", "SweepResult": "api",
        "run_config": "api", "sweep_config": "api", "RunConfig": "config",
        "SweepConfig": "sweep.config", "TheoryConfig": "theory"}
__all__ = sorted(_API) + ["Interrupted", "UserInputError", "__version__"]


def __getattr__(name: str):
    """The API's names, imported on first use (PEP 562)."""
    if name not in _API:
        raise AttributeError(f"module 'decentral' has no attribute {name!r}")
    import importlib

    module = importlib.import_module(f".{_API[name] or name}", __name__)
    value = module if _API[name] is None else getattr(module, name)
    globals()[name] = value
    return value

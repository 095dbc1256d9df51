"""The effective theory of collective learning (Eq. 4-8), integrated fast and exactly.

Public API::

    from decentral.theory import TheoryConfig, run_theory, integrate
    table = run_theory(TheoryConfig(depths=(1,), realizations=50))

* :func:`integrate`: batched Dormand-Prince RK45, step-for-step SciPy's ``solve_ivp``
  algorithm per row (:mod:`.rk45`);
* :class:`EffectiveRHS`, :func:`stationary_d0` (Eq. 6), :func:`effective_loss` (Eq. 5),
  :func:`cross_accuracy_d0` (Eq. 8) (:mod:`.model`);
* :func:`run_theory`: the Fig. 2 protocols as a pandas table (:mod:`.protocols`);
* :func:`learning_path`: S_x, its rank-one SVD truncation and explained fraction.
"""

from .config import PROTOCOLS, TheoryConfig, load_delta, paper_sigma_grid
from .learning_path import (LearningPath, theory_s_x, explained_fraction,
                            learning_path, offdiagonal_r2, rank_one, ranking)
from .model import (EffectiveRHS, coupling_term, cross_accuracy_d0, effective_loss, moments,
                    stationary_d0, stationary_linear)
from .protocols import COLUMNS, run_theory
from .rk45 import BatchSolution, FunctionRHS, integrate

__all__ = [
    "PROTOCOLS", "TheoryConfig", "load_delta", "paper_sigma_grid", "LearningPath",
    "theory_s_x", "explained_fraction", "learning_path", "offdiagonal_r2",
    "rank_one", "ranking", "EffectiveRHS", "coupling_term", "cross_accuracy_d0",
    "effective_loss", "moments", "stationary_d0", "stationary_linear", "COLUMNS", "run_theory",
    "BatchSolution", "FunctionRHS", "integrate",
]  # fmt: skip

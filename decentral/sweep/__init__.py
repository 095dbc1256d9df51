"""`decentral sweep` and `decentral plot`: the paper's Fig. 3 as a resumable sweep.

    config     SweepConfig: the `run` flags with list-valued sigma, depth and topology; config hash
    grids      named sigma grids (paper, quick, tiny) and list parsing
    plan       which points remain, stacked into groups (ensembles or adiabatic chains)
    worker     one group on the local engine (what every executor runs)
    job        run_sweep: open the directory, plan, execute (here or `ray_tasks`), rebuild results
    ray_tasks  the Ray executor: one task per group
    store      the sweep directory: manifest, points, chain checkpoints, results
    analysis   S_x and its rank-one R^2 per depth
    plots      Fig. 3 style figures
"""

from .job import run_sweep

__all__ = ["run_sweep"]

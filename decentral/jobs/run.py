"""`decentral run`: one coupled-training job from a RunConfig, on the local engine or Ray.

`main(args)` is the command (parsed flags to a RunConfig, or `--resume DIR`; the summary
printed); `execute(cfg)` / `run_job(cfg)` the library call it makes. I/O lives here, at the
edge: loading data, reading the topology, saving results with the exact config and topology
that produced them. The math is in engine/update/observables.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import warnings
from pathlib import Path

import torch

from .. import eventlog, params, resources
from ..checkpoint import FILE as CHECKPOINT_FILE
from ..checkpoint import Checkpoint, Keeper, config_hash
from ..config import RunConfig, to_dict
from ..data import Split
from ..datasets import get as get_dataset
from ..engine import EngineState
from ..eventlog import chain
from ..model import Architecture
from ..errors import UserInputError
from ..problem import Problem, final_cross_scores, prepare, resolve_device
from ..runner import Measurement, progress_bar, run_phases
from ..simulation import single_run
from ..storage import atomic_dir, check_output_dir, json_safe, toml_text
from ..threads import limited as limited_threads
from ..threads import per_worker
from .common import COMMAND_KEYS


def run_local(cfg: RunConfig, problem: Problem, resume: Checkpoint | None = None,
              init: params.SavedParams | None = None, after_block=None) -> tuple[torch.Tensor, Measurement]:
    """Train on the vectorized local engine (from a checkpoint, when given; from the saved
    parameters of cfg.init_from, `init` when already loaded; checkpoints into cfg.out when set;
    after_block(step, meas) after every block, e.g. the event log); returns final parameters
    [1, N, P] and the series."""
    device = resolve_device(cfg.device)
    init = init if init is not None else initial_params(cfg, problem)
    offset = init.step if init is not None else 0  # the engine step the run's plan starts at
    state = None
    if resume is not None:  # checkpoints count steps in the run's plan
        state = EngineState(resume.theta.to(device), offset + resume.step)
    elif init is not None:
        state = EngineState(init.theta[None].to(device), offset)  # [1, N, P]
    sim = single_run(cfg, problem, device, state)
    phases = cfg.phases()
    step0 = resume.step if resume is not None else 0
    if hasattr(sim.evaluator, "count"):  # the rotating scheme: its fold continues where it was
        sim.evaluator.count = phases.evaluations_before(step0)
    keeper = Keeper(cfg, lambda: sim.theta, step0) if cfg.out else None
    with progress_bar(cfg.transient + cfg.steps, "run") as bar, \
            keeper.catching_sigint() if keeper else contextlib.nullcontext():
        bar.update(step0)
        meas = run_phases(sim, phases, step0=step0, progress=bar, resumed=resume and resume.meas,
                          after_block=chain(after_block, keeper))
    return sim.theta, meas


def initial_params(cfg: RunConfig, problem: Problem) -> params.SavedParams | None:
    """The saved parameters cfg.init_from names, checked against the run's N and architecture."""
    if not cfg.init_from:
        return None
    saved = params.load(cfg.init_from)
    params.check_fits(saved, problem.arch, cfg.units, cfg.init_from)
    return saved


def run_summary(cfg: RunConfig, problem: Problem, theta: torch.Tensor, meas: Measurement,
                start_step: int = 0) -> dict:
    """The run's summary (replica 0): config echo, time-averaged observables, A_x, L_x."""
    averages = meas.time_average(theta.shape[0])
    cross_loss, cross_acc = final_cross_scores(problem.arch, theta, problem.test)
    diverged = bool(meas.diverged[0]) if meas.diverged is not None else False
    summary = {
        "backend": cfg.backend, "units": cfg.units, "depth": cfg.depth, "width": cfg.width,
        "sigma": cfg.sigma, "sigma_over_n": cfg.sigma_over_n, "seed": cfg.seed,
        "transient": cfg.transient, "steps": cfg.steps, "eval_every": cfg.eval_every,
        "init": cfg.init, "partition": cfg.partition, "n_params": problem.arch.n_params,
        "test_samples": len(problem.test.y), "device": cfg.device,
        "stability_number": problem.coupling.stability_number(cfg.lr, cfg.sigma),
        "topology": problem.topology,
    }
    if cfg.eval_scheme != "full":  # (summaries at the default keep their keys)
        summary.update(eval_scheme=cfg.eval_scheme, eval_folds=cfg.eval_folds)
    if cfg.dataset != "mnist":  # (likewise: MNIST summaries keep their keys)
        summary.update(dataset=cfg.dataset, input_shape=list(problem.input_shape))
    if cfg.model != "mlp":  # (and MLP summaries keep their keys)
        summary.update(model=cfg.model)
    if cfg.init_from:
        summary.update(init_from=cfg.init_from, start_step=start_step)
    summary.update({k: float(v[0]) for k, v in averages.items()})
    summary.update({
        "cross_accuracy": cross_acc[0].tolist(), "cross_loss": cross_loss[0].tolist(),
        "train_seconds": meas.train_seconds, "train_steps": meas.train_steps,
        "steps_per_second": meas.steps_per_second(), "diverged": diverged,
        "message": _divergence_message(meas) if diverged else "ok",
    })
    return summary


def _divergence_message(meas: Measurement) -> str:
    return (f"diverged: parameters became NaN/inf by step {int(meas.diverged_at[0])}; "
            "observables average the evaluations before that")


def save_run(out: str | Path, cfg: RunConfig, summary: dict, meas: Measurement,
             theta: torch.Tensor | None = None, arch: Architecture | None = None, step: int = 0) -> Path:
    """summary.json, timeseries.parquet, config.toml, the topology file and (theta [1, N, P] and
    arch given) params.safetensors, the final parameters at engine step `step`, as one directory.

    The directory is filled as a hidden sibling and renamed into place (storage.atomic_dir):
    a kill at any moment leaves the complete run or no `out` at all.
    """
    import pandas as pd

    out = Path(out)
    ours = (out / CHECKPOINT_FILE).is_file()  # the run's own checkpoints are replaced
    with atomic_dir(out, overwrite=cfg.overwrite or ours) as tmp:
        (tmp / "summary.json").write_text(json.dumps(json_safe(summary), indent=2) + "\n")
        pd.DataFrame(meas.records).to_parquet(tmp / "timeseries.parquet", index=False)
        (tmp / "config.toml").write_text(toml_text(to_dict(cfg)))
        if cfg.topology:
            shutil.copyfile(cfg.topology, tmp / ("topology" + Path(cfg.topology).suffix))
        if theta is not None:
            params.save(tmp, theta[0], arch, cfg.seed, step, config_hash(to_dict(cfg)))
    return out


def load_run(out: str | Path) -> tuple[dict, "pd.DataFrame", dict]:
    """(summary, time series, config) of a `run --out` directory; one line if any is damaged."""
    from ..storage import read_json, read_parquet, read_toml

    out = Path(out)
    summary = read_json(out / "summary.json", "run summary")
    series = read_parquet(out / "timeseries.parquet", "run time series")
    config = read_toml(out / "config.toml", "run config")
    return summary, series, config


def execute(cfg: RunConfig, data: tuple[Split, Split] | None = None, resume: Checkpoint | None = None) -> dict:
    """Run one job end to end with --threads (default: all cores) and return its summary
    (saved under cfg.out when set; continued from `resume`, a checkpoint of cfg.out, when given)."""
    return run_job(cfg, data, resume)[0]


def run_job(cfg: RunConfig, data: tuple[Split, Split] | None = None, resume: Checkpoint | None = None
            ) -> tuple[dict, Measurement, torch.Tensor]:
    """`execute`, returning the summary, the measurement and the final parameters [1, N, P]
    (what `decentral.api.run` hands to notebooks)."""
    with limited_threads(per_worker(cfg.threads)):
        return _execute(cfg, data, resume)


def _execute(cfg: RunConfig, data: tuple[Split, Split] | None, resume: Checkpoint | None
             ) -> tuple[dict, Measurement, torch.Tensor]:
    resolve_device(cfg.device)  # fail fast, before loading data
    if cfg.out and resume is None:
        if (Path(cfg.out) / CHECKPOINT_FILE).is_file() and not cfg.overwrite:
            raise UserInputError(f"--out {cfg.out} holds the checkpoint of an unfinished run: continue "
                                 f"it with `decentral run --resume {cfg.out}`, or pass --overwrite")
        check_output_dir(cfg.out, cfg.overwrite)  # before any work: never train to then lose it
    resources.check_run(cfg.units, cfg.depth, cfg.width, cfg.test_samples,
                        dense_coupling=resources.dense_coupling(cfg.topology, cfg.units),
                        n_in=get_dataset(cfg.dataset).n_inputs)
    init = params.load(cfg.init_from) if cfg.init_from else None  # fail fast, before loading data
    eventlog.check_log_dir(cfg.log_tensorboard)  # before any work
    problem = prepare(cfg, data)
    if init is not None:
        params.check_fits(init, problem.arch, cfg.units, cfg.init_from)
    message = problem.coupling.stability_warning(cfg.lr, cfg.sigma)
    if message:
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    start_step = init.step if init is not None else 0
    log = open_log(cfg, start_step, resume)
    try:
        theta, meas, extra = _train(cfg, problem, resume, init, log)
        summary = {**run_summary(cfg, problem, theta, meas, start_step), **extra}
        if log is not None:
            log.finish(summary, start_step + meas.train_steps)
    finally:
        if log is not None:
            log.close()
    if cfg.out:
        save_run(cfg.out, cfg, summary, meas, theta, problem.arch, start_step + meas.train_steps)
    return summary, meas, theta


def _train(cfg: RunConfig, problem: Problem, resume: Checkpoint | None, init: params.SavedParams | None,
           log) -> tuple[torch.Tensor, Measurement, dict]:
    """Final parameters [1, N, P], the series and the backend's extra summary fields."""
    if cfg.backend == "ray":
        from ..ray_backend import run_ray

        return run_ray(cfg, problem, resume=resume, after_block=log)
    theta, meas = run_local(cfg, problem, resume, init, log)
    return theta, meas, {}


def open_log(cfg: RunConfig, start_step: int, resume: Checkpoint | None):
    """The TensorBoard event log of --log-tensorboard (None without it)."""
    if not cfg.log_tensorboard:
        return None
    from ..eventlog import TensorBoardLog

    return TensorBoardLog(cfg.log_tensorboard, start_step, resume and resume.meas,
                          resume.step if resume is not None else 0)


# --- the command ----------------------------------------------------------------------------

RUN_COMMAND_KEYS = COMMAND_KEYS + ("resume",)  # not config keys


def main(args) -> int:
    """`decentral run`: flags (argparse namespace) to a RunConfig, trained, summary printed."""
    from .common import config_from_args, print_json

    if args.resume:
        summary = _resume(args)
    else:
        summary = execute(config_from_args(RunConfig, args, skip=RUN_COMMAND_KEYS))
    if args.json:
        print_json(json_safe(summary))
    else:
        _print_summary(summary)
    return 0


def _resume(args) -> dict:
    """Continue the run in args.resume: its stored config, refused if a flag changes it."""
    from .. import checkpoint
    from ..config import read_config_file

    if getattr(args, "out", args.resume) != args.resume:
        raise UserInputError("--resume DIR continues the run in DIR: leave out --out")
    ckpt = checkpoint.load(args.resume)
    given = read_config_file(args.config) if args.config else {}
    given.update({k: v for k, v in vars(args).items() if k not in RUN_COMMAND_KEYS})
    return execute(checkpoint.resumed_config(args.resume, ckpt.config, given), resume=ckpt)


def _print_summary(s: dict) -> None:
    print(f"{s['backend']} run: N={s['units']} D={s['depth']} sigma={s['sigma']:g} "
          f"(sigma/N={s['sigma_over_n']:g}) seed={s['seed']}" + (f" on {s['dataset']}" if "dataset" in s else ""))
    print(f"  <A> = {s['accuracy']:.4f}   <L> = {s['loss']:.4f}   <m> = {s['magnetization']:.3e}"
          f"   consensus = {s['consensus_distance']:.3e}")
    if s["backend"] == "ray":
        print(f"  Ray: {s['actors']} actors x {s['units_per_actor']} units, {s['actor_cpus']:g} CPU each "
              f"({s['actor_layout']}), {s['nodes']} node(s), {s['restarts']} restarts")
    print(f"  {s['steps_per_second']:.0f} coupled steps/s, {s['message']}")

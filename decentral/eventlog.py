"""Live experiment logging: `decentral run --log-tensorboard DIR` and `decentral sweep
--log-tensorboard DIR` (config key `log_tensorboard`).

Through torch.utils.tensorboard's SummaryWriter, into event files in DIR:

* after every evaluation, one scalar per observable (`observables/loss`, `observables/accuracy`,
  `observables/magnetization`, `observables/mean_sq_param`, `observables/consensus_distance`),
  at the engine's step (the run's own step plus `start_step` after `--init-from`);
* at the end, the time averages (`summary/<observable>`), and the cross-accuracy and cross-loss
  matrices A_x and L_x [N, C] as a grayscale heat map (`cross_accuracy`: 1 white, 0 black;
  `cross_loss` scaled by its maximum) and as a tensor summary (`cross_accuracy/values`, ...).

`tensorboard --logdir DIR` shows them as the run goes. The parquet outputs of `--out` stay;
the log is a view, not the record. A resumed run (`--resume`) purges the events after its
checkpoint's step and logs from there, so nothing appears twice.

A sweep (local backend) logs each point as its own TensorBoard run, DIR/<point id> (e.g.
`na-D1-mf-s0-i003`): `point/sigma` at step 0, the observables of every evaluation at the
point's own step as its ensemble runs, then its time averages and A_x, L_x as above. A point
run again (a sweep resumed after a kill recomputes unfinished points) purges what its earlier
attempt logged, so each evaluation appears once.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import UserInputError
from .runner import OBSERVABLES, Measurement


def check_log_dir(path: str | Path | None) -> None:
    """--log-tensorboard DIR must be a directory this process can create or write into."""
    if not path:
        return
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserInputError(f"--log-tensorboard {path}: cannot create that directory "
                             f"({err.strerror or err})") from None
    if not os.access(path, os.W_OK):
        raise UserInputError(f"--log-tensorboard {path}: not writable")


class TensorBoardLog:
    """The runner's after_block hook that writes each new evaluation row as scalars."""

    def __init__(self, log_dir: str | Path, start_step: int = 0, resumed: Measurement | None = None,
                 resume_step: int = 0):
        from torch.utils.tensorboard import SummaryWriter

        self.start_step = start_step  # engine step of the run's step 0
        self.logged = len(resumed.records) if resumed is not None else 0  # rows already in the log
        purge = start_step + resume_step + 1 if resumed is not None else None
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge)
        self.last_step = start_step

    def __call__(self, step: int, meas: Measurement) -> None:
        for row in meas.records[self.logged:]:
            if row["replica"] == 0:  # a run has one replica
                at = self.start_step + int(row["step"])
                for name in OBSERVABLES:
                    self.writer.add_scalar(f"observables/{name}", row[name], at)
                self.last_step = at
        self.logged = len(meas.records)
        self.writer.flush()

    def finish(self, summary: dict, step: int) -> None:
        """Time averages and the A_x / L_x heat maps of the final parameters, then close."""
        write_summary(self.writer, summary, step)
        self.writer.close()

    def close(self) -> None:
        self.writer.close()


class EnsembleLog:
    """A sweep ensemble's after_block hook: replica r's evaluations into DIR/<names[r]>, one
    TensorBoard run per sweep point, started afresh (purge_step=0) each time the point runs."""

    def __init__(self, log_dir: str | Path, names: list[str], sigmas: list[float]):
        from torch.utils.tensorboard import SummaryWriter

        self.writers = [SummaryWriter(log_dir=str(Path(log_dir) / name), purge_step=0) for name in names]
        for writer, sigma in zip(self.writers, sigmas):
            writer.add_scalar("point/sigma", sigma, 0)
        self.logged = 0  # rows of the measurement already written

    def __call__(self, step: int, meas: Measurement) -> None:
        for row in meas.records[self.logged:]:
            writer = self.writers[int(row["replica"])]
            for name in OBSERVABLES:
                writer.add_scalar(f"observables/{name}", row[name], int(row["step"]))
        self.logged = len(meas.records)
        for writer in self.writers:
            writer.flush()

    def finish(self, records: list[dict], step: int) -> None:
        """Each point's time averages and A_x / L_x (records[r]: replica r's result row), then close."""
        for writer, record in zip(self.writers, records):
            write_summary(writer, record, step)
            writer.close()

    def close(self) -> None:
        for writer in self.writers:
            writer.close()


def write_summary(writer, summary: dict, step: int) -> None:
    """Time averages (`summary/<observable>`) and A_x, L_x [N, C] as heat maps and tensors."""
    for name in OBSERVABLES:
        value = summary.get(name)
        if value is not None and np.isfinite(value):
            writer.add_scalar(f"summary/{name}", value, step)
    for name in ("cross_accuracy", "cross_loss"):
        matrix = np.nan_to_num(np.asarray(summary[name], dtype=np.float32), nan=0.0)  # [N, C]
        writer.add_tensor(f"{name}/values", _tensor(matrix), step)
        scale = 1.0 if name == "cross_accuracy" else max(float(matrix.max()), 1e-12)
        writer.add_image(name, np.clip(matrix / scale, 0, 1), step, dataformats="HW")


def _tensor(matrix: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(matrix))


def chain(*hooks):
    """One after_block hook calling every given hook (None entries skipped) in order."""
    live = [h for h in hooks if h is not None]
    if not live:
        return None

    def after_block(step: int, meas: Measurement) -> None:
        for hook in live:
            hook(step, meas)

    return after_block

"""Per-unit random streams, so every backend draws the same numbers for the same unit.

Each unit owns two streams seeded from (run seed, unit): one for its initial parameters and
one for its batches. Batch indices are a pure function of (seed, unit, step): steps are cut
into chunks and chunk c of unit u is drawn from a generator seeded by (seed, u, c). A backend
that resumes at step t, or hosts only some units, reproduces exactly the same batches
without carrying RNG state.
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import UserInputError

_INIT, _BATCH = 0, 1  # stream purposes
CHUNK_STEPS = 256  # steps of batch indices drawn per generator call


def stream_seed(seed: int, unit: int, purpose: int, chunk: int = 0) -> int:
    """A 63-bit integer derived from (seed, unit, purpose, chunk) by numpy's SeedSequence."""
    state = np.random.SeedSequence([int(seed), int(unit), purpose, int(chunk)]).generate_state(2)
    return int((int(state[0]) << 32 | int(state[1])) & (2**63 - 1))


def init_generator(seed: int, unit: int) -> torch.Generator:
    """The torch generator for unit `unit`'s initial parameters in run `seed`."""
    return torch.Generator().manual_seed(stream_seed(seed, unit, _INIT))


SAMPLING = ("iid", "window")  # batch schemes, see batch_chunk


def batch_chunk(seed: int, unit: int, chunk: int, shard_size: int, batch_size: int,
                scheme: str = "iid") -> np.ndarray:
    """Local sample indices [CHUNK_STEPS, B] for steps chunk*CHUNK_STEPS ... of one unit.

    "iid": every index an i.i.d. uniform draw from the unit's shard (with replacement), the
    "cleaner choice" the reference protocol notes; "window": B consecutive samples of the shard
    from a uniform random offset, as the authors' notebook drew its batches.
    """
    rng = np.random.default_rng(stream_seed(seed, unit, _BATCH, chunk))
    if scheme == "iid":
        return rng.integers(0, shard_size, size=(CHUNK_STEPS, batch_size))
    if scheme != "window":
        raise ValueError(f"unknown batch scheme {scheme!r}; expected one of {SAMPLING}")
    starts = rng.integers(0, shard_size - batch_size + 1, size=(CHUNK_STEPS, 1))
    return starts + np.arange(batch_size)


class BatchIndexer:
    """Global training-set indices [U, B] per step for a block of (seed, unit) streams.

    shard_offsets/shard_sizes say where each unit's private samples sit in the shard-sorted
    training set. `keys` lists the (seed, unit) of each stacked row, in stacking order.
    """

    def __init__(self, keys, shard_offsets, shard_sizes, batch_size: int, device="cpu", scheme: str = "iid"):
        self.keys = [(int(s), int(u)) for s, u in keys]
        self.offsets = [int(shard_offsets[u]) for _, u in self.keys]
        self.sizes = [int(shard_sizes[u]) for _, u in self.keys]
        self.batch_size = batch_size
        self.scheme = scheme
        if scheme == "window" and min(self.sizes, default=batch_size) < batch_size:
            raise UserInputError(f"--batches window needs every shard to hold at least --batch-size "
                                 f"{batch_size} samples; the smallest holds {min(self.sizes)}")
        self.device = device
        self._chunk_id = -1
        self._chunk: torch.Tensor | None = None  # [CHUNK_STEPS, U, B]
        self._host_chunk: np.ndarray | None = None  # the same, as a numpy array in host memory

    def indices(self, step: int) -> torch.Tensor:
        """Global sample indices [U, B] of the batch each row trains on at `step`."""
        within = self._within(step)  # draws the chunk first when needed
        return self._chunk.select(0, within)

    def host_indices(self, step: int) -> np.ndarray:
        """The same indices as a read-only numpy array (for CPU kernels; no tensor op)."""
        within = self._within(step)
        return self._host_chunk[within]

    def _within(self, step: int) -> int:
        chunk_id, within = divmod(step, CHUNK_STEPS)
        if chunk_id != self._chunk_id:
            self._host_chunk = self._draw(chunk_id)
            self._chunk = torch.from_numpy(self._host_chunk).to(self.device)
            self._host_chunk.flags.writeable = False  # shared with the CPU tensor: both read only
            self._chunk_id = chunk_id
        return within

    def _draw(self, chunk_id: int) -> np.ndarray:
        blocks = [
            batch_chunk(seed, unit, chunk_id, size, self.batch_size, self.scheme) + offset
            for (seed, unit), offset, size in zip(self.keys, self.offsets, self.sizes)
        ]
        return np.stack(blocks, axis=1)  # [CHUNK_STEPS, U, B]

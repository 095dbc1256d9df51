"""Every entry point limits its compute threads itself (threadpoolctl, torch), without
environment variables."""

from __future__ import annotations

import argparse

import numpy as np
import torch
from threadpoolctl import threadpool_info

from decentral import cli, threads
from decentral.theory import TheoryConfig
from decentral.theory.protocols import _Inline, worker_count


def _blas_threads() -> set[int]:
    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


def test_limited_sets_blas_and_torch_then_restores():
    torch_before, blas_before = torch.get_num_threads(), _blas_threads()
    with threads.limited(1):
        assert _blas_threads() == {1} and torch.get_num_threads() == 1
    assert torch.get_num_threads() == torch_before and _blas_threads() == blas_before


def test_per_worker_never_oversubscribes(monkeypatch):
    monkeypatch.setattr(threads, "available_cores", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.per_worker(None, 1) == 8
    assert threads.per_worker(None, 3) == 2
    assert threads.per_worker(None, 16) == 1
    assert threads.per_worker(5, 4) == 5  # --threads wins
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's own cap, when set
    assert threads.per_worker(None, 1) == 3 and threads.per_worker(5, 1) == 5


def test_cli_commands_run_with_limited_threads():
    seen = {}

    def handler(args):
        seen["blas"], seen["torch"] = _blas_threads(), torch.get_num_threads()
        return 0

    assert cli._handle(argparse.Namespace(threads=1, handler=handler)) == 0
    assert seen == {"blas": {1}, "torch": 1}


def test_theory_defaults_to_all_cores_single_threaded_blas(monkeypatch):
    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    cfg = TheoryConfig(depths=(0, 1), sigmas=np.logspace(-1, 1, 40), realizations=8, n_units=5)
    assert worker_count(cfg) == 4
    one_task = TheoryConfig(depths=(0,), sigmas=[1.0], realizations=2, n_units=5,
                            protocols=("non-adiabatic",))
    assert worker_count(one_task) == 1  # never more processes than tasks
    with _Inline(1):
        assert _blas_threads() == {1}

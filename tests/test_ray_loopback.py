"""A local `--backend ray` run listens on loopback only, and with --json its stdout is one JSON object."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.ray


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for line in subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout.splitlines():
        pid, ppid = map(int, line.split())
        children.setdefault(ppid, []).append(pid)
    seen, todo = set(), [root]
    while todo:
        pid = todo.pop()
        seen.add(pid)
        todo += children.get(pid, [])
    return seen


def _listeners(pids: set[int]) -> set[tuple[str, str]]:
    """(local address, process name) of TCP listening sockets owned by `pids`."""
    found = set()
    for line in subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout.splitlines():
        owners = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        if owners & pids:
            name = (re.findall(r'"([^"]+)"', line) or ["?"])[0]
            found.add((line.split()[3], name))
    return found


def _is_loopback(local: str) -> bool:
    host = local.rsplit(":", 1)[0].strip("[]")
    host = host.removeprefix("::ffff:")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # "*" (every interface)
        return False


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2) to list sockets")
def test_local_ray_run_binds_loopback_only_and_json_stays_one_object(mnist_root):
    env = {**os.environ, "DECENTRAL_DATA": mnist_root, "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "token"}
    env.pop("DECENTRAL_RAY_NODE_IP", None)
    cmd = [sys.executable, "-m", "decentral", "run", "--backend", "ray", "--units", "2", "--units-per-actor", "1",
           "--actor-cpus", "0.5", "--steps", "300", "--transient", "0", "--eval-every", "100",
           "--test-samples", "200", "--json"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: set[tuple[str, str]] = set()
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        seen |= _listeners(_descendants(proc.pid))
        time.sleep(0.3)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    assert json.loads(out)["backend"] == "ray"  # the whole of stdout is one JSON object
    names = {name for _, name in seen}
    assert any("raylet" in n or "gcs" in n for n in names), seen  # the probe saw Ray's servers
    wide = sorted(s for s in seen if not _is_loopback(s[0]))
    assert not wide, f"listening beyond loopback: {wide}"


def test_remote_sweep_failure_is_one_line_naming_the_node_and_leaves_out_reusable(tmp_path, capsys):
    """A task failing on its node (here: a data root that node lacks) is one line naming the
    node; the manifest it leaves (no finished point) does not block the same --out."""
    from tests.contract import assert_one_line_error

    out = tmp_path / "s"
    args = ["sweep", "--backend", "ray", "--sigma", "1", "--depth", "0", "--units", "2", "--steps", "5",
            "--transient", "0", "--eval-every", "5", "--test-samples", "50", "--threads", "1", "--quiet",
            "--out", out]
    assert_one_line_error([*args, "--data-root", tmp_path / "no-such-root"], capsys,
                          r"sweep task failed on node 127\.0\.0\.1: UserInputError: data root")
    assert (out / "sweep.json").is_file() and not (out / "points").exists()
    assert_one_line_error([*args, "--data-root", tmp_path / "other-root", "--sigma", "2"], capsys,
                          "sweep task failed on node")  # a different config takes the directory over

"""A real two-node Ray cluster on this machine's loopback (head 127.0.0.2, worker 127.0.0.3),
token auth on, driven through the CLI; plus CLI bad-input checks that must not hang.

The cluster's processes are started in their own process groups and killed by group in the
fixture's teardown, so a failing test never leaves them behind (and `ray stop`, which would
stop every Ray on the machine, is never used).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray

RAY = str(Path(sys.executable).with_name("ray"))
PORT = 6390  # not Ray's default, so a user's own cluster is never touched


def _start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen([RAY, "start", "--block", "--disable-usage-stats", *args], env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for(log: Path, text: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited early:\n{log.read_text()[-2000:]}")
        time.sleep(0.5)
    raise TimeoutError(f"ray start did not report {text!r} within {timeout} s")


def _stop(proc: subprocess.Popen) -> None:
    """Terminate the process group we started, then kill whatever is left of it."""
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace or 5.0)
        except subprocess.TimeoutExpired:
            pass
    # ray start --block may exit before its children: sweep the group once more
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@contextlib.contextmanager
def _cluster(tmp_path, head_cpus: int = 1):
    """A head on 127.0.0.2 and a worker on 127.0.0.3 (1 CPU): (address, env, [head, worker])."""
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    temp = Path("/tmp") / f"dc-ray-{secrets.token_hex(3)}"  # short: unix socket paths are limited
    procs = []
    try:
        head = _start(["--head", f"--port={PORT}", f"--num-cpus={head_cpus}", "--node-ip-address=127.0.0.2",
                       "--include-dashboard=false", f"--temp-dir={temp}"], env, tmp_path / "head.log")
        procs.append(head)
        _wait_for(tmp_path / "head.log", "Ray runtime started", head)
        worker = _start([f"--address=127.0.0.2:{PORT}", "--num-cpus=1", "--node-ip-address=127.0.0.3"],
                        env, tmp_path / "worker.log")
        procs.append(worker)
        _wait_for(tmp_path / "worker.log", "Ray runtime started", worker)
        yield f"127.0.0.2:{PORT}", env, procs
    finally:
        for proc in reversed(procs):
            _stop(proc)


@pytest.fixture
def two_node_cluster(tmp_path):
    with _cluster(tmp_path) as (address, env, _):
        yield address, env


def _decentral(args: list[str], env: dict, timeout: float = 120.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "decentral", "run", *args], env=env, timeout=timeout,
                          capture_output=True, text=True)


def test_two_node_cluster_hosts_units_on_both_nodes(two_node_cluster, mnist_root):
    address, env = two_node_cluster
    env = {**env, "DECENTRAL_DATA": mnist_root}
    out = _decentral(["--backend", "ray", "--address", address, "--units", "4", "--actor-cpus", "0.5",
                      "--transient", "0", "--steps", "20", "--eval-every", "10", "--test-samples", "200",
                      "--json"], env)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["nodes"] == 2 and summary["actors"] == 4
    assert summary["data_plane"] == "collective" and summary["restarts"] == 0
    assert summary["exchange"] == "gloo"  # two nodes: the gloo group, not shared memory
    assert summary["messages"] == 20 * 4 * 2  # recursive doubling over 4 ranks: 2 sends each per step
    assert 0.0 <= summary["accuracy"] <= 1.0


@pytest.mark.parametrize("args, message", [
    (["--address", "127.0.0.9:6391"], "cannot reach a Ray cluster at 127.0.0.9:6391"),
    (["--address", "nonsense"], "--address must be auto or host:port"),
    (["--topology", "topologies/ring_n10.edgelist"], "10"),
])
def test_bad_cluster_input_is_one_line_and_exit_2(args, message, mnist_root):
    env = {**os.environ, "DECENTRAL_DATA": mnist_root}
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-m", "decentral", "run", "--backend", "ray", "--units", "4",
                          "--steps", "10", *args], env=env, cwd=repo, timeout=60, capture_output=True,
                         text=True)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("decentral: error:") and message in lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("graph", ["mean_field", "ring"])
def test_thousand_units_on_two_nodes_equal_the_local_engine(two_node_cluster, mnist_root, tmp_path, graph):
    """N = 1,000 in 2 actors of 500 units, one per loopback node, on the collective plane."""
    from decentral.params import load

    address, env = two_node_cluster
    env = {**env, "DECENTRAL_DATA": mnist_root}
    common = ["--units", "1000", "--transient", "0", "--steps", "6", "--eval-every", "3",
              "--test-samples", "100", "--seed", "5", "--json"]
    if graph == "ring":
        topo = tmp_path / "ring1000.edgelist"
        made = subprocess.run([sys.executable, "-m", "decentral", "topology", "generate", "ring", "--nodes",
                               "1000", "--out", str(topo)], env=env, capture_output=True, text=True, timeout=120)
        assert made.returncode == 0, made.stderr
        common += ["--topology", str(topo)]
    ray_out = _decentral([*common, "--backend", "ray", "--address", address, "--units-per-actor", "500",
                          "--actor-cpus", "1", "--out", str(tmp_path / "ray")], env, timeout=600)
    assert ray_out.returncode == 0, ray_out.stderr[-3000:]
    summary = json.loads(ray_out.stdout.strip().splitlines()[-1])
    assert summary["nodes"] == 2 and summary["actors"] == 2 and summary["data_plane"] == "collective"
    local_out = _decentral([*common, "--out", str(tmp_path / "local")], env, timeout=600)
    assert local_out.returncode == 0, local_out.stderr[-3000:]
    ray_theta, local_theta = load(tmp_path / "ray").theta, load(tmp_path / "local").theta  # [N, P]
    assert ray_theta.shape == local_theta.shape == (1000, 15910)
    assert float((ray_theta - local_theta).abs().max()) <= 1e-5


KILL_NODE_DRIVER = """
import json, os, signal, sys
sys.path.insert(0, "tests")
import conftest
from test_ray_backend import config, make_problem, ray_run

address, worker_pgid = sys.argv[1], int(sys.argv[2])
problem = make_problem((conftest.synthetic_split(10, 40, seed=1), conftest.synthetic_split(10, 10, seed=2)))
cfg = config(address=address, units_per_actor=2, actor_cpus=1.0, checkpoint_every=5)
killed = []

def kill_worker_node(block, handles):
    if block == 1:
        os.killpg(worker_pgid, signal.SIGKILL)
        killed.append(block)

theta, _, extra = ray_run(problem, cfg, on_advance=kill_worker_node)
reference, _, _ = ray_run(problem, cfg)
print(json.dumps({"killed": killed, "restarts": extra["restarts"], "nodes": extra["nodes"],
                  "diff": float((theta - reference).abs().max())}))
"""


@pytest.mark.slow
def test_a_killed_worker_node_is_replaced_on_the_remaining_node(tmp_path):
    """SIGKILL the worker node's whole process group mid-run: its actor is replaced on the head
    (2 CPUs), the gloo group is rebuilt, and the run ends with an undisturbed run's numbers."""
    with _cluster(tmp_path, head_cpus=2) as (address, env, procs):
        env = {**env, "DECENTRAL_RAY_NODE_IP": "127.0.0.2"}
        out = subprocess.run([sys.executable, "-c", KILL_NODE_DRIVER, address, str(procs[1].pid)], env=env,
                             timeout=600, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["killed"] == [1] and result["restarts"] == 1 and result["nodes"] == 2
    assert result["diff"] == 0.0

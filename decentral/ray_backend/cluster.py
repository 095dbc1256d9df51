"""Connecting to Ray, checking the cluster can host the run, and placing actors.

Local Ray (no --address) listens on loopback only: every Ray server (gcs_server, raylet, the
driver's and the actors' core workers, the dashboard agent, the runtime-env agent) binds
127.0.0.1, and the dashboard is off. Ray binds loopback only when its node address is
127.0.0.1 *and* multi-node clusters are disabled (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, the
switch Ray reads for that); otherwise it rewrites 127.0.0.1 to the machine's external address
and binds the wildcard address. A local run sets both for its Ray session (its child
processes inherit the switch) and restores them afterwards. $DECENTRAL_RAY_NODE_IP picks
another node address (then Ray's servers bind every interface). `--address auto` joins the
cluster started on this machine by `ray start`; host:port joins a remote one, and
ray://host:port goes through the Ray client (both checked by a TCP connect first, so an
unreachable address fails in seconds instead of hanging). See docs/ray.md for what a cluster
run binds.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket

from ..errors import UserInputError

LOCAL_IP_ENV = "DECENTRAL_RAY_NODE_IP"
LOCAL_IP = "127.0.0.1"
CLUSTER_SWITCH_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray keeps 127.0.0.1 (binds loopback)
CONNECT_TIMEOUT_S = 5.0


class ClusterError(UserInputError):
    """The cluster cannot host or keep hosting the run (one line, exit code 2)."""


def parse_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UserInputError(f"--address must be auto or host:port, got {address!r}")
    return host, int(port)


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail with one line unless something accepts TCP connections at host:port."""
    host, port = parse_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as err:
        raise UserInputError(f"cannot reach a Ray cluster at {address}: {err.strerror or err}") from None


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


def init_kwargs(address: str | None) -> dict:
    """ray.init arguments for local Ray (None), `auto`, or host:port."""
    quiet = {"include_dashboard": False, "logging_level": "WARNING", "log_to_driver": False}
    if address is None:
        return {**quiet, "_node_ip_address": os.environ.get(LOCAL_IP_ENV, LOCAL_IP)}
    if address == "auto":
        return {"address": "auto", "logging_level": "WARNING", "log_to_driver": False}
    if address.startswith("ray://"):  # Ray client (e.g. the compose head's 127.0.0.1:10001)
        check_reachable(address[len("ray://"):])
        return {"address": address, "logging_level": "WARNING", "log_to_driver": False}
    check_reachable(address)
    kwargs = {"address": address, "logging_level": "WARNING", "log_to_driver": False}
    host, _ = parse_address(address)
    node_ip = os.environ.get(LOCAL_IP_ENV) or (host if _loopback(host) else None)
    if node_ip:  # a cluster on this machine's loopback: the driver is on that address too
        kwargs["_node_ip_address"] = node_ip
    return kwargs


@contextlib.contextmanager
def loopback_only(enabled: bool):
    """Ray's switch that keeps 127.0.0.1 as the node address (servers bound to loopback), set
    in the environment (for Ray's child processes) and in the imported constant, then restored."""
    if not enabled:
        yield
        return
    import ray._private.ray_constants as ray_constants

    old_env, old_flag = os.environ.get(CLUSTER_SWITCH_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[CLUSTER_SWITCH_ENV], ray_constants.ENABLE_RAY_CLUSTER = "0", False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = old_flag
        if old_env is None:
            os.environ.pop(CLUSTER_SWITCH_ENV, None)
        else:
            os.environ[CLUSTER_SWITCH_ENV] = old_env


@contextlib.contextmanager
def connected(address: str | None):
    """Ray connected for the duration; shut down afterwards only if we started it here."""
    import ray

    if ray.is_initialized():
        yield ray
        return
    kwargs = init_kwargs(address)
    with loopback_only(address is None and kwargs.get("_node_ip_address") == LOCAL_IP):
        yield from _session(ray, kwargs, address)


def _session(ray, kwargs: dict, address: str | None):
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserInputError(f"cannot connect to Ray at {address or 'local'}: {first}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def check_capacity(ray, n_actors: int, actor_cpus: float, settle_s: float = 15.0) -> None:
    """One-line error unless the cluster has the CPUs the actors request, free right now.

    CPUs released by actors killed a moment ago take a few seconds to show as free, so a
    shortfall within the cluster's total is re-checked for up to `settle_s` seconds.
    """
    import time

    need = n_actors * actor_cpus
    deadline = time.monotonic() + settle_s
    while True:
        free = ray.available_resources().get("CPU", 0.0)
        total = ray.cluster_resources().get("CPU", 0.0)
        if need <= free + 1e-9:
            return
        if need > total + 1e-9 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    raise ClusterError(
        f"the Ray cluster has {free:g} free CPUs ({total:g} in all) but {n_actors} actors x "
        f"{actor_cpus:g} CPU need {need:g}; raise --units-per-actor, lower --actor-cpus, or add nodes")


def actor_options(actor_cpus: float, spread: bool) -> dict:
    """Options of a unit actor: its CPU request; SPREAD across nodes at start, any node later."""
    options = {"num_cpus": actor_cpus, "max_restarts": 0, "max_concurrency": 1000}
    if spread:
        options["scheduling_strategy"] = "SPREAD"
    return options


def wait_ready(ray, handles: dict, timeout: float) -> dict:
    """{actor index: ready() info}; ClusterError naming actors not placed within timeout."""
    refs = {a: h.ready.remote() for a, h in handles.items()}
    done, pending = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout)
    if pending:
        late = sorted(a for a, r in refs.items() if r in pending)
        raise ClusterError(f"the Ray cluster could not start unit actors {late} within {timeout:g} s "
                           "(not enough free CPUs or memory on any node)")
    try:
        return {a: ray.get(r) for a, r in refs.items()}
    except ray.exceptions.RayError as err:
        raise ClusterError(f"a unit actor failed to start: {root_cause(err)}") from None


def root_cause(err: Exception) -> str:
    """The innermost error line of a Ray error (e.g. a UserInputError raised in __init__)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "Error:" in ln:
            return ln.split("Error:", 1)[1].strip() or ln
    return lines[0] if lines else type(err).__name__

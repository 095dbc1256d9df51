"""docker-compose.yml and Dockerfile, checked by reading them (no Docker engine here)."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_ports_are_published_on_loopback_only():
    services = compose()["services"]
    published = [p for s in services.values() for p in s.get("ports", [])]
    assert published, "the head publishes its ports"
    for port in published:
        assert str(port).startswith("127.0.0.1:"), port


def test_token_auth_is_on_everywhere():
    for name, service in compose()["services"].items():
        env = service["environment"]
        assert env["RAY_AUTH_MODE"] == "token", name
        assert env["RAY_AUTH_TOKEN"].startswith("${RAY_AUTH_TOKEN:?"), name  # required, never a default


def test_head_and_scalable_workers_run_the_project_image():
    services = compose()["services"]
    head, worker = services["ray-head"], services["ray-worker"]
    assert head["build"]["dockerfile"] == "Dockerfile" and head["image"] == worker["image"]
    assert "--head" in head["command"] and "--address=ray-head:6379" in worker["command"]
    assert "ports" not in worker and "container_name" not in worker  # --scale ray-worker=N works
    assert worker["deploy"]["replicas"] >= 1


def test_dockerfile_installs_the_project():
    text = (REPO / "Dockerfile").read_text()
    assert "COPY decentral ./decentral" in text and "pip install ." in text
    assert "RAY_AUTH_MODE=token" in text

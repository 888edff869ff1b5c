"""Crash safety as a tested fact: `rollwise server` is killed with SIGKILL at random moments of rollouts
and restarted on the same data directory; every time the rollout ends as it should, the revision
pointers, routes and history agree, no route process is orphaned or duplicated, and the proxy serves the
right revision. A clean stop afterwards leaves no process behind."""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from rollwise.cli.demo import free_port

from .server_proc import ServerProcess, route_processes

pytestmark = pytest.mark.e2e
NAME = "crashy"
KILLS = 10


def revision(label: str) -> dict[str, Any]:
    return {
        "command": [sys.executable, "-m", "rollwise.examples.model_server", "--port", "{port}", "--version", label,
                    "--startup-delay", "0.3"],
        "health_check": {"path": "/healthz", "interval_seconds": 0.3, "timeout_seconds": 1},
        "startup_timeout_seconds": 20,
        "drain_seconds": 0.2,
        "stop_grace_seconds": 3,
        "label": label,
    }


def wait_ready(client: httpx.Client, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            dep = client.get(f"/v1/deployments/{NAME}").json()
            if dep["lifecycle"] == "ready" and all(
                r["status"] in ("running", "terminated", "failed_to_start") for r in dep["routes"]
            ):
                return dep
        except (httpx.HTTPError, KeyError):
            pass
        assert time.monotonic() < deadline, "the deployment did not settle"
        time.sleep(0.1)


def check_consistent(server: ServerProcess, client: httpx.Client, expected_revision: int, replicas: int) -> None:
    dep = wait_ready(client)
    assert dep["current_revision"] == expected_revision
    assert dep["deploying_revision"] is None
    alive = [r for r in dep["routes"] if r["status"] == "running"]
    assert len(alive) == replicas, dep["routes"]
    assert {r["revision"] for r in alive} == {expected_revision}
    history = client.get(f"/v1/deployments/{NAME}/history").json()
    last_end = [h for h in history if h["lifecycle_to"] == "ready"][-1]
    assert last_end["to_revision"] == expected_revision
    # No orphan, no duplicate: the route processes of this data dir are exactly the running routes'.
    deadline = time.monotonic() + 15
    while True:
        pids = route_processes(server.data_dir)
        running = {r["pid"] for r in client.get(f"/v1/deployments/{NAME}").json()["routes"] if r["status"] == "running"}
        if pids == running:
            break
        assert time.monotonic() < deadline, f"route processes {pids} != running routes {running}"
        time.sleep(0.2)
    # The proxy serves the right revision.
    versions = {
        httpx.get(f"http://127.0.0.1:{server.proxy_port}/d/{NAME}/version", timeout=5).json()["version"]
        for _ in range(10)
    }
    assert versions == {f"v{expected_revision}"}


def test_kill_9_at_random_moments_of_rollouts(tmp_path: Path) -> None:
    rng = random.Random(1049)
    server = ServerProcess(tmp_path / "data", api_port=free_port(), proxy_port=free_port())
    server.start()
    replicas = 2
    try:
        with server.client() as client:
            r = client.post("/v1/deployments", json={
                "name": NAME, "replicas": replicas,
                "policy": {"strategy": "rolling", "max_surge": 1, "max_unavailable": 0},
                "revision": revision("v1"),
            })
            assert r.status_code == 201, r.text
            check_consistent(server, client, 1, replicas)
            expected = 1
            for i in range(KILLS):
                strategy = ("rolling", "blue_green", "recreate")[i % 3]
                policy: dict[str, Any] = {"strategy": strategy}
                if strategy == "blue_green":
                    policy["auto_promote"] = True
                assert client.patch(f"/v1/deployments/{NAME}", json={"policy": policy}).status_code == 200
                number = client.post(f"/v1/deployments/{NAME}/revisions", json=revision(f"v{i + 2}")).json()["number"]
                assert client.post(f"/v1/deployments/{NAME}/rollout", json={"revision": number}).status_code == 202
                time.sleep(rng.uniform(0.0, 1.5))
                server.kill()
                server.start()
                expected = number
                check_consistent(server, client, expected, replicas)
    finally:
        status = server.stop()
    assert status == 0
    deadline = time.monotonic() + 10
    while route_processes(server.data_dir):
        assert time.monotonic() < deadline, "route processes outlived the server's clean stop"
        time.sleep(0.1)

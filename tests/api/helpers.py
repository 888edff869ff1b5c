"""Helpers of the REST API tests: the plane + app + client opener, coordinator driving, request bodies.

Routes of the simulated runtime start in `STARTUP` seconds (real time), so a whole rollout takes a
fraction of a second. `drive(...)` runs the coordinator (one forced round at a time) until a condition
holds; tests that need the coordinator in the background use `rollwise.cli.serve.running` and `wait_for`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from rollwise.api.app import create_app
from rollwise.cli.serve import Plane, ServerConfig, build_plane
from rollwise.runtime.simulated import SimBehaviour

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STARTUP = 0.05
BASE = "http://rollwise.test"


def fast(plane: Plane, *revisions: int, startup: float = STARTUP, **behaviour: Any) -> None:
    """Routes of these revision numbers (default 1..9) start in `startup` seconds."""
    for number in revisions or range(1, 10):
        plane.runtime.set_behaviour(number, SimBehaviour(startup_seconds=startup, **behaviour))  # type: ignore[attr-defined]


async def open_api(data_dir: Path) -> tuple[Any, Plane, httpx.AsyncClient]:
    """(the build_plane context manager, the plane, an authenticated client); close in reverse."""
    cm = build_plane(ServerConfig(data_dir=data_dir, runtime="simulated", proxy=False))
    plane = await cm.__aenter__()
    fast(plane)
    app = create_app(plane.ops, token=TOKEN, coordinator=plane.coordinator)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=BASE, headers=AUTH)
    return cm, plane, client


Check = Callable[[dict[str, Any]], bool]


async def drive(
    plane: Plane, client: httpx.AsyncClient, name: str, until: Check, *, timeout: float = 10.0
) -> dict[str, Any]:
    """Run coordinator rounds until GET /v1/deployments/NAME satisfies `until`; returns that answer."""
    deadline = time.monotonic() + timeout
    while True:
        answer = await client.get(f"/v1/deployments/{name}")
        if answer.status_code == 200 and until(answer.json()):
            return answer.json()
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}: condition not reached in {timeout}s; last: {answer.text}")
        await plane.coordinator.run_once(force=True)
        await asyncio.sleep(0.02)


async def wait_for(
    client: httpx.AsyncClient, name: str, until: Callable[[httpx.Response], bool], *, timeout: float = 10.0
) -> httpx.Response:
    """Poll GET /v1/deployments/NAME (the coordinator runs in the background) until `until` holds."""
    deadline = time.monotonic() + timeout
    while True:
        answer = await client.get(f"/v1/deployments/{name}")
        if until(answer):
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}: condition not reached in {timeout}s; last: {answer.text}")
        await asyncio.sleep(0.05)


def deployment_body(name: str, *, replicas: int = 2, policy: dict[str, Any] | None = None,
                    version: str = "v1", **revision: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "replicas": replicas,
        "revision": {"command": ["model-server", "--port", "{port}", "--version", version], **revision},
    }
    if policy is not None:
        body["policy"] = policy
    return body


def revision_body(version: str, **extra: Any) -> dict[str, Any]:
    return {"command": ["model-server", "--port", "{port}", "--version", version], **extra}


def is_ready(d: dict[str, Any]) -> bool:
    return d["lifecycle"] == "ready" and d["ready_replicas"] == d["replicas"]


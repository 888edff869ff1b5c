"""Helpers of the REST API tests: the plane + app + client opener, coordinator driving, request bodies.

The plane runs on a ManualClock: time moves only when a test moves it, and the simulated runtime takes
its time from that clock, so a route starts after `STARTUP` seconds of fake time and no test waits for
real time to pass. `drive(...)` runs one forced coordinator round, then advances the clock by `TICK`,
until a condition holds; `background(plane)` runs the coordinator loop itself (`run_forever`) and
`wait_for(...)` advances the clock each time that loop is idle on it, until a condition holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from rollwise.api.app import create_app
from rollwise.cli.serve import Plane, ServerConfig, build_plane
from rollwise.control.clock import ManualClock
from rollwise.runtime.simulated import SimBehaviour

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STARTUP = 0.05
"""Fake seconds a simulated route takes to start (the default of `fast`)."""
TICK = 0.1
"""Fake seconds between two rounds of `drive`."""
MAX_ROUNDS = 300
"""Rounds `drive` and `wait_for` run at most before they give up (30 s of fake time at `TICK`)."""
IDLE_TIMEOUT = 10.0
"""Real seconds a background round may take before `wait_for` gives up (a hung round, not time)."""
BASE = "http://rollwise.test"


def fast(plane: Plane, *revisions: int, startup: float = STARTUP, **behaviour: Any) -> None:
    """Routes of these revision numbers (default 1..9) start in `startup` fake seconds."""
    for number in revisions or range(1, 10):
        plane.runtime.set_behaviour(number, SimBehaviour(startup_seconds=startup, **behaviour))  # type: ignore[attr-defined]


def clock_of(plane: Plane) -> ManualClock:
    assert isinstance(plane.clock, ManualClock), plane.clock
    return plane.clock


async def open_api(
    data_dir: Path, *, resources: dict[str, int] | None = None
) -> tuple[Any, Plane, httpx.AsyncClient]:
    """(the build_plane context manager, the plane, an authenticated client); close in reverse.
    `resources`: the simulated node's slots (`rollwise server --resources`)."""
    config = ServerConfig(data_dir=data_dir, runtime="simulated", proxy=False, resources=resources)
    cm = build_plane(config, clock=ManualClock())
    plane = await cm.__aenter__()
    fast(plane)
    app = create_app(plane.ops, token=TOKEN, coordinator=plane.coordinator)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=BASE, headers=AUTH)
    return cm, plane, client


Check = Callable[[dict[str, Any]], bool]


async def drive(plane: Plane, client: httpx.AsyncClient, name: str, until: Check) -> dict[str, Any]:
    """Run coordinator rounds, `TICK` fake seconds apart, until GET /v1/deployments/NAME satisfies
    `until`; returns that answer."""
    clock = clock_of(plane)
    for _ in range(MAX_ROUNDS):
        answer = await client.get(f"/v1/deployments/{name}")
        if answer.status_code == 200 and until(answer.json()):
            return dict(answer.json())
        await plane.coordinator.run_once(force=True)
        clock.advance(TICK)
    raise AssertionError(f"{name}: condition not reached in {MAX_ROUNDS} rounds; last: {answer.text}")


@dataclass
class Background:
    """The coordinator loop running as a task (see `background`)."""

    plane: Plane
    task: asyncio.Task[None]


@asynccontextmanager
async def background(plane: Plane) -> AsyncIterator[Background]:
    """Run `Coordinator.run_forever` in the background for the block (as `rollwise server` does; the
    plane has no proxy, so there is no supervisor to run). Stopped, and its error raised, at exit."""
    stop = asyncio.Event()
    task = asyncio.create_task(plane.coordinator.run_forever(stop))
    try:
        yield Background(plane, task)
    finally:
        stop.set()
        plane.coordinator.wake()
        await task


async def wait_for(
    loop: Background, client: httpx.AsyncClient, name: str, until: Callable[[httpx.Response], bool]
) -> httpx.Response:
    """GET /v1/deployments/NAME until `until` holds; each time the coordinator loop is idle on the
    clock (its round is over), the clock is moved to the end of that wait so the next round runs."""
    clock = clock_of(loop.plane)
    for _ in range(MAX_ROUNDS):
        answer = await client.get(f"/v1/deployments/{name}")
        if until(answer):
            return answer
        left = await asyncio.wait_for(clock.waiting(loop.task), timeout=IDLE_TIMEOUT)
        clock.advance(left)
    raise AssertionError(f"{name}: condition not reached in {MAX_ROUNDS} rounds; last: {answer.text}")


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

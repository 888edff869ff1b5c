"""Zero downtime as a tested fact: real model-server processes behind the real Traefik binary, real
requests through the proxy during rolling and blue-green rollouts, broken revisions rolled back while
the old revision keeps serving, and a crashed route replaced in READY."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

from rollwise.cli.loadgen import LoadGenerator
from rollwise.cli.serve import Plane
from rollwise.model import Lifecycle, RouteStatus, SubStep

from .conftest import model_revision, pid_alive, wait_until

NAME = "sentiment"
READY = lambda d: d.lifecycle is Lifecycle.READY  # noqa: E731


async def start(plane: Plane, policy: dict, replicas: int = 3) -> None:
    await plane.ops.create(name=NAME, replicas=replicas, policy=policy, revision=model_revision("v1"))
    await wait_until(plane, NAME, READY)


def url(plane: Plane) -> str:
    return f"http://127.0.0.1:{plane.config.proxy_port}/d/{NAME}/predict"


async def rollout(plane: Plane, label: str, *extra: str) -> object:
    rev = await plane.ops.add_revision(NAME, model_revision(label, *extra))
    await plane.ops.activate(NAME, rev.number)
    return await wait_until(plane, NAME, READY)


async def test_rolling_then_blue_green_under_load_lose_no_request(plane: Plane) -> None:
    await start(plane, {"strategy": "rolling", "max_surge": 1, "max_unavailable": 0})
    async with LoadGenerator(url(plane), rate=80) as load:
        dep = await rollout(plane, "v2")
        assert dep.sub_step is SubStep.COMPLETED and dep.current_revision == 2
        await plane.ops.patch(NAME, policy={"strategy": "blue_green", "auto_promote": True})
        dep = await rollout(plane, "v3")
        assert dep.sub_step is SubStep.COMPLETED and dep.current_revision == 3
        await asyncio.sleep(1.0)  # v3 serves the traffic after the promotion
    stats = load.stats
    assert stats.sent > 100
    assert stats.failed == 0, dict(stats.errors)
    assert {"v1", "v2", "v3"} <= set(stats.versions)
    routes = await plane.ops.routes(await plane.ops.get(NAME))
    assert sorted(r.revision for r in routes if r.status.is_alive) == [3, 3, 3]


async def test_broken_revisions_roll_back_while_the_old_one_serves(plane: Plane) -> None:
    await start(plane, {"strategy": "rolling", "max_surge": 1, "max_unavailable": 0})
    async with LoadGenerator(url(plane), rate=50) as load:
        dep = await rollout(plane, "v2", "--fail-start")
        assert dep.sub_step is SubStep.ROLLED_BACK and dep.current_revision == 1
        await plane.ops.patch(NAME, policy={"strategy": "blue_green", "auto_promote": True, "promote_delay_seconds": 3})
        dep = await rollout(plane, "v3", "--unhealthy-after", "0.5")
        assert dep.sub_step is SubStep.ROLLED_BACK and dep.current_revision == 1
    assert load.stats.failed == 0, dict(load.stats.errors)
    assert set(load.stats.versions) == {"v1"}
    history = [h.message for h in await plane.ops.history(NAME)]
    assert any("failure_threshold" in m for m in history)


async def test_crashed_route_is_replaced_in_ready(plane: Plane) -> None:
    await start(plane, {"strategy": "rolling"}, replicas=2)
    routes = [r for r in await plane.ops.routes(await plane.ops.get(NAME)) if r.status is RouteStatus.RUNNING]
    victim = routes[0]
    assert victim.pid is not None
    os.killpg(victim.pid, signal.SIGKILL)

    async def replaced() -> bool:
        rs = await plane.ops.routes(await plane.ops.get(NAME))
        running = [r for r in rs if r.status is RouteStatus.RUNNING and r.health.value == "healthy"]
        return victim.id not in {r.id for r in running} and len(running) == 2

    deadline = time.monotonic() + 20
    while not await replaced():
        assert time.monotonic() < deadline, "the crashed route was not replaced"
        await asyncio.sleep(0.1)
    rs = {r.id: r for r in await plane.ops.routes(await plane.ops.get(NAME))}
    assert rs[victim.id].failed and rs[victim.id].status is RouteStatus.TERMINATED
    assert not pid_alive(victim.pid)


async def test_the_proxy_runs_no_health_checks_of_its_own(plane: Plane) -> None:
    # rollwise's prober, with each revision's interval, timeout and thresholds, is the one authority
    # that takes a route out of rotation: Traefik's fixed one-strike check emptied whole deployments.
    await start(plane, {"strategy": "rolling"}, replicas=2)
    text = (plane.config.data_dir / "traefik" / "dynamic.yml").read_text()
    services = json.loads(text)["http"]["services"]
    servers = sum(len(s.get("loadBalancer", {}).get("servers", [])) for s in services.values())
    assert len(services) >= 2 and servers >= 2 and "healthCheck" not in text

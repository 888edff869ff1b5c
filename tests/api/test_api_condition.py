"""The deployment says how it is doing: `fail_open` (and the metric) when every serving route is unhealthy,
`degraded`, `last_error` and `next_restart_at` while a crash-looping revision backs off."""

from __future__ import annotations

import httpx

from rollwise.cli.serve import Plane
from rollwise.runtime.simulated import SimFailure

from .helpers import deployment_body, drive, fast


async def scrape(client: httpx.AsyncClient) -> str:
    return (await httpx.AsyncClient(transport=client._transport, base_url=str(client.base_url)).get("/metrics")).text


async def test_every_route_unhealthy_is_reported_as_fail_open(plane: Plane, client: httpx.AsyncClient) -> None:
    fast(plane, 1, failure=SimFailure.UNHEALTHY, unhealthy_after=0.5)
    body = deployment_body("sick", replicas=2, health_check={"path": "/healthz", "interval_seconds": 0.05,
                                                             "unhealthy_threshold": 2})
    assert (await client.post("/v1/deployments", json=body)).status_code == 201
    dep = await drive(plane, client, "sick", lambda d: d["fail_open"])
    assert dep["degraded"].startswith("every serving route is unhealthy")
    assert len([r for r in dep["routes"] if r["status"] == "running" and r["health"] == "unhealthy"]) == 2
    assert 'rollwise_deployment_fail_open{deployment="sick"} 1.0' in await scrape(client)


async def test_a_crash_loop_says_why_and_when_it_tries_again(plane: Plane, client: httpx.AsyncClient) -> None:
    fast(plane, 1, failure=SimFailure.START)
    assert (await client.post("/v1/deployments", json=deployment_body("loop", replicas=1))).status_code == 201
    dep = await drive(plane, client, "loop", lambda d: d["next_restart_at"] is not None and d["last_error"])
    assert dep["lifecycle"] == "scaling"
    assert "exit code 1" in dep["last_error"] and "simulated: exited before listening" in dep["last_error"]
    assert "failed route(s) in a row" in dep["degraded"] and "exit code 1" in dep["degraded"]
    assert 'rollwise_deployment_fail_open{deployment="loop"}' not in await scrape(client)

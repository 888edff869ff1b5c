"""Capacity through the REST API: revision `resources`, the 422 for a revision no node can hold,
`GET /v1/capacity`, and the devices of routes (simulated node with gpu slots, fake time)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from rollwise.cli.serve import Plane

from .helpers import deployment_body, drive, open_api


@pytest.fixture
async def gpu_api(tmp_path: Path) -> AsyncIterator[tuple[Plane, httpx.AsyncClient]]:
    cm, plane, client = await open_api(tmp_path, resources={"gpu": 2})
    try:
        yield plane, client
    finally:
        await client.aclose()
        await cm.__aexit__(None, None, None)


def ready(dep: dict[str, object]) -> bool:
    return dep["lifecycle"] == "ready"


async def test_capacity_routes_and_revisions_show_who_holds_what(gpu_api: tuple[Plane, httpx.AsyncClient]) -> None:
    plane, client = gpu_api
    empty = await client.get("/v1/capacity")
    assert empty.status_code == 200
    assert empty.json() == {"nodes": [{"name": "sim", "total": {"gpu": 2}, "held": {"gpu": 0},
                                       "free": {"gpu": 2}, "routes": []}]}
    created = await client.post("/v1/deployments", json=deployment_body("chat", replicas=2, resources={"gpu": 1}))
    assert created.status_code == 201, created.text
    dep = await drive(plane, client, "chat", ready)
    assert sorted(tuple(r["devices"]["gpu"]) for r in dep["routes"]) == [(0,), (1,)]
    assert {r["node"] for r in dep["routes"]} == {"sim"}
    [rev] = (await client.get("/v1/deployments/chat/revisions")).json()
    assert rev["resources"] == {"gpu": 1}
    [node] = (await client.get("/v1/capacity")).json()["nodes"]
    assert (node["held"], node["free"]) == ({"gpu": 2}, {"gpu": 0})
    assert sorted((h["deployment"], h["revision"], h["status"], h["holds"]["gpu"], h["devices"]["gpu"][0])
                  for h in node["routes"]) == [("chat", 1, "running", 1, 0), ("chat", 1, "running", 1, 1)]
    assert {h["id"] for h in node["routes"]} == {r["id"] for r in dep["routes"]}


@pytest.mark.parametrize(("resources", "message"), [
    ({"gpu": 3}, "revision.resources.gpu: needs 3 per route, the node has 2"),
    ({"tpu": 1}, "revision.resources.tpu: the node has no tpu slots"),
    ({"gpu": -1}, "revision.resources: gpu: -1 is not between 0 and 1024"),
    ({"gpu": "one"}, "revision.resources: gpu: 'one' is not an integer"),
])
async def test_resources_the_node_cannot_give_are_refused_naming_the_field(
    gpu_api: tuple[Plane, httpx.AsyncClient], resources: dict[str, object], message: str
) -> None:
    _, client = gpu_api
    answer = await client.post("/v1/deployments", json=deployment_body("chat", resources=resources))
    assert answer.status_code == 422, answer.text
    assert answer.json()["message"].startswith(message), answer.json()
    assert (await client.get("/v1/deployments/chat")).status_code == 404


async def test_a_new_revision_is_checked_against_the_node_too(gpu_api: tuple[Plane, httpx.AsyncClient]) -> None:
    plane, client = gpu_api
    assert (await client.post("/v1/deployments", json=deployment_body("chat", replicas=1))).status_code == 201
    body = deployment_body("chat", resources={"gpu": 4})["revision"]
    answer = await client.post("/v1/deployments/chat/revisions", json=body)
    assert answer.status_code == 422
    assert "resources.gpu: needs 4 per route, the node has 2" in answer.json()["message"]
    assert [r["number"] for r in (await client.get("/v1/deployments/chat/revisions")).json()] == [1]

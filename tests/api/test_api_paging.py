"""`GET /v1/deployments` a page at a time: limit, the opaque cursor (X-Next-Cursor and Link), the
lifecycle and deploying filters, the summary form, and one-line 422s naming the parameter.
"""

from __future__ import annotations

from typing import Any

import httpx

from rollwise.cli.serve import Plane

from .helpers import deployment_body, drive, is_ready, revision_body


async def create(client: httpx.AsyncClient, *names: str, replicas: int = 1) -> None:
    for name in names:
        answer = await client.post("/v1/deployments", json=deployment_body(name, replicas=replicas))
        assert answer.status_code == 201, answer.text


async def pages(client: httpx.AsyncClient, **params: Any) -> list[list[dict[str, Any]]]:
    """Every page, following X-Next-Cursor; checks that Link names the same next page."""
    found: list[list[dict[str, Any]]] = []
    query: dict[str, Any] = dict(params)
    while True:
        answer = await client.get("/v1/deployments", params=query)
        assert answer.status_code == 200, answer.text
        found.append(answer.json())
        cursor = answer.headers.get("x-next-cursor")
        if cursor is None:
            assert "link" not in answer.headers
            return found
        link = answer.headers["link"]
        assert link.startswith("</v1/deployments?") and link.endswith('>; rel="next"') and f"cursor={cursor}" in link
        following = await client.get(link[1:link.index(">")])
        assert following.json() == (await client.get("/v1/deployments", params={**query, "cursor": cursor})).json()
        query["cursor"] = cursor


async def test_pages_cover_every_deployment_once_in_creation_order(client: httpx.AsyncClient) -> None:
    names = [f"m{i:02d}" for i in range(7)]
    await create(client, *reversed(names))  # created z..a: the order is creation, not name
    got = await pages(client, limit=3)
    assert [len(p) for p in got] == [3, 3, 1]
    assert [d["name"] for p in got for d in p] == list(reversed(names))
    exact = await pages(client, limit=7)
    assert [len(p) for p in exact] == [7]  # no empty last page when the count fits
    default = await client.get("/v1/deployments")
    assert [d["name"] for d in default.json()] == list(reversed(names)) and "x-next-cursor" not in default.headers


async def test_default_page_is_100(client: httpx.AsyncClient, plane: Plane) -> None:
    await create(client, *(f"d{i:03d}" for i in range(101)), replicas=0)
    first = await client.get("/v1/deployments", params={"summary": "true"})
    assert len(first.json()) == 100 and first.headers["x-next-cursor"]
    rest = await client.get("/v1/deployments", params={"cursor": first.headers["x-next-cursor"]})
    assert [d["name"] for d in rest.json()] == ["d100"]


async def test_cursor_keeps_its_place_when_deployments_come_and_go(client: httpx.AsyncClient) -> None:
    await create(client, "a1", "a2", "a3", "a4")
    first = await client.get("/v1/deployments", params={"limit": 2})
    cursor = first.headers["x-next-cursor"]
    assert (await client.delete("/v1/deployments/a2")).status_code == 202  # on the page already read
    await create(client, "a5")
    rest = await pages(client, limit=2, cursor=cursor)
    assert [d["name"] for p in rest for d in p] == ["a3", "a4", "a5"]


async def test_filters_and_summary(plane: Plane, client: httpx.AsyncClient) -> None:
    await create(client, "steady", "moving")
    for name in ("steady", "moving"):
        await drive(plane, client, name, is_ready)
    await create(client, "fresh")  # no round runs after this: it stays pending
    number = (await client.post("/v1/deployments/moving/revisions", json=revision_body("v2"))).json()["number"]
    assert (await client.post("/v1/deployments/moving/rollout", json={"revision": number})).status_code == 202

    def names(**params: Any) -> list[str]:
        return [d["name"] for p in got_pages[repr(params)] for d in p]

    got_pages: dict[str, list[list[dict[str, Any]]]] = {}
    for params in ({"deploying": "true"}, {"deploying": "false"}, {"lifecycle": "ready"},
                   {"lifecycle": ["ready", "deploying"]}, {"lifecycle": "deploying", "limit": 1}):
        got_pages[repr(params)] = await pages(client, **params)
    assert names(deploying="true") == ["moving"]
    assert names(deploying="false") == ["steady", "fresh"]
    assert names(lifecycle="ready") == ["steady"]
    assert (await client.get("/v1/deployments/fresh")).json()["lifecycle"] == "pending"
    assert names(lifecycle=["ready", "deploying"]) == ["steady", "moving"]
    assert names(lifecycle="deploying", limit=1) == ["moving"]

    full = (await client.get("/v1/deployments")).json()
    summary = (await client.get("/v1/deployments", params={"summary": "true"})).json()
    assert [d["name"] for d in summary] == [d["name"] for d in full]
    steady = next(d for d in full if d["name"] == "steady")
    assert len(steady["routes"]) == 1
    for short, long in zip(summary, full, strict=True):
        assert "routes" not in short
        assert short == {k: v for k, v in long.items() if k != "routes"}
    assert next(d for d in summary if d["name"] == "steady")["ready_replicas"] == 1


async def test_bad_parameters_are_422_naming_them(client: httpx.AsyncClient) -> None:
    await create(client, "one", "two")
    good = (await client.get("/v1/deployments", params={"limit": 1})).headers["x-next-cursor"]
    for params, field in (
        ({"limit": 0}, "limit"), ({"limit": 1001}, "limit"), ({"limit": "ten"}, "limit"),
        ({"cursor": "nonsense"}, "cursor"), ({"cursor": good + "x"}, "cursor"), ({"cursor": "c1.LTE"}, "cursor"),
        ({"cursor": "c1." + "A" * 70}, "cursor"), ({"lifecycle": "sleeping"}, "lifecycle"),
        ({"deploying": "maybe"}, "deploying"),
    ):
        answer = await client.get("/v1/deployments", params=params)
        assert answer.status_code == 422, (params, answer.text)
        body = answer.json()
        assert body["error"] == "invalid" and field in body["message"].split(":")[0], (params, body)
        assert "\n" not in body["message"]

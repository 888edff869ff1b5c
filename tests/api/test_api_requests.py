"""One request, one transaction: a write endpoint reads the deployment once, decides through the transition
module and writes one guarded ChangeSet; concurrent requests end as if they had been sent one after the
other (no lost PATCH, one rollout for ten concurrent undos)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from sqlalchemy import event

from rollwise.cli.serve import Plane

from .helpers import deployment_body, drive, is_ready, revision_body


@contextmanager
def statements(plane: Plane) -> Iterator[list[str]]:
    seen: list[str] = []

    def on_execute(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        seen.append(" ".join(statement.split()).upper())

    engine = plane.store.engine.sync_engine
    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)


def transactions(seen: list[str]) -> list[list[str]]:
    """The statements grouped by transaction (SQLite: every transaction starts with BEGIN...)."""
    groups: list[list[str]] = []
    for statement in seen:
        if statement.startswith("BEGIN"):
            groups.append([statement])
        elif groups:
            groups[-1].append(statement)
    return groups


async def ready_with_revision_2(plane: Plane, client: httpx.AsyncClient, name: str) -> None:
    assert (await client.post("/v1/deployments", json=deployment_body(name, replicas=2))).status_code == 201
    await drive(plane, client, name, is_ready)
    assert (await client.post(f"/v1/deployments/{name}/revisions", json=revision_body("v2"))).status_code == 201


async def test_rollout_and_patch_read_three_times_and_write_once(plane: Plane, client: httpx.AsyncClient) -> None:
    await ready_with_revision_2(plane, client, "counted")
    for method, path, body in (
        ("POST", "/v1/deployments/counted/rollout", {"revision": 2}),
        ("PATCH", "/v1/deployments/counted", {"replicas": 3, "policy": {"max_surge": 2}}),
    ):
        with statements(plane) as seen:
            answer = await client.request(method, path, json=body)
        assert answer.status_code in (200, 202), answer.text
        groups = transactions(seen)
        writes = [g for g in groups if g[0] == "BEGIN IMMEDIATE"]
        reads = [s for g in groups if g[0] == "BEGIN" for s in g[1:]]
        assert len(writes) == 1, groups
        assert len(reads) <= 3 and all(s.startswith("SELECT") for s in reads), reads
    dep = (await client.get("/v1/deployments/counted")).json()
    assert (dep["lifecycle"], dep["deploying_revision"], dep["replicas"]) == ("deploying", 2, 3)
    assert dep["policy"]["max_surge"] == 2


async def test_concurrent_patches_of_different_fields_lose_nothing(plane: Plane, client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/deployments", json=deployment_body("patched", replicas=1))).status_code == 201
    fields = {"max_surge": 3, "max_unavailable": 1, "auto_promote": True, "promote_delay_seconds": 7,
              "progress_deadline_seconds": 99, "on_deadline": "pause", "failure_threshold": 4,
              "strategy": "blue_green"}
    bodies: list[dict[str, Any]] = [{"policy": {k: v}} for k, v in fields.items()]
    bodies += [{"replicas": n} for n in range(8, 20)]
    answers = await asyncio.gather(*(client.patch("/v1/deployments/patched", json=b) for b in bodies))
    assert [a.status_code for a in answers] == [200] * 20, [a.text for a in answers if a.status_code != 200]
    dep = (await client.get("/v1/deployments/patched")).json()
    assert {k: dep["policy"][k] for k in fields} == fields
    assert dep["replicas"] in range(8, 20)
    history = (await client.get("/v1/deployments/patched/history")).json()
    assert sum(h["attempts"] for h in history if h["message"].startswith("changed ")) == 20


async def test_concurrent_identical_verbs_answer_like_sequential_ones(plane: Plane, client: httpx.AsyncClient) -> None:
    await ready_with_revision_2(plane, client, "undone")
    assert (await client.post("/v1/deployments/undone/rollout", json={"revision": 2})).status_code == 202
    await drive(plane, client, "undone", lambda d: d["lifecycle"] == "ready" and d["current_revision"] == 2)

    undos = await asyncio.gather(*(client.post("/v1/deployments/undone/undo") for _ in range(10)))
    assert sorted(a.status_code for a in undos) == [202] + [409] * 9, [a.text for a in undos]
    assert {a.json()["error"] for a in undos if a.status_code == 409} == {"rollout.in_progress"}
    pauses = await asyncio.gather(*(client.post("/v1/deployments/undone/pause") for _ in range(10)))
    assert sorted(a.status_code for a in pauses) == [202] + [409] * 9
    # Sent one after the other, the same answers.
    assert (await client.post("/v1/deployments/undone/undo")).status_code == 409
    assert (await client.post("/v1/deployments/undone/pause")).status_code == 409
    dep = (await client.get("/v1/deployments/undone")).json()
    assert (dep["deploying_revision"], dep["paused"]) == (1, True)
    metrics = (await httpx.AsyncClient(transport=client._transport, base_url=str(client.base_url)).get("/metrics")).text
    assert 'rollwise_rollouts_started_total{strategy="rolling"} 2.0' in metrics

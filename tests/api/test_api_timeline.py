"""GET /v1/deployments/{name}/rollouts and GET /v1/deployments/{name}/rollouts/{id}/timeline (docs/api.md,
"Rollout timeline"): real rollouts on the plane (simulated runtime, manual clock), read over HTTP."""

from __future__ import annotations

from datetime import datetime

import httpx

from rollwise.cli.serve import Plane

from .helpers import BASE, deployment_body, drive, is_ready, revision_body


async def roll_out(plane: Plane, client: httpx.AsyncClient, name: str, version: str, number: int) -> None:
    assert (await client.post(f"/v1/deployments/{name}/revisions", json=revision_body(version))).status_code == 201
    answer = await client.post(f"/v1/deployments/{name}/rollout", json={"revision": number})
    assert answer.status_code == 202, answer.text
    await drive(plane, client, name, lambda d: is_ready(d) and d["current_revision"] == number)


async def test_rollouts_and_a_finished_rollouts_timeline(plane: Plane, client: httpx.AsyncClient) -> None:
    policy = {"strategy": "rolling", "max_surge": 1, "max_unavailable": 0}
    assert (await client.post("/v1/deployments", json=deployment_body("svc", replicas=3, policy=policy))).status_code == 201
    await drive(plane, client, "svc", is_ready)
    assert (await client.get("/v1/deployments/svc/rollouts")).json() == []

    await roll_out(plane, client, "svc", "v2", 2)
    await roll_out(plane, client, "svc", "v3", 3)

    listed = await client.get("/v1/deployments/svc/rollouts")
    assert listed.status_code == 200
    rollouts = listed.json()
    assert [(r["from_revision"], r["to_revision"], r["strategy"], r["outcome"]) for r in rollouts] == [
        (1, 2, "rolling", "completed"), (2, 3, "rolling", "completed")]
    assert rollouts[0]["id"] < rollouts[1]["id"]
    assert datetime.fromisoformat(rollouts[0]["ended_at"]) <= datetime.fromisoformat(rollouts[1]["started_at"])

    answer = await client.get(f"/v1/deployments/svc/rollouts/{rollouts[1]['id']}/timeline")
    assert answer.status_code == 200
    t = answer.json()
    assert {k: t[k] for k in rollouts[1]} == rollouts[1]
    samples = t["samples"]
    assert samples[0]["ready"] == {"2": 3, "3": 0} and samples[0]["weights"] == {"2": 100, "3": 0}
    assert samples[-1]["ready"] == {"2": 0, "3": 3} and samples[-1]["weights"] == {"2": 0, "3": 100}
    assert samples[-1]["at"] == t["ended_at"]
    assert all(sum(s["weights"].values()) == 100 for s in samples)
    assert {"2": 2, "3": 1} in [s["ready"] for s in samples]
    times = [datetime.fromisoformat(s["at"]) for s in samples]
    assert times == sorted(times)
    kinds = [e["kind"] for e in t["events"]]
    assert kinds[0] == "started" and kinds[-1] == "completed" and "wave" in kinds, kinds
    assert t["events"][0]["message"] == "rolling: rollout of revision 3 started (revision 2 serving)"
    assert all("\n" not in e["message"] for e in t["events"])


async def test_a_running_rollout_and_an_aborted_one(plane: Plane, client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/deployments", json=deployment_body(
        "bg", replicas=2, policy={"strategy": "blue_green"}))).status_code == 201
    await drive(plane, client, "bg", is_ready)
    assert (await client.post("/v1/deployments/bg/revisions", json=revision_body("v2"))).status_code == 201
    assert (await client.post("/v1/deployments/bg/rollout", json={"revision": 2})).status_code == 202
    await drive(plane, client, "bg", lambda d: d["sub_step"] == "awaiting_promotion")

    [running] = (await client.get("/v1/deployments/bg/rollouts")).json()
    assert (running["outcome"], running["ended_at"]) == ("in_progress", None)
    t = (await client.get(f"/v1/deployments/bg/rollouts/{running['id']}/timeline")).json()
    assert t["samples"][-1] == {"at": t["samples"][-1]["at"], "ready": {"1": 2, "2": 2}, "weights": {"1": 100, "2": 0}}
    assert t["events"][-1]["kind"] == "paused"

    assert (await client.post("/v1/deployments/bg/abort")).status_code == 202
    await drive(plane, client, "bg", is_ready)
    [aborted] = (await client.get("/v1/deployments/bg/rollouts")).json()
    assert aborted["outcome"] == "aborted" and aborted["ended_at"] is not None
    t = (await client.get(f"/v1/deployments/bg/rollouts/{aborted['id']}/timeline")).json()
    assert "aborted" in [e["kind"] for e in t["events"]]
    assert t["samples"][-1]["ready"] == {"1": 2, "2": 0}


async def test_unknown_deployment_or_rollout_is_404_and_the_token_is_needed(
    plane: Plane, client: httpx.AsyncClient
) -> None:
    assert (await client.post("/v1/deployments", json=deployment_body("a", replicas=1))).status_code == 201
    assert (await client.post("/v1/deployments", json=deployment_body("b", replicas=1))).status_code == 201
    await drive(plane, client, "a", is_ready)
    await drive(plane, client, "b", is_ready)
    assert (await client.post("/v1/deployments/b/revisions", json=revision_body("v2"))).status_code == 201
    assert (await client.post("/v1/deployments/b/rollout", json={"revision": 2})).status_code == 202
    [theirs] = (await client.get("/v1/deployments/b/rollouts")).json()

    missing = await client.get("/v1/deployments/nope/rollouts")
    assert missing.status_code == 404 and missing.json() == {"error": "not_found", "message": "deployment 'nope' not found"}
    other = await client.get(f"/v1/deployments/a/rollouts/{theirs['id']}/timeline")
    assert other.status_code == 404
    assert other.json() == {"error": "not_found", "message": f"deployment 'a' has no rollout {theirs['id']}"}
    assert (await client.get("/v1/deployments/a/rollouts/0/timeline")).status_code == 422
    bad = await client.get("/v1/deployments/a/rollouts/x/timeline")
    assert bad.status_code == 422 and "rollout_id" in bad.json()["message"]

    anon = httpx.AsyncClient(transport=client._transport, base_url=BASE)
    assert (await anon.get("/v1/deployments/b/rollouts")).status_code == 401
    assert (await anon.get(f"/v1/deployments/b/rollouts/{theirs['id']}/timeline")).status_code == 401


async def test_the_openapi_schema_documents_the_timeline(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    assert "/v1/deployments/{name}/rollouts" in schema["paths"]
    timeline = schema["paths"]["/v1/deployments/{name}/rollouts/{rollout_id}/timeline"]["get"]
    assert timeline["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TimelineOut"}
    props = schema["components"]["schemas"]["TimelineOut"]["properties"]
    assert {"id", "from_revision", "to_revision", "strategy", "started_at", "ended_at", "outcome", "samples",
            "events"} <= set(props)
    kinds = schema["components"]["schemas"]["TimelineEventOut"]["properties"]["kind"]["enum"]
    assert set(kinds) == {"started", "wave", "step", "paused", "promoted", "rollback", "completed", "aborted", "error"}

"""Scenario tests of the REST API: whole lifecycles driven through HTTP against a real control plane
(simulated runtime, SQLite file), asserting what a client sees — lifecycles, sub-steps, revisions,
history, plan, metrics — not internal calls.
"""

from __future__ import annotations

from typing import Any

import httpx

from rollwise.cli.serve import Plane
from rollwise.runtime.simulated import SimFailure

from .helpers import background, deployment_body, drive, fast, is_ready, revision_body, wait_for

ROUTE_KEYS = {"id", "revision", "status", "health", "ready", "traffic", "traffic_ratio", "address", "failed",
              "detail", "created_at", "status_updated_at"}


async def create_ready(plane: Plane, client: httpx.AsyncClient, name: str, **kwargs: Any) -> dict[str, Any]:
    answer = await client.post("/v1/deployments", json=deployment_body(name, **kwargs))
    assert answer.status_code == 201, answer.text
    return await drive(plane, client, name, is_ready)


async def start_rollout(client: httpx.AsyncClient, name: str, version: str, **extra: Any) -> int:
    rev = await client.post(f"/v1/deployments/{name}/revisions", json=revision_body(version, **extra))
    assert rev.status_code == 201, rev.text
    number = rev.json()["number"]
    answer = await client.post(f"/v1/deployments/{name}/rollout", json={"revision": number})
    assert answer.status_code == 202, answer.text
    assert answer.json()["lifecycle"] == "deploying"
    assert answer.json()["deploying_revision"] == number
    return int(number)


def ended(d: dict[str, Any]) -> bool:
    return d["lifecycle"] == "ready" and d["sub_step"] in ("completed", "rolled_back")


async def test_create_goes_pending_scaling_ready(plane: Plane, client: httpx.AsyncClient) -> None:
    answer = await client.post("/v1/deployments", json=deployment_body("alpha", replicas=3))
    assert answer.status_code == 201
    created = answer.json()
    assert created["name"] == "alpha" and created["lifecycle"] == "pending"
    assert created["current_revision"] == 1 and created["deploying_revision"] is None
    assert created["policy"]["strategy"] == "rolling" and created["routes"] == []
    seen = {created["lifecycle"]}

    def note(d: dict[str, Any]) -> bool:
        seen.add(d["lifecycle"])
        return is_ready(d)

    ready = await drive(plane, client, "alpha", note)
    assert seen >= {"pending", "ready"}
    assert len(ready["routes"]) == 3
    for route in ready["routes"]:
        assert ROUTE_KEYS <= set(route)
        assert route["status"] == "running" and route["revision"] == 1 and route["ready"]
        assert route["traffic"] == "active" and route["traffic_ratio"] == 1.0
    history = (await client.get("/v1/deployments/alpha/history")).json()
    steps = [(h["lifecycle_from"], h["lifecycle_to"]) for h in history]
    assert ("pending", "scaling") in steps and ("scaling", "ready") in steps
    listed = (await client.get("/v1/deployments")).json()
    assert [d["name"] for d in listed] == ["alpha"]


async def test_rolling_rollout_completes(plane: Plane, client: httpx.AsyncClient) -> None:
    await create_ready(plane, client, "roll", replicas=2, policy={"max_surge": 1, "max_unavailable": 0})
    number = await start_rollout(client, "roll", "v2")
    done = await drive(plane, client, "roll", ended)
    assert done["sub_step"] == "completed" and done["current_revision"] == number
    assert {r["revision"] for r in done["routes"] if r["status"] == "running"} == {number}
    revisions = (await client.get("/v1/deployments/roll/revisions")).json()
    assert [r["number"] for r in revisions] == [1, 2]
    assert revisions[1]["command"][-1] == "v2"
    history = (await client.get("/v1/deployments/roll/history")).json()
    assert any(h["result"] == "operator" and h["to_revision"] == number for h in history)
    assert history[-1]["sub_step"] == "completed" and history[-1]["lifecycle_to"] == "ready"
    metrics = (await client.get("/metrics")).text
    assert 'rollwise_rollouts_started_total{strategy="rolling"} 1.0' in metrics
    assert 'rollwise_rollouts_completed_total{strategy="rolling"} 1.0' in metrics


async def test_activating_the_serving_revision_is_a_no_op(plane: Plane, client: httpx.AsyncClient) -> None:
    before = await create_ready(plane, client, "noop", replicas=1)
    answer = await client.post("/v1/deployments/noop/rollout", json={"revision": 1})
    assert answer.status_code == 202
    assert answer.json()["lifecycle"] == "ready" and answer.json()["version"] == before["version"]
    assert "rollwise_rollouts_started_total{" not in (await client.get("/metrics")).text


async def test_blue_green_awaits_promotion_then_promotes(plane: Plane, client: httpx.AsyncClient) -> None:
    await create_ready(plane, client, "bg", replicas=2, policy={"strategy": "blue_green"})
    number = await start_rollout(client, "bg", "v2")
    waiting = await drive(plane, client, "bg", lambda d: d["sub_step"] == "awaiting_promotion")
    green = [r for r in waiting["routes"] if r["revision"] == number]
    blue = [r for r in waiting["routes"] if r["revision"] == 1]
    assert len(green) == 2 and all(r["ready"] for r in green)
    assert sum(r["traffic_ratio"] for r in blue if r["traffic"] == "active") > 0
    assert all(r["traffic"] == "inactive" or r["traffic_ratio"] == 0 for r in green)
    answer = await client.post("/v1/deployments/bg/promote")
    assert answer.status_code == 202 and answer.json()["promote_requested"] is True
    done = await drive(plane, client, "bg", ended)
    assert done["sub_step"] == "completed" and done["current_revision"] == number
    assert 'rollwise_rollouts_completed_total{strategy="blue_green"} 1.0' in (await client.get("/metrics")).text


async def test_pause_holds_the_rollout_and_resume_finishes_it(plane: Plane, client: httpx.AsyncClient) -> None:
    await create_ready(plane, client, "pz", replicas=2, policy={"max_surge": 1, "max_unavailable": 0})
    fast(plane, 2, startup=0.3)
    await start_rollout(client, "pz", "v2")
    paused = await client.post("/v1/deployments/pz/pause")
    assert paused.status_code == 202 and paused.json()["paused"] is True
    held = await drive(plane, client, "pz", lambda d: d["sub_step"] == "paused")
    for _ in range(5):
        await plane.coordinator.run_once(force=True)
    still = (await client.get("/v1/deployments/pz")).json()
    assert still["lifecycle"] == "deploying" and still["sub_step"] == "paused"
    assert still["current_revision"] == held["current_revision"] == 1
    again = await client.post("/v1/deployments/pz/pause")
    assert again.status_code == 409 and "already paused" in again.json()["message"]
    resumed = await client.post("/v1/deployments/pz/resume")
    assert resumed.status_code == 202 and resumed.json()["paused"] is False
    done = await drive(plane, client, "pz", ended)
    assert done["sub_step"] == "completed" and done["current_revision"] == 2


async def test_abort_rolls_back(plane: Plane, client: httpx.AsyncClient) -> None:
    await create_ready(plane, client, "ab", replicas=2, policy={"strategy": "blue_green"})
    await start_rollout(client, "ab", "v2")
    await drive(plane, client, "ab", lambda d: d["sub_step"] == "awaiting_promotion")
    answer = await client.post("/v1/deployments/ab/abort")
    assert answer.status_code == 202 and answer.json()["abort_requested"] is True
    done = await drive(plane, client, "ab", ended)
    assert done["sub_step"] == "rolled_back" and done["current_revision"] == 1
    assert done["rollback_reason"] == "aborted"
    assert {r["revision"] for r in done["routes"] if r["status"] == "running"} == {1}
    metrics = (await client.get("/metrics")).text
    assert 'rollwise_rollouts_rolled_back_total{strategy="blue_green"} 1.0' in metrics


async def test_a_failing_revision_rolls_back_on_its_own(plane: Plane, client: httpx.AsyncClient) -> None:
    await create_ready(plane, client, "bad", replicas=1, policy={"max_surge": 1, "max_unavailable": 0})
    fast(plane, 2, failure=SimFailure.START)
    await start_rollout(client, "bad", "v2-broken")
    done = await drive(plane, client, "bad", ended)
    assert done["sub_step"] == "rolled_back" and done["current_revision"] == 1
    assert done["rollback_reason"] == "failure_threshold"
    history = (await client.get("/v1/deployments/bad/history")).json()
    assert history[-1]["sub_step"] == "rolled_back"


async def test_undo_rolls_out_the_previous_revision(plane: Plane, client: httpx.AsyncClient) -> None:
    await create_ready(plane, client, "un", replicas=1)
    await start_rollout(client, "un", "v2")
    await drive(plane, client, "un", ended)
    answer = await client.post("/v1/deployments/un/undo")
    assert answer.status_code == 202
    assert answer.json()["lifecycle"] == "deploying" and answer.json()["deploying_revision"] == 1
    done = await drive(plane, client, "un", ended)
    assert done["sub_step"] == "completed" and done["current_revision"] == 1
    assert 'rollwise_rollouts_started_total{strategy="rolling"} 2.0' in (await client.get("/metrics")).text


async def test_supersede_replaces_a_rollout_in_progress(plane: Plane, client: httpx.AsyncClient) -> None:
    await create_ready(plane, client, "sup", replicas=1, policy={"strategy": "blue_green"})
    await start_rollout(client, "sup", "v2")
    rev3 = await client.post("/v1/deployments/sup/revisions", json=revision_body("v3"))
    refused = await client.post("/v1/deployments/sup/rollout", json={"revision": rev3.json()["number"]})
    assert refused.status_code == 409 and refused.json()["error"] == "rollout.in_progress"
    answer = await client.post("/v1/deployments/sup/rollout", json={"revision": 3, "supersede": True})
    assert answer.status_code == 202 and answer.json()["deploying_revision"] == 3
    await drive(plane, client, "sup", lambda d: d["sub_step"] == "awaiting_promotion")
    await client.post("/v1/deployments/sup/promote")
    done = await drive(plane, client, "sup", ended)
    assert done["current_revision"] == 3


async def test_patch_scales_and_merges_policy(plane: Plane, client: httpx.AsyncClient) -> None:
    await create_ready(plane, client, "pt", replicas=1, policy={"max_surge": 2, "progress_deadline_seconds": 30})
    answer = await client.patch("/v1/deployments/pt", json={"replicas": 3, "policy": {"max_unavailable": 1}})
    assert answer.status_code == 200, answer.text
    policy = answer.json()["policy"]
    assert policy["max_surge"] == 2 and policy["max_unavailable"] == 1
    assert policy["progress_deadline_seconds"] == 30
    scaled = await drive(plane, client, "pt", lambda d: is_ready(d) and len(d["routes"]) == 3)
    assert scaled["replicas"] == 3
    empty = await client.patch("/v1/deployments/pt", json={})
    assert empty.status_code == 200 and empty.json()["version"] == scaled["version"]
    history = (await client.get("/v1/deployments/pt/history")).json()
    assert any("replicas 1 -> 3" in h["message"] for h in history)


async def test_delete_drains_to_destroyed_then_404(plane: Plane, client: httpx.AsyncClient) -> None:
    await create_ready(plane, client, "gone", replicas=2, drain_seconds=0)
    answer = await client.delete("/v1/deployments/gone")
    assert answer.status_code == 202 and answer.json()["lifecycle"] == "destroying"
    async with background(plane) as loop:
        await wait_for(loop, client, "gone", lambda a: a.status_code == 404)
    missing = await client.get("/v1/deployments/gone")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert (await client.get("/v1/deployments")).json() == []
    again = await client.post("/v1/deployments", json=deployment_body("gone", replicas=1))
    assert again.status_code == 201 and again.json()["current_revision"] == 1


async def test_plan_shows_the_next_cycle_decision(plane: Plane, client: httpx.AsyncClient) -> None:
    await create_ready(plane, client, "pl", replicas=2, policy={"max_surge": 1, "max_unavailable": 0})
    steady = await client.get("/v1/deployments/pl/plan")
    assert steady.status_code == 200
    assert set(steady.json()) >= {"sub_step", "create", "terminate", "traffic", "mode", "reason"}
    assert steady.json()["create"] == [] and steady.json()["terminate"] == []
    # A READY deployment's plan is the replica reconciler's, in its own words (not "rolled back").
    assert steady.json()["mode"] == "forward" and steady.json()["sub_step"] == "completed"
    assert steady.json()["reason"] == "replicas: nothing to change (desired 2 of revision 1)"
    await client.patch("/v1/deployments/pl", json={"replicas": 3})
    grow = (await client.get("/v1/deployments/pl/plan")).json()
    assert grow["reason"] == "replicas: creating 1 (desired 3 of revision 1)" and len(grow["create"]) == 1
    await client.patch("/v1/deployments/pl", json={"replicas": 2})
    await start_rollout(client, "pl", "v2")
    before = (await client.get("/v1/deployments/pl")).json()
    plan = (await client.get("/v1/deployments/pl/plan")).json()
    assert plan["mode"] == "forward" and plan["sub_step"] == "provisioning"
    assert plan["create"] == [{"revision": "r2", "traffic": "active", "traffic_ratio": 1.0}]
    assert plan["terminate"] == [] and isinstance(plan["reason"], str) and plan["reason"]
    assert (await client.get("/v1/deployments/pl")).json() == before  # a dry run writes nothing
    await plane.coordinator.run_once(force=True)
    after = (await client.get("/v1/deployments/pl")).json()
    assert sum(1 for r in after["routes"] if r["revision"] == 2) == 1


async def test_rollout_with_the_coordinator_in_the_background(plane: Plane, client: httpx.AsyncClient) -> None:
    async with background(plane) as loop:
        await client.post("/v1/deployments", json=deployment_body("bgd", replicas=2))
        await wait_for(loop, client, "bgd", lambda a: is_ready(a.json()))
        await start_rollout(client, "bgd", "v2")
        done = await wait_for(loop, client, "bgd", lambda a: ended(a.json()))
    assert done.json()["sub_step"] == "completed"


async def test_metrics_text(plane: Plane, client: httpx.AsyncClient) -> None:
    await create_ready(plane, client, "met", replicas=2)
    answer = await httpx.AsyncClient(transport=client._transport, base_url=str(client.base_url)).get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    text = answer.text
    for family in ("rollwise_rollouts_started_total", "rollwise_rollouts_completed_total",
                   "rollwise_rollouts_rolled_back_total", "rollwise_cycle_duration_seconds_bucket",
                   "rollwise_routes", "rollwise_deployments"):
        assert f"# TYPE {family.removesuffix('_total').removesuffix('_bucket')}" in text
    assert 'rollwise_routes{status="running"} 2.0' in text
    assert 'rollwise_deployments{lifecycle="ready"} 1.0' in text
    assert 'rollwise_cycle_duration_seconds_count{kind="scaling"}' in text


async def test_healthz_and_openapi_need_no_token(client: httpx.AsyncClient) -> None:
    anon = httpx.AsyncClient(transport=client._transport, base_url=str(client.base_url))
    health = await anon.get("/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok", "role": "active", "proxy": None}
    schema = (await anon.get("/openapi.json")).json()
    assert (await anon.get("/v1/deployments")).status_code == 401
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    paths = schema["paths"]
    for path in ("/v1/deployments", "/v1/deployments/{name}", "/v1/deployments/{name}/revisions",
                 "/v1/deployments/{name}/rollout", "/v1/deployments/{name}/promote", "/v1/deployments/{name}/pause",
                 "/v1/deployments/{name}/resume", "/v1/deployments/{name}/abort", "/v1/deployments/{name}/undo",
                 "/v1/deployments/{name}/history", "/v1/deployments/{name}/plan", "/healthz", "/metrics"):
        assert path in paths, path
    schemas = schema["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    for model in ("DeploymentCreate", "DeploymentPatch", "PolicyBody", "PolicyPatch", "RevisionInput",
                  "HealthCheck", "RolloutRequest"):
        props = schemas[model]["properties"]
        undocumented = [k for k, v in props.items() if not v.get("description")]
        assert not undocumented, (model, undocumented)
        assert schemas[model].get("additionalProperties") is False, model
    for operation in (op for methods in paths.values() for op in methods.values()):
        for status, response in operation["responses"].items():
            if status.startswith(("4", "5")):
                assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}

"""Bad requests: each one gets the right status, the JSON error shape `{"error", "message"}` with a
one-line message naming the field or saying why, and changes nothing that is stored.

One world is built per module (the coordinator is then left alone, so the stored state only changes if
a request changes it): a READY deployment with one revision, one mid-rollout (rolling, paused), one
blue-green rollout awaiting promotion, and one still PENDING. After every case, a snapshot of everything
the API can show (deployments with routes, revisions, history) must equal the one taken when the world
was built.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from rollwise.cli.serve import Plane

from .helpers import deployment_body, drive, is_ready, open_api, revision_body


READY, DEPLOYING, BLUE_GREEN, PENDING = "ready-dep", "rolling-dep", "bg-dep", "pending-dep"


@dataclass
class World:
    plane: Plane
    client: httpx.AsyncClient
    before: dict[str, Any]
    """The snapshot of the world as built: every case must leave it exactly so (its clock is a ManualClock
    that nothing advances, so not even a computed time changes)."""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    cm, plane, client = await open_api(Path(tmp_path_factory.mktemp("api-errors")))
    try:
        for name, policy in ((READY, None), (DEPLOYING, {"max_surge": 1, "max_unavailable": 0}),
                             (BLUE_GREEN, {"strategy": "blue_green"})):
            assert (await client.post("/v1/deployments", json=deployment_body(name, policy=policy))).status_code == 201
            await drive(plane, client, name, is_ready)
        for name in (DEPLOYING, BLUE_GREEN):
            assert (await client.post(f"/v1/deployments/{name}/revisions", json=revision_body("v2"))).status_code == 201
            assert (await client.post(f"/v1/deployments/{name}/rollout", json={"revision": 2})).status_code == 202
        assert (await client.post(f"/v1/deployments/{DEPLOYING}/pause")).status_code == 202
        await drive(plane, client, BLUE_GREEN, lambda d: d["sub_step"] == "awaiting_promotion")
        await drive(plane, client, DEPLOYING, lambda d: d["sub_step"] == "paused")
        # Created last and never cycled: it stays PENDING.
        assert (await client.post("/v1/deployments", json=deployment_body(PENDING))).status_code == 201
        yield World(plane, client, await snapshot(client))
    finally:
        await client.aclose()
        await cm.__aexit__(None, None, None)


async def snapshot(client: httpx.AsyncClient) -> dict[str, Any]:
    deployments = (await client.get("/v1/deployments")).json()
    out: dict[str, Any] = {"deployments": deployments}
    for d in deployments:
        for part in ("revisions", "history"):
            out[f"{d['name']}/{part}"] = (await client.get(f"/v1/deployments/{d['name']}/{part}")).json()
    return out


@dataclass(frozen=True)
class Bad:
    id: str
    method: str
    path: str
    status: int
    code: str
    mentions: str = ""
    """A word the message must contain (the field, or why)."""
    json: Any = None
    content: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    auth: bool = True


def create(**changes: Any) -> dict[str, Any]:
    body = deployment_body("fresh", replicas=1)
    for key, value in changes.items():
        if "." in key:
            outer, inner = key.split(".", 1)
            body.setdefault(outer, {})[inner] = value
        else:
            body[key] = value
    return body


def without(key: str) -> dict[str, Any]:
    body = create()
    del body[key]
    return body


D = "/v1/deployments"
CASES = [
    # --- auth
    Bad("no-token", "POST", D, 401, "unauthorized", "missing", json=create(), auth=False),
    Bad("wrong-token", "POST", D, 401, "unauthorized", "wrong", json=create(), auth=False,
        headers={"Authorization": "Bearer nope"}),
    Bad("basic-scheme", "GET", D, 401, "unauthorized", "Bearer", auth=False, headers={"Authorization": "Basic dGVzdA=="}),
    Bad("no-token-get", "GET", f"{D}/{READY}", 401, "unauthorized", auth=False),
    Bad("no-token-verb", "POST", f"{D}/{DEPLOYING}/abort", 401, "unauthorized", auth=False),
    Bad("no-token-malformed", "POST", D, 401, "unauthorized", auth=False, content="{not json",
        headers={"content-type": "application/json"}),
    # --- body shape
    Bad("malformed-json", "POST", D, 400, "malformed", "JSON", content='{"name": "x",',
        headers={"content-type": "application/json"}),
    Bad("json-too-deep", "POST", D, 400, "malformed", "JSON", content="[" * 100_000,
        headers={"content-type": "application/json"}),
    Bad("json-not-utf8", "POST", D, 400, "malformed", "JSON", content='{"name": "\udcff"}',
        headers={"content-type": "application/json"}),
    Bad("json-array", "POST", D, 422, "invalid", "body", json=[1, 2]),
    Bad("empty-body", "POST", D, 422, "invalid", "body", content="", headers={"content-type": "application/json"}),
    Bad("text-body", "POST", D, 422, "invalid", "body", content="name=x", headers={"content-type": "text/plain"}),
    Bad("unknown-field", "POST", D, 422, "invalid", "colour", json=create(colour="blue")),
    Bad("missing-revision", "POST", D, 422, "invalid", "revision", json=without("revision")),
    Bad("missing-name", "POST", D, 422, "invalid", "name", json=without("name")),
    # --- names
    Bad("name-upper", "POST", D, 422, "invalid", "name", json=create(name="Sentiment")),
    Bad("name-underscore", "POST", D, 422, "invalid", "name", json=create(name="my_model")),
    Bad("name-too-long", "POST", D, 422, "invalid", "name", json=create(name="a" * 64)),
    Bad("name-trailing-dash", "POST", D, 422, "invalid", "name", json=create(name="model-")),
    Bad("name-newline", "POST", D, 422, "invalid", "name", json=create(name="model\n")),
    Bad("name-number", "POST", D, 422, "invalid", "name", json=create(name=42)),
    Bad("name-duplicate", "POST", D, 409, "conflict", "exists", json=create(name=READY)),
    # --- replicas
    Bad("replicas-string", "POST", D, 422, "invalid", "replicas", json=create(replicas="2")),
    Bad("replicas-negative", "POST", D, 422, "invalid", "replicas", json=create(replicas=-1)),
    Bad("replicas-too-many", "POST", D, 422, "invalid", "replicas", json=create(replicas=1001)),
    Bad("replicas-bool", "POST", D, 422, "invalid", "replicas", json=create(replicas=True)),
    Bad("replicas-float", "POST", D, 422, "invalid", "replicas", json=create(replicas=1.5)),
    # --- revision
    Bad("revision-unknown-field", "POST", D, 422, "invalid", "revision.cmd", json=create(**{"revision.cmd": ["x"]})),
    Bad("revision-empty-command", "POST", D, 422, "invalid", "revision.command", json=create(**{"revision.command": []})),
    Bad("revision-shell-string", "POST", D, 422, "invalid", "revision.command",
        json=create(**{"revision.command": "python -m server"})),
    Bad("revision-env-int", "POST", D, 422, "invalid", "revision.env", json=create(**{"revision.env": {"A": 1}})),
    Bad("health-path", "POST", D, 422, "invalid", "revision.health_check.path",
        json=create(**{"revision.health_check": {"path": "healthz"}})),
    Bad("health-interval-zero", "POST", D, 422, "invalid", "interval_seconds",
        json=create(**{"revision.health_check": {"interval_seconds": 0}})),
    Bad("startup-timeout-negative", "POST", D, 422, "invalid", "startup_timeout_seconds",
        json=create(**{"revision.startup_timeout_seconds": -5})),
    Bad("revision-env-over-os-limit", "POST", D, 422, "invalid", "revision.env",
        json=create(**{"revision.env": {"BIG": "x" * 200_000}})),
    Bad("revision-argument-over-os-limit", "POST", D, 422, "invalid", "argument 1",
        json=create(**{"revision.command": ["python", "y" * 140_000]})),
    Bad("revision-port-name", "POST", D, 422, "invalid", "revision.ports", json=create(**{"revision.ports": ["GRPC"]})),
    Bad("revision-port-undeclared", "POST", D, 422, "invalid", "{port.grpc}",
        json=create(**{"revision.command": ["server", "--grpc", "{port.grpc}"]})),
    # --- size
    Bad("body-over-1-mib", "POST", D, 413, "body.too_large", "KiB",
        json=create(**{"revision.env": {f"V{i}": "x" * 100_000 for i in range(12)}})),
    Bad("body-over-1-mib-chunked", "POST", f"{D}/{READY}/revisions", 413, "body.too_large", "KiB",
        content="chunked", headers={"content-type": "application/json"}),
    # --- policy
    Bad("policy-strategy", "POST", D, 422, "invalid", "policy.strategy", json=create(**{"policy.strategy": "linear"})),
    Bad("policy-surge-over-100", "POST", D, 422, "invalid", "policy.max_surge",
        json=create(**{"policy.max_surge": "150%"})),
    Bad("policy-surge-word", "POST", D, 422, "invalid", "policy.max_surge", json=create(**{"policy.max_surge": "lots"})),
    Bad("policy-both-zero", "POST", D, 422, "invalid", "max_surge and max_unavailable",
        json=create(policy={"max_surge": 0, "max_unavailable": "0%"})),
    Bad("policy-unknown", "POST", D, 422, "invalid", "policy.surge", json=create(**{"policy.surge": 1})),
    Bad("policy-auto-promote-string", "POST", D, 422, "invalid", "policy.auto_promote",
        json=create(**{"policy.auto_promote": "yes"})),
    Bad("policy-deadline-negative", "POST", D, 422, "invalid", "policy.progress_deadline_seconds",
        json=create(**{"policy.progress_deadline_seconds": -1})),
    Bad("policy-nan", "POST", D, 422, "invalid", "policy.promote_delay_seconds",
        content=json.dumps(create()).replace('"policy"', '"x"')[:-1] + ', "policy": {"promote_delay_seconds": NaN}}',
        headers={"content-type": "application/json"}),
    Bad("policy-threshold-zero", "POST", D, 422, "invalid", "policy.failure_threshold",
        json=create(**{"policy.failure_threshold": 0})),
    # --- unknown things
    Bad("get-unknown", "GET", f"{D}/nope", 404, "not_found", "nope"),
    Bad("patch-unknown", "PATCH", f"{D}/nope", 404, "not_found", "nope", json={"replicas": 2}),
    Bad("delete-unknown", "DELETE", f"{D}/nope", 404, "not_found", "nope"),
    Bad("revisions-unknown", "POST", f"{D}/nope/revisions", 404, "not_found", "nope", json=revision_body("v9")),
    Bad("plan-unknown", "GET", f"{D}/nope/plan", 404, "not_found", "nope"),
    Bad("history-unknown", "GET", f"{D}/nope/history", 404, "not_found", "nope"),
    Bad("rollout-unknown-revision", "POST", f"{D}/{READY}/rollout", 404, "not_found", "revision 99",
        json={"revision": 99}),
    Bad("no-such-endpoint", "GET", "/v1/nothing", 404, "not_found", "/v1/nothing"),
    Bad("wrong-method", "PUT", D, 405, "method_not_allowed", "PUT", json={}),
    # --- patch bodies
    Bad("patch-replicas-huge", "PATCH", f"{D}/{READY}", 422, "invalid", "replicas", json={"replicas": 5000}),
    Bad("patch-unknown-field", "PATCH", f"{D}/{READY}", 422, "invalid", "name", json={"name": "other"}),
    Bad("patch-policy-both-zero", "PATCH", f"{D}/{READY}", 422, "invalid", "max_surge and max_unavailable",
        json={"policy": {"max_surge": 0}}),
    Bad("patch-policy-word", "PATCH", f"{D}/{READY}", 422, "invalid", "policy.max_unavailable",
        json={"policy": {"max_unavailable": "abc"}}),
    Bad("patch-policy-unknown", "PATCH", f"{D}/{READY}", 422, "invalid", "policy.steps",
        json={"policy": {"steps": [1]}}),
    Bad("patch-replicas-word", "PATCH", f"{D}/{READY}", 422, "invalid", "replicas",
        json={"replicas": "three"}),
    # --- rollout bodies
    Bad("rollout-zero", "POST", f"{D}/{READY}/rollout", 422, "invalid", "revision", json={"revision": 0}),
    Bad("rollout-string", "POST", f"{D}/{READY}/rollout", 422, "invalid", "revision", json={"revision": "1"}),
    Bad("rollout-huge", "POST", f"{D}/{READY}/rollout", 422, "invalid", "revision", json={"revision": 10**20}),
    Bad("rollout-unknown-field", "POST", f"{D}/{READY}/rollout", 422, "invalid", "force",
        json={"revision": 1, "force": True}),
    Bad("rollout-supersede-string", "POST", f"{D}/{READY}/rollout", 422, "invalid", "supersede",
        json={"revision": 1, "supersede": "yes"}),
    Bad("new-revision-bad-body", "POST", f"{D}/{READY}/revisions", 422, "invalid", "command", json={"command": "x"}),
    # --- verbs in the wrong state
    Bad("rollout-in-progress", "POST", f"{D}/{DEPLOYING}/rollout", 409, "rollout.in_progress", "supersede",
        json={"revision": 1}),
    Bad("rollout-while-pending", "POST", f"{D}/{PENDING}/rollout", 409, "verb.not_applicable", "pending",
        json={"revision": 1}),
    Bad("promote-ready", "POST", f"{D}/{READY}/promote", 409, "verb.not_applicable", "no rollout"),
    Bad("promote-rolling", "POST", f"{D}/{DEPLOYING}/promote", 409, "verb.not_applicable", "blue-green"),
    Bad("pause-ready", "POST", f"{D}/{READY}/pause", 409, "verb.not_applicable", "no rollout"),
    Bad("pause-paused", "POST", f"{D}/{DEPLOYING}/pause", 409, "verb.not_applicable", "already paused"),
    Bad("resume-not-paused", "POST", f"{D}/{BLUE_GREEN}/resume", 409, "verb.not_applicable", "no paused rollout"),
    Bad("abort-ready", "POST", f"{D}/{READY}/abort", 409, "verb.not_applicable", "no rollout"),
    Bad("undo-first-revision", "POST", f"{D}/{READY}/undo", 409, "verb.not_applicable", "nothing to undo"),
    Bad("undo-deploying", "POST", f"{D}/{BLUE_GREEN}/undo", 409, "rollout.in_progress", "abort"),
    Bad("plan-pending", "GET", f"{D}/{PENDING}/plan", 409, "verb.not_applicable", "pending"),
    # --- query parameters
    Bad("history-limit-zero", "GET", f"{D}/{READY}/history?limit=0", 422, "invalid", "limit"),
    Bad("history-limit-word", "GET", f"{D}/{READY}/history?limit=all", 422, "invalid", "limit"),
]


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("bad", CASES, ids=[c.id for c in CASES])
async def test_bad_request(world: World, bad: Bad) -> None:
    client = world.client
    sender = client if bad.auth else httpx.AsyncClient(transport=client._transport, base_url=str(client.base_url))
    content: Any = bad.content.encode(errors="surrogateescape") if bad.content is not None else None
    if bad.content == "chunked":  # no Content-Length: the limit must count what arrives
        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"command": ["x"], "env": {"A": "'
            for _ in range(40):
                yield b"y" * 65536
            yield b'"}}'

        content = chunks()
    answer = await sender.request(
        bad.method, bad.path, json=bad.json if bad.content is None else None, content=content, headers=bad.headers,
    )
    assert answer.status_code == bad.status, answer.text
    body = answer.json()
    assert set(body) == {"error", "message"}, body
    assert body["error"] == bad.code, body
    assert isinstance(body["message"], str) and body["message"] and "\n" not in body["message"]
    assert bad.mentions in body["message"], body["message"]
    if bad.status == 401:
        assert answer.headers["www-authenticate"] == "Bearer"
    assert await snapshot(client) == world.before


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)

"""GET /v1/deployments/NAME/actions: the operator verbs that apply now, as the dashboard offers them.

In every state reached here, each verb the answer leaves out is refused by its own endpoint (409, nothing
written) or is a no-op (a second abort: 202, the version unchanged), and the verbs it lists are taken
(202, something written) — the list and the refusals come from the same rules.
"""

from __future__ import annotations

from typing import Any

import httpx

from rollwise.cli.serve import Plane

from .helpers import deployment_body, drive, fast, is_ready, revision_body

VERBS = ("promote", "pause", "resume", "abort", "undo")


async def actions(client: httpx.AsyncClient, name: str) -> list[str]:
    answer = await client.get(f"/v1/deployments/{name}/actions")
    assert answer.status_code == 200, answer.text
    return list(answer.json()["actions"])


async def offered_and_refused(client: httpx.AsyncClient, name: str, expected: list[str]) -> None:
    """The answer is `expected`, and every verb outside it changes nothing when sent."""
    assert await actions(client, name) == expected
    for verb in VERBS:
        if verb in expected:
            continue
        before = (await client.get(f"/v1/deployments/{name}")).json()["version"]
        answer = await client.post(f"/v1/deployments/{name}/{verb}")
        assert answer.status_code in (202, 409), (verb, answer.text)
        if answer.status_code == 409:
            assert answer.json()["error"] in ("verb.not_applicable", "rollout.in_progress"), answer.text
        after = (await client.get(f"/v1/deployments/{name}")).json()["version"]
        assert after == before, f"{verb} was not offered but changed the deployment: {answer.text}"


async def take(client: httpx.AsyncClient, name: str, verb: str) -> dict[str, Any]:
    before = (await client.get(f"/v1/deployments/{name}")).json()["version"]
    answer = await client.post(f"/v1/deployments/{name}/{verb}")
    assert answer.status_code == 202, (verb, answer.text)
    assert answer.json()["version"] > before, f"{verb} was offered but wrote nothing"
    return dict(answer.json())


async def rollout(client: httpx.AsyncClient, name: str, version: str) -> int:
    rev = await client.post(f"/v1/deployments/{name}/revisions", json=revision_body(version))
    assert rev.status_code == 201, rev.text
    number = int(rev.json()["number"])
    answer = await client.post(f"/v1/deployments/{name}/rollout", json={"revision": number})
    assert answer.status_code == 202, answer.text
    return number


async def test_rolling_rollout_offers_pause_resume_abort_then_undo(plane: Plane, client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/deployments", json=deployment_body("acts", replicas=2))).status_code == 201
    await offered_and_refused(client, "acts", [])  # pending: nothing applies yet
    await drive(plane, client, "acts", is_ready)
    await offered_and_refused(client, "acts", [])  # no rollout, and no earlier revision to undo to

    fast(plane, 2, startup=1000.0)  # the new revision's routes stay provisioning: the rollout waits
    await rollout(client, "acts", "v2")
    await offered_and_refused(client, "acts", ["pause", "abort"])
    await take(client, "acts", "pause")
    await offered_and_refused(client, "acts", ["resume", "abort"])
    await take(client, "acts", "resume")
    await offered_and_refused(client, "acts", ["pause", "abort"])
    fast(plane, 2)
    done = await drive(plane, client, "acts", lambda d: d["lifecycle"] == "ready" and d["sub_step"] == "completed")
    assert done["current_revision"] == 2

    await offered_and_refused(client, "acts", ["undo"])
    taken = await take(client, "acts", "undo")
    assert taken["lifecycle"] == "deploying" and taken["deploying_revision"] == 1
    await offered_and_refused(client, "acts", ["pause", "abort"])
    await take(client, "acts", "abort")
    # Abort asked: a second one would change nothing, so it is no longer offered.
    await offered_and_refused(client, "acts", ["pause"])


async def test_blue_green_offers_promote_only_while_awaiting_promotion(plane: Plane, client: httpx.AsyncClient) -> None:
    body = deployment_body("bgacts", replicas=2, policy={"strategy": "blue_green"})
    assert (await client.post("/v1/deployments", json=body)).status_code == 201
    await drive(plane, client, "bgacts", is_ready)
    fast(plane, 2, startup=1000.0)
    await rollout(client, "bgacts", "v2")
    await offered_and_refused(client, "bgacts", ["pause", "abort"])  # green not up: nothing to promote
    fast(plane, 2)
    await drive(plane, client, "bgacts", lambda d: d["sub_step"] == "awaiting_promotion")
    await offered_and_refused(client, "bgacts", ["promote", "pause", "abort"])
    await take(client, "bgacts", "promote")
    done = await drive(plane, client, "bgacts", lambda d: d["lifecycle"] == "ready")
    assert done["sub_step"] == "completed" and done["current_revision"] == 2
    await offered_and_refused(client, "bgacts", ["undo"])


async def test_actions_of_an_unknown_deployment_is_404_and_needs_the_token(client: httpx.AsyncClient) -> None:
    answer = await client.get("/v1/deployments/nobody/actions")
    assert answer.status_code == 404 and answer.json()["error"] == "not_found"
    anonymous = await client.get("/v1/deployments/nobody/actions", headers={"Authorization": ""})
    assert anonymous.status_code == 401

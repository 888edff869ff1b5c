"""GET /v1/deployments/{name}/analysis: the canary analysis of the current (or last) rollout, its counts
and measurements oldest first (every rollout's with ?all=true); and the analysis families of /metrics.

The measurements are written through the store as the analysis runner writes them (the runner itself is
tested in tests/control/test_analysis_runner.py)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx

from rollwise.cli.serve import Plane
from rollwise.store.commands import NewMeasurement

from .helpers import deployment_body, drive, is_ready, revision_body

CANARY = {
    "strategy": "canary",
    "steps": [{"set_weight": 25}, {"pause": {}}],
    "analysis": {"interval_seconds": 30, "metrics": [
        {"name": "errors", "builtin": "error_rate", "max": 0.01},
        {"name": "eval", "command": ["python", "eval.py"]},
    ]},
}


async def rolling_out(plane: Plane, client: httpx.AsyncClient, name: str) -> dict[str, Any]:
    """A canary deployment READY on revision 1, then rolling out revision 2 (no round runs after that)."""
    assert (await client.post("/v1/deployments", json=deployment_body(name, policy=CANARY))).status_code == 201
    await drive(plane, client, name, is_ready)
    assert (await client.post(f"/v1/deployments/{name}/revisions", json=revision_body("v2"))).status_code == 201
    answer = await client.post(f"/v1/deployments/{name}/rollout", json={"revision": 2})
    assert answer.status_code == 202, answer.text
    return dict(answer.json())


def measurement(dep_id: int, rollout: datetime, metric: str, verdict: str, value: str | None, words: str,
                end: float) -> NewMeasurement:
    return NewMeasurement(
        deployment_id=dep_id, revision=2, rollout_started_at=rollout, metric=metric, verdict=verdict, value=value,
        words=words, window_start=rollout + timedelta(seconds=end - 30), window_end=rollout + timedelta(seconds=end),
        at=rollout + timedelta(seconds=end + 1),
    )


async def test_the_current_rollouts_measurements_and_counts(plane: Plane, client: httpx.AsyncClient) -> None:
    await rolling_out(plane, client, "svc")
    dep = await plane.store.get_deployment("svc")
    assert dep is not None and dep.rollout_started_at is not None
    started = dep.rollout_started_at
    earlier = started - timedelta(hours=1)
    await plane.store.add_measurements([
        measurement(dep.id, earlier, "errors", "failed", "0.5", "errors = 0.5 > 0.01", 30),
        measurement(dep.id, started, "errors", "passed", "0.002", "errors = 0.002 <= 0.01", 30),
        measurement(dep.id, started, "eval", "passed", "accuracy 0.93", "eval = accuracy 0.93 (exit 0)", 30),
        measurement(dep.id, started, "errors", "failed", "0.034", "errors = 0.034 > 0.01", 60),
        measurement(dep.id, started, "eval", "inconclusive", None, "inconclusive: timed out after 60 s", 60),
    ])

    answer = await client.get("/v1/deployments/svc/analysis")

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert datetime.fromisoformat(body["rollout_started_at"]) == started
    assert body["revision"] == 2
    assert body["counts"] == {"failed": 1, "passed": 2, "inconclusive": 1}
    assert [(m["metric"], m["verdict"], m["value"], m["words"]) for m in body["measurements"]] == [
        ("errors", "passed", "0.002", "errors = 0.002 <= 0.01"),
        ("eval", "passed", "accuracy 0.93", "eval = accuracy 0.93 (exit 0)"),
        ("errors", "failed", "0.034", "errors = 0.034 > 0.01"),
        ("eval", "inconclusive", None, "inconclusive: timed out after 60 s"),
    ]
    last = body["measurements"][-1]
    assert set(last) == {"id", "metric", "verdict", "value", "words", "revision", "rollout_started_at",
                         "window_start", "window_end", "created_at"}
    assert datetime.fromisoformat(last["window_start"]) == started + timedelta(seconds=30)
    assert datetime.fromisoformat(last["window_end"]) == started + timedelta(seconds=60)
    assert datetime.fromisoformat(last["created_at"]) == started + timedelta(seconds=61)
    assert last["revision"] == 2

    every = (await client.get("/v1/deployments/svc/analysis", params={"all": "true"})).json()
    assert [m["words"] for m in every["measurements"]][:2] == ["errors = 0.5 > 0.01", "errors = 0.002 <= 0.01"]
    assert every["counts"] == body["counts"]  # the counts stay the current rollout's


async def test_a_deployment_never_rolled_out_has_an_empty_analysis(plane: Plane, client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/deployments", json=deployment_body("new", policy=CANARY))).status_code == 201
    answer = await client.get("/v1/deployments/new/analysis")
    assert answer.status_code == 200
    assert answer.json() == {"rollout_started_at": None, "revision": None,
                             "counts": {"failed": 0, "passed": 0, "inconclusive": 0}, "measurements": []}


async def test_a_rollout_without_measurements_names_its_canary(plane: Plane, client: httpx.AsyncClient) -> None:
    await rolling_out(plane, client, "svc")
    body = (await client.get("/v1/deployments/svc/analysis")).json()
    assert (body["revision"], body["counts"], body["measurements"]) == (
        2, {"failed": 0, "passed": 0, "inconclusive": 0}, [])


async def test_unknown_deployment_is_404(client: httpx.AsyncClient) -> None:
    answer = await client.get("/v1/deployments/nope/analysis")
    assert answer.status_code == 404
    assert answer.json()["error"] == "not_found"


async def test_metrics_count_measurements_and_show_the_last_numeric_value(
    plane: Plane, client: httpx.AsyncClient
) -> None:
    await rolling_out(plane, client, "svc")
    dep = await plane.store.get_deployment("svc")
    assert dep is not None and dep.rollout_started_at is not None
    started = dep.rollout_started_at
    await plane.store.add_measurements([
        measurement(dep.id, started, "errors", "passed", "0.002", "errors = 0.002 <= 0.01", 30),
        measurement(dep.id, started, "errors", "failed", "0.034", "errors = 0.034 > 0.01", 60),
        measurement(dep.id, started, "eval", "passed", "accuracy 0.93", "eval = accuracy 0.93 (exit 0)", 60),
    ])

    text = (await client.get("/metrics")).text

    assert 'rollwise_analysis_measurements_total{deployment="svc",metric="errors",verdict="passed"} 1.0' in text
    assert 'rollwise_analysis_measurements_total{deployment="svc",metric="errors",verdict="failed"} 1.0' in text
    assert 'rollwise_analysis_measurements_total{deployment="svc",metric="eval",verdict="passed"} 1.0' in text
    assert 'rollwise_analysis_value{deployment="svc",metric="errors"} 0.034' in text
    assert 'rollwise_analysis_value{deployment="svc",metric="eval"}' not in text  # words, not a number

"""Canary analysis measurements (migration 0005) on both backends: written in one transaction, listed
oldest first, counted for each deployment's current rollout in one query, summarised for the metrics
page, deleted with their deployment."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from rollwise.model import Lifecycle
from rollwise.store import DeploymentChange, DeploymentUpdate, IntegrityFailed, Store
from rollwise.store.commands import NewMeasurement
from rollwise.store.records import NO_TALLY, AnalysisTally, DeploymentRecord

from .helpers import NOW, count_statements, make_deployments, update_one

ROLLOUT_1 = NOW + timedelta(minutes=1)
ROLLOUT_2 = NOW + timedelta(minutes=30)


def at(seconds: float) -> datetime:
    return ROLLOUT_1 + timedelta(seconds=seconds)


def row(dep: DeploymentRecord, metric: str, verdict: str, *, end: float, rollout: datetime = ROLLOUT_1,
        value: str | None = "0.01", words: str | None = None, revision: int = 2) -> NewMeasurement:
    start = rollout + timedelta(seconds=end - 30)
    stop = rollout + timedelta(seconds=end)
    return NewMeasurement(
        deployment_id=dep.id, revision=revision, rollout_started_at=rollout, metric=metric, verdict=verdict,
        value=value, words=words or f"{metric} {verdict}", window_start=start, window_end=stop, at=stop,
    )


async def start_rollout(store: Store, dep: DeploymentRecord, started: datetime) -> DeploymentRecord:
    written = await update_one(store, DeploymentUpdate(
        deployment_id=dep.id, expected_version=dep.version,
        change=DeploymentChange(lifecycle=Lifecycle.DEPLOYING, deploying_revision=2, rollout_started_at=started),
    ), started)
    assert written is not None
    return written


async def test_added_rows_are_listed_oldest_first_with_every_field(store: Store) -> None:
    [dep] = await make_deployments(store, 1)
    dep = await start_rollout(store, dep, ROLLOUT_1)
    first = row(dep, "errors", "passed", end=30, value="0.002", words="errors = 0.002 <= 0.01")
    second = row(dep, "errors", "failed", end=60, value="0.034", words="errors = 0.034 > 0.01")
    third = row(dep, "eval", "inconclusive", end=60, value=None, words="inconclusive: timed out after 120 s")
    await store.add_measurements([first, second, third])

    listed = await store.list_measurements(dep.id)

    assert [(m.metric, m.verdict, m.value, m.words) for m in listed] == [
        ("errors", "passed", "0.002", "errors = 0.002 <= 0.01"),
        ("errors", "failed", "0.034", "errors = 0.034 > 0.01"),
        ("eval", "inconclusive", None, "inconclusive: timed out after 120 s"),
    ]
    assert listed[0].id < listed[1].id < listed[2].id
    m = listed[1]
    assert (m.deployment_id, m.revision, m.rollout_started_at) == (dep.id, 2, ROLLOUT_1)
    assert (m.window_start, m.window_end, m.created_at) == (at(30), at(60), at(60))
    assert [m.words for m in await store.list_measurements(dep.id, limit=2)] == [second.words, third.words]


async def test_list_filters_one_rollout(store: Store) -> None:
    [dep] = await make_deployments(store, 1)
    await store.add_measurements([row(dep, "errors", "failed", end=30),
                                  row(dep, "errors", "passed", end=30, rollout=ROLLOUT_2)])
    assert [m.verdict for m in await store.list_measurements(dep.id, rollout_started_at=ROLLOUT_2)] == ["passed"]
    assert len(await store.list_measurements(dep.id)) == 2


async def test_add_is_one_transaction(store: Store) -> None:
    [dep] = await make_deployments(store, 1)
    ghost = replace(row(dep, "errors", "passed", end=30), deployment_id=dep.id + 1000)
    with pytest.raises(IntegrityFailed):
        await store.add_measurements([row(dep, "errors", "passed", end=30), ghost])
    assert await store.list_measurements(dep.id) == []
    await store.add_measurements([])  # nothing to write: no error


def test_a_verdict_must_be_known() -> None:
    with pytest.raises(ValueError, match="'maybe' is not one of passed, failed, inconclusive"):
        NewMeasurement(deployment_id=1, revision=2, rollout_started_at=NOW, metric="m", verdict="maybe", value=None,
                       words="?", window_start=NOW, window_end=NOW, at=NOW)


async def test_counts_are_of_the_current_rollout_only(store: Store) -> None:
    a, b, c = await make_deployments(store, 3)
    a = await start_rollout(store, a, ROLLOUT_2)
    b = await start_rollout(store, b, ROLLOUT_1)
    await store.add_measurements([
        # a: an earlier rollout's failures do not count for the current one
        row(a, "errors", "failed", end=30, rollout=ROLLOUT_1, words="old failure"),
        row(a, "errors", "failed", end=30, rollout=ROLLOUT_2, words="errors = 0.02 > 0.01"),
        row(a, "latency", "passed", end=30, rollout=ROLLOUT_2),
        row(a, "errors", "failed", end=60, rollout=ROLLOUT_2, words="errors = 0.034 > 0.01"),
        row(a, "latency", "inconclusive", end=60, rollout=ROLLOUT_2),
        row(a, "errors", "passed", end=90, rollout=ROLLOUT_2),
        row(a, "latency", "passed", end=90, rollout=ROLLOUT_2),
        # b: nothing failed; its newest window has an inconclusive measurement
        row(b, "errors", "passed", end=30),
        row(b, "errors", "inconclusive", end=60),
        # c: no rollout at all (its rollout_started_at is NULL): nothing counts
        row(c, "errors", "failed", end=30),
    ])

    counts = await store.analysis_counts([a.id, b.id, c.id, 9999])

    assert counts[a.id] == AnalysisTally(
        failed=2, passed=3, inconclusive=1, last_failure="errors = 0.034 > 0.01",
        last_window_end=ROLLOUT_2 + timedelta(seconds=90), last_window_passed=True,
    )
    assert counts[b.id] == AnalysisTally(
        failed=0, passed=1, inconclusive=1, last_failure=None, last_window_end=at(60), last_window_passed=False,
    )
    assert set(counts) == {a.id, b.id}
    assert counts.get(c.id, NO_TALLY) == NO_TALLY
    assert await store.analysis_counts([]) == {}


async def test_counts_are_one_query_for_any_number_of_deployments(store: Store) -> None:
    seen = {}
    for n in (1, 20):
        deps = await make_deployments(store, n, prefix=f"n{n}-")
        deps = [await start_rollout(store, d, ROLLOUT_1) for d in deps]
        await store.add_measurements([row(d, "errors", "failed", end=30) for d in deps])
        with count_statements(store) as statements:
            counts = await store.analysis_counts([d.id for d in deps])
        assert len(counts) == n and all(t.failed == 1 for t in counts.values())
        seen[n] = [s.split()[0].upper() for s in statements]
    assert seen[1] == seen[20]
    assert seen[1].count("SELECT") == 1, seen[1]


async def test_rows_go_with_their_deployment(store: Store) -> None:
    [dep] = await make_deployments(store, 1)
    await store.add_measurements([row(dep, "errors", "passed", end=30)])
    written = await update_one(store, DeploymentUpdate(
        deployment_id=dep.id, expected_version=dep.version, change=DeploymentChange(lifecycle=Lifecycle.DESTROYED),
    ), NOW)
    assert written is not None
    assert await store.purge_destroyed() == 1
    assert await store.list_measurements(dep.id) == []


async def test_summary_counts_every_rollout_by_verdict_with_the_newest_value(store: Store) -> None:
    a, b, gone = await make_deployments(store, 3)
    await store.add_measurements([
        row(a, "errors", "failed", end=30, value="0.034"),
        row(a, "errors", "passed", end=60, value="0.001", rollout=ROLLOUT_2),
        row(a, "eval", "passed", end=30, value="accuracy 0.93"),
        row(b, "latency", "inconclusive", end=30, value=None),
        row(gone, "errors", "failed", end=30),
    ])
    written = await update_one(store, DeploymentUpdate(
        deployment_id=gone.id, expected_version=gone.version, change=DeploymentChange(lifecycle=Lifecycle.DESTROYED),
    ), NOW)
    assert written is not None

    summary = await store.measurement_summary()

    assert [(s.deployment, s.metric, dict(s.counts), s.last_value) for s in summary] == [
        ("d0", "errors", {"failed": 1, "passed": 1}, "0.001"),
        ("d0", "eval", {"passed": 1}, "accuracy 0.93"),
        ("d1", "latency", {"inconclusive": 1}, None),
    ]

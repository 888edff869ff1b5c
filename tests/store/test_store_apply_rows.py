"""`Store.apply`'s row statements (PostgreSQL: whole columns as arrays through `unnest`; SQLite:
executemany): updates of one route merged in order, and a mixed ChangeSet (NULLs, UNSET fields, a
swap, a skipped deployment, history merges) that must leave the same state on both backends."""

from __future__ import annotations

from dataclasses import asdict, replace
from datetime import timedelta
from typing import Any

from rollwise.model import Health, Lifecycle, Mode, RollbackReason, RouteStatus, SubStep, Traffic
from rollwise.store import ChangeSet, DeploymentChange, DeploymentUpdate, NewHistory, NewRoute, RouteUpdate, Store
from rollwise.store.apply import merge_route_updates

from .helpers import NOW, count_statements, make_deployments, spec, update_one

LATER = NOW + timedelta(seconds=30)


def test_merge_route_updates_applies_them_in_order() -> None:
    first = RouteUpdate(id="r", deployment_id=1, status=RouteStatus.RUNNING, traffic_ratio=0.5, detail="a")
    second = RouteUpdate(id="r", deployment_id=1, status=RouteStatus.TERMINATING, detail=None, pid=7)
    other_tag = RouteUpdate(id="r", deployment_id=2, pid=9)
    early = RouteUpdate(id="a", deployment_id=1, failed=True)
    merged = merge_route_updates([first, other_tag, second, early], tagged=True)
    assert [(u.id, u.deployment_id, c) for u, c in merged] == [
        ("a", 1, {"failed": True}),
        ("r", 1, {"status": "terminating", "traffic_ratio": 0.5, "detail": None, "pid": 7}),
        ("r", 2, {"pid": 9}),
    ]
    # Untagged (Store.update_routes): one route, one merged update, whatever the tags say.
    [(u, c)] = merge_route_updates([first, other_tag, second], tagged=False)
    assert u is first and c == {"status": "terminating", "traffic_ratio": 0.5, "detail": None, "pid": 7}


async def test_two_updates_of_one_route_apply_in_order(store: Store) -> None:
    a, b = await make_deployments(store, 2)
    await store.apply(
        ChangeSet(new_routes=[NewRoute(id="r", deployment_id=a.id, revision=1, detail="seed", pid=1, created_at=NOW),
                              NewRoute(id="s", deployment_id=a.id, revision=1, created_at=NOW)]),
        NOW,
    )
    with count_statements(store) as seen:
        result = await store.apply(
            ChangeSet(
                route_updates=[
                    RouteUpdate(id="r", deployment_id=a.id, status=RouteStatus.RUNNING, traffic_ratio=0.5, detail="a"),
                    RouteUpdate(id="s", deployment_id=a.id, health=Health.HEALTHY),
                    # tagged with another deployment: changes nothing, not even merged into the others
                    RouteUpdate(id="r", deployment_id=b.id, status=RouteStatus.FAILED_TO_START, pid=99),
                    RouteUpdate(id="r", deployment_id=a.id, status=RouteStatus.TERMINATING, detail=None,
                                health_failures=3, drain_until=LATER),
                    RouteUpdate(id="r", deployment_id=a.id, drain_until=None),
                ]
            ),
            LATER,
        )
    assert result.routes_updated == 5
    assert len([s for s in seen if s.lstrip().upper().startswith(("UPDATE", "WITH"))]) == 1
    r, s = await store.list_routes([a.id])
    assert (r.status, r.traffic_ratio, r.detail, r.health_failures, r.drain_until, r.pid) == (
        RouteStatus.TERMINATING, 0.5, None, 3, None, 1,
    )
    assert (r.health, r.traffic, r.status_updated_at) == (Health.NOT_CHECKED, Traffic.ACTIVE, NOW)
    assert s.health is Health.HEALTHY and s.status is RouteStatus.PROVISIONING

    # The route controller's untagged writes merge the same way.
    await store.update_routes([
        RouteUpdate(id="s", address="10.0.0.1:9000", pid=5),
        RouteUpdate(id="r", identity="x"),
        RouteUpdate(id="s", address=None, identity="y"),
    ])
    r2, s2 = await store.list_routes([a.id])
    assert (s2.address, s2.pid, s2.identity, s2.health) == (None, 5, "y", Health.HEALTHY)
    assert r2 == replace(r, identity="x")


def _route_state(route: Any) -> tuple[Any, ...]:
    d = asdict(route)
    d.pop("deployment_id")
    return tuple(sorted(d.items()))


async def test_mixed_changeset_leaves_the_same_state_on_both_backends(store: Store) -> None:
    """Every kind of value through every statement; the expected state is written out, so both
    backends must produce exactly it."""
    a, b, c = await make_deployments(store, 3)
    await store.add_revision(a.id, spec("v2"), NOW)
    started = await update_one(
        store,
        DeploymentUpdate(deployment_id=a.id, expected_version=a.version,
                         change=DeploymentChange(lifecycle=Lifecycle.DEPLOYING, deploying_revision=2, sub_step=SubStep.PROVISIONING, rollback_reason=RollbackReason.ABORTED, last_error="old", rollout_started_at=NOW)),
        NOW,
    )
    assert started is not None
    a = started
    progressed = await update_one(
        store,
        DeploymentUpdate(deployment_id=b.id, expected_version=b.version,
                         change=DeploymentChange(last_progress_at=NOW, last_error="kept")),
        NOW,
    )
    assert progressed is not None
    b = progressed
    seed = await store.apply(
        ChangeSet(
            new_routes=[
                NewRoute(id="a1", deployment_id=a.id, revision=1, status=RouteStatus.RUNNING, health=Health.HEALTHY,
                         address="10.0.0.1:1", pid=11, identity="p11", detail="up", created_at=NOW),
                NewRoute(id="b1", deployment_id=b.id, revision=1, traffic_ratio=0.25, created_at=NOW),
            ],
            history=[
                NewHistory(deployment_id=b.id, lifecycle_from=Lifecycle.READY, lifecycle_to=Lifecycle.READY,
                           result="error", message="boom", error="first", at=NOW),
            ],
        ),
        NOW,
    )
    assert seed.route_ids == ["a1", "b1"]

    changes = ChangeSet(
        deployments=[
            # the swap, NULLs written over values, a column others change left alone (last_progress_at)
            DeploymentUpdate(deployment_id=a.id, expected_version=a.version, swap_expected=2,
                             change=DeploymentChange(lifecycle=Lifecycle.READY, sub_step=None, rollback_reason=None, last_error=None, deploying_revision=None, mode=Mode.FORWARD)),
            # values over NULLs; sub_step / rollback_reason / mode not named: kept
            DeploymentUpdate(deployment_id=b.id, expected_version=b.version,
                             change=DeploymentChange(last_progress_at=None, rollout_started_at=LATER, paused=True, error_count=2, replicas=5)),
            # stale guard: skipped whole, with its route, route update and history
            DeploymentUpdate(deployment_id=c.id, expected_version=c.version + 1, change=DeploymentChange(replicas=9)),
        ],
        new_routes=[
            NewRoute(id="a2", deployment_id=a.id, revision=2, status=RouteStatus.PROVISIONING,
                     traffic=Traffic.INACTIVE, traffic_ratio=0.0, failed=True, created_at=LATER),
            NewRoute(id="c1", deployment_id=c.id, revision=1, created_at=LATER),
        ],
        route_updates=[
            RouteUpdate(id="a1", deployment_id=a.id, address=None, pid=None, identity=None, detail=None,
                        status=RouteStatus.TERMINATING, status_updated_at=LATER, drain_until=LATER),
            RouteUpdate(id="b1", deployment_id=b.id, traffic_ratio=1.0, failed=True, health=Health.UNHEALTHY,
                        health_successes=4),
            RouteUpdate(id="a1", deployment_id=c.id, status=RouteStatus.TERMINATED),  # c is skipped
        ],
        history=[
            NewHistory(deployment_id=a.id, lifecycle_from=Lifecycle.DEPLOYING, lifecycle_to=Lifecycle.READY,
                       sub_step=None, result="success", message="done", strategy=None, from_revision=1,
                       to_revision=2, at=LATER),
            # merges into b's stored row: attempts 2, updated_at LATER, error None (the newest)
            NewHistory(deployment_id=b.id, lifecycle_from=Lifecycle.READY, lifecycle_to=Lifecycle.READY,
                       result="error", message="boom", error=None, at=LATER),
            NewHistory(deployment_id=c.id, lifecycle_from=Lifecycle.READY, lifecycle_to=Lifecycle.READY,
                       result="x", message="x", at=LATER),
        ],
    )
    result = await store.apply(changes, LATER)
    assert result.skipped == {c.id} and result.applied == {a.id, b.id}
    assert result.versions == {a.id: a.version + 1, b.id: b.version + 1}
    assert result.route_ids == ["a2"] and result.routes_updated == 2
    assert (result.history_inserted, result.history_merged) == (1, 1)

    a2, b2, c2 = [await store.get_deployment(d.name) for d in (a, b, c)]
    assert a2 is not None and b2 is not None
    assert a2 == replace(
        a, lifecycle=Lifecycle.READY, sub_step=None, rollback_reason=None, last_error=None, current_revision=2,
        deploying_revision=None, mode=Mode.FORWARD, version=a.version + 1, updated_at=LATER,
    )
    assert b2 == replace(
        b, last_progress_at=None, rollout_started_at=LATER, paused=True, error_count=2, replicas=5,
        version=b.version + 1, updated_at=LATER,
    )
    assert c2 == c

    routes = {r.id: r for r in await store.list_routes()}
    assert set(routes) == {"a1", "a2", "b1"}
    assert _route_state(routes["a1"]) == tuple(sorted({
        "id": "a1", "revision": 1, "status": RouteStatus.TERMINATING, "health": Health.HEALTHY,
        "traffic": Traffic.ACTIVE, "traffic_ratio": 1.0, "failed": False, "address": None, "pid": None,
        "identity": None, "health_failures": 0, "health_successes": 0, "created_at": NOW,
        "status_updated_at": LATER, "drain_until": LATER, "detail": None, "started_at": None,
        "holds": {}, "devices": {}, "node": None,
    }.items()))
    assert _route_state(routes["a2"]) == tuple(sorted({
        "id": "a2", "revision": 2, "status": RouteStatus.PROVISIONING, "health": Health.NOT_CHECKED,
        "traffic": Traffic.INACTIVE, "traffic_ratio": 0.0, "failed": True, "address": None, "pid": None,
        "identity": None, "health_failures": 0, "health_successes": 0, "created_at": LATER,
        "status_updated_at": LATER, "drain_until": None, "detail": None, "started_at": None,
        "holds": {}, "devices": {}, "node": None,
    }.items()))
    assert _route_state(routes["b1"]) == tuple(sorted({
        "id": "b1", "revision": 1, "status": RouteStatus.PROVISIONING, "health": Health.UNHEALTHY,
        "traffic": Traffic.ACTIVE, "traffic_ratio": 1.0, "failed": True, "address": None, "pid": None,
        "identity": None, "health_failures": 0, "health_successes": 4, "created_at": NOW,
        "status_updated_at": NOW, "drain_until": None, "detail": None, "started_at": None,
        "holds": {}, "devices": {}, "node": None,
    }.items()))

    [ha] = await store.list_history(a.id)
    assert (ha.sub_step, ha.strategy, ha.error, ha.attempts, ha.created_at, ha.updated_at) == (
        None, None, None, 1, LATER, LATER)
    assert (ha.lifecycle_from, ha.lifecycle_to, ha.from_revision, ha.to_revision) == (
        Lifecycle.DEPLOYING, Lifecycle.READY, 1, 2)
    [hb] = await store.list_history(b.id)
    assert (hb.attempts, hb.created_at, hb.updated_at, hb.error) == (2, NOW, LATER, None)
    assert await store.list_history(c.id) == []

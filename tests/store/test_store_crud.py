"""Operation writes and reads of Store on both backends: deployments, revisions, policies, history,
routes outside cycles, timestamps."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import null, select, update

from rollwise.model import Lifecycle, Mode, Policy, RollbackReason, RouteStatus, StrategyName, SubStep, Traffic
from rollwise.model.errors import RollwiseError, ValidationFailed
from rollwise.store import (
    ChangeSet,
    Conflict,
    DeploymentChange,
    DeploymentUpdate,
    NewHistory,
    NewRoute,
    NotFound,
    RouteUpdate,
    Store,
)
from rollwise.store.schema import policies, revisions

from .helpers import NOW, make_deployments, spec, update_one

LATER = NOW + timedelta(minutes=5)


async def test_create_get_list_deployments(store: Store) -> None:
    policy = Policy(strategy=StrategyName.BLUE_GREEN, auto_promote=True)
    dep = await store.create_deployment(name="llm", replicas=3, policy=policy, revision=spec("v1"), now=NOW)
    assert dep.name == "llm" and dep.replicas == 3
    assert dep.lifecycle is Lifecycle.PENDING and dep.sub_step is None and dep.mode is Mode.FORWARD
    assert dep.current_revision == 1 and dep.deploying_revision is None
    assert (dep.paused, dep.abort_requested, dep.promote_requested) == (False, False, False)
    assert dep.version == 1 and dep.error_count == 0 and dep.rollback_reason is None
    assert dep.policy == policy and dep.policy_error is None
    assert dep.created_at == NOW == dep.updated_at

    assert await store.get_deployment("llm") == dep
    assert await store.get_deployment("nope") is None

    others = await make_deployments(store, 2)
    await update_one(
        store,
        DeploymentUpdate(deployment_id=others[0].id, expected_version=1, change=DeploymentChange(lifecycle=Lifecycle.READY)),
        NOW,
    )
    assert [d.name for d in await store.list_deployments()] == ["llm", "d0", "d1"]
    assert [d.name for d in await store.list_deployments([Lifecycle.READY])] == ["d0"]
    assert [d.name for d in await store.list_deployments([Lifecycle.PENDING, Lifecycle.READY])] == ["llm", "d0", "d1"]
    assert await store.list_deployments([]) == []


async def test_duplicate_name_is_conflict(store: Store) -> None:
    await make_deployments(store, 1)
    with pytest.raises(Conflict) as info:
        await make_deployments(store, 1)
    assert info.value.code == "conflict" and isinstance(info.value, RollwiseError)
    assert "d0" in info.value.message
    assert len(await store.list_deployments()) == 1  # nothing of the second one was written
    assert len(await store.list_revisions((await store.list_deployments())[0].id)) == 1


@pytest.mark.parametrize("name", ["x" * 64, "", "Upper", "my_model"])
async def test_invalid_name_is_rejected(store: Store, name: str) -> None:
    """The store checks the model's deployment-name rule (its column is DEPLOYMENT_NAME_MAX wide)."""
    with pytest.raises(ValidationFailed, match="is not a DNS label"):
        await store.create_deployment(name=name, replicas=1, policy=Policy(), revision=spec(), now=NOW)
    assert await store.list_deployments() == []


async def test_revisions_are_numbered_per_deployment(store: Store) -> None:
    a, b = await make_deployments(store, 2)
    r2 = await store.add_revision(a.id, spec("v2", env={"A": "1"}, health_check={"path": "/h"}), LATER)
    r3 = await store.add_revision(a.id, spec("v3", drain_seconds=2.5), LATER)
    rb2 = await store.add_revision(b.id, spec("b2"), LATER)
    assert (r2.number, r3.number, rb2.number) == (2, 3, 2)
    assert r2.env == {"A": "1"} and r2.health_check == {"path": "/h"} and r2.has_health_check
    assert r3.drain_seconds == 2.5 and r3.startup_timeout_seconds == 60.0 and r3.stop_grace_seconds == 5.0
    assert r2.command == ("python", "-m", "server", "--port", "{port}") and r2.created_at == LATER

    assert [r.number for r in await store.list_revisions(a.id)] == [1, 2, 3]
    assert [r.label for r in await store.list_revisions(a.id)] == ["v1", "v2", "v3"]
    assert (await store.list_revisions(a.id))[1] == r2
    loaded = await store.load_revisions([(a.id, 1), (a.id, 3), (b.id, 2), (b.id, 7), (a.id, 3)])
    assert set(loaded) == {(a.id, 1), (a.id, 3), (b.id, 2)}
    assert loaded[(a.id, 3)] == r3 and not loaded[(a.id, 1)].has_health_check
    assert await store.load_revisions([]) == {}


async def test_health_check_flags_match_the_revisions(store: Store) -> None:
    """The cycles' narrow read agrees with the full records: a revision written without a health check
    (stored as JSON `null`, or as SQL NULL) has none."""
    (a,) = await make_deployments(store, 1)
    await store.add_revision(a.id, spec("v2", health_check={"path": "/h"}), LATER)
    await store.add_revision(a.id, spec("v3"), LATER)
    async with store.engine.begin() as conn:
        await conn.execute(update(revisions).where(revisions.c.number == 3).values(health_check=null()))
    keys = [(a.id, 1), (a.id, 2), (a.id, 3), (a.id, 9)]
    flags = await store.health_check_flags(keys)
    assert flags == {(a.id, 1): False, (a.id, 2): True, (a.id, 3): False}
    full = await store.load_revisions(keys)
    assert flags == {key: rev.has_health_check for key, rev in full.items()}
    assert await store.health_check_flags([]) == {}


async def test_add_revision_to_missing_deployment_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.add_revision(12345, spec(), NOW)


async def test_concurrent_add_revision_gets_distinct_numbers(store: Store) -> None:
    [dep] = await make_deployments(store, 1)
    made = await asyncio.gather(*(store.add_revision(dep.id, spec(f"c{i}"), NOW) for i in range(8)))
    assert sorted(r.number for r in made) == list(range(2, 10))


async def test_one_update_bumps_version_and_guards(store: Store) -> None:
    [dep] = await make_deployments(store, 1)
    up = await update_one(
        store,
        DeploymentUpdate(
            deployment_id=dep.id,
            expected_version=1,
            change=DeploymentChange(lifecycle=Lifecycle.DEPLOYING, sub_step=SubStep.PROVISIONING, deploying_revision=2, rollout_started_at=LATER, rollback_reason=RollbackReason.ABORTED, paused=True, last_error="boom"),
        ),
        LATER,
    )
    assert up is not None
    assert up.version == 2 and up.updated_at == LATER and up.created_at == NOW
    assert up.lifecycle is Lifecycle.DEPLOYING and up.sub_step is SubStep.PROVISIONING
    assert up.deploying_revision == 2 and up.current_revision == 1 and up.rollout_started_at == LATER
    assert up.rollback_reason is RollbackReason.ABORTED and up.paused and up.last_error == "boom"

    stale = DeploymentUpdate(deployment_id=dep.id, expected_version=1, change=DeploymentChange(paused=False))
    assert (await store.apply(ChangeSet(deployments=[stale]), LATER)).skipped == {dep.id}
    assert (await store.get_deployment(dep.name)) == up  # untouched

    unguarded = DeploymentUpdate(deployment_id=dep.id, expected_version=None, change=DeploymentChange(replicas=5))
    after = await update_one(store, unguarded, LATER)
    assert after is not None and after.replicas == 5 and after.version == 3

    pure_guard = DeploymentUpdate(deployment_id=dep.id, expected_version=3)
    result = await store.apply(ChangeSet(deployments=[pure_guard]), LATER)
    assert result.applied == set() and result.versions == {dep.id: 3}
    assert await store.get_deployment(dep.name) == after  # nothing to write: no version bump
    missing = DeploymentUpdate(deployment_id=999, expected_version=None, change=DeploymentChange(paused=True))
    assert (await store.apply(ChangeSet(deployments=[missing]), LATER)).skipped == {999}


def test_deployment_update_and_change_rules() -> None:
    # The columns a change may write are its typed fields (mypy checks them); no version, no current_revision.
    with pytest.raises(TypeError):
        DeploymentChange(version=3)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        DeploymentChange(current_revision=2)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="swap"):
        DeploymentUpdate(deployment_id=1, expected_version=1, change=DeploymentChange(deploying_revision=3),
                         swap_expected=2)
    # A swap may name deploying_revision=None (what the swap writes anyway).
    u = DeploymentUpdate(deployment_id=1, expected_version=1,
                         change=DeploymentChange(deploying_revision=None, lifecycle=Lifecycle.READY), swap_expected=2)
    assert u.changes == {"lifecycle": Lifecycle.READY}
    later = DeploymentChange(paused=True, last_error=None)
    assert DeploymentChange(paused=False, replicas=2).then(later) == DeploymentChange(
        paused=True, replicas=2, last_error=None)
    assert DeploymentChange().is_empty and not later.is_empty


async def test_policy_travels_in_the_change_set(store: Store) -> None:
    [dep] = await make_deployments(store, 1)
    new = Policy(strategy=StrategyName.RECREATE)
    change = DeploymentChange(policy=new, replicas=4)
    result = await store.apply(ChangeSet(deployments=[DeploymentUpdate(deployment_id=dep.id, expected_version=1,
                                                                       change=change)]), LATER)
    assert result.versions == {dep.id: 2}
    up = await store.get_deployment(dep.name)
    assert up is not None and up.policy == new and up.replicas == 4 and up.version == 2 and up.updated_at == LATER
    stale = DeploymentUpdate(deployment_id=dep.id, expected_version=1, change=DeploymentChange(policy=Policy()))
    assert (await store.apply(ChangeSet(deployments=[stale]), LATER)).skipped == {dep.id}
    assert (await store.get_deployment(dep.name)).policy == new  # type: ignore[union-attr]


async def test_stored_policy_that_no_longer_validates_gives_none(store: Store) -> None:
    a, b = await make_deployments(store, 2)
    async with store.engine.begin() as conn:
        await conn.execute(
            update(policies).where(policies.c.deployment_id == a.id).values(document={"strategy": "canary-x"})
        )
    deps = {d.id: d for d in await store.list_deployments()}  # one bad row does not break the list
    assert deps[a.id].policy is None and "strategy" in (deps[a.id].policy_error or "")
    assert deps[b.id].policy == Policy()


async def test_timestamps_are_aware_utc(store: Store) -> None:
    plus2 = timezone(timedelta(hours=2))
    local = datetime(2026, 3, 4, 14, 30, 0, 123456, tzinfo=plus2)
    dep = await store.create_deployment(name="tz", replicas=1, policy=Policy(), revision=spec(), now=local)
    for value in (dep.created_at, (await store.list_revisions(dep.id))[0].created_at):
        assert value.tzinfo is UTC or value.utcoffset() == timedelta(0)
        assert value == local and value.hour == 12 and value.microsecond == 123456
    with pytest.raises(ValueError, match="naive"):
        await store.create_deployment(name="naive", replicas=1, policy=Policy(), revision=spec(), now=datetime(2026, 1, 1))
    assert await store.get_deployment("naive") is None


async def test_history_order_limit_and_merge(store: Store) -> None:
    [dep] = await make_deployments(store, 1)

    def h(message: str, at: datetime, error: str | None = None) -> NewHistory:
        return NewHistory(
            deployment_id=dep.id, lifecycle_from=Lifecycle.DEPLOYING, lifecycle_to=Lifecycle.DEPLOYING,
            sub_step=SubStep.PROGRESSING, result="waiting", message=message, strategy="rolling",
            from_revision=1, to_revision=2, error=error, at=at,
        )

    for entry in (h("a", NOW), h("a", NOW + timedelta(seconds=1), error="e1"), h("b", NOW + timedelta(seconds=2)),
                  h("a", NOW + timedelta(seconds=3))):
        await store.apply(ChangeSet(history=[entry]), entry.at)  # one history row per write, as a request does
    rows = await store.list_history(dep.id)
    assert [(r.message, r.attempts) for r in rows] == [("a", 2), ("b", 1), ("a", 1)]
    assert rows[0].created_at == NOW and rows[0].updated_at == NOW + timedelta(seconds=1) and rows[0].error == "e1"
    assert rows[0].sub_step is SubStep.PROGRESSING and rows[0].strategy == "rolling"
    assert [r.message for r in await store.list_history(dep.id, limit=2)] == ["b", "a"]
    assert await store.list_history(dep.id + 50) == []


async def test_update_routes_outside_cycles(store: Store) -> None:
    [dep] = await make_deployments(store, 1)
    result = await store.apply(
        ChangeSet(new_routes=[NewRoute(id="r1", deployment_id=dep.id, revision=1, created_at=NOW, address="127.0.0.1:1")]),
        NOW,
    )
    assert result.route_ids == ["r1"]
    await store.update_routes([RouteUpdate(id="r1", status=RouteStatus.RUNNING, pid=42, status_updated_at=LATER)])
    [r] = await store.list_routes([dep.id])
    assert (r.status, r.pid, r.address, r.status_updated_at) == (RouteStatus.RUNNING, 42, "127.0.0.1:1", LATER)
    await store.update_routes([RouteUpdate(id="r1", address=None, detail="exit 1"), RouteUpdate(id="missing", pid=1)])
    [r] = await store.list_routes([dep.id])
    assert r.address is None and r.detail == "exit 1" and r.pid == 42  # None writes NULL, UNSET keeps
    await store.update_routes([])


async def test_purge_deletes_destroyed_deployments_whole(store: Store) -> None:
    a, b, c = await make_deployments(store, 3)
    await store.apply(
        ChangeSet(
            new_routes=[NewRoute(deployment_id=d.id, revision=1, created_at=NOW) for d in (a, b)],
            history=[NewHistory(deployment_id=a.id, lifecycle_from=Lifecycle.PENDING, lifecycle_to=Lifecycle.SCALING,
                                result="success", message="m", at=NOW)],
        ),
        NOW,
    )
    destroyed = DeploymentUpdate(deployment_id=a.id, expected_version=None, change=DeploymentChange(lifecycle=Lifecycle.DESTROYED))
    await store.apply(ChangeSet(deployments=[destroyed]), NOW)
    assert await store.purge_destroyed() == 1
    assert await store.purge_destroyed() == 0
    # with its policy, revisions, routes and history
    assert await store.list_history(a.id) == [] and await store.list_revisions(a.id) == []
    assert {r.deployment_id for r in await store.list_routes()} == {b.id}
    async with store.engine.connect() as conn:
        assert (await conn.execute(select(policies.c.deployment_id).order_by(policies.c.deployment_id))).scalars().all() == [b.id, c.id]

    await update_one(store, replace(destroyed, deployment_id=b.id), NOW)
    assert await store.purge_destroyed() == 1
    assert [d.id for d in await store.list_deployments()] == [c.id]
    assert await store.list_routes() == []


async def test_delete_terminated_routes(store: Store) -> None:
    ready, deploying = await make_deployments(store, 2)
    await update_one(store, DeploymentUpdate(deployment_id=deploying.id, expected_version=None, change=DeploymentChange(lifecycle=Lifecycle.DEPLOYING)), NOW)
    routes = [
        NewRoute(id="old", deployment_id=ready.id, revision=1, status=RouteStatus.TERMINATED, created_at=NOW),
        NewRoute(id="new", deployment_id=ready.id, revision=1, status=RouteStatus.TERMINATED, created_at=LATER),
        NewRoute(id="run", deployment_id=ready.id, revision=1, status=RouteStatus.RUNNING, created_at=NOW),
        NewRoute(id="dep", deployment_id=deploying.id, revision=1, status=RouteStatus.TERMINATED, created_at=NOW,
                 traffic=Traffic.INACTIVE, failed=True),
    ]
    await store.apply(ChangeSet(new_routes=routes), NOW)
    assert await store.delete_terminated_routes(NOW + timedelta(minutes=1)) == 1
    assert sorted(r.id for r in await store.list_routes()) == ["dep", "new", "run"]
    assert [r.id for r in await store.list_routes(statuses=[RouteStatus.TERMINATED], deployment_ids=[deploying.id])] == ["dep"]


async def test_purge_keeps_the_newest_failed_routes_per_deployment(store: Store) -> None:
    crashy, other = await make_deployments(store, 2)
    failed = [
        NewRoute(id=f"f{i:02d}", deployment_id=crashy.id, revision=1, status=RouteStatus.FAILED_TO_START,
                 failed=True, created_at=NOW + timedelta(seconds=i))
        for i in range(25)
    ]
    others = [
        NewRoute(id="o-failed", deployment_id=other.id, revision=1, status=RouteStatus.TERMINATED, failed=True,
                 created_at=NOW - timedelta(days=3)),
        NewRoute(id="o-young", deployment_id=other.id, revision=1, status=RouteStatus.TERMINATED,
                 created_at=NOW + timedelta(minutes=5)),
    ]
    await store.apply(ChangeSet(new_routes=failed + others), NOW)
    # Nothing ended before the cut-off but the failures beyond the newest 10 of `crashy`.
    assert await store.delete_terminated_routes(NOW) == 15
    left = sorted(r.id for r in await store.list_routes())
    assert left == [f"f{i:02d}" for i in range(15, 25)] + ["o-failed", "o-young"]
    assert await store.delete_terminated_routes(NOW + timedelta(hours=1)) == 1  # o-young, not failed
    assert await store.delete_terminated_routes(NOW + timedelta(days=30)) == 0  # the newest failures stay


async def test_meta_values_are_set_and_replaced(store: Store) -> None:
    assert await store.get_meta("active_server") is None
    await store.set_meta("active_server", '{"host": "a"}', NOW)
    await store.set_meta("active_server", '{"host": "b"}', LATER)
    assert await store.get_meta("active_server") == '{"host": "b"}'


async def test_in_memory_sqlite_takes_turns() -> None:
    # One shared connection: concurrent callers must not interleave transactions on it.
    store = await Store.open("sqlite+aiosqlite://")
    try:
        [dep] = await make_deployments(store, 1)
        made = await asyncio.gather(
            *(store.add_revision(dep.id, spec(f"m{i}"), NOW) for i in range(5)), store.list_deployments()
        )
        assert sorted(r.number for r in made[:5]) == [2, 3, 4, 5, 6]  # type: ignore[union-attr]
    finally:
        await store.close()

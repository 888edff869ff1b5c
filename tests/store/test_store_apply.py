"""`Store.apply`, the cycle's single write, on both backends: routes, history merge, the guard, the
revision swap, atomicity and a statement count that does not grow with the number of deployments."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from rollwise.model import Health, Lifecycle, Mode, RouteStatus, SubStep, Traffic
from rollwise.store import (
    ChangeSet,
    Conflict,
    DeploymentRecord,
    DeploymentChange,
    DeploymentUpdate,
    IntegrityFailed,
    NewHistory,
    NewRoute,
    RouteUpdate,
    Store,
)

from .helpers import NOW, count_statements, make_deployments, spec, update_one

LATER = NOW + timedelta(seconds=30)


def hist(dep: DeploymentRecord, message: str = "rolling: created 1", **kw: object) -> NewHistory:
    values: dict[str, object] = dict(
        deployment_id=dep.id, lifecycle_from=Lifecycle.DEPLOYING, lifecycle_to=Lifecycle.DEPLOYING,
        sub_step=SubStep.PROGRESSING, result="progress", message=message, strategy="rolling",
        from_revision=1, to_revision=2, at=NOW,
    )
    values.update(kw)
    return NewHistory(**values)  # type: ignore[arg-type]


async def start_rollout(store: Store, dep: DeploymentRecord) -> DeploymentRecord:
    await store.add_revision(dep.id, spec("v2"), NOW)
    up = await update_one(
        store,
        DeploymentUpdate(
            deployment_id=dep.id, expected_version=dep.version,
            change=DeploymentChange(lifecycle=Lifecycle.DEPLOYING, deploying_revision=2, sub_step=SubStep.PROVISIONING),
        ),
        NOW,
    )
    assert up is not None
    return up


async def snapshot(store: Store) -> tuple[object, ...]:
    deps = await store.list_deployments()
    return (
        deps,
        await store.list_routes(),
        [await store.list_history(d.id) for d in deps],
    )


async def test_empty_changeset_writes_nothing(store: Store) -> None:
    with count_statements(store) as seen:
        result = await store.apply(ChangeSet(), NOW)
    assert seen == []
    assert not result.skipped and not result.applied and result.route_ids == []


async def test_routes_inserted_and_updated(store: Store) -> None:
    a, b = await make_deployments(store, 2)
    result = await store.apply(
        ChangeSet(
            new_routes=[
                NewRoute(id="a1", deployment_id=a.id, revision=1, created_at=NOW),
                NewRoute(deployment_id=a.id, revision=1, traffic=Traffic.INACTIVE, traffic_ratio=0.0, created_at=NOW),
                NewRoute(deployment_id=b.id, revision=1, created_at=LATER),
            ]
        ),
        NOW,
    )
    ids = result.route_ids
    assert ids[0] == "a1" and len(set(ids)) == 3 and all(len(i) == 12 for i in ids[1:])
    routes = {r.id: r for r in await store.list_routes()}
    assert routes["a1"].status is RouteStatus.PROVISIONING and routes["a1"].health is Health.NOT_CHECKED
    assert routes["a1"].status_updated_at == NOW and routes["a1"].failed is False
    assert routes[ids[1]].traffic is Traffic.INACTIVE and routes[ids[2]].deployment_id == b.id

    result = await store.apply(
        ChangeSet(
            route_updates=[
                RouteUpdate(id="a1", deployment_id=a.id, status=RouteStatus.TERMINATING, traffic=Traffic.INACTIVE,
                            status_updated_at=LATER, drain_until=LATER + timedelta(seconds=1)),
                RouteUpdate(id=ids[1], deployment_id=a.id, traffic_ratio=0.5, health_failures=2),
                # tagged with the wrong deployment: matches nothing
                RouteUpdate(id=ids[2], deployment_id=a.id, status=RouteStatus.TERMINATED),
            ]
        ),
        LATER,
    )
    routes2 = {r.id: r for r in await store.list_routes()}
    assert routes2["a1"].status is RouteStatus.TERMINATING and routes2["a1"].traffic is Traffic.INACTIVE
    assert routes2["a1"].drain_until == LATER + timedelta(seconds=1) and routes2["a1"].traffic_ratio == 1.0
    mid = routes2[ids[1]]
    assert mid.traffic_ratio == 0.5 and mid.health_failures == 2 and mid.status is RouteStatus.PROVISIONING
    assert routes2[ids[2]] == routes[ids[2]]


async def test_history_merges_identical_consecutive_rows(store: Store) -> None:
    a, b = await make_deployments(store, 2)
    await store.apply(ChangeSet(history=[hist(a), hist(b)]), NOW)
    result = await store.apply(ChangeSet(history=[hist(a, at=LATER), hist(b, message="other")]), LATER)
    assert (result.history_inserted, result.history_merged) == (1, 1)
    [ha] = await store.list_history(a.id)
    assert ha.attempts == 2 and ha.created_at == NOW and ha.updated_at == LATER
    assert [h.attempts for h in await store.list_history(b.id)] == [1, 1]

    # Within one ChangeSet too, and only consecutive ones: a, a, x, a -> (a x2), x, a
    result = await store.apply(
        ChangeSet(history=[hist(b, "n"), hist(b, "n", error="e"), hist(b, "x"), hist(b, "n")]), LATER
    )
    assert (result.history_inserted, result.history_merged) == (3, 1)
    rows = await store.list_history(b.id)
    assert [(h.message, h.attempts) for h in rows[2:]] == [("n", 2), ("x", 1), ("n", 1)]
    assert rows[2].error == "e"

    # Any field of the key breaks the merge
    await store.apply(ChangeSet(history=[hist(a, at=LATER, to_revision=3)]), LATER)
    assert [h.attempts for h in await store.list_history(a.id)] == [2, 1]


async def test_history_only_changeset_is_written(store: Store) -> None:
    # BEP-1049's review: history without a lifecycle change was silently dropped. Not here.
    [a] = await make_deployments(store, 1)
    await store.apply(ChangeSet(history=[hist(a, result="error", error="boom")]), NOW)
    [h] = await store.list_history(a.id)
    assert h.result == "error" and h.error == "boom"


async def test_guard_skips_a_changed_deployment_whole(store: Store) -> None:
    a, b = await make_deployments(store, 2)
    read_a, read_b = a, b  # what the cycle read
    # An operator writes between the cycle's read and its apply.
    await update_one(store, DeploymentUpdate(deployment_id=a.id, expected_version=None, change=DeploymentChange(paused=True)), NOW)
    await store.apply(ChangeSet(new_routes=[NewRoute(id="keep", deployment_id=a.id, revision=1, created_at=NOW)]), NOW)
    before_a = await store.get_deployment(a.name)

    changes = ChangeSet(
        deployments=[
            DeploymentUpdate(deployment_id=d.id, expected_version=d.version, change=DeploymentChange(lifecycle=Lifecycle.SCALING))
            for d in (read_a, read_b)
        ],
        new_routes=[NewRoute(deployment_id=d.id, revision=1, created_at=LATER) for d in (read_a, read_b)],
        route_updates=[RouteUpdate(id="keep", deployment_id=a.id, status=RouteStatus.RUNNING)],
        history=[hist(read_a), hist(read_b)],
    )
    result = await store.apply(changes, LATER)
    assert result.skipped == {a.id} and result.applied == {b.id} and result.versions == {b.id: 2}
    assert len(result.route_ids) == 1

    assert await store.get_deployment(a.name) == before_a  # nothing of a was written
    [keep] = await store.list_routes([a.id])
    assert keep.id == "keep" and keep.status is RouteStatus.PROVISIONING
    assert await store.list_history(a.id) == []

    after_b = await store.get_deployment(b.name)
    assert after_b is not None and after_b.lifecycle is Lifecycle.SCALING and after_b.version == 2
    assert after_b.updated_at == LATER
    assert len(await store.list_routes([b.id])) == 1 and len(await store.list_history(b.id)) == 1


async def test_pure_guard_without_changes(store: Store) -> None:
    [a] = await make_deployments(store, 1)
    guard = DeploymentUpdate(deployment_id=a.id, expected_version=a.version)
    result = await store.apply(ChangeSet(deployments=[guard], history=[hist(a)]), NOW)
    assert result.skipped == set() and result.applied == set() and result.versions == {a.id: 1}
    assert (await store.get_deployment(a.name)) == a  # no version bump
    stale = DeploymentUpdate(deployment_id=a.id, expected_version=a.version + 1)
    result = await store.apply(ChangeSet(deployments=[stale], history=[hist(a, "x")]), NOW)
    assert result.skipped == {a.id} and len(await store.list_history(a.id)) == 1


async def test_missing_deployment_is_skipped(store: Store) -> None:
    result = await store.apply(
        ChangeSet(deployments=[DeploymentUpdate(deployment_id=4242, expected_version=None, change=DeploymentChange(paused=True))],
                  new_routes=[NewRoute(deployment_id=4242, revision=1, created_at=NOW)]),
        NOW,
    )
    assert result.skipped == {4242} and result.route_ids == []


async def test_revision_swap_applied_twice_never_nulls(store: Store) -> None:
    [dep] = await make_deployments(store, 1)
    dep = await start_rollout(store, dep)
    assert (dep.current_revision, dep.deploying_revision) == (1, 2)
    completion = ChangeSet(
        deployments=[
            DeploymentUpdate(
                deployment_id=dep.id, expected_version=dep.version, swap_expected=2,
                change=DeploymentChange(lifecycle=Lifecycle.READY, sub_step=SubStep.COMPLETED, deploying_revision=None, mode=Mode.FORWARD),
            )
        ],
        history=[hist(dep, "completed", lifecycle_to=Lifecycle.READY, sub_step=SubStep.COMPLETED, result="success")],
    )
    first = await store.apply(completion, LATER)
    assert first.applied == {dep.id}
    done = await store.get_deployment(dep.name)
    assert done is not None
    assert (done.current_revision, done.deploying_revision, done.lifecycle) == (2, None, Lifecycle.READY)

    second = await store.apply(completion, LATER)  # the same completion again (e.g. a retried cycle)
    assert second.skipped == {dep.id}
    assert await store.get_deployment(dep.name) == done

    # Even without the version guard, the swap guard holds: deploying_revision is no longer 2.
    unguarded = ChangeSet(
        deployments=[DeploymentUpdate(deployment_id=dep.id, expected_version=None, swap_expected=2,
                                      change=DeploymentChange(lifecycle=Lifecycle.READY))]
    )
    third = await store.apply(unguarded, LATER)
    assert third.skipped == {dep.id}
    again = await store.get_deployment(dep.name)
    assert again == done and again.current_revision == 2
    assert [h.attempts for h in await store.list_history(dep.id)] == [1]


async def test_swap_mixed_with_plain_updates_in_one_statement(store: Store) -> None:
    a, b = await make_deployments(store, 2)
    a = await start_rollout(store, a)
    b = await start_rollout(store, b)
    result = await store.apply(
        ChangeSet(
            deployments=[
                DeploymentUpdate(deployment_id=a.id, expected_version=a.version, swap_expected=2,
                                 change=DeploymentChange(lifecycle=Lifecycle.READY)),
                DeploymentUpdate(deployment_id=b.id, expected_version=b.version, change=DeploymentChange(sub_step=SubStep.PROGRESSING)),
            ]
        ),
        LATER,
    )
    assert result.applied == {a.id, b.id}
    a2, b2 = await store.get_deployment(a.name), await store.get_deployment(b.name)
    assert a2 is not None and b2 is not None
    assert (a2.current_revision, a2.deploying_revision, a2.sub_step) == (2, None, SubStep.PROVISIONING)
    assert (b2.current_revision, b2.deploying_revision, b2.sub_step) == (1, 2, SubStep.PROGRESSING)
    assert b2.lifecycle is Lifecycle.DEPLOYING


async def test_apply_is_atomic_on_foreign_key_failure(store: Store) -> None:
    a, b = await make_deployments(store, 2)
    await store.apply(ChangeSet(new_routes=[NewRoute(id="r", deployment_id=a.id, revision=1, created_at=NOW)]), NOW)
    before = await snapshot(store)
    bad = ChangeSet(
        deployments=[DeploymentUpdate(deployment_id=a.id, expected_version=a.version, change=DeploymentChange(replicas=9))],
        route_updates=[RouteUpdate(id="r", deployment_id=a.id, status=RouteStatus.RUNNING)],
        history=[hist(a), hist(b)],
        # a route of a deployment that does not exist (and has no DeploymentUpdate): the FK fails
        new_routes=[NewRoute(deployment_id=b.id, revision=1, created_at=NOW),
                    NewRoute(deployment_id=987654, revision=1, created_at=NOW)],
    )
    with pytest.raises(IntegrityFailed) as info:
        await store.apply(bad, LATER)
    assert info.value.code == "store.integrity" and not info.value.transient
    assert await snapshot(store) == before


async def test_apply_is_atomic_on_a_late_failure(store: Store) -> None:
    a, b = await make_deployments(store, 2)
    await store.apply(ChangeSet(new_routes=[NewRoute(id="dup", deployment_id=a.id, revision=1, created_at=NOW)]), NOW)
    before = await snapshot(store)
    bad = ChangeSet(
        deployments=[DeploymentUpdate(deployment_id=d.id, expected_version=d.version, change=DeploymentChange(replicas=7)) for d in (a, b)],
        new_routes=[NewRoute(id="dup", deployment_id=b.id, revision=1, created_at=NOW)],  # primary key taken
        history=[hist(a)],
    )
    with pytest.raises(Conflict):
        await store.apply(bad, LATER)
    assert await snapshot(store) == before


async def test_malformed_changesets_are_refused_before_io(store: Store) -> None:
    [a] = await make_deployments(store, 1)
    with count_statements(store) as seen:
        with pytest.raises(ValueError, match="tagged"):
            await store.apply(ChangeSet(route_updates=[RouteUpdate(id="x", status=RouteStatus.RUNNING)]), NOW)
        with pytest.raises(ValueError, match="two"):
            await store.apply(
                ChangeSet(deployments=[DeploymentUpdate(deployment_id=a.id, expected_version=None)] * 2), NOW
            )
    assert seen == []


def _cycle_changes(deps: list[DeploymentRecord], routes_by_dep: dict[int, list[str]]) -> ChangeSet:
    """What a busy DEPLOYING cycle writes: for every deployment a guarded change, 2 new routes, a
    traffic change and a termination of existing routes, and a history row."""
    cs = ChangeSet()
    for d in deps:
        cs.deployments.append(DeploymentUpdate(deployment_id=d.id, expected_version=d.version,
                                               change=DeploymentChange(sub_step=SubStep.PROGRESSING, last_progress_at=LATER)))
        cs.new_routes += [NewRoute(deployment_id=d.id, revision=1, created_at=LATER) for _ in range(2)]
        first, second = routes_by_dep[d.id]
        cs.route_updates.append(RouteUpdate(id=first, deployment_id=d.id, traffic_ratio=0.5))
        cs.route_updates.append(RouteUpdate(id=second, deployment_id=d.id, status=RouteStatus.TERMINATING,
                                            traffic=Traffic.INACTIVE, status_updated_at=LATER))
        cs.history.append(hist(d, at=LATER))
    return cs


@pytest.mark.parametrize("n", [1, 10, 100])
async def test_statement_count_does_not_grow_with_deployments(store: Store, n: int) -> None:
    deps = await make_deployments(store, n)
    seed = ChangeSet(
        new_routes=[NewRoute(id=f"r{d.id}-{i}", deployment_id=d.id, revision=1, created_at=NOW) for d in deps for i in (1, 2)],
        history=[hist(d, "seed") for d in deps],
    )
    await store.apply(seed, NOW)
    routes_by_dep = {d.id: [f"r{d.id}-1", f"r{d.id}-2"] for d in deps}

    with count_statements(store) as applied:
        result = await store.apply(_cycle_changes(deps, routes_by_dep), LATER)
    assert result.applied == {d.id for d in deps} and len(result.route_ids) == 2 * n
    with count_statements(store) as again:  # same cycle again: every deployment is skipped by its guard
        result = await store.apply(_cycle_changes(deps, routes_by_dep), LATER)
    assert result.skipped == {d.id for d in deps}
    with count_statements(store) as reads:
        fresh = await store.list_deployments([Lifecycle.PENDING])
        routes = await store.list_routes([d.id for d in fresh], statuses=[RouteStatus.PROVISIONING])
        await store.load_revisions({(r.deployment_id, r.revision) for r in routes})
    merged = await store.apply(ChangeSet(history=[hist(d, at=LATER) for d in fresh]), LATER)
    assert merged.history_merged == n

    assert len(routes) == 3 * n  # 2 new + 1 untouched seed route each
    # Fixed counts, whatever n (asserted equal across n through the expected numbers):
    # BEGIN IMMEDIATE (SQLite), UPDATE deployments (the guard too; RETURNING each one's last history
    # row), INSERT routes, UPDATE routes, INSERT history.
    begin = 1 if store.dialect == "sqlite" else 0
    assert len(applied) == begin + 4, applied
    assert [s.split()[0] for s in applied[begin:]] in (["UPDATE", "INSERT", "UPDATE", "INSERT"],
                                                        ["WITH", "INSERT", "WITH", "INSERT"]), applied
    assert len(again) == begin + 1, again  # only the guarded UPDATE, which writes nothing
    assert len([s for s in reads if not s.startswith("BEGIN")]) == 3, reads  # one query per read


async def test_concurrent_applies_with_the_same_guard_apply_once(store: Store) -> None:
    [dep] = await make_deployments(store, 1)

    def changes(tag: str) -> ChangeSet:
        return ChangeSet(
            deployments=[DeploymentUpdate(deployment_id=dep.id, expected_version=dep.version,
                                          change=DeploymentChange(last_error=tag))],
            new_routes=[NewRoute(id=tag, deployment_id=dep.id, revision=1, created_at=NOW)],
        )

    results = await asyncio.gather(*(store.apply(changes(f"c{i}"), NOW) for i in range(4)))
    assert sorted(len(r.applied) for r in results) == [0, 0, 0, 1]
    winner = next(r for r in results if r.applied)
    after = await store.get_deployment(dep.name)
    assert after is not None and after.version == 2 and after.last_error == winner.route_ids[0]
    assert [r.id for r in await store.list_routes([dep.id])] == winner.route_ids

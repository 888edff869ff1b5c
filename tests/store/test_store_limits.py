"""Parameter limits: 12,000 deployments and routes through every bulk path, on both backends.

SQLite refuses more than 32,766 parameters per statement and asyncpg more than 32,767; the store uses
arrays on PostgreSQL, chunked IN lists on SQLite, and executemany for per-row writes.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import insert

from rollwise.model import Lifecycle, Policy, RouteStatus, SubStep, Traffic
from rollwise.store import ChangeSet, DeploymentChange, DeploymentUpdate, NewHistory, NewRoute, RouteUpdate, Store
from rollwise.store.schema import deployments, policies, revisions

from .helpers import NOW, count_statements

N = 12_000
LATER = NOW + timedelta(seconds=5)


async def _bulk_deployments(store: Store, n: int) -> list[int]:
    """n READY deployments with their policies, inserted directly (fast test setup); revision 1 rows
    only for the first three."""
    ids = list(range(1, n + 1))
    async with store.engine.begin() as conn:
        await conn.execute(insert(deployments), [
            dict(id=i, name=f"bulk{i}", replicas=1, lifecycle="ready", mode="forward", current_revision=1,
                 paused=False, abort_requested=False, promote_requested=False, error_count=0, version=1,
                 created_at=NOW, updated_at=NOW)
            for i in ids
        ])
        await conn.execute(insert(policies), [
            dict(deployment_id=i, strategy="rolling", document=Policy().to_json(), updated_at=NOW) for i in ids
        ])
        await conn.execute(insert(revisions), [
            dict(deployment_id=i, number=1, command=["x"], env={}, health_check=None, startup_timeout_seconds=60.0,
                 drain_seconds=1.0, stop_grace_seconds=5.0, label=None, created_at=NOW) for i in ids[:3]
        ])
    return ids


async def test_twelve_thousand_of_everything(store: Store) -> None:
    ids = await _bulk_deployments(store, N)

    # A cycle over 12,000 deployments: the guard SELECT with 12,000 ids, 12,000 row updates, 12,000 inserts.
    created = await store.apply(
        ChangeSet(
            deployments=[DeploymentUpdate(deployment_id=i, expected_version=1, change=DeploymentChange(lifecycle=Lifecycle.DEPLOYING, sub_step=SubStep.PROVISIONING))
                         for i in ids],
            new_routes=[NewRoute(id=f"route{i}", deployment_id=i, revision=1, created_at=NOW) for i in ids],
        ),
        NOW,
    )
    assert created.applied == set(ids) and len(created.route_ids) == N
    assert len(await store.list_deployments([Lifecycle.DEPLOYING])) == N

    routes = await store.list_routes(ids)
    assert len(routes) == N
    assert set(await store.load_revisions({(i, 1) for i in ids})) == {(1, 1), (2, 1), (3, 1)}

    # 12,000 tagged route updates and history rows (the last-row SELECT over 12,000 ids), guarded.
    cycle = await store.apply(
        ChangeSet(
            deployments=[DeploymentUpdate(deployment_id=i, expected_version=2) for i in ids],
            route_updates=[RouteUpdate(id=f"route{i}", deployment_id=i, status=RouteStatus.RUNNING) for i in ids],
            history=[NewHistory(deployment_id=i, lifecycle_from=Lifecycle.READY, lifecycle_to=Lifecycle.DEPLOYING,
                                result="progress", message="start", at=LATER) for i in ids],
        ),
        LATER,
    )
    assert cycle.skipped == set() and cycle.routes_updated == N and cycle.history_inserted == N

    # The route controller's bulk write
    await store.update_routes([RouteUpdate(id=f"route{i}", traffic=Traffic.INACTIVE, traffic_ratio=0.0) for i in ids])
    routes = await store.list_routes(ids, statuses=[RouteStatus.RUNNING])
    assert len(routes) == N and {(r.traffic, r.traffic_ratio) for r in routes} == {(Traffic.INACTIVE, 0.0)}


async def test_id_lists_beyond_one_chunk(store: Store) -> None:
    ids = await _bulk_deployments(store, 3)
    await store.apply(ChangeSet(new_routes=[NewRoute(deployment_id=i, revision=1, created_at=NOW) for i in ids]), NOW)
    wanted = list(range(1, 30_001))  # 30,000 ids, most of them unknown
    with count_statements(store) as seen:
        routes = await store.list_routes(wanted)
    assert sorted(r.deployment_id for r in routes) == ids
    queries = [s for s in seen if not s.startswith("BEGIN")]
    assert len(queries) == 1  # one array (PostgreSQL) or one JSON text (SQLite) parameter, never chunks

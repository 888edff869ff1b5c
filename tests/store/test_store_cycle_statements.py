"""The DEPLOYING cycle over a real database on both backends (rollwise issue 16): at most 8 SQL
statements, BEGINs included, whatever the number of deployments: one read transaction of two queries
and one write transaction of the guarded deployments UPDATE (with the timeline samples), the routes
INSERT and UPDATE and the history INSERT."""

from __future__ import annotations

from datetime import timedelta

import pytest

from rollwise.control.cycles import CycleKind, run_cycle
from rollwise.model import Health, Lifecycle, Policy, RouteStatus, StrategyName, SubStep
from rollwise.store import (
    ChangeSet,
    DeploymentChange,
    DeploymentUpdate,
    NewRollout,
    NewRoute,
    Store,
)

from .helpers import NOW, count_statements, spec

MAX_STATEMENTS = 8
LATER = NOW + timedelta(seconds=30)


async def mid_rollout(store: Store, n: int) -> list[int]:
    """n deployments rolling from revision 1 (3 running routes) to 2 (1 provisioning), each with its open
    rollout row as its activation leaves it (no sample yet)."""
    policy = Policy(strategy=StrategyName.ROLLING, max_surge=2, max_unavailable=1)
    deps = [await store.create_deployment(name=f"c{i}", replicas=3, policy=policy, revision=spec("v1"), now=NOW)
            for i in range(n)]
    for d in deps:
        await store.add_revision(d.id, spec("v2"), NOW)
    changes = ChangeSet()
    for d in deps:
        changes.deployments.append(DeploymentUpdate(deployment_id=d.id, expected_version=d.version, change=DeploymentChange(
            lifecycle=Lifecycle.DEPLOYING, sub_step=SubStep.PROVISIONING, deploying_revision=2, rollout_started_at=NOW,
            last_progress_at=NOW)))
        changes.new_rollouts.append(NewRollout(deployment_id=d.id, from_revision=1, to_revision=2, strategy="rolling",
                                               at=NOW))
        changes.new_routes += [NewRoute(deployment_id=d.id, revision=1, status=RouteStatus.RUNNING, health=Health.HEALTHY,
                                        created_at=NOW - timedelta(seconds=60 - k)) for k in range(3)]
        changes.new_routes.append(NewRoute(deployment_id=d.id, revision=2, created_at=NOW))
    await store.apply(changes, NOW)
    return [d.id for d in deps]


@pytest.mark.parametrize("n", [1, 30])
async def test_the_deploying_cycle_takes_at_most_8_statements(store: Store, n: int) -> None:
    ids = await mid_rollout(store, n)
    with count_statements(store) as statements:
        report = await run_cycle(store, CycleKind.DEPLOYING, LATER)

    assert (report.deployments, report.applied, report.skipped, report.errors) == (n, n, set(), {})
    assert report.created_routes == n
    assert len(statements) <= MAX_STATEMENTS, statements
    words = [s.split()[0].upper() for s in statements]
    assert words.count("SELECT") == 2, statements
    assert not any("UPDATE rollouts" in s or "INSERT INTO rollouts" in s for s in statements), statements
    for id_ in ids:  # what the cycle wrote besides: each rollout's start sample
        [rollout] = await store.list_rollouts(id_)
        timeline = await store.rollout_timeline(id_, rollout.id)
        assert timeline is not None and rollout.sample_count == len(timeline[1]) == 1
        assert timeline[1][0].ready == {1: 3, 2: 0}

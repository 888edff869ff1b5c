"""Concurrent writes of one kind go together (store.writer, store.grouped): each caller gets its own
result or its own error, batches write a fixed number of statements, and nothing of one caller is lost
or given to another. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from rollwise.model import Lifecycle, Policy
from rollwise.store import (
    ChangeSet,
    Conflict,
    DeploymentChange,
    DeploymentUpdate,
    NewHistory,
    NotFound,
    Store,
)

from .helpers import NOW, count_statements, spec


async def test_concurrent_creates_are_written_in_batches(store: Store) -> None:
    names = [f"c{i:03d}" for i in range(60)]
    with count_statements(store) as statements:
        made = await asyncio.gather(*(
            store.create_deployment(name=n, replicas=i % 4, policy=Policy(), revision=spec(f"v-{n}"), now=NOW)
            for i, n in enumerate(names)
        ))
    assert [d.name for d in made] == names
    assert [d.replicas for d in made] == [i % 4 for i in range(60)]
    assert len({d.id for d in made}) == 60 and all(d.lifecycle is Lifecycle.PENDING and d.version == 1 for d in made)
    for d in made[:5] + made[-5:]:  # each got its own revision 1 and policy
        (rev,) = await store.list_revisions(d.id)
        assert rev.number == 1 and rev.label == f"v-{d.name}"
        assert (await store.get_deployment(d.name)) == d
    commits = sum(1 for s in statements if s.upper().startswith("COMMIT"))
    writes = sum(1 for s in statements if s.upper().startswith("INSERT INTO DEPLOYMENTS"))
    assert writes < 60 and writes == store._creates.batches, (writes, store._creates.batches)
    assert commits <= writes or commits == 0  # drivers that commit outside the cursor log no COMMIT


async def test_a_taken_name_fails_only_its_own_create(store: Store) -> None:
    await store.create_deployment(name="taken", replicas=1, policy=Policy(), revision=spec(), now=NOW)
    outcomes = await asyncio.gather(
        *(store.create_deployment(name=n, replicas=1, policy=Policy(), revision=spec(), now=NOW)
          for n in ("a", "taken", "b", "a", "c")),
        return_exceptions=True,
    )
    assert [type(o).__name__ for o in outcomes] == ["DeploymentRecord", "Conflict", "DeploymentRecord", "Conflict",
                                                    "DeploymentRecord"]
    assert "'taken'" in str(outcomes[1]) and "'a'" in str(outcomes[3])
    assert sorted(d.name for d in await store.list_deployments()) == ["a", "b", "c", "taken"]


async def test_a_destroyed_deployment_gives_its_name_back(store: Store) -> None:
    old = await store.create_deployment(name="again", replicas=1, policy=Policy(), revision=spec("old"), now=NOW)
    other = await store.create_deployment(name="other", replicas=1, policy=Policy(), revision=spec(), now=NOW)
    for dep in (old, other):
        change = DeploymentChange(lifecycle=Lifecycle.DESTROYED)
        await store.apply(ChangeSet(deployments=[DeploymentUpdate(deployment_id=dep.id, expected_version=dep.version, change=change)]), NOW)
    new = await store.create_deployment(name="again", replicas=2, policy=Policy(), revision=spec("new"), now=NOW)
    assert new.id != old.id and new.replicas == 2
    assert [r.label for r in await store.list_revisions(new.id)] == ["new"]
    assert await store.list_revisions(old.id) == []  # the destroyed one's rows went with it
    # Only that name's destroyed deployment went: another destroyed one keeps its rows (history NAME).
    assert (await store.get_deployment("other")) is not None


async def test_concurrent_revisions_get_distinct_numbers_and_missing_ones_fail_alone(store: Store) -> None:
    a = await store.create_deployment(name="a", replicas=1, policy=Policy(), revision=spec(), now=NOW)
    b = await store.create_deployment(name="b", replicas=1, policy=Policy(), revision=spec(), now=NOW)
    calls = [(a.id, "a2"), (b.id, "b2"), (9999, "x"), (a.id, "a3"), (a.id, "a4"), (b.id, "b3")]
    outcomes = await asyncio.gather(*(store.add_revision(i, spec(label), NOW) for i, label in calls),
                                    return_exceptions=True)
    assert isinstance(outcomes[2], NotFound)
    got = {(o.deployment_id, o.label): o.number for o in outcomes if not isinstance(o, BaseException)}
    assert sorted(got[(a.id, f"a{k}")] for k in (2, 3, 4)) == [2, 3, 4]
    assert sorted(got[(b.id, f"b{k}")] for k in (2, 3)) == [2, 3]
    assert [r.number for r in await store.list_revisions(a.id)] == [1, 2, 3, 4]


def _bump(dep_id: int, version: int, replicas: int) -> ChangeSet:
    update = DeploymentUpdate(deployment_id=dep_id, expected_version=version, change=DeploymentChange(replicas=replicas))
    history = NewHistory(deployment_id=dep_id, at=NOW, lifecycle_from=Lifecycle.PENDING, lifecycle_to=Lifecycle.PENDING,
                         result="progress", message=f"replicas {replicas}")
    return ChangeSet(deployments=[update], history=[history])


async def test_combined_request_writes_keep_each_guard(store: Store) -> None:
    deps = [await store.create_deployment(name=f"r{i}", replicas=1, policy=Policy(), revision=spec(), now=NOW)
            for i in range(6)]
    later = NOW + timedelta(seconds=1)
    writes = [_bump(d.id, d.version, 10 + i) for i, d in enumerate(deps)]
    writes.append(_bump(deps[0].id, deps[0].version, 99))  # the same read version again: its guard fails
    writes.append(_bump(deps[1].id, 7, 98))  # a stale version
    results = await asyncio.gather(*(store.apply(w, later, combine=True) for w in writes))
    for i, d in enumerate(deps):
        assert results[i].skipped == set() and results[i].versions == {d.id: 2}, results[i]
        assert results[i].written_at == later
    assert results[6].skipped == {deps[0].id} and results[6].versions == {}
    assert results[7].skipped == {deps[1].id}
    now_listed = {d.name: d for d in await store.list_deployments()}
    assert [now_listed[f"r{i}"].replicas for i in range(6)] == [10 + i for i in range(6)]
    assert all(now_listed[f"r{i}"].version == 2 and now_listed[f"r{i}"].updated_at == later for i in range(6))
    for i, d in enumerate(deps):
        assert [h.message for h in await store.list_history(d.id)] == [f"replicas {10 + i}"]


async def test_a_write_that_fails_alone_leaves_the_others_of_its_batch(store: Store) -> None:
    dep = await store.create_deployment(name="alive", replicas=1, policy=Policy(), revision=spec(), now=NOW)
    gone = NewHistory(deployment_id=424242, at=NOW, lifecycle_from=Lifecycle.PENDING, lifecycle_to=Lifecycle.PENDING,
                      result="progress", message="nobody")
    results = await asyncio.gather(
        store.apply(_bump(dep.id, dep.version, 5), NOW, combine=True),
        store.apply(ChangeSet(history=[gone]), NOW, combine=True),
        return_exceptions=True,
    )
    assert not isinstance(results[0], BaseException) and results[0].versions == {dep.id: 2}
    assert isinstance(results[1], Exception) and not isinstance(results[1], Conflict), results[1]
    assert (await store.get_deployment("alive")).replicas == 5  # type: ignore[union-attr]


@pytest.mark.parametrize("writers", [32])
async def test_writes_queue_instead_of_failing(store: Store, writers: int) -> None:
    """Writers of every kind at once, many times over: none fails with 'database is locked'."""
    deps = [await store.create_deployment(name=f"q{i}", replicas=1, policy=Policy(), revision=spec(), now=NOW)
            for i in range(writers)]

    async def one(i: int) -> None:
        dep = deps[i]
        for k in range(5):
            await store.add_revision(dep.id, spec(f"{i}-{k}"), NOW)
            fresh = await store.get_deployment(dep.name)
            assert fresh is not None
            await store.apply(_bump(dep.id, fresh.version, k), NOW, combine=True)
            await store.create_deployment(name=f"q{i}-{k}", replicas=0, policy=Policy(), revision=spec(), now=NOW)
            await store.update_routes([])

    await asyncio.gather(*(one(i) for i in range(writers)))
    assert len(await store.list_deployments()) == writers * 6


async def test_create_returns_the_revision_it_stored(store: Store) -> None:
    pairs = await asyncio.gather(*(
        store.create_deployment_and_revision(name=f"w{i}", replicas=1, policy=Policy(), revision=spec(f"l{i}"), now=NOW)
        for i in range(5)
    ))
    for i, (dep, first) in enumerate(pairs):
        assert dep.name == f"w{i}" and first.deployment_id == dep.id and first.number == 1 and first.label == f"l{i}"
        assert await store.list_revisions(dep.id) == [first]

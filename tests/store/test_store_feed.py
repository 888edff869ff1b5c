"""The store's write feeds (store/feed.py): which deployments each committed write touched, per reader."""

from __future__ import annotations

import gc
import weakref

import pytest

from rollwise.model import Lifecycle, RouteStatus
from rollwise.store import ChangeSet, DeploymentChange, DeploymentUpdate, NewRoute, RouteUpdate, Store, StoreError

from .helpers import NOW, make_deployments


async def test_a_new_feed_asks_for_everything_then_for_what_was_written(store: Store) -> None:
    feed = store.feed()
    assert feed.take() is None  # a new reader has read nothing: everything
    assert feed.take() == set()
    a, b, c = await make_deployments(store, 3)
    assert feed.take() == {a.id, b.id, c.id}  # creations

    result = await store.apply(ChangeSet(new_routes=[NewRoute(id="ra", deployment_id=a.id, revision=1, created_at=NOW)]), NOW)
    assert result.route_ids == ["ra"]
    change = DeploymentChange(replicas=5)
    await store.apply(ChangeSet(deployments=[DeploymentUpdate(deployment_id=b.id, expected_version=b.version, change=change)]),
                      NOW, combine=True)
    assert feed.take() == {a.id, b.id}
    assert feed.take() == set()


async def test_route_updates_tell_every_feed_but_the_writers_own(store: Store) -> None:
    (a,) = await make_deployments(store, 1)
    await store.apply(ChangeSet(new_routes=[NewRoute(id="r1", deployment_id=a.id, revision=1, created_at=NOW)]), NOW)
    mine, other = store.feed(), store.feed()
    mine.take(), other.take()
    await store.update_routes([RouteUpdate(id="r1", deployment_id=a.id, status=RouteStatus.RUNNING)], feed=mine)
    assert (mine.take(), other.take()) == (set(), {a.id})
    # The writer may announce fewer deployments than it wrote (changes no other reader acts on).
    await store.update_routes([RouteUpdate(id="r1", deployment_id=a.id, pid=42)], feed=mine, announce=())
    assert (mine.take(), other.take()) == (set(), set())
    # An update without its deployment: nobody knows which one, so every feed says "read everything".
    await store.update_routes([RouteUpdate(id="r1", status=RouteStatus.TERMINATING)], feed=mine)
    assert (mine.take(), other.take()) == (set(), None)


async def test_purge_tells_which_deployments_are_gone(store: Store) -> None:
    a, b = await make_deployments(store, 2)
    gone = DeploymentUpdate(deployment_id=a.id, expected_version=a.version, change=DeploymentChange(lifecycle=Lifecycle.DESTROYED))
    await store.apply(ChangeSet(deployments=[gone]), NOW)
    feed = store.feed()
    feed.take()
    assert await store.purge_destroyed() == 1
    assert feed.take() == {a.id}
    assert [d.id for d in await store.list_deployments(ids=[a.id, b.id])] == [b.id]


async def test_a_write_that_fails_tells_nobody(store: Store) -> None:
    feed = store.feed()
    feed.take()
    with pytest.raises(StoreError):  # no such deployment: the INSERT fails, the transaction rolls back
        await store.apply(ChangeSet(new_routes=[NewRoute(id="x", deployment_id=999, revision=1, created_at=NOW)]), NOW)
    assert feed.take() == set()


async def test_a_feed_lives_as_long_as_its_reader(store: Store) -> None:
    """The store does not keep a feed alive: a controller that is replaced leaves nothing behind."""
    feed = store.feed()
    ref = weakref.ref(feed)
    del feed
    gc.collect()
    assert ref() is None
    await make_deployments(store, 1)  # written with no feed left to tell

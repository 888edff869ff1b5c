"""No SQLAlchemy, asyncpg, sqlite3 or socket exception leaks out of the store: each becomes a
rollwise error classified by how the caller must react (transient or not)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event
from sqlalchemy import exc as sa_exc

from rollwise.model import Lifecycle, Policy, RouteStatus
from rollwise.model.errors import RollwiseError, ValidationFailed
from rollwise.store import (
    ChangeSet,
    Conflict,
    DeploymentChange,
    DeploymentUpdate,
    IntegrityFailed,
    NewHistory,
    NewRollout,
    NewRoute,
    RolloutUpdate,
    RouteUpdate,
    Store,
    StoreError,
    StoreFailed,
    migrate,
)
from rollwise.store.errors import translate

from .helpers import NOW, Database, make_deployments, spec

FOREIGN_MODULES = ("sqlalchemy", "asyncpg", "sqlite3", "aiosqlite")


def assert_rollwise(e: BaseException) -> None:
    assert isinstance(e, RollwiseError), f"{type(e).__module__}.{type(e).__name__} leaked: {e}"
    assert not type(e).__module__.startswith(FOREIGN_MODULES)
    assert "\n" not in e.message


async def test_unreachable_postgresql_is_transient_store_error() -> None:
    with pytest.raises(StoreError) as info:
        await Store.open("postgresql+asyncpg://postgres@127.0.0.1:1/test")
    assert_rollwise(info.value)
    assert info.value.transient and info.value.code == "store.unavailable"


async def test_unreachable_without_migrate_fails_at_first_use() -> None:
    store = await Store.open("postgresql+asyncpg://postgres@127.0.0.1:1/test", migrate=False)
    try:
        with pytest.raises(StoreError) as info:
            await store.list_deployments()
        assert_rollwise(info.value)
        assert info.value.transient
    finally:
        await store.close()


async def test_unopenable_sqlite_file_is_store_error(tmp_path: Path) -> None:
    (tmp_path / "db").mkdir()
    with pytest.raises(StoreError) as info:
        await Store.open(f"sqlite+aiosqlite:///{tmp_path}/db")  # a directory, not a file
    assert_rollwise(info.value)
    # aiosqlite stops the worker thread of a failed connect without awaiting it; let it finish while
    # this test's event loop still runs (otherwise it reports "Event loop is closed" from its thread).
    for _ in range(100):
        if not any(t.name.endswith("(_connection_worker_thread)") for t in threading.enumerate()):
            break
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("url", ["not a url", "mysql+aiomysql://u@h/db", "sqlite+pysqlcipher:///x.db"])
async def test_bad_url_is_validation_failed(url: str) -> None:
    with pytest.raises(ValidationFailed):
        await Store.open(url)


async def test_every_method_translates_errors_when_the_schema_is_gone(db: Database) -> None:
    store = await db.open()
    [dep] = await make_deployments(store, 1)
    await migrate.downgrade(store.engine, "base")  # every table gone: each statement fails
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: store.create_deployment(name="x", replicas=1, policy=Policy(), revision=spec(), now=NOW),
        lambda: store.add_revision(dep.id, spec(), NOW),
        lambda: store.apply(ChangeSet(new_routes=[NewRoute(deployment_id=dep.id, revision=1, created_at=NOW)]), NOW),
        lambda: store.apply(ChangeSet(deployments=[DeploymentUpdate(deployment_id=dep.id, expected_version=None,
                                                                    change=DeploymentChange(paused=True))]), NOW),
        lambda: store.apply(ChangeSet(history=[NewHistory(deployment_id=dep.id, lifecycle_from=Lifecycle.READY,
                                                          lifecycle_to=Lifecycle.READY, result="x", message="m",
                                                          at=NOW)]), NOW),
        lambda: store.health_check_flags([(dep.id, 1)]),
        lambda: store.get_meta("x"),
        lambda: store.set_meta("x", "y", NOW),
        lambda: store.update_routes([RouteUpdate(id="r", status=RouteStatus.RUNNING)]),
        lambda: store.delete_terminated_routes(NOW),
        lambda: store.purge_destroyed(),
        lambda: store.get_deployment("x"),
        lambda: store.list_deployments(),
        lambda: store.list_revisions(dep.id),
        lambda: store.load_revisions([(dep.id, 1)]),
        lambda: store.list_routes([dep.id]),
        lambda: store.list_history(dep.id),
        lambda: store.list_deployments_and_rollouts([Lifecycle.DEPLOYING]),
        lambda: store.list_rollouts(dep.id),
        lambda: store.rollout_timeline(dep.id, 1),
        lambda: store.apply(ChangeSet(new_rollouts=[NewRollout(deployment_id=dep.id, from_revision=1, to_revision=2,
                                                               strategy="rolling", at=NOW)]), NOW),
        lambda: store.apply(ChangeSet(rollout_updates=[RolloutUpdate(deployment_id=dep.id, at=NOW,
                                                                     outcome="aborted")]), NOW),
    ]
    try:
        for call in calls:
            with pytest.raises(RollwiseError) as info:
                await call()
            assert_rollwise(info.value)
            assert isinstance(info.value, StoreFailed) and not info.value.transient
    finally:
        await store.close()


async def _with_connection_setting(store: Store, statement: str) -> None:
    """Every new connection of the store runs `statement` first; pooled connections are dropped."""

    def on_connect(dbapi_connection: Any, record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(statement)
        cursor.close()

    event.listen(store.engine.sync_engine, "connect", on_connect)
    await store.engine.dispose()


FAULTS = {
    # SQLite reports SQLITE_FULL ("database or disk is full") once the file may not grow: what a full disk
    # gives, produced by SQLite itself by capping this connection's page count; query_only gives
    # SQLITE_READONLY, as a read-only file or file system does.
    "sqlite": ("PRAGMA max_page_count = 1", "PRAGMA query_only = 1"),
    "postgresql": ("SET default_transaction_read_only = on",),  # 25006, as on a read-only server
}


async def test_full_or_read_only_database_is_transient(db: Database) -> None:
    for statement in FAULTS[db.backend]:
        store = await db.open()
        try:
            kept = await store.create_deployment(name=f"kept{len(statement)}", replicas=1, policy=Policy(),
                                                 revision=spec(), now=NOW)
            await _with_connection_setting(store, statement)
            with pytest.raises(RollwiseError) as info:
                for i in range(200):  # a few writes: a page cap bites once the file must grow
                    await store.create_deployment(name=f"x{len(statement)}-{i}", replicas=1, policy=Policy(), revision=spec(), now=NOW)
            assert_rollwise(info.value)
            assert isinstance(info.value, StoreError) and info.value.transient, (statement, info.value)
            assert info.value.code == "store.unavailable"
            assert (await store.get_deployment(kept.name)) is not None  # reads still work, nothing lost
        finally:
            await store.close()


class _Orig(Exception):
    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("error", "expected", "transient"),
    [
        (sa_exc.IntegrityError("INSERT", {}, _Orig("duplicate key", "23505")), Conflict, False),
        (sa_exc.IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE constraint failed: x.y")), Conflict, False),
        (sa_exc.IntegrityError("INSERT", {}, _Orig("violates foreign key", "23503")), IntegrityFailed, False),
        (sa_exc.OperationalError("SELECT", {}, sqlite3.OperationalError("database is locked")), StoreError, True),
        (sa_exc.DBAPIError("UPDATE", {}, _Orig("deadlock detected", "40P01")), StoreError, True),
        (sa_exc.DBAPIError("UPDATE", {}, _Orig("could not serialize access", "40001")), StoreError, True),
        (sa_exc.ProgrammingError("SELECT", {}, _Orig('relation "x" does not exist', "42P01")), StoreFailed, False),
        (sa_exc.TimeoutError("QueuePool limit reached"), StoreError, True),
        (sa_exc.ArgumentError("bad"), StoreFailed, False),
        (ConnectionRefusedError(111, "Connection refused"), StoreError, True),
        (TimeoutError(), StoreError, True),
        (asyncpg.exceptions.CannotConnectNowError("starting up"), StoreError, True),
        (asyncpg.exceptions.InvalidCatalogNameError('database "x" does not exist'), StoreFailed, False),
        (sqlite3.OperationalError("unable to open database file"), StoreError, True),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_translation_table(error: BaseException, expected: type[RollwiseError], transient: bool) -> None:
    out = translate(error)
    assert type(out) is expected
    assert_rollwise(out)
    assert out.transient is transient  # type: ignore[attr-defined]


def test_caller_bugs_are_not_disguised() -> None:
    bug = ValueError("naive datetime")
    wrapped = sa_exc.StatementError("bind failed", "INSERT", {}, bug)
    assert translate(wrapped) is bug
    other = KeyError("x")
    assert translate(other) is other  # not ours to translate

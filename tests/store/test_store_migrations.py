"""Migrations on both backends: upgrade head -> downgrade base -> upgrade head, and head == schema.py."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from rollwise.store import migrate
from rollwise.store.schema import metadata

from .helpers import NOW, Database, make_deployments

TABLES = {"deployments", "policies", "revisions", "routes", "history"}


async def _tables(store: Any) -> set[str]:
    async with store.engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def test_upgrade_downgrade_upgrade(db: Database) -> None:
    store = await db.open(migrate=False)
    try:
        assert await migrate.current_revision(store.engine) is None
        await migrate.upgrade(store.engine)
        assert await migrate.current_revision(store.engine) == migrate.head_revision()
        assert TABLES <= await _tables(store)

        await migrate.downgrade(store.engine, "base")
        assert await migrate.current_revision(store.engine) is None
        assert not TABLES & await _tables(store)

        await migrate.upgrade(store.engine, "head")
        assert TABLES <= await _tables(store)
        [dep] = await make_deployments(store, 1)  # the schema works after the round trip
        assert (await store.get_deployment(dep.name)) == dep
    finally:
        await store.close()


async def test_open_twice_is_idempotent_and_keeps_data(db: Database) -> None:
    first = await db.open()
    await make_deployments(first, 2)
    await first.close()
    second = await db.open()  # migrating an up-to-date database changes nothing
    try:
        assert [d.name for d in await second.list_deployments()] == ["d0", "d1"]
        assert await migrate.current_revision(second.engine) == migrate.head_revision()
    finally:
        await second.close()


async def test_head_matches_schema_module(db: Database) -> None:
    store = await db.open()

    def diff(conn: Connection) -> list[Any]:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return [d for d in compare_metadata(ctx, metadata) if not (d[0] == "remove_table" and d[1].name == "alembic_version")]

    try:
        async with store.engine.connect() as conn:
            assert await conn.run_sync(diff) == []
    finally:
        await store.close()


async def test_sqlite_file_directory_is_created(tmp_path: Any) -> None:
    from rollwise.store import Store

    path = tmp_path / "a" / "b" / "rollwise.db"
    store = await Store.open(f"sqlite:///{path}")  # the driverless form gets aiosqlite
    try:
        assert path.exists()
        assert store.dialect == "sqlite"
        await make_deployments(store, 1)
        assert (await store.list_deployments())[0].created_at == NOW
    finally:
        await store.close()

"""Running the Alembic migrations programmatically (no alembic.ini at runtime).

`upgrade(engine)` brings the database to head inside ONE transaction on one of the engine's
connections (`connection.run_sync` hands alembic a synchronous connection), so a crash mid-migration
leaves the previous schema (PostgreSQL and, since SQLAlchemy emits BEGIN itself, SQLite too). On
PostgreSQL the transaction first takes an advisory lock, so several servers starting together migrate
one after the other and the later ones find the schema at head.

Called by: `Store.open(migrate=True)`, tests, and operators through `rollwise.store.migrate` functions.
Must not: create engines (the caller owns the engine) or configure logging.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from rollwise.store.engine import WRITE_OPTION
from rollwise.store.errors import translate_errors

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

MIGRATION_LOCK_KEY = 0x726F6C6C77697365  # "rollwise"; pg_advisory_xact_lock key shared by all servers


def alembic_config() -> Config:
    """An alembic Config pointing at the packaged migration scripts."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the package ships no migration"
    return head


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Migrate the database up to `revision` (default: head)."""
    await _run(engine, lambda cfg: command.upgrade(cfg, revision))


async def downgrade(engine: AsyncEngine, revision: str = "base") -> None:
    """Migrate the database down to `revision` (default: base, i.e. drop every table of rollwise)."""
    await _run(engine, lambda cfg: command.downgrade(cfg, revision))


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at (None: not migrated)."""

    def _current(conn: Connection) -> str | None:
        return MigrationContext.configure(conn).get_current_revision()

    async with translate_errors():
        async with engine.connect() as conn:
            return await conn.run_sync(_current)


async def _run(engine: AsyncEngine, step: Callable[[Config], None]) -> None:
    def _in_transaction(conn: Connection) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        step(cfg)

    async with translate_errors():
        async with engine.connect() as conn:
            await conn.execution_options(**{WRITE_OPTION: True})
            async with conn.begin():
                if engine.dialect.name == "postgresql":
                    await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
                await conn.run_sync(_in_transaction)

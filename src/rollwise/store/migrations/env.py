"""Alembic environment of rollwise's store.

Normal use: `rollwise.store.migrate` passes an open synchronous connection (from
`AsyncConnection.run_sync`) in `config.attributes["connection"]`, already inside a transaction that the
caller commits; the migrations run on it. Without one (the `alembic` command line with
`-x url=…` or `sqlalchemy.url`), an async engine is created and driven with `connection.run_sync`.
Works with sqlite+aiosqlite and postgresql+asyncpg URLs.

Must not: configure logging or import anything of rollwise but the schema metadata.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from rollwise.store.schema import metadata

config = context.config


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL: pass -x url=… or set sqlalchemy.url")
    return url


def run_migrations_offline() -> None:
    context.configure(
        target_metadata=metadata,
        render_as_batch=True,
        compare_type=True,
        url=_url(),
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    context.configure(target_metadata=metadata, render_as_batch=True, compare_type=True, connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    engine = create_async_engine(_url(), poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
            await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        asyncio.run(run_async_migrations())
    else:
        do_run_migrations(connection)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

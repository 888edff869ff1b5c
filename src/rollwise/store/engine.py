"""Creating the async engine for a database URL, with the per-backend settings rollwise relies on.

- URLs: `sqlite+aiosqlite:///path/to/file.db` and `postgresql+asyncpg://user@host:port/db`; the
  driverless forms `sqlite:///…` and `postgresql://…` are accepted and given the async driver.
- SQLite: the file's directory is created, and the file itself with mode 0600 (it holds revisions'
  environment values; SQLite gives its -wal and -shm files the database file's mode); every connection runs `PRAGMA foreign_keys=ON`,
  `journal_mode=WAL` and `busy_timeout=5000` (for other processes on the file: this process's writers
  take turns before they begin, store.writer); 32 connections are kept in the pool. SQLAlchemy emits BEGIN itself (the driver's implicit
  transaction handling is off): write transactions (connections with the execution option
  `rollwise_write=True`) use `BEGIN IMMEDIATE`, so a transaction that reads and then writes takes the
  write lock up front instead of failing with SQLITE_BUSY halfway, and DDL is transactional too.
- PostgreSQL: optional `schema` puts one schema first on the `search_path` of every connection (tests
  use a fresh schema each; several rollwise installations can share one database).

Called by: store.repository (`Store.open`). Must not: run queries or migrations.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from rollwise.model.errors import ValidationFailed

WRITE_OPTION = "rollwise_write"
"""Execution option marking a connection whose transaction will write (SQLite: BEGIN IMMEDIATE)."""

SQLITE_BUSY_TIMEOUT_MS = 5000
SQLITE_POOL_SIZE = 32
"""SQLite connections kept open (each is a thread of aiosqlite): the API's requests in flight, the
coordinator, the analysis and the one writer at a time all read at once."""
SQLITE_POOL_OVERFLOW = 32

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def normalize_url(url: str) -> URL:
    """The URL with its async driver; ValidationFailed for anything but SQLite and PostgreSQL."""
    try:
        parsed = make_url(url)
    except ArgumentError as e:
        raise ValidationFailed(f"database: {url!r} is not a database URL") from e
    backend = parsed.get_backend_name()
    driver = parsed.get_driver_name()
    if backend == "sqlite":
        if parsed.drivername != "sqlite+aiosqlite":
            if driver not in ("pysqlite", "aiosqlite"):
                raise ValidationFailed(f"database: driver {parsed.drivername!r} is not supported (use sqlite+aiosqlite)")
            parsed = parsed.set(drivername="sqlite+aiosqlite")
        return parsed
    if backend == "postgresql":
        if parsed.drivername != "postgresql+asyncpg":
            if driver not in ("psycopg2", "asyncpg"):
                raise ValidationFailed(
                    f"database: driver {parsed.drivername!r} is not supported (use postgresql+asyncpg)"
                )
            parsed = parsed.set(drivername="postgresql+asyncpg")
        return parsed
    raise ValidationFailed(f"database: {backend!r} is not supported (use SQLite or PostgreSQL)")


def sqlite_path(url: URL) -> Path | None:
    """The database file of a SQLite URL, or None for an in-memory database."""
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def make_private(path: Path) -> None:
    """Create the database file readable by its owner only, and take that mode back from an existing
    file and its -wal/-shm companions (an older version left them 0644). OSError goes to the caller."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if file.exists() and file.stat().st_mode & 0o077:
            file.chmod(0o600)


def create_engine(url: URL, *, schema: str | None = None) -> AsyncEngine:
    """An AsyncEngine for a normalized URL (see the module docstring for what is set up)."""
    backend = url.get_backend_name()
    kwargs: dict[str, Any] = {}
    if backend == "postgresql":
        if schema is not None:
            if not _SCHEMA_NAME.match(schema):
                raise ValidationFailed(f"database schema: {schema!r} is not a plain lower-case identifier")
            kwargs["connect_args"] = {"server_settings": {"search_path": schema}}
        kwargs["pool_pre_ping"] = True
    elif backend == "sqlite":
        path = sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            make_private(path)
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        if path is not None:
            # Connections are kept, never opened per request: opening one starts a thread, opens the
            # file and runs the PRAGMAs below (the default pool of 5 opened and closed an overflow
            # connection for most requests once 16 were in flight).
            kwargs["pool_size"] = SQLITE_POOL_SIZE
            kwargs["max_overflow"] = SQLITE_POOL_OVERFLOW
    engine = create_async_engine(url, **kwargs)
    if backend == "sqlite":
        _install_sqlite_hooks(engine)
    return engine


def _install_sqlite_hooks(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # SQLAlchemy emits BEGIN itself (below); the driver must not start transactions on its own.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

"""Fixtures of the store tests: one real database per test, on SQLite and on PostgreSQL.

Every test that takes `store` (or `db`) runs twice: `[sqlite]` on a fresh file under tmp_path, and
`[postgresql]` in a fresh schema of the database at ROLLWISE_TEST_PG_URL (default
postgresql+asyncpg://postgres@127.0.0.1:5432/test), dropped afterwards. When PostgreSQL does not answer,
the PostgreSQL variants are skipped — unless the environment variable CI is set: then they fail.

Helpers live in helpers.py.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from rollwise.store import Store

from .helpers import PG_URL, Database


def _plain_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _run(coro: Any) -> Any:
    """Run a coroutine on a private loop in a thread (safe from inside pytest-asyncio's loop handling)."""
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["value"] = asyncio.run(coro)
        except BaseException as e:  # noqa: BLE001 - handed back to the caller
            out["error"] = e

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out.get("value")


async def _pg_execute(sql: str) -> None:
    conn = await asyncpg.connect(_plain_dsn(PG_URL), timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_unavailable() -> str | None:
    """Why PostgreSQL cannot be used, or None when it answers (checked once per session)."""
    try:
        _run(_pg_execute("SELECT 1"))
    except Exception as e:  # noqa: BLE001 - any failure means "not available"
        return f"PostgreSQL at {PG_URL} does not answer: {e}"
    return None


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def db(request: pytest.FixtureRequest, tmp_path: Path, pg_unavailable: str | None) -> Iterator[Database]:
    """A fresh, empty database (not migrated yet) on one backend."""
    if request.param == "sqlite":
        yield Database("sqlite", f"sqlite+aiosqlite:///{tmp_path}/data/rollwise.db", None)
        return
    if pg_unavailable is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{pg_unavailable} (CI is set: PostgreSQL tests must not be skipped)")
        pytest.skip(f"{pg_unavailable} (set CI to make this a failure)")
    schema = f"rw_test_{uuid.uuid4().hex[:12]}"
    try:
        yield Database("postgresql", PG_URL, schema)
    finally:
        _run(_pg_execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


@pytest.fixture
async def store(db: Database) -> AsyncIterator[Store]:
    """A Store on a fresh database migrated to head."""
    s = await db.open()
    try:
        yield s
    finally:
        await s.close()

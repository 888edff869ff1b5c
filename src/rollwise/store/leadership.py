"""Who is the active server of a database: at most one server runs cycles and touches routes.

- SQLite (`FileLeadership`): an exclusive `flock` on `<database file>.lock`, held by the process for as
  long as it serves. A second server on the same file cannot get it and must refuse to start.
- PostgreSQL (`AdvisoryLeadership`): a session advisory lock (`pg_try_advisory_lock`) held on a dedicated
  connection (its own engine, no pool). A standby tries again every second; PostgreSQL releases the lock
  when the holder's connection dies, so a killed server (kill -9 included) is replaced within seconds.
  `check()` pings that connection: a server that cannot prove it still holds the lock must stop acting
  at once (the caller does: `rollwise server` exits without stopping route processes, which the new
  active server adopts).

Called by `rollwise server` (cli.serve). Must not: run cycles or know about routes.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
from pathlib import Path
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from rollwise.store.engine import normalize_url

CHECK_TIMEOUT = 2.0


class Leadership(Protocol):
    async def acquire(self) -> bool:
        """Try once to become the active server; True when this process holds the role now."""
        ...

    async def check(self) -> bool:
        """True while the role is still held (False: stop acting as active at once)."""
        ...

    async def release(self) -> None: ...


def lock_key(url: str) -> int:
    """A stable signed 64-bit advisory lock key for one rollwise database."""
    digest = hashlib.sha256(b"rollwise-active-server").digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class FileLeadership:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    async def acquire(self) -> bool:
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    async def check(self) -> bool:
        return self._fd is not None

    async def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class AdvisoryLeadership:
    def __init__(self, url: str) -> None:
        self._url = url
        self._key = lock_key(url)
        self._engine: AsyncEngine | None = None
        self._conn: AsyncConnection | None = None

    async def acquire(self) -> bool:
        if self._conn is not None:
            return await self.check()
        if self._engine is None:
            self._engine = create_async_engine(normalize_url(self._url), poolclass=NullPool)
        try:
            conn = await self._engine.connect()
        except (SQLAlchemyError, OSError):
            return False
        try:
            got = (await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self._key})).scalar()
            await conn.commit()
        except (SQLAlchemyError, OSError):
            await _close_quietly(conn)
            return False
        if not got:
            await _close_quietly(conn)
            return False
        self._conn = conn
        return True

    async def check(self) -> bool:
        conn = self._conn
        if conn is None:
            return False
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                held = (
                    await conn.execute(
                        text(
                            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                            "AND pid = pg_backend_pid() AND classid::bigint = :hi AND objid::bigint = :lo"
                        ),
                        {"hi": (self._key >> 32) & 0xFFFFFFFF, "lo": self._key & 0xFFFFFFFF},
                    )
                ).scalar()
                await conn.commit()
        except (SQLAlchemyError, OSError, TimeoutError):
            held = 0
        if not held:
            self._conn = None
            await _close_quietly(conn)
            return False
        return True

    async def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
                await conn.commit()
            except (SQLAlchemyError, OSError):
                pass
            await _close_quietly(conn)
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None


async def _close_quietly(conn: AsyncConnection) -> None:
    try:
        await conn.close()
    except (SQLAlchemyError, OSError):
        pass


def leadership_for(url: str) -> Leadership:
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        return FileLeadership(Path(f"{parsed.database}.lock"))
    return AdvisoryLeadership(url)

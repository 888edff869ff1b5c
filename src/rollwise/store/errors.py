"""Errors the store raises, and the one place that translates database errors into them.

    RollwiseError (model.errors)
     +-- StoreError          "store.unavailable"  transient: cannot reach the database, connection lost,
     |    |                                        locked/busy, serialization failure, deadlock, disk full,
     |    |                                        read-only database or file system; retry later
     |    +-- StoreFailed    "store.failed"       permanent: the database refused a statement (a bug, or a
     |         |                                   schema that is not at the migration head)
     |         +-- IntegrityFailed "store.integrity"  a foreign key / NOT NULL / check constraint failed
     +-- Conflict            "conflict"           a unique constraint: e.g. the deployment name is taken
     +-- NotFound            "not_found"          the deployment a write refers to does not exist
    (Conflict and NotFound are defined in rollwise.model.errors and shared with the operations layer.)

Every public `Store` method runs inside `translate_errors()`, so no SQLAlchemy, asyncpg, sqlite3 or
socket exception ever reaches the caller (tests/store/test_errors.py proves it). `ValueError` and
`TypeError` raised while binding parameters (e.g. a naive datetime) are caller bugs and are re-raised
as themselves, not disguised as database failures.

Called by: store.repository and store.migrate. Must not: log, retry or sleep; callers decide that from
`transient`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy import exc as sa_exc

from rollwise.model.errors import Conflict, NotFound, RollwiseError

__all__ = ["Conflict", "IntegrityFailed", "NotFound", "StoreError", "StoreFailed", "translate_errors"]


class StoreError(RollwiseError):
    """The database cannot be used right now (unreachable, connection lost, busy); transient."""

    code = "store.unavailable"
    transient = True


class StoreFailed(StoreError):
    """The database refused a statement for a reason retrying will not fix."""

    code = "store.failed"
    transient = False


class IntegrityFailed(StoreFailed):
    """A foreign key, NOT NULL or check constraint failed (e.g. a route for a deleted deployment)."""

    code = "store.integrity"


# SQLSTATE classes (PostgreSQL) that mean "try again": connection exception, insufficient resources,
# operator intervention (shutdown), transaction rollback (serialization failure, deadlock).
_TRANSIENT_SQLSTATE_CLASSES = ("08", "53", "57", "40")
# Single SQLSTATEs that mean "not now" outside those classes: a read-only transaction (a hot standby, or
# default_transaction_read_only set by an operator) and "could not write to file" (disk trouble).
_TRANSIENT_SQLSTATES = ("25006", "58030")
_UNIQUE_VIOLATION = "23505"
# "full": SQLITE_FULL ("database or disk is full"): an operator frees space and the same write succeeds.
_SQLITE_TRANSIENT = ("locked", "busy", "unable to open", "disk i/o", "interrupted", "readonly", "full")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _sqlstate(e: BaseException) -> str | None:
    state = getattr(e, "sqlstate", None) or getattr(e, "pgcode", None)
    return state if isinstance(state, str) else None


def _is_transient(e: sa_exc.DBAPIError, state: str | None, message: str) -> bool:
    if state is not None:  # PostgreSQL says what kind of error it is
        return state[:2] in _TRANSIENT_SQLSTATE_CLASSES or state in _TRANSIENT_SQLSTATES
    if isinstance(e, sa_exc.OperationalError):
        # SQLite reports "no such table" and "database is locked" alike as OperationalError.
        lowered = message.lower()
        return any(marker in lowered for marker in _SQLITE_TRANSIENT)
    return False


def translate(e: BaseException) -> BaseException:
    """The rollwise error for a foreign exception (or the exception itself for caller bugs)."""
    if isinstance(e, sa_exc.StatementError) and not isinstance(e, sa_exc.DBAPIError):
        # Raised while preparing parameters, before the database saw anything.
        if isinstance(e.orig, (ValueError, TypeError)):
            return e.orig
        return StoreFailed(f"database statement failed: {_first_line(e.orig or e)}")
    if isinstance(e, sa_exc.DBAPIError):
        orig = e.orig if e.orig is not None else e
        message = _first_line(orig)
        state = _sqlstate(orig)
        if isinstance(e, sa_exc.IntegrityError):
            if state == _UNIQUE_VIOLATION or "UNIQUE constraint failed" in message:
                return Conflict(f"already exists: {message}")
            return IntegrityFailed(f"database constraint failed: {message}")
        if e.connection_invalidated or isinstance(e, sa_exc.InterfaceError) or _is_transient(e, state, message):
            return StoreError(f"database unavailable: {message}")
        return StoreFailed(f"database statement failed: {message}")
    if isinstance(e, (sa_exc.DisconnectionError, sa_exc.TimeoutError)):
        return StoreError(f"database unavailable: {_first_line(e)}")
    if isinstance(e, (sa_exc.ArgumentError, sa_exc.NoSuchModuleError)):
        return StoreFailed(f"database URL or configuration is invalid: {_first_line(e)}")
    if isinstance(e, sa_exc.SQLAlchemyError):
        return StoreFailed(f"database error: {_first_line(e)}")
    if isinstance(e, asyncpg.PostgresError):
        state = _sqlstate(e)
        if state is not None and (state[:2] in _TRANSIENT_SQLSTATE_CLASSES or state in _TRANSIENT_SQLSTATES):
            return StoreError(f"database unavailable: {_first_line(e)}")
        return StoreFailed(f"database refused: {_first_line(e)}")
    if isinstance(e, (OSError, TimeoutError, asyncpg.InterfaceError, sqlite3.Error)):
        return StoreError(f"database unavailable: {_first_line(e)}")
    return e


_FOREIGN = (sa_exc.SQLAlchemyError, asyncpg.PostgresError, asyncpg.InterfaceError, sqlite3.Error, OSError, TimeoutError)


@asynccontextmanager
async def translate_errors() -> AsyncIterator[None]:
    """Run a block and turn database/driver/socket exceptions into rollwise errors (`raise … from e`)."""
    try:
        yield
    except _FOREIGN as e:
        translated = translate(e)
        if translated is e:
            raise
        raise translated from e

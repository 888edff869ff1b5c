"""The database schema (SQLAlchemy Core tables) and its column types.

Five tables: deployments, policies, revisions, routes, history (docs/storage.md describes each). This
module is the model the migrations in `store/migrations/versions/` must produce; a test compares the
two (alembic autogenerate finds no difference).

Column types:
- `UtcDateTime`: every timestamp. Binds only timezone-aware datetimes (a naive one is a caller bug:
  ValueError), stores UTC (naive UTC text on SQLite, `timestamptz` on PostgreSQL) and always returns
  aware UTC datetimes, on SQLite too.
- `JSONDoc`: JSON on SQLite, JSONB on PostgreSQL.
- Enum values are stored as their lower-case strings (String(32)); records.py converts them.

Called by: store.repository, store.apply (statements) and tests. Must not: hold queries or mapping
logic (repository.py and records.py do that).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator

NAME_MAX = 63
"""Longest deployment name (a DNS label)."""

ENUM_LEN = 32


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (see the module docstring)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()}: the store needs timezone-aware datetimes")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


JSONDoc: Any = JSON().with_variant(JSONB(), "postgresql")

# Deterministic constraint names on both backends (the migrations use the same names).
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)


def _fk_deployment() -> ForeignKey:
    return ForeignKey("deployments.id", ondelete="CASCADE")


deployments = Table(
    "deployments",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(NAME_MAX), nullable=False, unique=True),
    Column("replicas", Integer, nullable=False),
    Column("lifecycle", String(ENUM_LEN), nullable=False, index=True),
    Column("sub_step", String(ENUM_LEN), nullable=True),
    Column("mode", String(ENUM_LEN), nullable=False, server_default=text("'forward'")),
    Column("current_revision", Integer, nullable=True),
    Column("deploying_revision", Integer, nullable=True),
    Column("paused", Boolean, nullable=False, server_default=false()),
    Column("abort_requested", Boolean, nullable=False, server_default=false()),
    Column("promote_requested", Boolean, nullable=False, server_default=false()),
    Column("rollout_started_at", UtcDateTime, nullable=True),
    Column("last_progress_at", UtcDateTime, nullable=True),
    Column("rollback_reason", String(ENUM_LEN), nullable=True),
    Column("error_count", Integer, nullable=False, server_default=text("0")),
    Column("last_error", Text, nullable=True),
    Column("version", Integer, nullable=False, server_default=text("1")),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

policies = Table(
    "policies",
    metadata,
    Column("deployment_id", Integer, _fk_deployment(), primary_key=True),
    Column("strategy", String(ENUM_LEN), nullable=False),
    Column("document", JSONDoc, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

revisions = Table(
    "revisions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("deployment_id", Integer, _fk_deployment(), nullable=False),
    Column("number", Integer, nullable=False),
    Column("command", JSONDoc, nullable=False),
    Column("env", JSONDoc, nullable=False),
    Column("health_check", JSONDoc, nullable=True),
    Column("startup_timeout_seconds", Float, nullable=False),
    Column("drain_seconds", Float, nullable=False),
    Column("stop_grace_seconds", Float, nullable=False),
    Column("label", String(NAME_MAX), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("deployment_id", "number"),
)

routes = Table(
    "routes",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("deployment_id", Integer, _fk_deployment(), nullable=False, index=True),
    Column("revision", Integer, nullable=False),
    Column("status", String(ENUM_LEN), nullable=False, index=True),
    Column("health", String(ENUM_LEN), nullable=False),
    Column("traffic", String(ENUM_LEN), nullable=False),
    Column("traffic_ratio", Float, nullable=False),
    Column("failed", Boolean, nullable=False, server_default=false()),
    Column("address", String(255), nullable=True),
    Column("pid", Integer, nullable=True),
    Column("identity", String(255), nullable=True),
    Column("health_failures", Integer, nullable=False, server_default=text("0")),
    Column("health_successes", Integer, nullable=False, server_default=text("0")),
    Column("created_at", UtcDateTime, nullable=False),
    Column("status_updated_at", UtcDateTime, nullable=False),
    Column("drain_until", UtcDateTime, nullable=True),
    Column("detail", Text, nullable=True),
)

history = Table(
    "history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("deployment_id", Integer, _fk_deployment(), nullable=False, index=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("lifecycle_from", String(ENUM_LEN), nullable=False),
    Column("lifecycle_to", String(ENUM_LEN), nullable=False),
    Column("sub_step", String(ENUM_LEN), nullable=True),
    Column("result", String(ENUM_LEN), nullable=False),
    Column("message", Text, nullable=False),
    Column("strategy", String(ENUM_LEN), nullable=True),
    Column("from_revision", Integer, nullable=True),
    Column("to_revision", Integer, nullable=True),
    Column("attempts", Integer, nullable=False, server_default=text("1")),
    Column("error", Text, nullable=True),
)

ALL_TABLES = (deployments, policies, revisions, routes, history)

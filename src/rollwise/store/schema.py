"""The database schema (SQLAlchemy Core tables) and its column types.

Eight tables: deployments, policies, revisions, routes, history, meta, measurements, rollouts
(docs/storage.md describes each). This
module is the model the migrations in `store/migrations/versions/` must produce; a test compares the
two (alembic autogenerate finds no difference).

Column types:
- `UtcDateTime`: every timestamp. Binds only timezone-aware datetimes (a naive one is a caller bug:
  ValueError), stores UTC (naive UTC text on SQLite, `timestamptz` on PostgreSQL) and always returns
  aware UTC datetimes, on SQLite too.
- `JSONDoc`: JSON on SQLite, JSONB on PostgreSQL.
- Enum values are stored as their lower-case strings (String(32)); rows.py converts them.

Called by: store.repository, store.apply (statements) and tests. Must not: hold queries or mapping
logic (repository.py and rows.py do that).
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
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

from rollwise.model import DEPLOYMENT_NAME_MAX
from rollwise.model.revision import LABEL_MAX

ENUM_LEN = 32
METRIC_NAME_LEN = 100
"""An analysis metric's name (the policy's `analysis.metrics[].name` allows at most 100 characters)."""


def _utc(value: datetime) -> datetime:
    """`value` in UTC; TypeError for a non-datetime, ValueError for a naive one (a caller bug)."""
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {type(value).__name__}")
    tz = value.tzinfo
    if tz is UTC:  # the common case: the clock and the database hand out UTC datetimes
        return value
    if tz is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()}: the store needs timezone-aware datetimes")
    return value.astimezone(UTC)


def _as_utc(value: datetime) -> datetime:
    """A datetime read back: naive ones are UTC (SQLite), aware ones are converted to UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value if value.tzinfo is UTC else value.astimezone(UTC)


@lru_cache(maxsize=256)
def _sqlite_text(value: datetime) -> str:
    # SQLAlchemy's SQLite DATETIME storage format, naive UTC: "2026-01-01 00:00:30.000000". Cached: a
    # cycle binds the same few datetimes (its `now`, the rows' own) tens of thousands of times, and
    # formatting costs ~1 us each. Equal datetimes are the same instant, so they share one text.
    return _utc(value).replace(tzinfo=None).isoformat(" ", "microseconds")


def _bind_sqlite(value: datetime | None) -> str | None:
    return None if value is None else _sqlite_text(value)


_SQLITE_TEXT_LEN = len("2026-01-01 00:00:30.000000")


def _result_sqlite(value: str | None) -> datetime | None:
    if value is None:
        return None
    if len(value) == _SQLITE_TEXT_LEN:
        # What `_bind_sqlite` writes; parsing it with the offset appended gives an aware UTC datetime
        # directly (~6x faster than parsing, then `.replace(tzinfo=UTC)`).
        return datetime.fromisoformat(value + "+00:00")
    return _as_utc(datetime.fromisoformat(value))  # any other ISO text: without seconds, with offset…


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (see the module docstring).

    `process_bind_param` / `process_result_value` say what it does. On SQLite, `bind_processor` /
    `result_processor` do the same in one function per value instead of two chained ones (ours, then
    SQLite DATETIME's string formatting and parsing): a 10,000-deployment cycle converts ~250,000
    timestamps, and the chain cost about 0.4 s of it. The stored text is unchanged.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = _utc(value)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else _as_utc(value)

    def bind_processor(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return _bind_sqlite
        return super().bind_processor(dialect)

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        if dialect.name == "sqlite":
            return _result_sqlite
        return super().result_processor(dialect, coltype)


JSONDoc: Any = JSON().with_variant(JSONB(), "postgresql")
OptionalJSON: Any = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
"""JSON whose Python None is SQL NULL (JSONDoc stores it as the JSON text `null`): for the routes' `holds`
and `devices`, so `holds IS NOT NULL` (ix_routes_holding, the capacity read) means "holds slots" and the
route reads decode nothing for the many routes without slots. Rows written before keep `null` texts
(read the same, only slower)."""

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
    Column("name", String(DEPLOYMENT_NAME_MAX), nullable=False, unique=True),
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
    Column("canary_step", Integer, nullable=False, server_default=text("0")),
    Column("step_started_at", UtcDateTime, nullable=True),
    Column("traffic_weights", JSONDoc, nullable=True),
    Column("promote_full_requested", Boolean, nullable=False, server_default=false()),
    # The open rollout's timeline, appended by the cycle's UPDATE of this row (docs/storage.md,
    # "rollouts"): it belongs to rollout `timeline_rollout_id` only; NULL / another id: the rollouts
    # row holds the samples. Never read by the deployment SELECTs (DEPLOYMENT_COLUMNS).
    Column("timeline_rollout_id", Integer, nullable=True),
    Column("timeline_count", Integer, nullable=True),
    Column("timeline_last", Text, nullable=True),
    Column("timeline_samples", JSONDoc, nullable=True),
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
    Column("label", String(LABEL_MAX), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("ports", JSONDoc, nullable=True),
    Column("resources", JSONDoc, nullable=True),
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
    Column("started_at", UtcDateTime, nullable=True),
    Column("holds", OptionalJSON, nullable=True),
    Column("devices", OptionalJSON, nullable=True),
    Column("node", String(255), nullable=True),
)
Index(
    "ix_routes_holding", routes.c.status,
    sqlite_where=routes.c.holds.isnot(None), postgresql_where=routes.c.holds.isnot(None),
)
"""Only routes that hold slots (few, on GPU nodes): what the capacity read of every cycle scans."""

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)
"""Facts about the installation as a whole, e.g. where the active server runs (`active_server`)."""

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


measurements = Table(
    "measurements",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("deployment_id", Integer, _fk_deployment(), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("rollout_started_at", UtcDateTime, nullable=False),
    Column("metric", String(METRIC_NAME_LEN), nullable=False),
    Column("verdict", String(ENUM_LEN), nullable=False),
    Column("value", Text, nullable=True),
    Column("words", Text, nullable=False),
    Column("window_start", UtcDateTime, nullable=False),
    Column("window_end", UtcDateTime, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)
Index("ix_measurements_deployment_id_id", measurements.c.deployment_id, measurements.c.id)
"""A canary analysis' measurements: one row per metric per interval (docs/control.md, "Analysis"). The
rows of one rollout are those whose `rollout_started_at` is the deployment's; `revision` is the canary."""


rollouts = Table(
    "rollouts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("deployment_id", Integer, _fk_deployment(), nullable=False),
    Column("from_revision", Integer, nullable=True),
    Column("to_revision", Integer, nullable=False),
    Column("strategy", String(ENUM_LEN), nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("ended_at", UtcDateTime, nullable=True),
    Column("outcome", String(ENUM_LEN), nullable=False),
    Column("samples", JSONDoc, nullable=False),
    Column("sample_count", Integer, nullable=False, server_default=text("0")),
    Column("last_sample", Text, nullable=True),
    Column("first_history_id", Integer, nullable=True),
    Column("last_history_id", Integer, nullable=True),
)
Index("ix_rollouts_deployment_id_id", rollouts.c.deployment_id, rollouts.c.id)
Index(
    "uq_rollouts_open", rollouts.c.deployment_id, unique=True,
    sqlite_where=rollouts.c.ended_at.is_(None), postgresql_where=rollouts.c.ended_at.is_(None),
)
"""One row per rollout of a deployment (docs/storage.md, "rollouts"): what the timeline chart needs.
At most one is open (`ended_at` NULL) per deployment: the partial unique index, which the DEPLOYING
cycle's read joins on. `samples` is a JSON list of at most `records.MAX_SAMPLES` `{"at", "ready", "weights"}`;
`sample_count` and `last_sample` (the newest sample's ready and weights as canonical JSON text) let the
cycle decide whether to append without reading the list. `first_history_id` / `last_history_id`: the
deployment's newest history row when it started (its start row) and ended: the rows of its span are its
events, told apart from a superseding rollout's even at the same instant."""

"""Initial schema: deployments, policies, revisions, routes, history.

A frozen copy of store/schema.py as of this revision (types spelled out, no rollwise imports), so later
schema changes cannot rewrite history. tests/store/test_migrations.py checks head == schema.py.

Revision ID: 0001
Revises:
Create Date: 2026-03-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_ENUM = sa.String(32)


def _fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["deployment_id"], ["deployments.id"], name=f"fk_{table}_deployment_id_deployments", ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("replicas", sa.Integer(), nullable=False),
        sa.Column("lifecycle", _ENUM, nullable=False),
        sa.Column("sub_step", _ENUM, nullable=True),
        sa.Column("mode", _ENUM, server_default=sa.text("'forward'"), nullable=False),
        sa.Column("current_revision", sa.Integer(), nullable=True),
        sa.Column("deploying_revision", sa.Integer(), nullable=True),
        sa.Column("paused", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("abort_requested", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("promote_requested", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("rollout_started_at", _TS, nullable=True),
        sa.Column("last_progress_at", _TS, nullable=True),
        sa.Column("rollback_reason", _ENUM, nullable=True),
        sa.Column("error_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_deployments"),
        sa.UniqueConstraint("name", name="uq_deployments_name"),
    )
    op.create_index("ix_deployments_lifecycle", "deployments", ["lifecycle"])

    op.create_table(
        "policies",
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("strategy", _ENUM, nullable=False),
        sa.Column("document", _JSON, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        _fk("policies"),
        sa.PrimaryKeyConstraint("deployment_id", name="pk_policies"),
    )

    op.create_table(
        "revisions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("command", _JSON, nullable=False),
        sa.Column("env", _JSON, nullable=False),
        sa.Column("health_check", _JSON, nullable=True),
        sa.Column("startup_timeout_seconds", sa.Float(), nullable=False),
        sa.Column("drain_seconds", sa.Float(), nullable=False),
        sa.Column("stop_grace_seconds", sa.Float(), nullable=False),
        sa.Column("label", sa.String(63), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        _fk("revisions"),
        sa.PrimaryKeyConstraint("id", name="pk_revisions"),
        sa.UniqueConstraint("deployment_id", "number", name="uq_revisions_deployment_id_number"),
    )

    op.create_table(
        "routes",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("status", _ENUM, nullable=False),
        sa.Column("health", _ENUM, nullable=False),
        sa.Column("traffic", _ENUM, nullable=False),
        sa.Column("traffic_ratio", sa.Float(), nullable=False),
        sa.Column("failed", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("address", sa.String(255), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("identity", sa.String(255), nullable=True),
        sa.Column("health_failures", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("health_successes", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("status_updated_at", _TS, nullable=False),
        sa.Column("drain_until", _TS, nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        _fk("routes"),
        sa.PrimaryKeyConstraint("id", name="pk_routes"),
    )
    op.create_index("ix_routes_deployment_id", "routes", ["deployment_id"])
    op.create_index("ix_routes_status", "routes", ["status"])

    op.create_table(
        "history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("lifecycle_from", _ENUM, nullable=False),
        sa.Column("lifecycle_to", _ENUM, nullable=False),
        sa.Column("sub_step", _ENUM, nullable=True),
        sa.Column("result", _ENUM, nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("strategy", _ENUM, nullable=True),
        sa.Column("from_revision", sa.Integer(), nullable=True),
        sa.Column("to_revision", sa.Integer(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        _fk("history"),
        sa.PrimaryKeyConstraint("id", name="pk_history"),
    )
    op.create_index("ix_history_deployment_id", "history", ["deployment_id"])


def downgrade() -> None:
    op.drop_index("ix_history_deployment_id", table_name="history")
    op.drop_table("history")
    op.drop_index("ix_routes_status", table_name="routes")
    op.drop_index("ix_routes_deployment_id", table_name="routes")
    op.drop_table("routes")
    op.drop_table("revisions")
    op.drop_table("policies")
    op.drop_index("ix_deployments_lifecycle", table_name="deployments")
    op.drop_table("deployments")

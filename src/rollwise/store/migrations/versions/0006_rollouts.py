"""Rollouts and their timeline (docs/storage.md, "rollouts").

- rollouts: one row per rollout of a deployment: the revisions it moves between, the strategy, when it
  started and ended, its outcome (in_progress | completed | rolled_back | aborted), and a bounded time
  series for the timeline chart: `samples` (a JSON list of at most 500 {"at", "ready", "weights"}),
  `sample_count` and `last_sample` (the newest sample's ready routes and weights as canonical JSON
  text: the DEPLOYING cycle compares it without reading the list), `first_history_id` /
  `last_history_id` (the deployment's history rows of its span: its events). ix_rollouts_deployment_id_id serves
  the per-deployment listing; the partial unique index uq_rollouts_open keeps at most one open rollout
  (ended_at NULL) per deployment and serves the cycle's join on it.

Types spelled out, no rollwise imports (see 0001).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)
_ENUM = sa.String(32)
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "rollouts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("from_revision", sa.Integer(), nullable=True),
        sa.Column("to_revision", sa.Integer(), nullable=False),
        sa.Column("strategy", _ENUM, nullable=False),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("ended_at", _TS, nullable=True),
        sa.Column("outcome", _ENUM, nullable=False),
        sa.Column("samples", _JSON, nullable=False),
        sa.Column("sample_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_sample", sa.Text(), nullable=True),
        sa.Column("first_history_id", sa.Integer(), nullable=True),
        sa.Column("last_history_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["deployment_id"], ["deployments.id"], name="fk_rollouts_deployment_id_deployments", ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_rollouts"),
    )
    op.create_index("ix_rollouts_deployment_id_id", "rollouts", ["deployment_id", "id"])
    open_ = sa.text("ended_at IS NULL")
    op.create_index(
        "uq_rollouts_open", "rollouts", ["deployment_id"], unique=True, sqlite_where=open_, postgresql_where=open_
    )


def downgrade() -> None:
    op.drop_index("uq_rollouts_open", table_name="rollouts")
    op.drop_index("ix_rollouts_deployment_id_id", table_name="rollouts")
    op.drop_table("rollouts")

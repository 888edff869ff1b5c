"""Canary analysis measurements (docs/control.md, "Analysis").

- measurements: one row per metric per analysis interval of a canary rollout: the canary revision, the
  rollout it belongs to (`rollout_started_at`, the deployment's at the time), the metric's name, its
  verdict (passed | failed | inconclusive), its value (the number, or a command's last line of output),
  the words of the verdict, the window measured and when the row was written. ix_measurements_deployment_id_id
  serves both the per-deployment listing (by id) and the counts of the current rollout.

Types spelled out, no rollwise imports (see 0001).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)
_ENUM = sa.String(32)


def upgrade() -> None:
    op.create_table(
        "measurements",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("rollout_started_at", _TS, nullable=False),
        sa.Column("metric", sa.String(100), nullable=False),
        sa.Column("verdict", _ENUM, nullable=False),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("words", sa.Text(), nullable=False),
        sa.Column("window_start", _TS, nullable=False),
        sa.Column("window_end", _TS, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"], ["deployments.id"], name="fk_measurements_deployment_id_deployments",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_measurements"),
    )
    op.create_index("ix_measurements_deployment_id_id", "measurements", ["deployment_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_measurements_deployment_id_id", table_name="measurements")
    op.drop_table("measurements")

"""Canary rollouts (docs/strategies.md, "Canary").

- deployments.canary_step (int, default 0): the current step of a canary rollout.
- deployments.step_started_at (timestamp, nullable): when that step began (timed pauses).
- deployments.traffic_weights (JSON, nullable): revision number -> percent of the requests; NULL means
  the proxy weighs by routes (every strategy but a running canary).
- deployments.promote_full_requested (bool, default false): `promote --full`.

Types spelled out, no rollwise imports (see 0001).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("canary_step", sa.Integer(), nullable=False, server_default=sa.text("0")))
        batch.add_column(sa.Column("step_started_at", _TS, nullable=True))
        batch.add_column(sa.Column("traffic_weights", _JSON, nullable=True))
        batch.add_column(sa.Column("promote_full_requested", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("promote_full_requested")
        batch.drop_column("traffic_weights")
        batch.drop_column("step_started_at")
        batch.drop_column("canary_step")

"""The open rollout's timeline on its deployment's row (docs/storage.md, "rollouts").

- deployments.timeline_rollout_id / timeline_count / timeline_last / timeline_samples: the samples of
  the deployment's open rollout, appended by the DEPLOYING cycle in the same UPDATE that writes the
  deployment (no UPDATE of `rollouts` per cycle). They belong to the rollout `timeline_rollout_id`
  names; for any other rollout (one started later, or one opened before this migration) the
  `rollouts` row's own samples hold, so nothing needs backfilling: NULL means "the rollouts row
  holds everything". The write that ends a rollout copies them onto its `rollouts` row.
  `timeline_samples` is the last column (SQLite leaves a long value's overflow pages unread when a
  query does not ask for it). A downgrade drops them: the open rollouts lose the samples appended
  since they started (their rollouts rows keep the ones they started with).

Types spelled out, no rollwise imports (see 0001).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("timeline_rollout_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("timeline_count", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("timeline_last", sa.Text(), nullable=True))
        batch.add_column(sa.Column("timeline_samples", _JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("timeline_samples")
        batch.drop_column("timeline_last")
        batch.drop_column("timeline_count")
        batch.drop_column("timeline_rollout_id")

"""Revision ports, route start times, and the meta table.

- revisions.ports (JSON, nullable): names of the extra ports a route gets (`{port.NAME}`, PORT_NAME).
- routes.started_at (timestamp, nullable): when the route's process was started; the startup timeout
  counts from it (starts are bounded per pass, so a route may wait after `created_at`).
- meta (key, value, updated_at): facts about the installation, e.g. the active server's host and data
  directory, which a standby checks before it starts.

Types spelled out, no rollwise imports (see 0001).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("revisions") as batch:
        batch.add_column(sa.Column("ports", _JSON, nullable=True))
    with op.batch_alter_table("routes") as batch:
        batch.add_column(sa.Column("started_at", _TS, nullable=True))
    op.create_table(
        "meta",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_meta"),
    )


def downgrade() -> None:
    op.drop_table("meta")
    with op.batch_alter_table("routes") as batch:
        batch.drop_column("started_at")
    with op.batch_alter_table("revisions") as batch:
        batch.drop_column("ports")

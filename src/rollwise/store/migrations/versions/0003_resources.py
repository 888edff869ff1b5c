"""Resources and devices (docs/strategies.md, "Capacity").

- revisions.resources (JSON, nullable): what ONE route of the revision needs of the node's slots.
- routes.holds (JSON, nullable): the slots a route holds, copied from its revision at creation; held
  until its process has exited. Only routes that hold something have it, and the partial index
  ix_routes_holding lets each cycle read them without scanning the other routes.
- routes.devices (JSON, nullable) and routes.node: the device indices and node the runtime gave it.

Types spelled out, no rollwise imports (see 0001).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("revisions") as batch:
        batch.add_column(sa.Column("resources", _JSON, nullable=True))
    with op.batch_alter_table("routes") as batch:
        batch.add_column(sa.Column("holds", _JSON, nullable=True))
        batch.add_column(sa.Column("devices", _JSON, nullable=True))
        batch.add_column(sa.Column("node", sa.String(255), nullable=True))
    holding = sa.text("holds IS NOT NULL")
    op.create_index("ix_routes_holding", "routes", ["status"], sqlite_where=holding, postgresql_where=holding)


def downgrade() -> None:
    op.drop_index("ix_routes_holding", table_name="routes")
    with op.batch_alter_table("routes") as batch:
        batch.drop_column("node")
        batch.drop_column("devices")
        batch.drop_column("holds")
    with op.batch_alter_table("revisions") as batch:
        batch.drop_column("resources")

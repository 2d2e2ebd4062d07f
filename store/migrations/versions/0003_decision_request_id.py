"""decisions.request_id: the digest of Rank's idempotency key

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # ADD COLUMN and CREATE UNIQUE INDEX: no table rebuild on SQLite (NULLs never collide).
    op.add_column("decisions", sa.Column("request_id", sa.String(length=64), nullable=True))
    op.create_index("ux_decisions_request_id", "decisions", ["request_id"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_decisions_request_id", table_name="decisions")
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.drop_column("request_id")

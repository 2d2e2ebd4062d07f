"""apprentice mode: the learned policy's probabilities per decision, slot modes and their changes (issue 13)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("decisions") as batch:
        batch.add_column(sa.Column("apprentice", sa.JSON(none_as_null=True), nullable=True))
    op.create_table(
        "slot_modes",
        sa.Column("slot", sa.String(length=64), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("slot", name=op.f("pk_slot_modes")),
    )
    op.create_table(
        "slot_mode_changes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("slot", sa.String(length=64), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=32), nullable=False),
        sa.Column("from_mode", sa.String(length=16), nullable=False),
        sa.Column("to_mode", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_slot_mode_changes")),
    )
    op.create_index("ix_slot_mode_changes_slot", "slot_mode_changes", ["slot", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_slot_mode_changes_slot", table_name="slot_mode_changes")
    op.drop_table("slot_mode_changes")
    op.drop_table("slot_modes")
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("apprentice")

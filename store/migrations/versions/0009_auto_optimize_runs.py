"""auto-optimize runs (issue 13, part 3)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "auto_optimize_runs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("slot", sa.String(length=64), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=32), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("current_args", sa.String(length=512), nullable=False),
        sa.Column("best_args", sa.String(length=512), nullable=False),
        sa.Column("margin", sa.Float(), nullable=False),
        sa.Column("decisions", sa.Integer(), nullable=False),
        sa.Column("estimates", sa.JSON(), nullable=False),
        sa.Column("experiment_id", sa.String(length=64), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auto_optimize_runs")),
    )
    op.create_index("ix_auto_optimize_runs_slot_id", "auto_optimize_runs", ["slot", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_auto_optimize_runs_slot_id", table_name="auto_optimize_runs")
    op.drop_table("auto_optimize_runs")

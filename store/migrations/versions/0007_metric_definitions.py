"""metric definitions and the indexes of the SQL report queries (issue 15)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "metric_definitions",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("name", "version", name=op.f("pk_metric_definitions")),
    )
    op.create_index(
        "ix_decisions_experiment_exposure",
        "decisions",
        ["experiment_id", "arm", "subject", "created_at"],
        unique=False,
    )
    op.create_index(
        "ix_events_subject_type_time", "events", ["subject", "event_type", "occurred_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_events_subject_type_time", table_name="events")
    op.drop_index("ix_decisions_experiment_exposure", table_name="decisions")
    op.drop_table("metric_definitions")

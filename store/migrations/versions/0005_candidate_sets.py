"""candidate feature maps stored once by content digest, referenced from decisions

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "candidate_sets",
        sa.Column("digest", sa.String(length=32), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_candidate_sets")),
    )
    with op.batch_alter_table("decisions") as batch:
        batch.add_column(sa.Column("candidate_refs", sa.JSON(), nullable=True))
        batch.alter_column("candidate_features", existing_type=sa.JSON(), nullable=True)


def downgrade() -> None:
    # Decisions logged with references get their maps back inline before the table goes.
    bind = op.get_bind()
    decisions = sa.table(
        "decisions",
        sa.column("event_id", sa.String),
        sa.column("candidate_ids", sa.JSON),
        sa.column("candidate_refs", sa.JSON),
        sa.column("candidate_features", sa.JSON),
    )
    sets = sa.table("candidate_sets", sa.column("digest", sa.String), sa.column("features", sa.JSON))
    features = dict(bind.execute(sa.select(sets.c.digest, sets.c.features)).all())
    rows = bind.execute(
        sa.select(decisions.c.event_id, decisions.c.candidate_ids, decisions.c.candidate_refs).where(
            decisions.c.candidate_refs.is_not(None)
        )
    ).all()
    for event_id, ids, refs in rows:
        inline = [{**features[ref], "id": cid} for ref, cid in zip(refs, ids, strict=True)]
        bind.execute(
            decisions.update().where(decisions.c.event_id == event_id).values(candidate_features=inline)
        )
    with op.batch_alter_table("decisions") as batch:
        batch.alter_column("candidate_features", existing_type=sa.JSON(), nullable=False)
        batch.drop_column("candidate_refs")
    op.drop_table("candidate_sets")

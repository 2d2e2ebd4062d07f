"""How fresh a model is: examples per version and the learning backlog of a slot.

Plain data for `GetModel` and for metrics (a gauge per slot can read
`learning_backlog` on a timer); every figure comes from the registry and the
decision log, so it holds across replicas and restarts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select

from tacit.store.db import Database
from tacit.store.schema import LEARN_IN_MODEL, LEARN_WAITING, Decision, ModelVersion


@dataclass(frozen=True)
class LearningBacklog:
    """Decisions whose reward is final but that no checkpoint contains yet."""

    pending_decisions: int
    # How long the oldest of them has been learnable; 0 when there is none.
    lag_seconds: float


def new_examples(db: Database, task: str, version: str) -> int:
    """Examples a version learned since the task's previous version (all of them for the first)."""
    with db.transaction() as session:
        row = session.execute(
            select(ModelVersion.id, ModelVersion.examples).where(
                ModelVersion.task == task, ModelVersion.version == version
            )
        ).one_or_none()
        if row is None:
            return 0
        previous = session.execute(
            select(ModelVersion.examples)
            .where(ModelVersion.task == task, ModelVersion.id < row.id)
            .order_by(ModelVersion.id.desc())
            .limit(1)
        ).scalar_one_or_none()
    return max(int(row.examples) - int(previous or 0), 0)


def learning_backlog(db: Database, slot: str, now: datetime | None = None) -> LearningBacklog:
    """The slot's learnable decisions not yet checkpointed, and the oldest one's wait."""
    now = now or datetime.now(UTC)
    with db.transaction() as session:
        count, oldest = session.execute(
            select(func.count(), func.min(Decision.learn_after)).where(
                Decision.slot == slot,
                Decision.learn_state.in_((LEARN_WAITING, LEARN_IN_MODEL)),
                Decision.learn_after.is_not(None),
                Decision.learn_after <= now,
            )
        ).one()
    if not count or oldest is None:
        return LearningBacklog(0, 0.0)
    oldest = oldest if oldest.tzinfo else oldest.replace(tzinfo=UTC)
    return LearningBacklog(int(count), max((now - oldest).total_seconds(), 0.0))

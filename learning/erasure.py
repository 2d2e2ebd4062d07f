"""What an erasure means for the models: mark every version that learned from the subject.

Called inside the erasure's transaction, before the subject's rows are deleted (it
reads them). A bandit checkpoint that may hold the subject's decisions is marked
``rebuild_pending`` (the learner rebuilds the slot from the remaining log); a
classifier version whose training data may have held the subject's events is
marked ``retrain_required``. Only counts come back, for the erasure's audit record.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tacit.learning.engagement import ENGAGEMENT_TASK
from tacit.learning.registry import (
    REBUILD_PENDING,
    RETRAIN_REQUIRED,
    bandit_task,
    lock_task,
    pending_erasures,
    with_marker,
)
from tacit.learning.registry_models import CLASSIFIER_TASKS
from tacit.store.schema import LEARN_CHECKPOINTED, LEARN_IN_MODEL, Decision, ModelVersion, TrackedEvent


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _parse(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return _aware(datetime.fromisoformat(text))
    except ValueError:
        return None


def _classifier_data_end(details: dict) -> datetime | None:
    """The newest instant whose events the version was trained on (its label horizon)."""
    end = _parse(details.get("observed_until"))
    if end is None:
        window = details.get("training_window")
        if isinstance(window, list) and window:
            end = _parse(window[-1])
    return end


def mark_models_for_erasure(
    session: Session, subjects: Sequence[str], now: datetime | None = None
) -> dict[str, int]:
    """Marks the versions that learned from ``subjects``; returns counts for the audit record.

    Bandit: every active checkpoint of a slot registered at or after the subject's
    earliest learned decision became learnable (an older one cannot contain it).
    Decisions the learner holds in memory but has not checkpointed are caught by the
    learner itself (its count of unsaved decisions no longer matches the log).
    Classifier (and the engagement regression): every version trained on events up to a
    horizon that one of the subject's events falls before, when that event had been
    received by then.
    """
    now = now or datetime.now(UTC)
    learned = session.execute(
        select(Decision.slot, func.min(Decision.learn_after))
        .where(
            Decision.subject.in_(subjects),
            Decision.learn_state.in_((LEARN_IN_MODEL, LEARN_CHECKPOINTED)),
        )
        .group_by(Decision.slot)
        .order_by(Decision.slot)
    ).all()
    slots_marked = 0
    checkpoints_marked = 0
    for slot, earliest in learned:
        task = bandit_task(slot)
        lock_task(session, task)
        rows = session.execute(
            select(ModelVersion).where(ModelVersion.task == task, ModelVersion.active.is_(True))
        ).scalars()
        marked_here = 0
        for row in rows:
            if earliest is not None and _aware(row.created_at) < _aware(earliest):
                continue
            row.details = with_marker(row.details, REBUILD_PENDING, pending_erasures(row.details) + 1, now)
            marked_here += 1
        checkpoints_marked += marked_here
        slots_marked += 1 if marked_here else 0

    events = [
        (_aware(occurred), _aware(received))
        for occurred, received in session.execute(
            select(TrackedEvent.occurred_at, TrackedEvent.received_at).where(
                TrackedEvent.subject.in_(subjects)
            )
        ).all()
    ]
    classifiers_marked = 0
    if events:
        earliest_event = min(occurred for occurred, _ in events)
        for row in session.execute(
            select(ModelVersion).where(ModelVersion.task.in_((*CLASSIFIER_TASKS, ENGAGEMENT_TASK)))
        ).scalars():
            end = _classifier_data_end(dict(row.details or {}))
            created = _aware(row.created_at)
            horizon = end or created  # no recorded horizon: everything received before training
            if earliest_event > horizon:
                continue
            if not any(occurred <= horizon and received <= created for occurred, received in events):
                continue
            row.details = with_marker(
                row.details, RETRAIN_REQUIRED, pending_erasures(row.details, RETRAIN_REQUIRED) + 1, now
            )
            classifiers_marked += 1
    return {
        "slots_learned_from": len(learned),
        "slots_pending_rebuild": slots_marked,
        "checkpoints_marked": checkpoints_marked,
        "classifier_versions_marked": classifiers_marked,
    }

"""The learner learns each decision exactly once across crashes, and checkpoints what it learned."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, insert, select

from tacit.learning.learner import Learner, SlotLearning
from tacit.store.db import Database
from tacit.store.schema import (
    LEARN_CHECKPOINTED,
    LEARN_IN_MODEL,
    LEARN_WAITING,
    Decision,
    ModelVersion,
)

ARGS = "--cb_explore_adf --epsilon 0.1 -q UA"


def _decisions(db: Database, count: int, ready: datetime) -> None:
    rows = [
        {
            "event_id": f"evt_{i:06d}",
            "slot": "home",
            "subject": f"ps1:k:{i}",
            "arm": "",
            "experiment_id": None,
            "policy": "bandit",
            "model_version": "v000000",
            "context": {"device": "mobile"},
            "candidate_ids": ["a", "b"],
            "candidate_features": [{"id": "a"}, {"id": "b"}],
            "probabilities": [0.5, 0.5],
            "chosen_index": i % 2,
            "created_at": ready,
            "reward_deadline": ready,
            "deferred": False,
            "activated_at": None,
            "reward": 1.0 if i % 2 else None,
            "reward_count": 1 if i % 2 else 0,
            "learn_after": ready,
            "learn_state": LEARN_WAITING,
        }
        for i in range(count)
    ]
    with db.transaction() as session:
        session.execute(insert(Decision), rows)


def _states(db: Database) -> dict[int, int]:
    with db.transaction() as session:
        return dict(
            session.execute(select(Decision.learn_state, func.count()).group_by(Decision.learn_state)).all()
        )


def test_a_crash_before_the_checkpoint_replays_exactly_the_unsaved_decisions(
    database_url: str, tmp_path: Path
) -> None:
    db = Database.open(database_url)
    now = datetime.now(UTC)
    _decisions(db, 30, now - timedelta(seconds=1))
    slots = {"home": SlotLearning(ARGS, default_reward=0.0)}

    first = Learner(db, slots, tmp_path / "models", batch_size=20)
    first.step(now)  # 20 decisions learned in memory, no checkpoint: then the process "crashes"
    assert _states(db) == {LEARN_IN_MODEL: 20, LEARN_WAITING: 10}

    second = Learner(db, slots, tmp_path / "models", batch_size=20)  # restart
    assert _states(db) == {LEARN_WAITING: 30}
    assert second.run_until_idle() == 30
    assert _states(db) == {LEARN_CHECKPOINTED: 30}
    with db.transaction() as session:
        versions = session.execute(select(ModelVersion).order_by(ModelVersion.id)).scalars().all()
        assert len(versions) == 1 and versions[0].examples == 30  # nothing learned twice

    # A third start resumes from the checkpoint and has nothing left to learn.
    third = Learner(db, slots, tmp_path / "models", batch_size=20)
    assert third.run_until_idle() == 0
    for learner in (first, second, third):
        learner.stop()
    db.dispose()


def test_decisions_not_yet_ready_are_left_for_later(database_url: str, tmp_path: Path) -> None:
    db = Database.open(database_url)
    now = datetime.now(UTC)
    _decisions(db, 5, now + timedelta(hours=1))
    learner = Learner(db, {"home": SlotLearning(ARGS, 0.0)}, tmp_path / "models")
    assert learner.step(now) == 0
    assert learner.step(now + timedelta(hours=2)) == 5
    learner.stop()
    db.dispose()

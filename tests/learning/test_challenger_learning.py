"""Challenger workspaces in the learner: which decisions each learns, across a crash and a rebuild."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, insert, select

from tacit.learning.learner import Learner, SlotLearning
from tacit.learning.registry import ChallengerSpec, bandit_task, challenger_task
from tacit.store.db import Database
from tacit.store.schema import LEARN_WAITING, Decision, ModelVersion

ARGS = "--cb_explore_adf --epsilon 0.1 -q UA"
OWN = ChallengerSpec("home", "exp", "own", vw_args="--cb_explore_adf --squarecb -q UA")
ALL = ChallengerSpec("home", "exp", "all", vw_args="--cb_explore_adf --squarecb", learn_from_all=True)
PINNED = ChallengerSpec("home", "exp", "pinned", pinned_version="v000001")


def _decisions(db: Database, ready: datetime) -> dict[str, int]:
    """30 decisions: 10 of arm `own`, 10 of arm `all`, 10 outside the experiment; returns the counts."""
    arms = ["own", "all", ""]
    rows = []
    for i in range(30):
        arm = arms[i % 3]
        rows.append(
            {
                "event_id": f"evt_{i:06d}",
                "slot": "home",
                "subject": f"ps1:k:{i % 7}",
                "arm": arm,
                "experiment_id": "exp" if arm else None,
                "policy": {"own": f"bandit:{OWN.vw_args}", "all": f"bandit:{ALL.vw_args}", "": "bandit"}[arm],
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
                "learn_after": ready + timedelta(microseconds=i),
                "learn_state": LEARN_WAITING,
            }
        )
    with db.transaction() as session:
        session.execute(insert(Decision), rows)
    return {arm: 10 for arm in arms}


def _newest(db: Database, task: str) -> ModelVersion | None:
    with db.transaction() as session:
        return session.execute(
            select(ModelVersion).where(ModelVersion.task == task).order_by(ModelVersion.id.desc()).limit(1)
        ).scalar_one_or_none()


def test_challengers_learn_their_own_arm_or_every_decision_once_across_a_crash(
    database_url: str, tmp_path: Path
) -> None:
    db = Database.open(database_url)
    now = datetime.now(UTC)
    _decisions(db, now - timedelta(seconds=1))
    slots = {"home": SlotLearning(ARGS, default_reward=0.0)}

    def source() -> list[ChallengerSpec]:
        return [OWN, ALL, PINNED]

    first = Learner(db, slots, tmp_path / "models", batch_size=20, challengers=source)
    first.step(now)  # 20 learned in memory, then the process "crashes" before any checkpoint
    second = Learner(db, slots, tmp_path / "models", batch_size=20, challengers=source)
    assert second.run_until_idle() == 30

    slot, own, every = (_newest(db, t) for t in (bandit_task("home"), OWN.task, ALL.task))
    assert slot is not None and own is not None and every is not None
    assert (slot.examples, own.examples, every.examples) == (30, 10, 30)
    assert own.details["vw_args"] == OWN.vw_args and every.details["vw_args"] == ALL.vw_args
    assert _newest(db, challenger_task("exp", "pinned")) is None  # a pinned model never learns

    # A third start resumes every workspace from its checkpoint: nothing left, nothing twice.
    third = Learner(db, slots, tmp_path / "models", batch_size=20, challengers=source)
    assert third._challengers[OWN.task].examples_learned == 10
    assert third.run_until_idle() == 0

    # An ended experiment's challengers are dropped from the learner.
    third.challenger_source = list
    third.refresh_challengers()
    assert third._challengers == {}
    for learner in (first, second, third):
        learner.stop()
    db.dispose()


def test_an_erasure_rebuild_rebuilds_the_slots_challengers_from_the_remaining_log(
    database_url: str, tmp_path: Path
) -> None:
    db = Database.open(database_url)
    now = datetime.now(UTC)
    _decisions(db, now - timedelta(seconds=1))
    slots = {"home": SlotLearning(ARGS, default_reward=0.0)}
    learner = Learner(db, slots, tmp_path / "models", challengers=lambda: [OWN, ALL])
    learner.run_until_idle()
    old_own = _newest(db, OWN.task)
    assert old_own is not None and Path(old_own.path).exists()

    with db.transaction() as session:  # subject ps1:k:0 is erased: decisions 0, 7, 14, 21, 28
        erased = session.execute(select(Decision.arm).where(Decision.subject == "ps1:k:0")).scalars().all()
        session.execute(delete(Decision).where(Decision.subject == "ps1:k:0"))
    learner.rebuild("home")

    own, every = _newest(db, OWN.task), _newest(db, ALL.task)
    assert own is not None and every is not None
    assert own.examples == 10 - erased.count("own")
    assert every.examples == 30 - len(erased)
    assert not Path(old_own.path).exists()  # the file that held the erased decisions is gone
    with db.transaction() as session:
        assert session.execute(select(ModelVersion.version).where(ModelVersion.task == OWN.task)).all() == [
            (own.version,)
        ]
    learner.stop()
    db.dispose()

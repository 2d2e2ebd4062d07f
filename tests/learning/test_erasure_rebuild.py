"""After an erasure, every model that learned from the subject is rebuilt or marked, on a real database.

The learner, the registry and the erasure run as in the server (the same hooks), on
SQLite and PostgreSQL, with a real VW workspace.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select, text

from tacit.learning.erasure import mark_models_for_erasure
from tacit.learning.learner import Learner, SlotLearning
from tacit.learning.registry import (
    REBUILD_PENDING,
    RETRAIN_REQUIRED,
    ServingModels,
    bandit_task,
    needs_retraining,
)
from tacit.privacy.audit_keys import AuditKeys
from tacit.privacy.audit_log import bind_audit_keys, verify
from tacit.privacy.erasure import erase_subject
from tacit.privacy.pseudonym import KeyRing
from tacit.server.app import audit_rebuilds
from tacit.store.db import Database
from tacit.store.schema import (
    LEARN_CHECKPOINTED,
    LEARN_WAITING,
    AuditRecord,
    Decision,
    ModelVersion,
    TrackedEvent,
)

ARGS = "--cb_explore_adf --epsilon 0.1 -q UA"
LEAVING = "leaving-user"


def _decisions(db: Database, keyring: KeyRing, subjects: list[str], ready: datetime, start: int = 0) -> None:
    rows = [
        {
            "event_id": f"evt_{start + i:06d}",
            "slot": "home",
            "subject": keyring.pseudonymize(subject),
            "arm": "",
            "experiment_id": None,
            "policy": "bandit",
            "model_version": "v000000",
            "context": {"device": "mobile" if i % 3 else "desktop"},
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
            "learn_after": ready + timedelta(milliseconds=i),
            "learn_state": LEARN_WAITING,
        }
        for i, subject in enumerate(subjects)
    ]
    with db.transaction() as session:
        session.execute(insert(Decision), rows)


def _subjects(count: int, leaving_every: int) -> list[str]:
    return [LEAVING if i % leaving_every == 0 else f"user-{i}" for i in range(count)]


# The server's own rebuild hook (one audit record per rebuilt slot), not a copy of it.
_audit_rebuilds = audit_rebuilds(policy_version="", key_id="")


def _rows(db: Database, task: str) -> list[ModelVersion]:
    with db.transaction() as session:
        return list(
            session.execute(select(ModelVersion).where(ModelVersion.task == task).order_by(ModelVersion.id))
            .scalars()
            .all()
        )


def _erase(db: Database, keyring: KeyRing):  # type: ignore[no-untyped-def]
    return erase_subject(db, keyring, "policy-v1", LEAVING, "erase-1", hooks=(mark_models_for_erasure,))


def open_database(url: str) -> Database:
    """A database with an audit key bound, as the server binds one at start."""
    db = Database.open(url)
    bind_audit_keys(db, AuditKeys.generate())
    return db


@pytest.fixture
def keyring(tmp_path: Path) -> KeyRing:
    return KeyRing.load_or_create(tmp_path / "keys.json")


def test_an_erased_subjects_checkpointed_decisions_are_rebuilt_out_of_the_model(
    database_url: str, tmp_path: Path, keyring: KeyRing
) -> None:
    db = open_database(database_url)
    now = datetime.now(UTC)
    subjects = _subjects(120, leaving_every=6)  # 20 decisions of the leaving subject
    _decisions(db, keyring, subjects, now - timedelta(seconds=5))
    learner = Learner(
        db, {"home": SlotLearning(ARGS, 0.0)}, tmp_path / "models", batch_size=50, on_rebuilt=_audit_rebuilds
    )
    while learner.step():  # three checkpoints (50, 100, 120 examples)
        learner.checkpoint()
    before = _rows(db, bandit_task("home"))
    assert [row.examples for row in before] == [50, 100, 120]
    serving = ServingModels(db, {"home": ARGS})
    assert serving.get("home").model_version == before[-1].version

    result = _erase(db, keyring)
    assert result.decisions == 20
    # Every checkpoint registered after the subject's first learnable decision is marked.
    assert result.marked["slots_pending_rebuild"] == 1 and result.marked["checkpoints_marked"] == 3
    assert all(needs_retraining(row.details) for row in _rows(db, bandit_task("home")))

    rebuilds = learner.rebuild_due()
    assert len(rebuilds) == 1
    rebuild = rebuilds[0]
    after = _rows(db, bandit_task("home"))
    newest = after[-1]
    assert rebuild.old_version == before[-1].version and rebuild.new_version == newest.version
    assert newest.version not in {row.version for row in before}
    assert newest.examples == before[-1].examples - 20 == 100
    assert rebuild.examples_before == 120 and rebuild.examples_after == 100
    assert not needs_retraining(newest.details) and newest.active
    # The versions that learned from the subject are retired and their files deleted.
    for row in after[:-1]:
        assert (
            not row.active
            and REBUILD_PENDING not in row.details
            and row.details["rebuilt_as"] == newest.version
        )
        assert not Path(row.path).exists()
    assert sorted(p.name for p in (tmp_path / "models").rglob("*.vw")) == [f"{newest.version}.vw"]
    # Serving swaps at its next reload, like for any checkpoint.
    assert serving.refresh() == ["home"] and serving.get("home").model_version == newest.version
    with db.transaction() as session:
        states = dict(
            session.execute(select(Decision.learn_state, func.count()).group_by(Decision.learn_state)).all()
        )
        assert states == {LEARN_CHECKPOINTED: 100}
        record = session.execute(
            select(AuditRecord).where(AuditRecord.payload_kind == "model_rebuild")
        ).scalar_one()
        assert '"examples_after":100' in record.body_json.replace(" ", "")
        assert LEAVING not in record.body_json and "ps1:" not in record.body_json
    assert verify(db).ok
    # Nothing left to do: a second pass rebuilds nothing.
    assert learner.rebuild_due() == []
    learner.stop()
    serving.close()
    db.dispose()


def test_rebuilt_model_matches_a_model_that_never_saw_the_subject(tmp_path: Path, keyring: KeyRing) -> None:
    """The replay keeps the learner's order: the rebuilt file equals one trained without the subject."""
    subjects = _subjects(60, leaving_every=4)
    now = datetime.now(UTC) - timedelta(seconds=5)
    erased_db = open_database(f"sqlite:///{tmp_path / 'a.db'}")
    _decisions(erased_db, keyring, subjects, now)
    erased = Learner(erased_db, {"home": SlotLearning(ARGS, 0.0)}, tmp_path / "a", batch_size=25)
    erased.run_until_idle()
    _erase(erased_db, keyring)
    [rebuild] = erased.rebuild_due()

    clean_db = open_database(f"sqlite:///{tmp_path / 'b.db'}")
    _decisions(clean_db, keyring, subjects, now)
    with clean_db.transaction() as session:
        session.execute(Decision.__table__.delete().where(Decision.subject == keyring.pseudonymize(LEAVING)))
    clean = Learner(clean_db, {"home": SlotLearning(ARGS, 0.0)}, tmp_path / "b", batch_size=1_000)
    clean.run_until_idle()
    [clean_row] = _rows(clean_db, bandit_task("home"))
    rebuilt_row = _rows(erased_db, bandit_task("home"))[-1]
    assert rebuilt_row.examples == clean_row.examples == 45
    assert Path(rebuilt_row.path).read_bytes() == Path(clean_row.path).read_bytes()
    for learner, db in ((erased, erased_db), (clean, clean_db)):
        learner.stop()
        db.dispose()


def test_decisions_erased_before_their_checkpoint_are_caught_by_the_learners_count(
    database_url: str, tmp_path: Path, keyring: KeyRing
) -> None:
    db = open_database(database_url)
    subjects = _subjects(40, leaving_every=5)  # 8 of the leaving subject
    _decisions(db, keyring, subjects, datetime.now(UTC) - timedelta(seconds=5))
    learner = Learner(db, {"home": SlotLearning(ARGS, 0.0)}, tmp_path / "models", batch_size=100)
    assert learner.step() == 40  # learned in memory, no checkpoint registered yet
    result = _erase(db, keyring)
    assert result.decisions == 8 and result.marked["checkpoints_marked"] == 0  # nothing on disk to mark
    learner.checkpoint()  # notices 8 learned decisions are gone from the log: rebuilds instead
    [row] = _rows(db, bandit_task("home"))
    assert row.examples == 32 and not needs_retraining(row.details)
    assert [r.examples_after for r in learner.rebuilds] == [32]
    learner.stop()
    db.dispose()


def test_nightly_mode_keeps_the_old_model_marked_until_the_nightly_hour(
    database_url: str, tmp_path: Path, keyring: KeyRing
) -> None:
    db = open_database(database_url)
    subjects = _subjects(30, leaving_every=3)  # 10 of the leaving subject
    _decisions(db, keyring, subjects, datetime.now(UTC) - timedelta(seconds=5))
    learner = Learner(
        db, {"home": SlotLearning(ARGS, 0.0)}, tmp_path / "models", rebuild_mode="nightly", rebuild_hour_utc=3
    )
    learner.run_until_idle()
    [old] = _rows(db, bandit_task("home"))
    _erase(db, keyring)
    # Until the nightly hour the learner keeps learning on the old model; every new
    # checkpoint inherits the marker (it still holds the erased decisions).
    _decisions(db, keyring, ["late-user"] * 5, datetime.now(UTC) - timedelta(seconds=1), start=1_000)
    learner.run_until_idle()
    rows = _rows(db, bandit_task("home"))
    assert [r.examples for r in rows] == [30, 35]
    assert all(r.details[REBUILD_PENDING]["erasures"] == 1 for r in rows)
    assert learner.rebuild_due(now=learner.next_rebuild_at - timedelta(seconds=1)) == []
    assert learner.pending_rebuilds() == ["home"]

    due = learner.next_rebuild_at
    [rebuild] = learner.rebuild_due(now=due)
    assert rebuild.old_version == rows[-1].version and rebuild.examples_after == 25  # 35 - 10
    assert learner.next_rebuild_at == due + timedelta(days=1)
    newest = _rows(db, bandit_task("home"))[-1]
    assert newest.examples == 25 and not needs_retraining(newest.details)
    assert not Path(old.path).exists() and not Path(rows[-1].path).exists()
    learner.stop()
    db.dispose()


def test_classifier_versions_trained_on_the_subjects_window_are_marked_for_retraining(
    database_url: str, tmp_path: Path, keyring: KeyRing
) -> None:
    db = open_database(database_url)
    day = datetime(2026, 11, 1, tzinfo=UTC)
    pseudonym = keyring.pseudonymize(LEAVING)
    with db.transaction() as session:
        session.add_all(
            [
                TrackedEvent(
                    event_id=f"ev-{i}",
                    subject=pseudonym,
                    event_type="page_view",
                    occurred_at=day + timedelta(days=10 + i),
                    received_at=day + timedelta(days=10 + i, minutes=1),
                    properties={},
                )
                for i in range(3)
            ]
        )

        def version(task: str, number: int, observed_until: datetime, created: datetime) -> ModelVersion:
            return ModelVersion(
                task=task,
                version=f"v{number:06d}",
                path=str(tmp_path / f"{task}-{number}.joblib"),
                sha256="0" * 64,
                created_at=created,
                examples=100,
                metrics={},
                details={"kind": "classifier", "observed_until": observed_until.isoformat()},
                active=number == 3,
            )

        session.add_all(
            [
                # Trained on data up to day 5: before the subject's first event.
                version("conversion", 1, day + timedelta(days=5), day + timedelta(days=6)),
                # Trained on data up to day 11: holds the subject's first event.
                version("conversion", 2, day + timedelta(days=11), day + timedelta(days=12)),
                version("conversion", 3, day + timedelta(days=20), day + timedelta(days=21)),
                version("churn", 1, day + timedelta(days=20), day + timedelta(days=21)),
                # The engagement regression learns from the same events (issue 14).
                version("engagement", 1, day + timedelta(days=20), day + timedelta(days=21)),
            ]
        )
    result = _erase(db, keyring)
    assert result.events == 3 and result.marked["classifier_versions_marked"] == 4
    marked = {
        (row.task, row.version): RETRAIN_REQUIRED in row.details
        for task in ("conversion", "churn", "engagement")
        for row in _rows(db, task)
    }
    assert marked == {
        ("conversion", "v000001"): False,
        ("conversion", "v000002"): True,
        ("conversion", "v000003"): True,
        ("churn", "v000001"): True,
        ("engagement", "v000001"): True,
    }
    with db.transaction() as session:
        body = session.execute(
            select(AuditRecord.body_json).where(AuditRecord.payload_kind == "erasure")
        ).scalar_one()
    assert '"classifier_versions_marked":4' in body.replace(" ", "")
    db.dispose()


def test_erasure_reclaims_the_freed_space(database_url: str, tmp_path: Path, keyring: KeyRing) -> None:
    db = open_database(database_url)
    _decisions(db, keyring, _subjects(10, leaving_every=2), datetime.now(UTC))
    result = _erase(db, keyring)
    assert result.reclaimed is not None
    if db.engine.dialect.name == "sqlite":
        with db.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA secure_delete").scalar() == 1
        assert result.reclaimed.wal_truncated
        wal = Path(db.engine.url.database + "-wal")  # type: ignore[operator]
        assert not wal.exists() or wal.stat().st_size == 0
    else:
        assert "decisions" in result.reclaimed.tables_vacuumed
        with db.engine.connect() as connection:
            connection.exec_driver_sql("SELECT pg_stat_clear_snapshot()")
            vacuumed = connection.execute(
                text(
                    "SELECT vacuum_count FROM pg_stat_user_tables "
                    "WHERE relname = 'decisions' AND schemaname = current_schema()"
                )
            ).scalar_one()
        assert vacuumed >= 1
    db.dispose()


def test_erasures_racing_the_running_learner_leave_a_model_of_exactly_the_remaining_log(
    database_url: str, tmp_path: Path, keyring: KeyRing
) -> None:
    """The learner thread learns and checkpoints while decisions arrive and two erasures land."""
    db = open_database(database_url)
    learner = Learner(
        db,
        {"home": SlotLearning(ARGS, 0.0)},
        tmp_path / "models",
        checkpoint_interval_seconds=0.05,
        poll_interval_seconds=0.01,
        batch_size=7,
        on_rebuilt=_audit_rebuilds,
    )
    learner.start()
    try:
        for wave in range(6):
            subjects = [LEAVING if i % 4 == 0 else f"user-{wave}-{i}" for i in range(20)]
            if wave >= 3:
                subjects = ["second-leaver" if s == LEAVING else s for s in subjects]
            _decisions(db, keyring, subjects, datetime.now(UTC) - timedelta(seconds=1), start=wave * 100)
            if wave == 2:
                _erase(db, keyring)
            time.sleep(0.05)
        erase_subject(db, keyring, "policy-v1", "second-leaver", "erase-2", hooks=(mark_models_for_erasure,))

        def settled() -> bool:
            with db.transaction() as session:
                learned = session.execute(
                    select(func.count())
                    .select_from(Decision)
                    .where(Decision.learn_state == LEARN_CHECKPOINTED)
                ).scalar_one()
                waiting = session.execute(
                    select(func.count())
                    .select_from(Decision)
                    .where(Decision.learn_state != LEARN_CHECKPOINTED)
                ).scalar_one()
            newest = _rows(db, bandit_task("home"))[-1]
            return waiting == 0 and newest.examples == learned and not needs_retraining(newest.details)

        deadline = time.monotonic() + 30
        while not settled():
            assert time.monotonic() < deadline, "the learner did not settle on the remaining log"
            time.sleep(0.05)
    finally:
        learner.stop()
    assert _rows(db, bandit_task("home"))[-1].examples == 6 * 15  # 120 decisions, 30 erased
    assert learner.rebuilds  # at least one rebuild happened
    for row in _rows(db, bandit_task("home"))[:-1]:
        assert not row.active or not needs_retraining(row.details)
    assert verify(db).ok
    db.dispose()

"""Erasure an auditor can sign off: a real server, a real learner, every byte it wrote searched.

A subject with decisions, rewards, events and a model that learned from it is erased
through the public API. Afterwards the SQLite file, its WAL and every model file are
searched for the subject's raw id and its pseudonyms under every held key: nothing.
The same search before the erasure finds them (so the search can fail). The slot's
model is rebuilt from the remaining log with one example per remaining decision.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import select, text

from tacit.experiments.rules import Stage
from tacit.experiments.service import ArmConfig, ExperimentDefinition
from tacit.learning.registry import bandit_task
from tacit.server.auth import Role
from tacit.server.config import ConfigError, load_settings
from tacit.sim.client import rank_request, to_features
from tacit.store.schema import LEARN_CHECKPOINTED, AuditRecord, Base, Decision, ModelVersion
from tacit.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    decision_pb2,
    decision_pb2_grpc,
    event_pb2,
    event_pb2_grpc,
    model_pb2,
    model_pb2_grpc,
)

LEAVING = "leaving-user-7731"
CANDIDATES = [("a1", {"topic": "news"}), ("b2", {"topic": "sports"}), ("c3", {"topic": "tech"})]
TOTAL, THE_SUBJECTS = 60, 12


def wait_for(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def subject_needles(runtime, subject_id: str, client_ids=()) -> list[bytes]:  # type: ignore[no-untyped-def]
    """Everything that links a stored byte to the subject without the client's records and the keys:
    its raw id, its pseudonyms, and its client ids raw and as their digests under every held key."""
    needles = [subject_id.encode(), *(p.encode() for p in runtime.keyring.candidates(subject_id, "subject"))]
    return needles + client_id_needles(runtime, client_ids)


def client_id_needles(runtime, client_ids) -> list[bytes]:  # type: ignore[no-untyped-def]
    """The client's ids, raw and as their digests under every held key."""
    return [n.encode() for i in client_ids for n in (i, *runtime.keyring.digests(i))]


def client_ids_of(ids) -> list[str]:  # type: ignore[no-untyped-def]
    return [i for key in ("decisions", "requests", "events") for i in ids[key]]


def byte_hits(paths: list[Path], needles: list[bytes]) -> dict[str, int]:
    """Occurrences of each needle in each file (only files with hits are listed)."""
    hits: dict[str, int] = {}
    for path in paths:
        if not path.is_file():
            continue
        data = path.read_bytes()
        count = sum(data.count(needle) for needle in needles)
        if count:
            hits[path.name] = count
    return hits


def database_files(data_dir: Path) -> list[Path]:
    return [data_dir / name for name in ("tacit.db", "tacit.db-wal", "tacit.db-shm")]


def model_files(data_dir: Path) -> list[Path]:
    return sorted(p for p in (data_dir / "models").rglob("*") if p.is_file())


def _rows(runtime, task: str) -> list[ModelVersion]:  # type: ignore[no-untyped-def]
    with runtime.db.transaction() as session:
        return list(
            session.execute(select(ModelVersion).where(ModelVersion.task == task).order_by(ModelVersion.id))
            .scalars()
            .all()
        )


def _learned(runtime) -> int:  # type: ignore[no-untyped-def]
    with runtime.db.transaction() as session:
        return len(
            session.execute(select(Decision.event_id).where(Decision.learn_state == LEARN_CHECKPOINTED)).all()
        )


@pytest.fixture
def populated(start_server):  # type: ignore[no-untyped-def]
    """A server on SQLite whose slot model learned from 60 decisions, 12 of them the leaving subject's."""
    return populate(start_server(slots={"home": {"reward_window_seconds": 0.5}}))


def populate(handle):  # type: ignore[no-untyped-def]
    runtime = handle.running.runtime
    # An experiment on the slot: the subject's decisions carry its arm, and its report is stored.
    runtime.experiments.create(
        ExperimentDefinition(
            experiment_id="erasure-exp",
            slot="home",
            arms=(ArmConfig("control", "bandit", 0.5), ArmConfig("treatment", "uniform", 0.5)),
            primary_metric="click_through",
            stages=(Stage(100, 0),),
        ),
        actor="test",
    )
    runtime.experiments.start("erasure-exp", actor="test")
    runtime.experiments.refresh_routes()
    ranker = decision_pb2_grpc.DecisionServiceStub(handle.channel)
    ids: dict[str, list[str]] = {"decisions": [], "requests": [], "events": []}
    for i in range(TOTAL):
        subject = LEAVING if i % (TOTAL // THE_SUBJECTS) == 0 else f"staying-user-{i}"
        response = ranker.Rank(
            rank_request("home", subject, {"device": "mobile" if i % 2 else "desktop"}, CANDIDATES),
            metadata=handle.metadata(),
        )
        if i % 3 == 0:
            request_id = f"reward-{i:04d}-req"
            ranker.Reward(
                decision_pb2.RewardRequest(event_id=response.event_id, value=1.0, request_id=request_id),
                metadata=handle.metadata(),
            )
            if subject == LEAVING:
                ids["requests"].append(request_id)
        if subject == LEAVING:
            ids["decisions"].append(response.event_id)
    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(UTC))
    events = [
        event_pb2.Event(
            event_id=f"ev-leaving-{i:04d}",
            subject_id=LEAVING if i < 4 else f"staying-user-{i}",
            event_type="page_view",
            occurred_at=stamp,
            properties=to_features({"device": "tablet"}),
        )
        for i in range(8)
    ]
    ids["events"] = [e.event_id for e in events if e.subject_id == LEAVING]
    event_pb2_grpc.EventServiceStub(handle.channel).TrackEvents(
        event_pb2.TrackEventsRequest(events=events), metadata=handle.metadata()
    )
    runtime.decision_log.flush()
    assert runtime.experiments.evaluate_running()  # a report computed with the subject in it, stored
    with runtime.db.transaction() as session:
        in_experiment = session.execute(
            select(Decision.event_id).where(
                Decision.experiment_id == "erasure-exp",
                Decision.event_id.in_([runtime.keyring.digest(i) for i in ids["decisions"]]),
            )
        ).all()
        assert in_experiment
    wait_for(lambda: _learned(runtime) == TOTAL and _rows(runtime, bandit_task("home"))[-1].examples == TOTAL)
    return handle, ids


@pytest.mark.parametrize("where", ["wal", "database file"])
def test_erasure_leaves_no_byte_linking_to_the_subject_and_rebuilds_the_model(populated, where: str) -> None:  # type: ignore[no-untyped-def]
    handle, ids = populated
    runtime = handle.running.runtime
    data_dir = handle.data_dir
    needles = subject_needles(runtime, LEAVING, client_ids_of(ids))
    old = _rows(runtime, bandit_task("home"))
    old_newest = old[-1]
    old_files = {Path(row.path) for row in old if row.active}
    assert all(path.exists() for path in old_files)

    if where == "database file":
        # The subject's rows sit in the database file's own pages: only secure_delete makes
        # their deletion leave no bytes behind.
        assert runtime.db.reclaim_deleted(()).wal_truncated
    # (Otherwise they are still in WAL frames, which only the erasure's TRUNCATE checkpoint removes.)
    hits_before = byte_hits(database_files(data_dir), needles)
    file_name = "tacit.db" if where == "database file" else "tacit.db-wal"
    assert hits_before.get(file_name, 0) > 0, "the search must find the subject before the erasure"
    assert byte_hits(model_files(data_dir), needles) == {}  # VW files hold no ids, even before

    erased = audit_pb2_grpc.AuditServiceStub(handle.channel).EraseSubject(
        audit_pb2.EraseSubjectRequest(subject_id=LEAVING, request_id="erasure-req-0001"),
        metadata=handle.metadata(Role.AUDITOR),
    )
    assert (erased.decisions_erased, erased.events_erased) == (THE_SUBJECTS, 4)
    assert erased.rewards_erased == len(ids["requests"]) > 0

    # The learner (immediate mode) rebuilds the slot from the 48 remaining decisions.
    wait_for(lambda: _rows(runtime, bandit_task("home"))[-1].examples == TOTAL - THE_SUBJECTS)
    rebuilt = _rows(runtime, bandit_task("home"))[-1]
    assert rebuilt.version not in {row.version for row in old}
    assert rebuilt.examples == old_newest.examples - THE_SUBJECTS
    assert "rebuild_pending" not in rebuilt.details
    # Serving processes pick it up like any checkpoint.
    wait_for(lambda: runtime.models.get("home").model_version == rebuilt.version)
    # Every checkpoint that learned from the subject is retired and its file deleted.
    assert all(not path.exists() for path in old_files)
    assert [p.name for p in model_files(data_dir)] == [f"{rebuilt.version}.vw"]

    # The bytes: nothing in the database, its WAL or any model file.
    hits_after = byte_hits(database_files(data_dir), needles)
    model_hits = byte_hits(model_files(data_dir), needles)
    print(
        f"\n[{where}] byte hits before erasure: {hits_before}; after: {hits_after}; "
        f"models after: {model_hits}; "
        f"examples {old_newest.examples} -> {rebuilt.examples} ({old_newest.version} -> {rebuilt.version})"
    )
    assert hits_after == {} and model_hits == {}

    # The auditor's view: an erasure record and a rebuild record, counts and names only.
    with runtime.db.transaction() as session:
        records = {
            row.payload_kind: row
            for row in session.execute(
                select(AuditRecord).where(AuditRecord.payload_kind.in_(("erasure", "model_rebuild")))
            ).scalars()
        }
    erasure_body = records["erasure"].body_json.replace(" ", "")
    assert '"decisions":12' in erasure_body and '"slots_learned_from":1' in erasure_body
    rebuild = records["model_rebuild"]
    assert rebuild.correlation_id == f"rebuild:bandit:home:{old_newest.version}->{rebuilt.version}"
    body = rebuild.body_json.replace(" ", "")
    assert f'"examples_after":{TOTAL - THE_SUBJECTS}' in body and f'"examples_before":{TOTAL}' in body
    assert LEAVING.encode() not in rebuild.body_json.encode()
    models = model_pb2_grpc.ModelServiceStub(handle.channel)
    listed = models.ListModels(
        model_pb2.ListModelsRequest(task="bandit:home"), metadata=handle.metadata(Role.ADMIN)
    )
    assert [(m.version, m.active, m.needs_retraining) for m in listed.models][0] == (
        rebuilt.version,
        True,
        False,
    )


def test_no_byte_holds_the_subjects_event_or_request_ids(populated) -> None:  # type: ignore[no-untyped-def]
    handle, ids = populated
    client_ids = client_id_needles(handle.running.runtime, client_ids_of(ids))
    assert sum(byte_hits(database_files(handle.data_dir), client_ids).values()) > 0
    audit_pb2_grpc.AuditServiceStub(handle.channel).EraseSubject(
        audit_pb2.EraseSubjectRequest(subject_id=LEAVING), metadata=handle.metadata(Role.AUDITOR)
    )
    assert byte_hits(database_files(handle.data_dir), client_ids) == {}


def test_after_erasure_no_row_holds_the_subjects_ids(populated) -> None:  # type: ignore[no-untyped-def]
    """Row by row (the byte search above covers the files): no table, audit records included."""
    handle, ids = populated
    runtime = handle.running.runtime
    client_ids = [n.decode() for n in client_id_needles(runtime, client_ids_of(ids))]
    audit_pb2_grpc.AuditServiceStub(handle.channel).EraseSubject(
        audit_pb2.EraseSubjectRequest(subject_id=LEAVING), metadata=handle.metadata(Role.AUDITOR)
    )
    with runtime.db.transaction() as session:
        found = []
        for table in Base.metadata.sorted_tables:
            for row in session.execute(select(table)).mappings():
                text = json.dumps({k: str(v) for k, v in row.items()})
                found += [
                    (table.name, column)
                    for column, value in row.items()
                    for i in client_ids
                    if i in str(value)
                ]
                assert LEAVING not in text
        assert found == []


def test_erasure_through_the_api_on_every_backend_rebuilds_and_marks(database_url, start_server) -> None:  # type: ignore[no-untyped-def]
    """SQLite and PostgreSQL: the rebuild, the classifier mark seen through GetModel, the vacuum."""
    handle, _ids = populate(start_server(database_url, slots={"home": {"reward_window_seconds": 0.5}}))
    runtime = handle.running.runtime
    with runtime.db.transaction() as session:
        session.add(
            ModelVersion(
                task="conversion",
                version="v000001",
                path=str(handle.data_dir / "models" / "conversion" / "v000001.joblib"),
                sha256="0" * 64,
                created_at=datetime.now(UTC) + timedelta(seconds=1),
                examples=10,
                metrics={},
                details={
                    "kind": "classifier",
                    "observed_until": (datetime.now(UTC) + timedelta(seconds=1)).isoformat(),
                },
                active=True,
            )
        )
    models = model_pb2_grpc.ModelServiceStub(handle.channel)
    get = model_pb2.GetModelRequest(name="models/conversion/versions/v000001")
    assert not models.GetModel(get, metadata=handle.metadata(Role.ADMIN)).needs_retraining
    old = _rows(runtime, bandit_task("home"))[-1]
    audit_pb2_grpc.AuditServiceStub(handle.channel).EraseSubject(
        audit_pb2.EraseSubjectRequest(subject_id=LEAVING), metadata=handle.metadata(Role.AUDITOR)
    )
    assert models.GetModel(get, metadata=handle.metadata(Role.ADMIN)).needs_retraining
    wait_for(lambda: _rows(runtime, bandit_task("home"))[-1].examples == TOTAL - THE_SUBJECTS)
    assert _rows(runtime, bandit_task("home"))[-1].version != old.version
    wait_for(
        lambda: runtime.models.get("home").model_version == _rows(runtime, bandit_task("home"))[-1].version
    )
    if runtime.db.engine.dialect.name == "postgresql":
        with runtime.db.engine.connect() as connection:
            connection.exec_driver_sql("SELECT pg_stat_clear_snapshot()")
            vacuums = connection.execute(
                text(
                    "SELECT vacuum_count FROM pg_stat_user_tables "
                    "WHERE relname = 'decisions' AND schemaname = current_schema()"
                )
            ).scalar_one()
        assert vacuums >= 1


def test_nightly_mode_keeps_serving_the_marked_model_and_says_so(start_server) -> None:  # type: ignore[no-untyped-def]
    handle, _ids = populate(
        start_server(
            slots={"home": {"reward_window_seconds": 0.5}},
            # An hour far from now, so no nightly run falls inside the test.
            privacy={
                "erasure_model_rebuild": "nightly",
                "erasure_rebuild_hour_utc": (datetime.now(UTC).hour + 12) % 24,
            },
        )
    )
    runtime = handle.running.runtime
    assert runtime.learner is not None and runtime.learner.rebuild_mode == "nightly"
    old = _rows(runtime, bandit_task("home"))[-1]
    audit_pb2_grpc.AuditServiceStub(handle.channel).EraseSubject(
        audit_pb2.EraseSubjectRequest(subject_id=LEAVING), metadata=handle.metadata(Role.AUDITOR)
    )
    time.sleep(1.0)  # several learner passes (checkpoint interval 0.2 s): none may rebuild before the hour
    newest = _rows(runtime, bandit_task("home"))[-1]
    assert newest.version == old.version and newest.details["rebuild_pending"]["erasures"] == 1
    assert runtime.models.get("home").model_version == old.version
    listed = model_pb2_grpc.ModelServiceStub(handle.channel).ListModels(
        model_pb2.ListModelsRequest(task="bandit:home"), metadata=handle.metadata(Role.ADMIN)
    )
    assert listed.models[0].version == old.version and listed.models[0].needs_retraining


def test_the_rebuild_setting_is_validated() -> None:
    with pytest.raises(ConfigError, match="privacy.erasure_model_rebuild"):
        load_settings(None, privacy={"erasure_model_rebuild": "weekly"})
    with pytest.raises(ConfigError, match="privacy.erasure_rebuild_hour_utc"):
        load_settings(None, privacy={"erasure_rebuild_hour_utc": 24})

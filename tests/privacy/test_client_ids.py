"""Client-chosen ids never reach disk raw (issue 9 #1), through a real server on SQLite and PostgreSQL.

Phone, card, SSN, IBAN and e-mail values are planted inside event ids and
request ids (behind a prefix, with '@' and '.' written as '-'), sent through
TrackEvents, Rank, Reward and EraseSubject; then every table's rows, and on
SQLite every file in the data directory (database, WAL, models), is searched
for them. The client still gets its ids echoed, rewards still join, retries
are still idempotent, and the auditor finds a record by the client's id.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from sqlalchemy import select

from tacit.cli import main
from tacit.privacy.client_ids import MARKER_SCOPE, digest_legacy_ids
from tacit.server.auth import Role
from tacit.sim.client import rank_request
from tacit.store.db import Database
from tacit.store.schema import AuditRecord, Base, Decision, IdempotencyKey, Reward, TrackedEvent
from tacit.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    common_pb2,
    decision_pb2,
    decision_pb2_grpc,
    event_pb2,
    event_pb2_grpc,
    experiment_pb2,
    experiment_pb2_grpc,
)

# The personal value, and the disguised client id that carries it (accepted as an id).
PLANTED = {
    "card": ("4929123456789012", "id-4929123456789012"),
    "phone": ("5558675309", "tel-5558675309"),
    "ssn": ("536-22-8741", "ssn536-22-8741"),
    "iban": ("DE89370400440532013000", "acct-DE89370400440532013000"),
    "email": ("jane.doe@example.org", "jane-doe-example-org"),
}
# Forms of each value a byte search must not find.
NEEDLES = sorted(
    {v for value, client_id in PLANTED.values() for v in (value, client_id)}
    | {"536228741", "jane-doe-example", "DE8937040044"}
)
CANDIDATES = [("a1", {"topic": "news"}), ("b2", {"topic": "sports"})]


def _features(**values: float) -> common_pb2.Features:
    features = common_pb2.Features()
    for name, value in values.items():
        features.values[name].number_value = value
    return features


def _rows_text(db: Database) -> str:
    """Every row of every table, as text."""
    parts = []
    with db.transaction() as session:
        for table in Base.metadata.sorted_tables:
            for row in session.execute(select(table)):
                parts.append(repr(tuple(row)))
    return "\n".join(parts)


def _files_with(root: Path, needles: list[str]) -> list[tuple[str, str]]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits += [(str(path), needle) for needle in needles if needle.encode() in data]
    return hits


def _flows(handle: object) -> dict[str, object]:
    """Sends every planted id through every entry point; returns what the client got back."""
    service = handle.metadata(Role.SERVICE)  # type: ignore[attr-defined]
    events = event_pb2_grpc.EventServiceStub(handle.channel)  # type: ignore[attr-defined]
    decisions = decision_pb2_grpc.DecisionServiceStub(handle.channel)  # type: ignore[attr-defined]
    audit = audit_pb2_grpc.AuditServiceStub(handle.channel)  # type: ignore[attr-defined]
    batch = event_pb2.TrackEventsRequest(
        events=[
            event_pb2.Event(
                event_id=f"ev-{client_id}", subject_id="subject-ids", event_type="click",
                properties=_features(position=1),
            )
            for _, client_id in PLANTED.values()
        ]
    )
    tracked = events.TrackEvents(batch, metadata=service)
    tracked_again = events.TrackEvents(batch, metadata=service)
    out: dict[str, object] = {"tracked": tracked, "tracked_again": tracked_again, "ranks": {}, "rewards": {}}
    for kind, (_, client_id) in PLANTED.items():
        request = rank_request("home", "subject-ids", {}, CANDIDATES)
        request.event_id = client_id
        request.request_id = f"rq-{client_id}"
        first = decisions.Rank(request, metadata=service)
        retry = decisions.Rank(request, metadata=service)
        # Tacit's own event id, for a Rank that only carries a request id.
        generated_request = rank_request("home", "subject-ids", {}, CANDIDATES)
        generated_request.request_id = f"gen-{client_id}"
        generated = decisions.Rank(generated_request, metadata=service)
        reward = decision_pb2.RewardRequest(event_id=client_id, value=1.0, request_id=f"rw-{client_id}")
        joined = decisions.Reward(reward, metadata=service)
        duplicate = decisions.Reward(reward, metadata=service)
        out["ranks"][kind] = (first, retry, generated)  # type: ignore[index]
        out["rewards"][kind] = (joined, duplicate)  # type: ignore[index]
    audit.EraseSubject(
        audit_pb2.EraseSubjectRequest(subject_id="nobody-at-all", request_id=PLANTED["card"][1]),
        metadata=handle.metadata(Role.AUDITOR),  # type: ignore[attr-defined]
    )
    return out


def test_client_ids_are_stored_only_as_digests_and_still_work(server) -> None:  # type: ignore[no-untyped-def]
    out = _flows(server)
    runtime = server.running.runtime
    keyring = runtime.keyring
    # The client's side still works: echoes, joins, idempotent retries.
    assert out["tracked"].accepted == len(PLANTED) and out["tracked_again"].duplicates == len(PLANTED)
    for kind, (_, client_id) in PLANTED.items():
        first, retry, generated = out["ranks"][kind]  # type: ignore[index]
        assert first.event_id == client_id and retry.event_id == client_id
        assert [(c.id, c.probability) for c in retry.ranking] == [
            (c.id, c.probability) for c in first.ranking
        ]
        assert generated.event_id.startswith("evt_")
        joined, duplicate = out["rewards"][kind]  # type: ignore[index]
        assert joined.outcome == decision_pb2.REWARD_OUTCOME_JOINED
        assert duplicate.outcome == decision_pb2.REWARD_OUTCOME_DUPLICATE
    runtime.decision_log.flush()
    # What is stored is the digest, under the active key, in every id column.
    with runtime.db.transaction() as session:
        decision_ids = set(session.execute(select(Decision.event_id)).scalars())
        request_ids = set(session.execute(select(Decision.request_id)).scalars())
        reward_rows = set(session.execute(select(Reward.event_id, Reward.request_id)).all())
        event_ids = set(session.execute(select(TrackedEvent.event_id)).scalars())
        correlations = set(session.execute(select(AuditRecord.correlation_id)).scalars())
    for _, client_id in PLANTED.values():
        assert keyring.digest(client_id) in decision_ids
        assert keyring.digest(f"rq-{client_id}") in request_ids
        assert (keyring.digest(client_id), keyring.digest(f"rw-{client_id}")) in reward_rows
        assert keyring.digest(f"ev-{client_id}") in event_ids
        assert {keyring.digest(client_id), keyring.digest(f"ev-{client_id}")} <= correlations
    assert keyring.digest(PLANTED["card"][1]) in correlations  # the erasure's request id
    # Zero raw values in any row of any table.
    text = _rows_text(runtime.db)
    assert [needle for needle in NEEDLES if needle in text] == []
    # The auditor finds a record by the client's id without the id being stored.
    audit = audit_pb2_grpc.AuditServiceStub(server.channel)
    listed = audit.ListAuditRecords(
        audit_pb2.ListAuditRecordsRequest(client_id=PLANTED["phone"][1]),
        metadata=server.metadata(Role.AUDITOR),
    )
    assert [r.payload_kind for r in listed.records] == ["rank"]
    assert listed.records[0].correlation_id == keyring.digest(PLANTED["phone"][1])
    exported = "\n".join(
        line.json
        for line in audit.ExportAuditRecords(
            audit_pb2.ExportAuditRecordsRequest(), metadata=server.metadata(Role.AUDITOR)
        )
    )
    assert [needle for needle in NEEDLES if needle in exported] == []


def test_no_raw_client_id_in_any_byte_of_the_sqlite_files(start_server: Callable[..., object]) -> None:
    handle = start_server()  # type: ignore[operator]
    out = _flows(handle)
    assert out["tracked"].accepted == len(PLANTED)  # type: ignore[attr-defined]
    runtime = handle.running.runtime  # type: ignore[attr-defined]
    runtime.decision_log.flush()
    # Before shutdown the WAL holds the recent pages; search it as it is.
    assert Path(str(handle.data_dir) + "/tacit.db-wal").exists()  # type: ignore[attr-defined]
    assert _files_with(handle.data_dir, NEEDLES) == []  # type: ignore[attr-defined]
    handle.running.stop(grace=1)  # type: ignore[attr-defined]
    assert _files_with(handle.data_dir, NEEDLES) == []  # type: ignore[attr-defined]


def test_the_auditor_shows_a_record_by_the_clients_event_id(
    start_server: Callable[..., object], capsys: pytest.CaptureFixture[str]
) -> None:
    handle = start_server()  # type: ignore[operator]
    _flows(handle)
    base = ["audit", "--target", handle.target, "--data-dir", str(handle.data_dir)]  # type: ignore[attr-defined]
    client_id = f"ev-{PLANTED['ssn'][1]}"
    assert main([*base, "show", "--event-id", client_id, "--json"]) == 0
    shown = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["body"]["payload_kind"] for line in shown] == ["event.click"]
    # The very record whose correlation column holds the id's digest.
    digest = handle.running.runtime.keyring.digest(client_id)  # type: ignore[attr-defined]
    with handle.running.runtime.db.transaction() as session:  # type: ignore[attr-defined]
        query = select(AuditRecord.seq).where(AuditRecord.correlation_id == digest)
        assert [line["seq"] for line in shown] == list(session.execute(query).scalars())
    assert main([*base, "show", "--request-id", PLANTED["card"][1]]) == 0
    shown = capsys.readouterr().out
    assert "erasure" in shown and PLANTED["card"][1] not in shown
    assert main([*base, "show", "--event-id", "never-sent-0001", "--json"]) == 0
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("kind", sorted(PLANTED) + ["ipv4", "ipv6"])
def test_a_candidate_id_holding_personal_data_is_refused_naming_the_field(
    start_server: Callable[..., object], kind: str
) -> None:
    handle = start_server()  # type: ignore[operator]
    value = {"ipv4": "ip-203.0.113.77", "ipv6": "2001:db8::7334"}.get(kind) or PLANTED[kind][1]
    if kind == "email":
        value = PLANTED["email"][0].replace("@", ".")  # jane.doe.example.org: '@' cannot appear
    stub = decision_pb2_grpc.DecisionServiceStub(handle.channel)  # type: ignore[attr-defined]
    request = rank_request("home", "subject-ids", {}, [("a1", {}), ("b2", {}), ("c3", {}), (value, {})])
    with pytest.raises(grpc.RpcError) as error:
        stub.Rank(request, metadata=handle.metadata(Role.SERVICE))  # type: ignore[attr-defined]
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "candidates[3].id" in error.value.details()
    assert value not in error.value.details()
    assert kind not in PLANTED or PLANTED[kind][0] not in error.value.details()
    handle.running.runtime.decision_log.flush()  # type: ignore[attr-defined]
    with handle.running.runtime.db.transaction() as session:  # type: ignore[attr-defined]
        assert session.execute(select(Decision.event_id)).first() is None  # nothing half-written


def test_experiment_request_ids_are_kept_only_as_digests(start_server: Callable[..., object]) -> None:
    handle = start_server(learner={"enabled": False})  # type: ignore[operator]
    stub = experiment_pb2_grpc.ExperimentServiceStub(handle.channel)  # type: ignore[attr-defined]
    metadata = handle.metadata(Role.EXPERIMENTER)  # type: ignore[attr-defined]
    experiment = experiment_pb2.Experiment(
        slot="home",
        arms=[
            experiment_pb2.Arm(name="control", policy="static:first", weight=0.5),
            experiment_pb2.Arm(name="treatment", policy="uniform", weight=0.5),
        ],
        primary_metric="click_through",
        stages=[experiment_pb2.Stage(percent=p, min_sample=10) for p in (5, 100)],
    )
    create_id, start_id = f"cr-{PLANTED['iban'][1]}", f"st-{PLANTED['phone'][1]}"
    stub.CreateExperiment(
        experiment_pb2.CreateExperimentRequest(
            experiment_id="exp-ids", experiment=experiment, request_id=create_id
        ),
        metadata=metadata,
    )
    action = experiment_pb2.ExperimentActionRequest(name="experiments/exp-ids", request_id=start_id)
    stub.StartExperiment(action, metadata=metadata)
    pause = experiment_pb2.ExperimentActionRequest(name="experiments/exp-ids")
    stub.PauseExperiment(pause, metadata=metadata)
    # The retried start is still recognized (it stays paused) although only its digest is kept.
    assert stub.StartExperiment(action, metadata=metadata).state == experiment_pb2.EXPERIMENT_STATE_PAUSED
    runtime = handle.running.runtime  # type: ignore[attr-defined]
    with runtime.db.transaction() as session:
        keys = set(
            session.execute(
                select(IdempotencyKey.request_id).where(IdempotencyKey.scope != MARKER_SCOPE)
            ).scalars()
        )
    assert keys == {runtime.keyring.digest(create_id), runtime.keyring.digest(start_id)}
    text = _rows_text(runtime.db)
    assert [needle for needle in NEEDLES if needle in text] == []


def test_ids_an_older_version_stored_raw_are_digested_once_and_still_join(
    start_server: Callable[..., object], database_url: str, tmp_path: Path
) -> None:
    from datetime import UTC, datetime, timedelta

    from tacit.privacy.pseudonym import KeyRing

    data_dir = tmp_path / "legacy"
    keyring = KeyRing.load_or_create(data_dir / "keys.json")
    db = Database.open(database_url)
    now = datetime.now(UTC)
    legacy = PLANTED["card"][1]
    with db.transaction() as session:
        # What a database written before digests holds: raw ids everywhere, no marker.
        session.query(IdempotencyKey).delete()
        session.add(
            Decision(
                event_id=legacy, slot="home", subject=keyring.pseudonymize("old-user"), arm="",
                policy="bandit", model_version="v0", context={}, candidate_ids=["a1", "b2"],
                candidate_features=[{"id": "a1"}, {"id": "b2"}], probabilities=[0.5, 0.5], chosen_index=0,
                created_at=now, reward_deadline=now + timedelta(hours=1), deferred=False, reward_count=1,
                reward=1.0, learn_after=now + timedelta(hours=1), learn_state=0,
            )
        )
        session.add(Reward(event_id=legacy, request_id=f"rw-{legacy}", value=1.0, occurred_at=now,
                           received_at=now, late=False))
        session.add(TrackedEvent(event_id=f"ev-{legacy}", subject="ps1:k:x", event_type="click",
                                 occurred_at=now, received_at=now, properties={}))
        session.add(IdempotencyKey(scope="experiment.create", request_id=f"cr-{legacy}", created_at=now,
                                   response={}))
    db.dispose()
    handle = start_server(database_url, data_dir=data_dir)  # type: ignore[operator]
    runtime = handle.running.runtime  # type: ignore[attr-defined]
    text = _rows_text(runtime.db)
    assert [needle for needle in NEEDLES if needle in text] == []
    with runtime.db.transaction() as session:
        assert session.get(Decision, keyring.digest(legacy)) is not None
        assert session.get(TrackedEvent, keyring.digest(f"ev-{legacy}")) is not None
    assert digest_legacy_ids(runtime.db, keyring) == 0  # once only
    stub = decision_pb2_grpc.DecisionServiceStub(handle.channel)  # type: ignore[attr-defined]
    service = handle.metadata(Role.SERVICE)  # type: ignore[attr-defined]
    retried = stub.Reward(decision_pb2.RewardRequest(event_id=legacy, value=1.0, request_id=f"rw-{legacy}"),
                          metadata=service)
    assert retried.outcome == decision_pb2.REWARD_OUTCOME_DUPLICATE  # the old reward is still recognized
    joined = stub.Reward(decision_pb2.RewardRequest(event_id=legacy, value=1.0, request_id="rw-new-0001"),
                         metadata=service)
    assert joined.outcome == decision_pb2.REWARD_OUTCOME_JOINED


def test_during_a_rotation_window_ids_stored_under_the_old_key_still_match(
    start_server: Callable[..., object], database_url: str, tmp_path: Path
) -> None:
    from datetime import timedelta

    from tacit.privacy.pseudonym import KeyRing

    data_dir = tmp_path / "rotating"
    first = start_server(database_url, data_dir=data_dir)  # type: ignore[operator]
    decisions = decision_pb2_grpc.DecisionServiceStub(first.channel)  # type: ignore[attr-defined]
    events = event_pb2_grpc.EventServiceStub(first.channel)  # type: ignore[attr-defined]
    request = rank_request("home", "subject-ids", {}, CANDIDATES)
    request.event_id, request.request_id = "rotate-evt-0001", "rotate-req-0001"
    original = decisions.Rank(request, metadata=first.metadata())  # type: ignore[attr-defined]
    tracked = event_pb2.TrackEventsRequest(
        events=[event_pb2.Event(event_id="rotate-ev-0001", subject_id="subject-ids", event_type="click",
                                properties=_features(position=1))]
    )
    events.TrackEvents(tracked, metadata=first.metadata())  # type: ignore[attr-defined]
    first.running.stop(grace=1)  # type: ignore[attr-defined]
    old = KeyRing.load_or_create(data_dir / "keys.json")
    new = old.rotate(data_dir / "keys.json", timedelta(days=7))
    second = start_server(database_url, data_dir=data_dir)  # type: ignore[operator]
    assert second.running.runtime.keyring.active_key_id == new.active_key_id  # type: ignore[attr-defined]
    decisions = decision_pb2_grpc.DecisionServiceStub(second.channel)  # type: ignore[attr-defined]
    events = event_pb2_grpc.EventServiceStub(second.channel)  # type: ignore[attr-defined]
    service = second.metadata()  # type: ignore[attr-defined]
    # Each look-up tries the old key's digest too.
    assert _answer_of(decisions.Rank(request, metadata=service)) == _answer_of(original)
    assert events.TrackEvents(tracked, metadata=service).duplicates == 1
    reward = decision_pb2.RewardRequest(event_id="rotate-evt-0001", value=1.0)
    assert decisions.Reward(reward, metadata=service).outcome == decision_pb2.REWARD_OUTCOME_JOINED
    again = decisions.Reward(reward, metadata=service)
    assert again.outcome == decision_pb2.REWARD_OUTCOME_DUPLICATE
    with pytest.raises(grpc.RpcError) as error:
        decisions.Rank(_with_event_id("rotate-evt-0001"), metadata=service)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # already ranked under the old key
    with second.running.runtime.db.transaction() as session:  # type: ignore[attr-defined]
        assert session.execute(select(Reward.event_id)).scalars().all() == [old.digest("rotate-evt-0001")]


def _answer_of(response: decision_pb2.RankResponse) -> tuple[object, ...]:
    return (response.event_id, tuple((c.id, c.probability) for c in response.ranking), response.model_version)


def _with_event_id(event_id: str) -> decision_pb2.RankRequest:
    request = rank_request("home", "subject-ids", {}, CANDIDATES)
    request.event_id = event_id
    return request

"""The keyed chain's two promises beyond tamper detection: a legacy (pre-key) prefix stays
verifiable, and an erased subject's correlation ids can be blanked without breaking it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from tacit.cli import main
from tacit.privacy.audit import AuditEntry, FieldAudit, chain_hash, entry_to_json
from tacit.privacy.audit_keys import AuditKeyError, AuditKeys
from tacit.privacy.audit_log import (
    append_entries,
    bind_audit_keys,
    load_or_create_keys,
    make_anchor,
    read_head,
    redact_correlations,
    verify,
)
from tacit.server.auth import Role
from tacit.store.db import Database
from tacit.store.schema import AuditHead, AuditRecord
from tacit.v1 import audit_pb2, audit_pb2_grpc, common_pb2, event_pb2, event_pb2_grpc

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def _entry(correlation_id: str, i: int = 0) -> AuditEntry:
    return AuditEntry(
        occurred_at=NOW + timedelta(seconds=i),
        payload_kind="event.click",
        correlation_id=correlation_id,
        policy_version="v1",
        key_id="k1",
        fields=(FieldAudit("text", "scrub", "scrubbed", {"PHONE_NUMBER": 1}),),
    )


def _append_legacy(db: Database, entries: list[AuditEntry]) -> None:
    """What the code before audit keys wrote: the body with the id, a plain SHA-256 link."""
    with db.transaction() as session:
        head = session.execute(select(AuditHead)).scalar_one()
        seq, prev = head.seq, head.record_hash
        for entry in entries:
            seq += 1
            body = entry_to_json(entry)
            record_hash = chain_hash(prev, seq, body)
            session.add(AuditRecord(
                seq=seq, occurred_at=entry.occurred_at, payload_kind=entry.payload_kind,
                correlation_id=entry.correlation_id, policy_version=entry.policy_version,
                key_id=entry.key_id, body_json=body, prev_hash=prev, record_hash=record_hash,
            ))
            prev = record_hash
        head.seq, head.record_hash = seq, prev


@pytest.fixture
def upgraded(database_url: str, tmp_path: Path) -> Iterator[Database]:
    """Five records written by the old code, then the audit key file, then five keyed records."""
    db = Database.open(database_url)
    _append_legacy(db, [_entry(f"old-{i}", i) for i in range(1, 6)])
    bind_audit_keys(db, load_or_create_keys(db, tmp_path / "audit-keys.json"))
    with db.transaction() as session:
        append_entries(session, [_entry(f"new-{i}", i) for i in range(6, 11)])
    yield db
    db.dispose()


def test_legacy_prefix_then_keyed_records_verify_as_one_chain(upgraded: Database, tmp_path: Path) -> None:
    keys = AuditKeys.load(tmp_path / "audit-keys.json")
    assert keys.legacy.seq == 5
    result = verify(upgraded)
    assert result.ok and result.checked == 10
    with upgraded.transaction() as session:
        fifth, sixth = session.get(AuditRecord, 5), session.get(AuditRecord, 6)
        assert fifth is not None and sixth is not None
        assert keys.legacy.record_hash == fifth.record_hash == sixth.prev_hash  # the link across
        assert "chain_key_id" not in json.loads(fifth.body_json)
        assert json.loads(sixth.body_json)["chain_key_id"] == keys.active_key_id


def _edit_legacy(session: Session) -> None:
    record = session.get(AuditRecord, 2)
    assert record is not None
    record.body_json = record.body_json.replace('"PHONE_NUMBER":1', '"PHONE_NUMBER":0')


def _rewrite_legacy_prefix(session: Session) -> None:
    _edit_legacy(session)
    prev = "0" * 64
    for record in session.execute(select(AuditRecord).order_by(AuditRecord.seq)).scalars():
        if record.seq <= 5:
            record.prev_hash = prev
            record.record_hash = chain_hash(prev, record.seq, record.body_json)
        elif record.seq == 6:
            record.prev_hash = prev
        prev = record.record_hash


def _append_unkeyed_after(session: Session) -> None:
    head = session.execute(select(AuditHead)).scalar_one()
    body = entry_to_json(_entry("forged", 11))
    record_hash = chain_hash(head.record_hash, 11, body)
    session.add(AuditRecord(seq=11, occurred_at=NOW, payload_kind="event.click", correlation_id="forged",
                            policy_version="v1", key_id="k1", body_json=body, prev_hash=head.record_hash,
                            record_hash=record_hash))
    head.seq, head.record_hash = 11, record_hash


@pytest.mark.parametrize(
    ("attack", "first_bad", "words"),
    [
        (_edit_legacy, 2, "record_hash does not match the body"),
        (_rewrite_legacy_prefix, 5, "differs from the legacy head pinned in the audit key file"),
        (_append_unkeyed_after, 11,
         "unkeyed record after the keyed chain began (legacy prefix ends at seq 5)"),
    ],
    ids=["legacy-edit", "legacy-rewrite-and-recompute", "unkeyed-append"],
)
def test_attacks_on_the_legacy_prefix_are_named(
    upgraded: Database, attack: Callable[[Session], None], first_bad: int, words: str
) -> None:
    with upgraded.transaction() as session:
        attack(session)
    result = verify(upgraded)
    assert not result.ok and result.first_broken_seq == first_bad
    assert words in (result.reason or "")


def test_a_fresh_database_accepts_no_unkeyed_record(database_url: str, tmp_path: Path) -> None:
    db = Database.open(database_url)
    keys = load_or_create_keys(db, tmp_path / "audit-keys.json")
    assert (keys.legacy.seq, keys.legacy.record_hash) == (0, "0" * 64)
    bind_audit_keys(db, keys)
    _append_legacy(db, [_entry("sneaky", 1)])
    result = verify(db)
    assert not result.ok and result.first_broken_seq == 1
    assert "unkeyed record after the keyed chain began" in (result.reason or "")
    db.dispose()


def test_a_server_upgraded_over_an_old_chain_pins_it_and_continues_keyed(
    start_server: Callable[..., object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "old-data"
    data_dir.mkdir()
    old = Database.open(f"sqlite:///{data_dir / 'tacit.db'}")
    _append_legacy(old, [_entry(f"old-{i}", i) for i in range(1, 4)])
    old.dispose()
    handle = start_server(data_dir=data_dir)  # type: ignore[operator]
    keys_file = data_dir / "audit-keys.json"
    assert json.loads(keys_file.read_text())["legacy"]["seq"] == 3
    assert keys_file.stat().st_mode & 0o777 == 0o600
    props = common_pb2.Features()
    props.values["dwell_ms"].number_value = 5
    event_pb2_grpc.EventServiceStub(handle.channel).TrackEvents(  # type: ignore[attr-defined]
        event_pb2.TrackEventsRequest(events=[event_pb2.Event(
            event_id="after-upgrade-0001", subject_id="s", event_type="page_view", properties=props)]),
        metadata=handle.metadata(Role.SERVICE))  # type: ignore[attr-defined]
    base = ["audit", "--target", handle.target, "--data-dir", str(data_dir)]  # type: ignore[attr-defined]
    assert main([*base, "verify"]) == 0
    assert "audit chain OK: 4 records" in capsys.readouterr().out


# --- redaction for erasure ---------------------------------------------------------------

PLANTED = [f"rdx-4929-1234-5678-{i:04d}" for i in range(6)]


@pytest.fixture
def keyed(database_url: str, tmp_path: Path) -> Iterator[Database]:
    db = Database.open(database_url)
    bind_audit_keys(db, load_or_create_keys(db, tmp_path / "audit-keys.json"))
    yield db
    db.dispose()


def test_redacted_correlations_keep_the_chain_verifiable_and_leave_no_bytes(
    keyed: Database, database_url: str, tmp_path: Path
) -> None:
    with keyed.transaction() as session:
        append_entries(session, [_entry(c, i) for i, c in enumerate(PLANTED)] + [_entry("keep-me", 9)])
    anchor = make_anchor(keyed)
    with keyed.transaction() as session:
        assert redact_correlations(session, PLANTED[:4] + ["never-stored"]) == 4
    with keyed.transaction() as session:
        assert redact_correlations(session, PLANTED[:4]) == 0  # idempotent
    result = verify(keyed, anchor=anchor)
    assert result.ok and result.checked == 7
    assert read_head(keyed) == (anchor.seq, anchor.record_hash)  # the MACs did not change
    with keyed.transaction() as session:
        rows = dict(session.execute(select(AuditRecord.seq, AuditRecord.correlation_id)).all())
        bodies = " ".join(session.execute(select(AuditRecord.body_json)).scalars())
    assert rows == {1: "", 2: "", 3: "", 4: "", 5: PLANTED[4], 6: PLANTED[5], 7: "keep-me"}
    assert not any(value in bodies for value in PLANTED)  # the bodies only ever held commitments
    if database_url.startswith("sqlite"):
        with keyed.engine.connect() as connection:
            connection.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
        written = b"".join(p.read_bytes() for p in tmp_path.glob("tacit.db*"))
        assert PLANTED[4].encode() in written  # the search works: an unredacted id is found
        for value in PLANTED[:4]:
            assert value.encode() not in written
    else:
        with keyed.transaction() as session:
            hits = session.execute(
                text("SELECT count(*) FROM audit_records WHERE correlation_id = ANY(:v) "
                     "OR body_json LIKE ANY(:p)"),
                {"v": PLANTED[:4], "p": [f"%{v}%" for v in PLANTED[:4]]},
            ).scalar_one()
        assert hits == 0


def test_any_other_correlation_id_than_the_committed_one_is_tamper(keyed: Database) -> None:
    with keyed.transaction() as session:
        append_entries(session, [_entry(c, i) for i, c in enumerate(PLANTED)])
    with keyed.transaction() as session:
        session.execute(update(AuditRecord).where(AuditRecord.seq == 3).values(correlation_id=PLANTED[0]))
    result = verify(keyed)
    assert not result.ok and result.first_broken_seq == 3
    assert "correlation_id column does not match" in (result.reason or "")


def test_legacy_records_are_not_redacted(upgraded: Database) -> None:
    with upgraded.transaction() as session:
        assert redact_correlations(session, ["old-2", "new-7"]) == 1
    assert verify(upgraded).ok
    with upgraded.transaction() as session:
        rows = dict(session.execute(select(AuditRecord.seq, AuditRecord.correlation_id)).all())
    assert rows[2] == "old-2" and rows[7] == ""


def test_list_shows_the_blank_and_the_export_carries_the_column(
    start_server: Callable[..., object]
) -> None:
    handle = start_server()  # type: ignore[operator]
    props = common_pb2.Features()
    props.values["dwell_ms"].number_value = 5
    event_pb2_grpc.EventServiceStub(handle.channel).TrackEvents(  # type: ignore[attr-defined]
        event_pb2.TrackEventsRequest(events=[event_pb2.Event(
            event_id=f"list-{i:04d}", subject_id="s", event_type="page_view", properties=props)
            for i in range(2)]),
        metadata=handle.metadata(Role.SERVICE))  # type: ignore[attr-defined]
    db = handle.running.runtime.db  # type: ignore[attr-defined]
    with db.transaction() as session:
        correlations = list(
            session.execute(select(AuditRecord.correlation_id).order_by(AuditRecord.seq)).scalars()
        )
        assert redact_correlations(session, correlations[:1]) == 1
    audit = audit_pb2_grpc.AuditServiceStub(handle.channel)  # type: ignore[attr-defined]
    auditor = handle.metadata(Role.AUDITOR)  # type: ignore[attr-defined]
    listed = audit.ListAuditRecords(audit_pb2.ListAuditRecordsRequest(), metadata=auditor).records
    assert [r.correlation_id for r in listed] == ["", correlations[1]]
    lines = [json.loads(x.json) for x in audit.ExportAuditRecords(audit_pb2.ExportAuditRecordsRequest(),
                                                                   metadata=auditor)]
    assert [line["correlation_id"] for line in lines] == ["", correlations[1]]
    assert audit.VerifyAuditLog(audit_pb2.VerifyAuditLogRequest(), metadata=auditor).ok


def test_a_malformed_anchor_is_invalid_argument_without_echo(start_server: Callable[..., object]) -> None:
    import grpc
    from google.rpc import error_details_pb2, status_pb2

    handle = start_server()  # type: ignore[operator]
    audit = audit_pb2_grpc.AuditServiceStub(handle.channel)  # type: ignore[attr-defined]
    auditor = handle.metadata(Role.AUDITOR)  # type: ignore[attr-defined]
    secret = "harriet.quill@example.org"
    for bad in (secret, json.dumps({"format": "tacit-audit-anchor/1", "seq": secret})):
        with pytest.raises(grpc.RpcError) as caught:
            audit.VerifyAuditLog(audit_pb2.VerifyAuditLogRequest(anchor_json=bad), metadata=auditor)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert secret not in (caught.value.details() or "")
        trailers = dict(caught.value.trailing_metadata() or ())
        status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
        violations = [
            violation.field
            for detail in status.details
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR)
            for violation in _bad_request(detail).field_violations
        ]
        assert violations == ["anchor_json"]


def _bad_request(detail: object) -> object:
    from google.rpc import error_details_pb2

    request = error_details_pb2.BadRequest()
    detail.Unpack(request)  # type: ignore[attr-defined]
    return request


def test_a_replica_without_the_shared_audit_key_file_refuses(database_url: str, tmp_path: Path) -> None:
    first = Database.open(database_url)
    bind_audit_keys(first, load_or_create_keys(first, tmp_path / "a" / "audit-keys.json"))
    with first.transaction() as session:
        append_entries(session, [_entry("r-1", 1)])
    second = Database.open(database_url)
    with pytest.raises(AuditKeyError, match="keyed already"):
        load_or_create_keys(second, tmp_path / "b" / "audit-keys.json")
    assert not (tmp_path / "b" / "audit-keys.json").exists()
    other = tmp_path / "c" / "audit-keys.json"
    AuditKeys.generate().save(other, exclusive=True)
    with pytest.raises(AuditKeyError, match="every replica needs the same audit-keys.json"):
        load_or_create_keys(second, other)
    shared = load_or_create_keys(second, tmp_path / "a" / "audit-keys.json")
    bind_audit_keys(second, shared)
    with second.transaction() as session:
        append_entries(session, [_entry("r-2", 2)])
    assert verify(first).ok and verify(second).checked == 2
    first.dispose()
    second.dispose()

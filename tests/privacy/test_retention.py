"""Retention: events older than `privacy.retention_days` are purged by a background hook, audited."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import select

from tacit.privacy.audit_keys import AuditKeys
from tacit.privacy.audit_log import bind_audit_keys, verify
from tacit.privacy.erasure import RetentionPurger, purge_events_before, retention_purger
from tacit.server.auth import Role
from tacit.store.db import Database
from tacit.store.schema import AuditRecord, TrackedEvent
from tacit.v1 import common_pb2, event_pb2, event_pb2_grpc


def _event(event_id: str, age: timedelta) -> event_pb2.Event:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(UTC) - age)
    props = common_pb2.Features()
    props.values["dwell_ms"].number_value = 100
    return event_pb2.Event(
        event_id=event_id, subject_id="subject-r", event_type="page_view", occurred_at=stamp, properties=props
    )


def _event_ids(db: Database) -> set[str]:
    with db.transaction() as session:
        return set(session.execute(select(TrackedEvent.event_id)).scalars())


def test_background_purge_removes_only_expired_events(
    start_server: Callable[..., object], database_url: str
) -> None:
    handle = start_server(  # type: ignore[operator]
        database_url, privacy={"retention_days": 1, "retention_interval_seconds": 0.05}
    )
    stub = event_pb2_grpc.EventServiceStub(handle.channel)
    events = [_event("old-evt-0001", timedelta(days=3)), _event("old-evt-0002", timedelta(days=1, hours=1)),
              _event("new-evt-0001", timedelta(hours=23)), _event("new-evt-0002", timedelta(0))]
    stub.TrackEvents(event_pb2.TrackEventsRequest(events=events), metadata=handle.metadata(Role.SERVICE))
    runtime = handle.running.runtime  # type: ignore[attr-defined]
    assert isinstance(runtime.retention, RetentionPurger)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and runtime.retention.purged_total < 2:
        time.sleep(0.05)
    # Event ids are stored as keyed digests of the client's ids.
    digest = runtime.keyring.digest
    assert _event_ids(runtime.db) == {digest("new-evt-0001"), digest("new-evt-0002")}
    with runtime.db.transaction() as session:
        bodies = [json.loads(b) for b in session.execute(
            select(AuditRecord.body_json).where(AuditRecord.payload_kind == "retention")).scalars()]
    assert sum(b["fields"][0]["entity_counts"]["events"] for b in bodies) == 2
    assert verify(runtime.db).ok


def test_no_retention_configured_keeps_everything(start_server: Callable[..., object]) -> None:
    handle = start_server()  # type: ignore[operator]
    assert handle.running.runtime.retention is None  # type: ignore[attr-defined]
    assert retention_purger(handle.running.runtime.db, None, 60, "v", "k") is None  # type: ignore[attr-defined]


def test_purge_is_audited_and_idempotent(database_url: str) -> None:
    db = Database.open(database_url)
    bind_audit_keys(db, AuditKeys.generate())  # the chain is keyed: a writer needs the audit key
    now = datetime.now(UTC)
    with db.transaction() as session:
        for n, age in enumerate((40, 31, 29, 1)):
            session.add(TrackedEvent(event_id=f"e-{n:08d}", subject="ps1:k:x", event_type="click",
                                     occurred_at=now - timedelta(days=age), received_at=now, properties={}))
    assert purge_events_before(db, now - timedelta(days=30), "pv", "k1") == 2
    assert purge_events_before(db, now - timedelta(days=30), "pv", "k1") == 0
    with db.transaction() as session:
        kinds = list(session.execute(select(AuditRecord.payload_kind)).scalars())
    assert kinds == ["retention"]  # an empty purge leaves no record
    assert _event_ids(db) == {"e-00000002", "e-00000003"}
    assert verify(db).ok
    db.dispose()


def test_purger_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        RetentionPurger(None, timedelta(0), 1.0)  # type: ignore[arg-type]

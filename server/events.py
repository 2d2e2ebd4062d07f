"""TrackEvents: behavioural events pass the boundary and are committed together.

Event ids are the client's: stored (and audited) only as keyed digests, and a
retry is recognized by the digest under any key still held.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from tacit.privacy.audit_log import append_entries
from tacit.privacy.boundary import PrivacyBoundary
from tacit.server.errors import InvalidArgument
from tacit.store.db import Database
from tacit.store.schema import TrackedEvent

EVENT_TYPES = frozenset({"page_view", "click", "conversion", "session_start", "custom"})

Value = str | float | int | bool


@dataclass(frozen=True)
class EventInput:
    event_id: str
    subject_id: str
    event_type: str
    occurred_at: datetime
    properties: Mapping[str, Value]


@dataclass(frozen=True)
class TrackResult:
    accepted: int
    duplicates: int
    # Undeclared property entries the policy dropped, over the batch (a count: keys are client input).
    dropped_fields: int = 0


def _payload_kind(event_type: str) -> str:
    return f"event.{event_type}" if event_type != "session_start" else "event.custom"


class EventRecorder:
    """Anonymizes a batch and commits it with its audit records, or nothing."""

    def __init__(self, db: Database, boundary: PrivacyBoundary):
        self.db = db
        self.boundary = boundary

    def track(self, events: Sequence[EventInput], now: datetime | None = None) -> TrackResult:
        now = now or datetime.now(UTC)
        ids = [event.event_id for event in events]
        if len(set(ids)) != len(ids):
            raise InvalidArgument("events", "two events in the batch share an event_id")
        keyring = self.boundary.keyring
        # Active-key digest first; the others are the same id under keys still held.
        event_keys = [keyring.digests(event_id) for event_id in ids]
        rows: dict[str, dict[str, object]] = {}
        audits = {}
        for index, event in enumerate(events):
            if event.event_type not in EVENT_TYPES:
                raise InvalidArgument(f"events[{index}].event_type", f"must be one of {sorted(EVENT_TYPES)}")
            subject = self.boundary.pseudonymize_subject(event.subject_id)
            stored_id = event_keys[index][0]
            result = self.boundary.anonymize(_payload_kind(event.event_type), event.properties, stored_id)
            rows[stored_id] = {
                "event_id": stored_id,
                "subject": subject,
                "event_type": event.event_type,
                "occurred_at": event.occurred_at,
                "received_at": now,
                "properties": result.fields,
            }
            audits[stored_id] = result.audit
        older_keys = [key for keys in event_keys for key in keys[1:]]
        with self.db.transaction() as session:
            # An id stored under an older key (inside a rotation window) is a duplicate too.
            held = (
                set(
                    session.execute(
                        select(TrackedEvent.event_id).where(TrackedEvent.event_id.in_(older_keys))
                    ).scalars()
                )
                if older_keys
                else set()
            )
            fresh = sorted(keys[0] for keys in event_keys if not held.intersection(keys[1:]))
            # INSERT … ON CONFLICT DO NOTHING: a concurrent twin that committed (or is
            # committing) the same event id makes this row a duplicate instead of an
            # IntegrityError. Rows go in id order so two overlapping batches take their
            # PostgreSQL row locks in the same order and never deadlock.
            stored = (
                set(
                    session.execute(
                        _insert_new(session)
                        .values([rows[stored_id] for stored_id in fresh])
                        .on_conflict_do_nothing(index_elements=[TrackedEvent.event_id])
                        .returning(TrackedEvent.event_id)
                    ).scalars()
                )
                if fresh
                else set()
            )
            append_entries(session, [audits[keys[0]] for keys in event_keys if keys[0] in stored])
        return TrackResult(
            accepted=len(stored),
            duplicates=len(ids) - len(stored),
            dropped_fields=sum(audit.dropped_undeclared for audit in audits.values()),
        )


def _insert_new(session: Session) -> postgresql.Insert | sqlite.Insert:
    """The backend's INSERT that supports ON CONFLICT (both spell it the same way)."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(TrackedEvent)
    return sqlite.insert(TrackedEvent)

"""TrackEvents: behavioural events pass the boundary and are committed together.

Event ids are the client's: stored (and audited) only as keyed digests, and a
retry is recognized by the digest under any key still held.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select

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
        event_keys = [keyring.digests(event_id) for event_id in ids]
        rows = []
        audits = []
        for index, event in enumerate(events):
            if event.event_type not in EVENT_TYPES:
                raise InvalidArgument(f"events[{index}].event_type", f"must be one of {sorted(EVENT_TYPES)}")
            subject = self.boundary.pseudonymize_subject(event.subject_id)
            stored_id = event_keys[index][0]
            result = self.boundary.anonymize(_payload_kind(event.event_type), event.properties, stored_id)
            rows.append(
                TrackedEvent(
                    event_id=stored_id,
                    subject=subject,
                    event_type=event.event_type,
                    occurred_at=event.occurred_at,
                    received_at=now,
                    properties=result.fields,
                )
            )
            audits.append(result.audit)
        every_key = [key for keys in event_keys for key in keys]
        with self.db.transaction() as session:
            stored = set(
                session.execute(
                    select(TrackedEvent.event_id).where(TrackedEvent.event_id.in_(every_key))
                ).scalars()
            )
            fresh = [not stored.intersection(keys) for keys in event_keys]
            session.add_all([row for row, new in zip(rows, fresh, strict=True) if new])
            append_entries(session, [a for a, new in zip(audits, fresh, strict=True) if new])
        accepted = sum(fresh)
        return TrackResult(accepted=accepted, duplicates=len(fresh) - accepted)

"""Erasure and retention: remove what is stored for a subject's pseudonyms.

A subject may have been stored under every key still held (rotation), so all
of its candidate pseudonyms are erased. The audit record carries counts only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, select

from tacit.privacy.audit import erasure_entry
from tacit.privacy.audit_log import append_entries
from tacit.privacy.pseudonym import KeyRing
from tacit.store.db import Database
from tacit.store.schema import Decision, Reward, TrackedEvent


@dataclass(frozen=True)
class ErasureResult:
    decisions: int
    events: int
    rewards: int


def erase_subject(
    db: Database, keyring: KeyRing, policy_version: str, subject_id: str, correlation_id: str
) -> ErasureResult:
    """Deletes the subject's decisions, their rewards and its events in one transaction."""
    pseudonyms = keyring.candidates(subject_id, "subject")
    with db.transaction() as session:
        event_ids = list(
            session.execute(select(Decision.event_id).where(Decision.subject.in_(pseudonyms))).scalars()
        )
        rewards = 0
        for start in range(0, len(event_ids), 500):
            chunk = event_ids[start : start + 500]
            rewards += session.execute(delete(Reward).where(Reward.event_id.in_(chunk))).rowcount or 0
        decisions = session.execute(delete(Decision).where(Decision.subject.in_(pseudonyms))).rowcount or 0
        events = (
            session.execute(delete(TrackedEvent).where(TrackedEvent.subject.in_(pseudonyms))).rowcount or 0
        )
        append_entries(
            session,
            [
                erasure_entry(
                    datetime.now(UTC),
                    correlation_id,
                    policy_version,
                    keyring.active_key_id,
                    {"decisions": decisions, "events": events, "rewards": rewards},
                )
            ],
        )
    return ErasureResult(decisions, events, rewards)


def purge_events_before(db: Database, cutoff: datetime) -> int:
    """Retention: deletes anonymized events that occurred before `cutoff`."""
    with db.transaction() as session:
        return session.execute(delete(TrackedEvent).where(TrackedEvent.occurred_at < cutoff)).rowcount or 0

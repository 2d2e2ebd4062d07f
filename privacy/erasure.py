"""Erasure and retention: remove what is stored for a subject's pseudonyms.

A subject may have been stored under every key still held (rotation), so all
of its candidate pseudonyms are erased. The audit record carries counts only.

An erasure deletes the subject's decisions, their rewards and its events in one
transaction, in which hooks (wired by the server) mark the models that learned
from them; after the commit the database's files are made to forget the
deleted rows (SQLite: secure_delete zeroes them and a TRUNCATE checkpoint empties
the WAL; PostgreSQL: the tables are vacuumed).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Delete, delete, select
from sqlalchemy.orm import Session

from tacit.privacy.audit import AuditEntry, FieldAudit, Outcome, erasure_entry
from tacit.privacy.audit_log import append_entries, redact_correlations
from tacit.privacy.pseudonym import KeyRing
from tacit.store.db import Database, Reclaimed
from tacit.store.schema import Decision, IdempotencyKey, Reward, TrackedEvent

logger = logging.getLogger("tacit.privacy")
RETENTION_KIND = "retention"
MODEL_REBUILD_KIND = "model_rebuild"
ERASED_TABLES = ("decisions", "rewards", "events", "model_versions", "audit_records")
ERASURE_SCOPE = "audit.erase"
ERASURE_LOCK = "tacit.erasure"
# Erasures are rare and heavy (deletes, then a checkpoint or VACUUM): one at a time per
# process, and one transaction at a time across processes (a named database lock).
_process_lock = threading.Lock()

ErasureHook = Callable[[Session, Sequence[str]], Mapping[str, int]]
"""Runs inside the erasure's transaction before the rows go, given the subject's pseudonyms;
returns counts (never values) for the audit record — e.g. the models it marked for rebuild."""


@dataclass(frozen=True)
class ErasureResult:
    decisions: int
    events: int
    rewards: int
    marked: Mapping[str, int] = field(default_factory=dict)
    reclaimed: Reclaimed | None = None


def _deleted(session: Session, statement: Delete) -> int:
    """Rows removed by a DELETE (0 when the driver cannot tell)."""
    result = session.execute(statement)
    return int(getattr(result, "rowcount", 0) or 0)


def erase_subject(
    db: Database,
    keyring: KeyRing,
    policy_version: str,
    subject_id: str,
    correlation_id: str,
    hooks: Sequence[ErasureHook] = (),
    request_key: str = "",
) -> ErasureResult:
    """Deletes the subject's decisions, their rewards and its events in one transaction.

    `hooks` mark what learned from those rows (models) in the same transaction; after
    the commit the freed space is reclaimed so the files no longer hold the rows.

    `request_key` (a keyed digest of the request id and the subject, never either value)
    makes the erasure idempotent: a retry, or a concurrent twin, gets the first call's
    counts and appends no second audit record. Erasures run one at a time (per process and,
    through a named database lock, across replicas), so twins never race each other.
    """
    with _process_lock:
        with db.transaction() as session:
            # SQLite: the write lock; PostgreSQL: an advisory lock. Taken before the reads
            # below, so nothing (the learner, a twin) moves between them and the deletes.
            db.hold_named_lock(session, ERASURE_LOCK)
            stored = session.get(IdempotencyKey, (ERASURE_SCOPE, request_key)) if request_key else None
            if stored is not None:
                result = _result_from(stored.response)
                done = bool(stored.response.get("reclaimed"))
            else:
                result = _erase(session, keyring, policy_version, subject_id, correlation_id, hooks)
                done = False
                if request_key:
                    session.add(
                        IdempotencyKey(
                            scope=ERASURE_SCOPE,
                            request_id=request_key,
                            created_at=datetime.now(UTC),
                            response=_response_of(result, reclaimed=False),
                        )
                    )
        if done:
            return result
        # The rows are gone from the tables; make the files forget them too (old WAL
        # frames, free pages). A replay whose first call failed here reclaims again.
        reclaimed = db.reclaim_deleted(ERASED_TABLES)
        if request_key:
            with db.transaction() as session:
                row = session.get(IdempotencyKey, (ERASURE_SCOPE, request_key))
                if row is not None:
                    row.response = _response_of(result, reclaimed=True)
        return ErasureResult(result.decisions, result.events, result.rewards, result.marked, reclaimed)


def _response_of(result: ErasureResult, reclaimed: bool) -> dict[str, object]:
    """What a replay answers: counts only (never an id or a value)."""
    return {
        "decisions": result.decisions,
        "events": result.events,
        "rewards": result.rewards,
        "marked": dict(result.marked),
        "reclaimed": reclaimed,
    }


def _result_from(response: Mapping[str, object]) -> ErasureResult:
    marked = response.get("marked")
    return ErasureResult(
        decisions=int(str(response.get("decisions", 0))),
        events=int(str(response.get("events", 0))),
        rewards=int(str(response.get("rewards", 0))),
        marked={str(k): int(v) for k, v in marked.items()} if isinstance(marked, dict) else {},
    )


def _erase(
    session: Session,
    keyring: KeyRing,
    policy_version: str,
    subject_id: str,
    correlation_id: str,
    hooks: Sequence[ErasureHook],
) -> ErasureResult:
    pseudonyms = keyring.candidates(subject_id, "subject")
    marked: dict[str, int] = {}
    event_ids = list(
        session.execute(select(Decision.event_id).where(Decision.subject.in_(pseudonyms))).scalars()
    )
    tracked_ids = list(
        session.execute(select(TrackedEvent.event_id).where(TrackedEvent.subject.in_(pseudonyms))).scalars()
    )
    request_ids: list[str] = []
    for hook in hooks:
        for name, count in hook(session, pseudonyms).items():
            marked[name] = marked.get(name, 0) + int(count)
    rewards = 0
    for start in range(0, len(event_ids), 500):
        chunk = event_ids[start : start + 500]
        request_ids.extend(
            session.execute(select(Reward.request_id).where(Reward.event_id.in_(chunk))).scalars()
        )
        rewards += _deleted(session, delete(Reward).where(Reward.event_id.in_(chunk)))
    decisions = _deleted(session, delete(Decision).where(Decision.subject.in_(pseudonyms)))
    events = _deleted(session, delete(TrackedEvent).where(TrackedEvent.subject.in_(pseudonyms)))
    correlation_ids = sorted({*event_ids, *tracked_ids, *request_ids})
    # The audit records of the subject's decisions, events and rewards carry these ids as
    # their correlation_id; blank them (the chain covers only a keyed commitment to them).
    marked["audit_correlations_redacted"] = redact_correlations(session, correlation_ids)
    append_entries(
        session,
        [
            erasure_entry(
                datetime.now(UTC),
                correlation_id,
                policy_version,
                keyring.active_key_id,
                {"decisions": decisions, "events": events, "rewards": rewards, **marked},
            )
        ],
    )
    return ErasureResult(decisions, events, rewards, marked)


def model_rebuild_entry(
    occurred_at: datetime,
    task: str,
    old_version: str | None,
    new_version: str,
    examples_before: int,
    examples_after: int,
    files_deleted: int,
    policy_version: str = "",
    key_id: str = "",
) -> AuditEntry:
    """The audit entry of a model rebuilt after an erasure: task, versions, example counts.

    Version numbers go in the counts (``v000012`` -> 12) as well as in the correlation id.
    """

    def number(version: str | None) -> int:
        digits = (version or "").lstrip("v")
        return int(digits) if digits.isdigit() else 0

    return AuditEntry(
        occurred_at=occurred_at,
        payload_kind=MODEL_REBUILD_KIND,
        correlation_id=f"rebuild:{task}:{old_version or 'none'}->{new_version}",
        policy_version=policy_version,
        key_id=key_id,
        fields=(
            FieldAudit(
                field=task,
                operator="rebuild",
                outcome="rebuilt",
                entity_counts={
                    "examples_before": examples_before,
                    "examples_after": examples_after,
                    "version_before": number(old_version),
                    "version_after": number(new_version),
                    "files_deleted": files_deleted,
                },
            ),
        ),
    )


def purge_events_before(db: Database, cutoff: datetime, policy_version: str = "", key_id: str = "") -> int:
    """Retention: deletes anonymized events that occurred before `cutoff`.

    When anything was deleted, an audit record (kind ``retention``) with the
    count is appended in the same transaction.
    """
    with db.transaction() as session:
        purged = _deleted(session, delete(TrackedEvent).where(TrackedEvent.occurred_at < cutoff))
        if purged:
            now = datetime.now(UTC)
            append_entries(
                session,
                [
                    AuditEntry(
                        occurred_at=now,
                        payload_kind=RETENTION_KIND,
                        correlation_id=f"retention-{now:%Y%m%dT%H%M%S}",
                        policy_version=policy_version,
                        key_id=key_id,
                        fields=(FieldAudit("events", "purge", Outcome.ERASED.value, {"events": purged}),),
                    )
                ],
            )
        return purged


class RetentionPurger:
    """Runs `purge_events_before(now - retention)` now and then every `interval_seconds`.

    A background hook: `start()` at server start, `stop()` at shutdown. A failed
    purge is logged (without values) and retried at the next interval.
    """

    def __init__(
        self,
        db: Database,
        retention: timedelta,
        interval_seconds: float,
        policy_version: str = "",
        key_id: str = "",
    ) -> None:
        if retention <= timedelta(0) or interval_seconds <= 0:
            raise ValueError("retention and interval must be positive")
        self.db = db
        self.retention = retention
        self.interval_seconds = interval_seconds
        self.policy_version = policy_version
        self.key_id = key_id
        self.purged_total = 0
        self.runs = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self, now: datetime | None = None) -> int:
        cutoff = (now or datetime.now(UTC)) - self.retention
        purged = purge_events_before(self.db, cutoff, self.policy_version, self.key_id)
        self.purged_total += purged
        self.runs += 1
        if purged:
            logger.info("retention purge", extra={"events": purged})
        return purged

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception as exc:  # keep running; the next interval retries
                logger.warning("retention purge failed", extra={"error_type": type(exc).__name__})
            self._stop.wait(self.interval_seconds)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="tacit-retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def retention_purger(
    db: Database, retention_days: float | None, interval_seconds: float, policy_version: str, key_id: str
) -> RetentionPurger | None:
    """The purger for the configured retention, or None when events are kept indefinitely."""
    if retention_days is None:
        return None
    return RetentionPurger(db, timedelta(days=retention_days), interval_seconds, policy_version, key_id)

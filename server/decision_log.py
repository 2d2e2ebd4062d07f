"""Logs Rank decisions off the request path, in small batches.

`Rank` hands its decision and the audit entry of its context to `submit` and
returns; a writer thread commits batches every few milliseconds and at
shutdown. A crash can lose at most the unflushed batch (bounded by
`max_batch` and the flush interval); losses are counted in
`tacit_decisions_lost_total`. `Reward` calls `ensure_flushed` first, so a
reward that races its own decision in this process still finds it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from tacit.privacy.audit import AuditEntry
from tacit.privacy.audit_log import append_entries
from tacit.store.db import Database, StorageUnavailable
from tacit.store.schema import Decision

logger = logging.getLogger("tacit.server")

_INSERT_DECISIONS = insert(Decision)

DECISIONS_LOGGED = Counter("tacit_decisions_logged_total", "Decisions committed to the log")
DECISIONS_LOST = Counter(
    "tacit_decisions_lost_total", "Decisions dropped because the log could not be written"
)
DECISIONS_PENDING = Gauge("tacit_decisions_pending", "Decisions waiting for the next flush")


@dataclass(frozen=True)
class PendingDecision:
    decision: dict[str, Any]  # column values of one `decisions` row
    audit: AuditEntry


class DecisionLog:
    """A bounded in-memory queue flushed by one writer thread."""

    def __init__(
        self,
        db: Database,
        flush_interval_ms: float = 5.0,
        max_batch: int = 256,
        max_pending: int = 20_000,
    ):
        self._db = db
        self._interval = flush_interval_ms / 1000.0
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._queue: list[PendingDecision] = []
        self._pending_ids: set[str] = set()
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tacit-decision-log", daemon=True)
        self._thread.start()

    def submit(self, decision: dict[str, Any], audit: AuditEntry) -> None:
        with self._lock:
            if len(self._queue) >= self._max_pending:
                DECISIONS_LOST.inc()
                logger.error("decision log full; decision dropped")
                return
            self._queue.append(PendingDecision(decision, audit))
            self._pending_ids.add(decision["event_id"])
            DECISIONS_PENDING.set(len(self._queue))
            if len(self._queue) >= self._max_batch:
                self._wake.set()

    def is_pending(self, event_id: str) -> bool:
        with self._lock:
            return event_id in self._pending_ids

    def ensure_flushed(self, event_id: str) -> None:
        """Flushes now if `event_id` is still waiting in memory."""
        if self.is_pending(event_id):
            self.flush()

    def flush(self) -> int:
        """Commits everything queued so far; returns how many decisions."""
        with self._flush_lock:
            written = 0
            while True:
                with self._lock:
                    batch = self._queue[: self._max_batch]
                if not batch:
                    return written
                self._write(batch)
                with self._lock:
                    del self._queue[: len(batch)]
                    for item in batch:
                        self._pending_ids.discard(item.decision["event_id"])
                    DECISIONS_PENDING.set(len(self._queue))
                written += len(batch)
                DECISIONS_LOGGED.inc(len(batch))

    def _write(self, batch: Sequence[PendingDecision]) -> None:
        try:
            self._write_together(batch)
        except IntegrityError:
            # A caller-chosen event id collided (e.g. with another replica): write the
            # rest one by one and count the colliding ones as lost.
            for item in batch:
                try:
                    self._write_together([item])
                except IntegrityError:
                    DECISIONS_LOST.inc()
                    logger.error("decision with a duplicate event id dropped")

    def _write_together(self, batch: Sequence[PendingDecision]) -> None:
        # Not synced on commit: the documented bounded loss of Rank's log. A Reward's
        # synced commit makes every earlier decision batch durable too.
        with self._db.transaction(durable=False) as session:
            session.connection().execute(_INSERT_DECISIONS, [item.decision for item in batch])
            append_entries(session, [item.audit for item in batch])

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            try:
                self.flush()
            except StorageUnavailable:
                # Decisions stay queued; Database logs the outage once, not every retry.
                time.sleep(min(1.0, self._interval * 20))
            except Exception:
                logger.exception("decision log flush failed")
                time.sleep(min(1.0, self._interval * 20))

    def close(self) -> None:
        """Stops the writer after a last flush; counts what could not be written."""
        self._stop.set()
        self._wake.set()
        self._thread.join()
        try:
            self.flush()
        except Exception:
            logger.exception("final decision log flush failed")
        with self._lock:
            if self._queue:
                DECISIONS_LOST.inc(len(self._queue))
                logger.error("decisions lost at shutdown", extra={"count": len(self._queue)})
                self._queue.clear()
                self._pending_ids.clear()

"""Logs Rank decisions off the request path, in small batches.

`Rank` hands its decision and the audit entry of its context to `submit` and
returns; a writer thread commits batches every few milliseconds and at
shutdown. A crash can lose at most the unflushed batch (bounded by
`max_batch` and the flush interval); losses are counted in
`tacit_decisions_lost_total`. `Reward` calls `ensure_flushed` first, so a
reward that races its own decision in this process still finds it; a retried
`Rank` does the same with its request id. Decisions carry digests of their
event and request ids (`KeyRing.digest`), never the ids a client sent.

Crash losses are counted by `CrashJournal`: a small memory-mapped file in the
data dir holding how many decisions were handed to the log, how many were
resolved (committed, or dropped and counted), and the batch being committed.
Updating it is a memory write (no syscall, no fsync on Rank's path); the kernel
keeps the pages when the process dies (kill -9, OOM kill), so the next start
reads `handed - resolved`, checks whether the in-flight batch committed, and
adds the difference to `tacit_decisions_lost_total`. A power loss can lose the
journal's last pages too: then the count is a lower bound. Rank calls that were
in flight at the crash may be counted although their caller never got an answer.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import mmap
import os
import struct
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from tacit.privacy.audit import AuditEntry
from tacit.privacy.audit_log import append_entries
from tacit.server.metrics import DECISIONS_LOGGED, DECISIONS_LOST, DECISIONS_PENDING
from tacit.store.candidate_sets import store_candidate_sets
from tacit.store.db import Database, StorageUnavailable
from tacit.store.schema import Decision

logger = logging.getLogger("tacit.server")

_INSERT_DECISIONS = insert(Decision)


_ID_BYTES = 200
# magic, handed, resolved, in-flight batch size, the batch's first event id (the stored form)
_JOURNAL = struct.Struct(f"<8sQQQ{_ID_BYTES}s")
_MAGIC = b"TACITDL1"


class CrashJournal:
    """Counts decisions handed to the log and resolved, in a memory-mapped file that outlives a crash.

    One journal per process: `decision-log.N.journal` for the first N whose file lock is
    free, so worker processes sharing a data dir never share a journal, and a restarted
    process picks up the journal its crashed predecessor left.
    """

    def __init__(self, directory: Path, max_files: int = 256):
        directory.mkdir(parents=True, exist_ok=True)
        for index in range(max_files):
            path = directory / f"decision-log.{index}.journal"
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            if os.fstat(fd).st_size < _JOURNAL.size:
                os.ftruncate(fd, _JOURNAL.size)
            self.path = path
            self._fd = fd
            self._map = mmap.mmap(fd, _JOURNAL.size)
            return
        raise RuntimeError(f"no free decision-log journal in {directory}")

    def left_over(self) -> tuple[int, int, str]:
        """(unresolved decisions, in-flight batch size, its first event id) from the last process."""
        magic, handed, resolved, inflight, first = _JOURNAL.unpack_from(self._map, 0)
        if magic != _MAGIC:
            return 0, 0, ""
        return max(0, handed - resolved), inflight, first.rstrip(b"\0").decode("utf-8", "replace")

    def reset(self) -> None:
        self._handed = 0
        self._resolved = 0
        _JOURNAL.pack_into(self._map, 0, _MAGIC, 0, 0, 0, b"")

    def handed(self) -> None:
        self._handed += 1
        struct.pack_into("<Q", self._map, 8, self._handed)

    def committing(self, count: int, first_event_id: str) -> None:
        encoded = first_event_id.encode("utf-8")
        # An id that does not fit is not stored: the batch then counts as lost after a crash.
        struct.pack_into(
            f"<Q{_ID_BYTES}s", self._map, 24, count, encoded if len(encoded) <= _ID_BYTES else b""
        )

    def resolved(self, count: int) -> None:
        self._resolved += count
        struct.pack_into("<QQ", self._map, 16, self._resolved, 0)

    def close(self) -> None:
        self._map.flush()
        self._map.close()
        with contextlib.suppress(OSError):
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)


@dataclass(frozen=True, slots=True)
class PendingDecision:
    decision: dict[str, Any]  # column values of one `decisions` row
    audit: AuditEntry
    # The anonymized candidate feature maps its `candidate_refs` name, by digest.
    candidate_sets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


# Digests this process knows are committed to `candidate_sets` (rows are never deleted, see
# `tacit.store.candidate_sets`); past this many the memory is cleared and rebuilt by inserts
# that the database ignores.
KNOWN_SETS_LIMIT = 200_000


class DecisionLog:
    """A bounded in-memory queue flushed by one writer thread."""

    def __init__(
        self,
        db: Database,
        flush_interval_ms: float = 5.0,
        max_batch: int = 256,
        max_pending: int = 20_000,
        journal_dir: Path | None = None,
    ):
        self._db = db
        self._interval = flush_interval_ms / 1000.0
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._dropping = False  # logged once per overflow, not once per dropped decision
        self._queue: list[PendingDecision] = []
        self._pending_ids: set[str] = set()  # event-id digests
        self._pending_requests: set[str] = set()  # request-id digests
        self._known_sets: set[str] = set()  # candidate-set digests committed (under _flush_lock)
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._journal = CrashJournal(journal_dir) if journal_dir is not None else None
        if self._journal is not None:
            self._count_crash_loss(self._journal)
        self._thread = threading.Thread(target=self._run, name="tacit-decision-log", daemon=True)
        self._thread.start()

    def _count_crash_loss(self, journal: CrashJournal) -> None:
        """Adds what the previous process acknowledged but never wrote to the loss counter."""
        unresolved, inflight, first = journal.left_over()
        if unresolved and inflight and first:
            try:
                with self._db.transaction() as session:
                    if session.execute(select(Decision.event_id).where(Decision.event_id == first)).first():
                        unresolved -= inflight  # that batch committed just before the crash
            except StorageUnavailable:
                pass  # cannot tell: count the batch as lost (an upper bound for that batch)
        journal.reset()
        if unresolved > 0:
            DECISIONS_LOST.inc(unresolved)
            logger.warning("decisions lost in a crash of the previous process", extra={"count": unresolved})

    def submit(
        self,
        decision: dict[str, Any],
        audit: AuditEntry,
        candidate_sets: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        with self._lock:
            if len(self._queue) >= self._max_pending:
                DECISIONS_LOST.inc()
                if not self._dropping:
                    self._dropping = True
                    logger.error(
                        "decision log full; decisions are dropped (and counted) until storage catches up",
                        extra={"max_pending": self._max_pending},
                    )
                return
            if self._journal is not None:
                self._journal.handed()
            self._queue.append(PendingDecision(decision, audit, candidate_sets or {}))
            self._pending_ids.add(decision["event_id"])
            if decision.get("request_id"):
                self._pending_requests.add(decision["request_id"])
            DECISIONS_PENDING.set(len(self._queue))
            if len(self._queue) >= self._max_batch:
                self._wake.set()

    def is_pending(self, keys: Iterable[str]) -> bool:
        """True when a decision with one of these event-id digests waits in memory."""
        with self._lock:
            return any(key in self._pending_ids for key in keys)

    def ensure_flushed(self, keys: Iterable[str]) -> None:
        """Flushes now if a decision with one of these event- or request-id digests waits in memory."""
        keys = list(keys)
        with self._lock:
            waiting = any(key in self._pending_ids or key in self._pending_requests for key in keys)
        if waiting:
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
                if self._journal is not None:
                    self._journal.committing(len(batch), batch[0].decision["event_id"])
                self._write(batch)
                with self._lock:
                    if self._journal is not None:
                        self._journal.resolved(len(batch))
                    del self._queue[: len(batch)]
                    self._dropping = False
                    for item in batch:
                        self._pending_ids.discard(item.decision["event_id"])
                        self._pending_requests.discard(item.decision.get("request_id") or "")
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
                    logger.error("decision with a duplicate event or request id dropped")

    def _write_together(self, batch: Sequence[PendingDecision]) -> None:
        # Not synced on commit: the documented bounded loss of Rank's log. A Reward's
        # synced commit makes every earlier decision batch durable too.
        known = self._known_sets
        new_sets: dict[str, Mapping[str, Any]] = {}
        for item in batch:
            for digest, features in item.candidate_sets.items():
                if digest not in known:
                    new_sets[digest] = features
        with self._db.transaction(durable=False) as session:
            connection = session.connection()
            store_candidate_sets(connection, new_sets)
            connection.execute(_INSERT_DECISIONS, [item.decision for item in batch])
            append_entries(session, [item.audit for item in batch])
        if len(known) + len(new_sets) > KNOWN_SETS_LIMIT:
            known.clear()
        known.update(new_sets)

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
        except StorageUnavailable:
            pass  # the outage is logged by Database; what is left is counted as lost below
        except Exception:
            logger.exception("final decision log flush failed")
        with self._lock:
            if self._queue:
                DECISIONS_LOST.inc(len(self._queue))
                logger.error("decisions lost at shutdown", extra={"count": len(self._queue)})
                if self._journal is not None:
                    self._journal.resolved(len(self._queue))  # counted here, not again at next start
                self._queue.clear()
                self._pending_ids.clear()
                self._pending_requests.clear()
            if self._journal is not None:
                self._journal.close()

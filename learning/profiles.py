"""Subject profiles from the stored, anonymized event history (point in time).

Everything here is keyed by the *pseudonym* the privacy boundary produced;
nothing reads or returns a raw subject id, and the pseudonym itself is never
part of a feature vector (``FeatureVector`` has no subject field).

``ProfileStore.lookup(pseudonym, as_of)`` is the cheap rank-time and
predict-time path: the subject's recent history is read once, sorted once
(``prepare_history``) and kept in an in-memory LRU with a TTL; the features are
recomputed from the cached history for every ``as_of`` (hour, recency and the
windows move with time), reading only its 30-day window. Staleness
is bounded by ``ttl_seconds``: an event stored after the history was cached is
seen at the next refresh, never earlier.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from tacit.learning.features import Event, FeatureVector, History, features_at, prepare_history
from tacit.store.db import Database
from tacit.store.schema import TrackedEvent

logger = logging.getLogger("tacit.learning")

__all__ = [
    "HISTORY_DAYS",
    "Profile",
    "ProfileStore",
    "as_utc",
    "iter_histories",
    "load_history",
    "row_to_event",
]

HISTORY_DAYS = 120
"""How much history a profile reads: the 30-day windows plus the latest device/referral.

A device or referral older than this is reported as unknown at serving time; training
reads the whole table, so the two agree for every subject active in the last 120 days.
"""


def as_utc(moment: datetime) -> datetime:
    """SQLite returns naive datetimes for timezone-aware columns; they are UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def row_to_event(occurred_at: datetime, event_type: str, properties: dict | None) -> Event:
    """An anonymized events-table row as a feature-builder event."""
    return Event(occurred_at=as_utc(occurred_at), event_type=event_type, properties=dict(properties or {}))


def load_history(db: Database, pseudonym: str, since: datetime | None = None) -> list[Event]:
    """The stored events of one pseudonym, oldest first (optionally only after ``since``)."""
    query = select(TrackedEvent.occurred_at, TrackedEvent.event_type, TrackedEvent.properties).where(
        TrackedEvent.subject == pseudonym
    )
    if since is not None:
        query = query.where(TrackedEvent.occurred_at > since)
    with db.transaction() as session:
        rows = session.execute(query.order_by(TrackedEvent.occurred_at)).all()
    return [row_to_event(*row) for row in rows]


def iter_histories(db: Database, batch_size: int = 5_000) -> Iterator[tuple[str, list[Event]]]:
    """Every pseudonym's full history, one subject at a time (streamed by subject order)."""
    query = (
        select(
            TrackedEvent.subject, TrackedEvent.occurred_at, TrackedEvent.event_type, TrackedEvent.properties
        )
        .order_by(TrackedEvent.subject, TrackedEvent.occurred_at)
        .execution_options(yield_per=batch_size)
    )
    current: str | None = None
    events: list[Event] = []
    with db.transaction() as session:
        for subject, occurred_at, event_type, properties in session.execute(query):
            if subject != current:
                if current is not None:
                    yield current, events
                current, events = subject, []
            events.append(row_to_event(occurred_at, event_type, properties))
    if current is not None:
        yield current, events


def group_events(rows: Iterable[tuple[str, Event]]) -> dict[str, list[Event]]:
    """(pseudonym, event) pairs grouped by pseudonym."""
    grouped: dict[str, list[Event]] = defaultdict(list)
    for subject, event in rows:
        grouped[subject].append(event)
    return dict(grouped)


@dataclass(frozen=True)
class Profile:
    """A subject's features at one instant; ``default`` when there was no history to use."""

    features: FeatureVector
    default: bool


@dataclass
class _Entry:
    history: History
    """Prepared once per load, so a lookup reads only the 30-day window."""
    loaded_at: float


class ProfileStore:
    """LRU + TTL cache of pseudonym → recent history, turned into features per lookup."""

    def __init__(
        self,
        db: Database,
        ttl_seconds: float = 30.0,
        max_entries: int = 100_000,
        history_days: int = HISTORY_DAYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self.history_days = history_days
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._prefetch_queue: queue.Queue[str] = queue.Queue(maxsize=10_000)
        self._prefetcher: threading.Thread | None = None
        self._invalidations = 0
        self.hits = 0
        self.misses = 0

    def lookup(self, pseudonym: str, as_of: datetime | None = None) -> Profile:
        """Features of ``pseudonym`` at ``as_of`` (default now); default profile without history."""
        moment = as_utc(as_of) if as_of is not None else datetime.now(UTC)
        features = features_at(self._history(pseudonym, moment), moment)
        return Profile(features=features, default=features.has_history == 0.0)

    def cached(self, pseudonym: str, as_of: datetime) -> Profile | None:
        """The profile from memory only (no database read), or None on a miss.

        Rank uses this and `prefetch`, so a cold subject costs Rank nothing: it is
        served without profile features once and with them after the fill.
        """
        now = self._clock()
        with self._lock:
            entry = self._entries.get(pseudonym)
            if entry is None or now - entry.loaded_at >= self.ttl_seconds:
                return None
            self._entries.move_to_end(pseudonym)
            self.hits += 1
            history = entry.history
        features = features_at(history, as_utc(as_of))
        return Profile(features=features, default=features.has_history == 0.0)

    def prefetch(self, pseudonym: str) -> None:
        """Loads a subject's history in the background (bounded queue; extra requests are dropped)."""
        with self._lock:
            if self._prefetcher is None:
                self._prefetcher = threading.Thread(
                    target=self._prefetch_loop, name="tacit-profiles", daemon=True
                )
                self._prefetcher.start()
        with contextlib.suppress(queue.Full):
            self._prefetch_queue.put_nowait(pseudonym)

    def _prefetch_loop(self) -> None:
        while True:
            pseudonym = self._prefetch_queue.get()
            try:
                self._history(pseudonym, datetime.now(UTC))
            except Exception:  # noqa: BLE001 - a failed fill only means another miss later
                logger.warning("profile prefetch failed")

    def invalidate(self, pseudonym: str | None = None) -> None:
        """Forgets one subject (e.g. after erasure) or everything."""
        with self._lock:
            self._invalidations += 1  # a load that started before this must not be cached
            if pseudonym is None:
                self._entries.clear()
            else:
                self._entries.pop(pseudonym, None)

    def _history(self, pseudonym: str, moment: datetime) -> History:
        now = self._clock()
        with self._lock:
            entry = self._entries.get(pseudonym)
            if entry is not None and now - entry.loaded_at < self.ttl_seconds:
                self._entries.move_to_end(pseudonym)
                self.hits += 1
                return entry.history
            self.misses += 1
            invalidations = self._invalidations
        since = datetime.now(UTC) - timedelta(days=self.history_days)
        # A lookup in the past needs history from before that moment, not before now.
        since = min(since, moment - timedelta(days=self.history_days))
        history = prepare_history(load_history(self.db, pseudonym, since))
        with self._lock:
            if invalidations != self._invalidations:
                return history  # an erasure happened meanwhile: use once, never cache
            self._entries[pseudonym] = _Entry(history, now)
            self._entries.move_to_end(pseudonym)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return history

"""ProfileStore: point-in-time features from the events table, cached with a TTL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tacit.learning.features import RECENCY_CAP_DAYS
from tacit.learning.profiles import ProfileStore
from tacit.store.db import Database
from tacit.store.schema import TrackedEvent

PSEUDONYM = "ps1:k1:" + "a" * 52
NOW = datetime.now(UTC).replace(microsecond=0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db(database_url: str):  # type: ignore[no-untyped-def]
    database = Database.open(database_url)
    yield database
    database.dispose()


def add_event(db: Database, event_id: str, occurred_at: datetime, event_type: str = "page_view",
              **properties: object) -> None:  # fmt: skip
    with db.transaction() as session:
        session.add(
            TrackedEvent(
                event_id=event_id, subject=PSEUDONYM, event_type=event_type, occurred_at=occurred_at,
                received_at=NOW, properties=dict(properties),
            )  # fmt: skip
        )


def test_a_subject_without_history_gets_the_default_profile(db: Database) -> None:
    profile = ProfileStore(db).lookup("ps1:k1:" + "b" * 52, NOW)
    assert profile.default
    assert profile.features.recency_days == RECENCY_CAP_DAYS and profile.features.device == "unknown"


def test_features_come_from_the_stored_history(db: Database) -> None:
    add_event(db, "evt-00000001", NOW - timedelta(days=2), device="Desktop", dwell_ms=1000.0)
    add_event(db, "evt-00000002", NOW - timedelta(days=1), "click")
    add_event(db, "evt-00000003", NOW - timedelta(days=20), "session_start", referrer_class="email")
    profile = ProfileStore(db).lookup(PSEUDONYM, NOW)
    features = profile.features
    assert not profile.default
    assert features.visits_7d == 2 and features.visits_30d == 3 and features.clicks_30d == 1
    assert features.recency_days == pytest.approx(1.0)
    assert features.device == "desktop" and features.referral_source == "email"


def test_a_snapshot_before_an_event_does_not_change_when_the_event_arrives(db: Database) -> None:
    add_event(db, "evt-00000001", NOW - timedelta(days=3))
    store = ProfileStore(db)
    before = store.lookup(PSEUDONYM, NOW - timedelta(days=1))
    add_event(db, "evt-00000002", NOW - timedelta(hours=2), "click", device="tablet")
    store.invalidate(PSEUDONYM)
    assert store.lookup(PSEUDONYM, NOW - timedelta(days=1)) == before
    assert store.lookup(PSEUDONYM, NOW).features.clicks_30d == 1


def test_the_cache_serves_until_its_ttl_then_refreshes(db: Database) -> None:
    clock = FakeClock()
    store = ProfileStore(db, ttl_seconds=30.0, clock=clock)
    add_event(db, "evt-00000001", NOW - timedelta(days=3))
    assert store.lookup(PSEUDONYM, NOW).features.visits_7d == 1
    add_event(db, "evt-00000002", NOW - timedelta(days=1))
    clock.now = 29.0
    assert store.lookup(PSEUDONYM, NOW).features.visits_7d == 1  # cached: staleness bounded by the TTL
    clock.now = 31.0
    assert store.lookup(PSEUDONYM, NOW).features.visits_7d == 2
    assert (store.hits, store.misses) == (1, 2)


def test_the_cache_is_bounded(db: Database) -> None:
    store = ProfileStore(db, max_entries=2)
    for letter in "cdef":
        store.lookup("ps1:k1:" + letter * 52, NOW)
    assert len(store._entries) == 2

"""Point-in-time features: strictness property and hand-checked tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tacit.learning.features import (
    FEATURE_NAMES,
    RECENCY_CAP_DAYS,
    UNKNOWN,
    Event,
    FeatureError,
    build_features,
    default_features,
    features_at,
    prepare_history,
)

AS_OF = datetime(2025, 3, 12, 15, 30, tzinfo=UTC)  # a Wednesday


def _at(days_before: float, event_type: str = "page_view", **properties: object) -> Event:
    return Event(AS_OF - timedelta(days=days_before), event_type, properties)  # type: ignore[arg-type]


# ----------------------------------------------------------------- property tests

_event_types = st.sampled_from(["page_view", "click", "conversion", "session_start", "scroll"])
_properties = st.fixed_dictionaries(
    {},
    optional={
        "device": st.sampled_from(["mobile", "desktop", "Tablet", ""]),
        "dwell_ms": st.one_of(st.integers(0, 600_000), st.floats(0, 1e6), st.just("12.5")),
        "scroll_depth": st.floats(0.0, 1.0),
        "referrer_class": st.sampled_from(["search", "social", "direct", "email"]),
    },
)
_offsets = st.floats(min_value=-60 * 86_400, max_value=60 * 86_400, allow_nan=False)


@st.composite
def _events(draw: st.DrawFn) -> list[Event]:
    count = draw(st.integers(0, 25))
    return [
        Event(AS_OF + timedelta(seconds=draw(_offsets)), draw(_event_types), draw(_properties))
        for _ in range(count)
    ]


@settings(max_examples=200, deadline=None)
@given(history=_events(), arrivals=_events(), later_by=st.floats(0.001, 90 * 86_400))
def test_snapshot_never_changes_when_a_later_event_arrives(
    history: list[Event], arrivals: list[Event], later_by: float
) -> None:
    """A snapshot at as_of is the same before and after events later than as_of arrive."""
    before = build_features(history, AS_OF)
    late = [
        Event(AS_OF + timedelta(seconds=later_by) + (e.occurred_at - AS_OF) % timedelta(days=90),
              e.event_type, e.properties)
        for e in arrivals
    ]  # fmt: skip
    assert all(e.occurred_at > AS_OF for e in late)
    assert build_features(history + late, AS_OF) == before
    assert build_features(late + history, AS_OF) == before


@settings(max_examples=100, deadline=None)
@given(history=_events())
def test_features_ignore_input_order_and_only_see_the_past(history: list[Event]) -> None:
    visible = [e for e in history if e.occurred_at <= AS_OF]
    assert build_features(history, AS_OF) == build_features(list(reversed(visible)), AS_OF)


@settings(max_examples=100, deadline=None)
@given(history=_events())
def test_counts_are_consistent(history: list[Event]) -> None:
    features = build_features(history, AS_OF)
    assert 0 <= features.visits_7d <= features.visits_30d <= 30
    assert 0.0 <= features.recency_days <= RECENCY_CAP_DAYS
    assert len(features.values()) == len(FEATURE_NAMES)
    assert features.has_history == float(any(e.occurred_at <= AS_OF for e in history))


# ----------------------------------------------------------------- table tests


def test_no_history_gets_the_documented_default() -> None:
    features = build_features([], AS_OF)
    assert features == default_features(AS_OF)
    assert features.has_history == 0.0
    assert features.recency_days == RECENCY_CAP_DAYS
    assert (features.device, features.referral_source) == (UNKNOWN, UNKNOWN)
    assert (features.hour, features.day_of_week) == (15.0, 2.0)


def test_only_future_events_is_the_same_as_no_history() -> None:
    assert build_features([_at(-1.0, device="mobile")], AS_OF) == default_features(AS_OF)


def test_hand_computed_history() -> None:
    events = [
        _at(40.0, "session_start", device="desktop", referrer_class="search"),  # outside 30d
        _at(20.0, "session_start", device="desktop", referrer_class="social"),
        _at(20.0, "page_view", dwell_ms=1000, scroll_depth=0.5),
        _at(6.5, "session_start", device="mobile"),  # no referrer: keeps "social"
        _at(6.5, "click"),  # same day as above: one visit day
        _at(2.25, "page_view", dwell_ms=3000, scroll_depth=0.9),
        _at(2.25, "click"),
        _at(-1.0, "click", device="tablet", referrer_class="email"),  # future: ignored
    ]
    f = build_features(events, AS_OF)
    assert f.has_history == 1.0
    assert f.recency_days == pytest.approx(2.25)
    assert f.visits_7d == 2.0  # days at 6.5 and 2.25 days back
    assert f.visits_30d == 3.0  # plus 20 days back
    assert f.clicks_30d == 2.0
    assert f.sessions_30d == 2.0  # the 40-day-old one is outside
    assert f.dwell_mean == pytest.approx(2000.0)  # (1000 + 3000) / 2
    assert f.scroll_mean == pytest.approx(0.7)  # (0.5 + 0.9) / 2
    assert f.device == "mobile"
    assert f.referral_source == "social"
    assert (f.hour, f.day_of_week) == (15.0, 2.0)


@pytest.mark.parametrize(
    ("days_before", "expected_7d", "expected_30d"),
    [
        (0.0, 1, 1),  # an event exactly at as_of is visible
        (6.99, 1, 1),
        (7.0, 0, 1),  # windows are (as_of - 7d, as_of]
        (29.99, 0, 1),
        (30.0, 0, 0),
    ],
)
def test_window_boundaries(days_before: float, expected_7d: int, expected_30d: int) -> None:
    f = build_features([_at(days_before)], AS_OF)
    assert (f.visits_7d, f.visits_30d) == (expected_7d, expected_30d)


def test_recency_is_capped() -> None:
    assert build_features([_at(1000.0)], AS_OF).recency_days == RECENCY_CAP_DAYS


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1500, 1500.0), (1500.5, 1500.5), ("2500", 2500.0), ("n/a", 0.0), (True, 0.0)],
)
def test_dwell_accepts_numbers_and_numeric_strings_only(value: object, expected: float) -> None:
    assert build_features([_at(1.0, dwell_ms=value)], AS_OF).dwell_mean == expected


def test_as_of_in_another_zone_is_read_in_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    f = build_features([], datetime(2025, 3, 13, 1, 0, tzinfo=plus_two))  # 23:00 UTC on the 12th
    assert (f.hour, f.day_of_week) == (23.0, 2.0)


def test_naive_datetimes_are_rejected() -> None:
    with pytest.raises(FeatureError, match="as_of"):
        build_features([], datetime(2025, 3, 12))
    with pytest.raises(FeatureError, match="occurred_at"):
        build_features([Event(datetime(2025, 3, 1), "click")], AS_OF)


def test_feature_names_match_the_vector_fields() -> None:
    assert tuple(default_features(AS_OF).as_dict()) == FEATURE_NAMES


@settings(max_examples=200, deadline=None)
@given(history=_events(), moments=st.lists(_offsets, min_size=1, max_size=6))
def test_a_prepared_history_gives_at_every_instant_the_features_of_the_events_seen_by_then(
    history: list[Event], moments: list[float]
) -> None:
    # One history prepared once (as a cached profile is), read at several instants, equals
    # the features of just the events visible at each instant, prepared from scratch.
    prepared = prepare_history(history)
    for offset in moments:
        as_of = AS_OF + timedelta(seconds=offset)
        seen = [e for e in history if e.occurred_at <= as_of]
        assert features_at(prepared, as_of) == build_features(seen, as_of)

"""Point-in-time behavioural features from a subject's anonymized event history.

``build_features(events, as_of)`` sees only events with ``occurred_at <= as_of``:
a snapshot taken at ``as_of`` is identical whether or not later events exist,
so training rows never leak the future they are labelled with.

Feature definitions (the order of :data:`FEATURE_NAMES`):

==================  ==========================================================
has_history         1.0 if any event at or before ``as_of``, else 0.0
recency_days        days since the latest event (any type), capped at
                    :data:`RECENCY_CAP_DAYS`; the cap when there is no history
visits_7d           distinct UTC days with any event in (as_of - 7d, as_of]
visits_30d          distinct UTC days with any event in (as_of - 30d, as_of]
clicks_30d          ``click`` events in the 30-day window
sessions_30d        ``session_start`` events in the 30-day window
dwell_mean          mean ``dwell_ms`` (milliseconds) over 30-day events that
                    carry it; 0.0 when none do
scroll_mean         mean ``scroll_depth`` over 30-day events that carry it;
                    0.0 when none do
hour                hour of ``as_of`` in UTC, 0..23
day_of_week         weekday of ``as_of`` in UTC, Monday = 0
device              ``device`` of the latest event that has one (any age),
                    lower-cased; :data:`UNKNOWN` when none
referral_source     ``referrer_class`` of the latest event that has one (any
                    age), lower-cased; :data:`UNKNOWN` when none
==================  ==========================================================

All datetimes must be timezone-aware; a naive one raises :class:`FeatureError`
rather than being silently read in some local zone.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

__all__ = [
    "CATEGORICAL_FEATURES",
    "FEATURE_NAMES",
    "NUMERIC_FEATURES",
    "RECENCY_CAP_DAYS",
    "UNKNOWN",
    "Event",
    "FeatureError",
    "FeatureVector",
    "History",
    "build_features",
    "default_features",
    "features_at",
    "prepare_history",
]

PropertyValue = str | float | int | bool

RECENCY_CAP_DAYS = 365.0
"""Recency is capped here, and a subject with no history gets this value."""
UNKNOWN = "unknown"
"""Category used for a device or referral source never seen."""

NUMERIC_FEATURES: tuple[str, ...] = (
    "has_history",
    "recency_days",
    "visits_7d",
    "visits_30d",
    "clicks_30d",
    "sessions_30d",
    "dwell_mean",
    "scroll_mean",
    "hour",
    "day_of_week",
)
CATEGORICAL_FEATURES: tuple[str, ...] = ("device", "referral_source")
FEATURE_NAMES: tuple[str, ...] = NUMERIC_FEATURES + CATEGORICAL_FEATURES

_WINDOW_SHORT = timedelta(days=7)
_WINDOW_LONG = timedelta(days=30)


class FeatureError(ValueError):
    """A feature is missing or invalid; the message names it (never its raw value)."""

    def __init__(self, feature: str, problem: str) -> None:
        super().__init__(f"feature {feature!r}: {problem}")
        self.feature = feature


@dataclass(frozen=True)
class Event:
    """One anonymized behavioural event (page_view, click, conversion, session_start, …)."""

    occurred_at: datetime
    event_type: str
    properties: Mapping[str, PropertyValue] = field(default_factory=dict)


@dataclass(frozen=True)
class FeatureVector:
    """The features of one subject at one instant; field order is FEATURE_NAMES."""

    has_history: float
    recency_days: float
    visits_7d: float
    visits_30d: float
    clicks_30d: float
    sessions_30d: float
    dwell_mean: float
    scroll_mean: float
    hour: float
    day_of_week: float
    device: str
    referral_source: str

    def as_dict(self) -> dict[str, float | str]:
        """Name → value, in FEATURE_NAMES order."""
        return dict(zip(FEATURE_NAMES, self.values(), strict=True))

    def values(self) -> tuple[float | str, ...]:
        """Values in FEATURE_NAMES order."""
        return tuple(getattr(self, name) for name in FEATURE_NAMES)


def _require_aware(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise FeatureError(name, "datetime must be timezone-aware")
    return moment.astimezone(UTC)


def _calendar(as_of: datetime) -> tuple[float, float]:
    return float(as_of.hour), float(as_of.weekday())


def default_features(as_of: datetime) -> FeatureVector:
    """The vector of a subject with no history at ``as_of``."""
    moment = _require_aware(as_of, "as_of")
    hour, day_of_week = _calendar(moment)
    return FeatureVector(
        has_history=0.0,
        recency_days=RECENCY_CAP_DAYS,
        visits_7d=0.0,
        visits_30d=0.0,
        clicks_30d=0.0,
        sessions_30d=0.0,
        dwell_mean=0.0,
        scroll_mean=0.0,
        hour=hour,
        day_of_week=day_of_week,
        device=UNKNOWN,
        referral_source=UNKNOWN,
    )


def _number(value: PropertyValue | None) -> float | None:
    """A finite float from a numeric property (numeric strings included), else None."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _category(value: PropertyValue | None) -> str | None:
    if value is None:
        return None
    text = str(value).strip().lower()
    return text or None


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values) if values else 0.0


@dataclass(frozen=True)
class History:
    """A subject's events sorted once (``prepare_history``), ready for features at any instant.

    ``build_features`` sorts and scans the whole history; a cached profile prepares it
    once per load, and ``features_at`` then reads only the 30-day window by bisection.
    """

    times: tuple[datetime, ...]
    """Occurrence times in UTC, in the stable order of ``build_features``."""
    dates: tuple[object, ...]
    event_types: tuple[str, ...]
    dwell: tuple[float | None, ...]
    scroll: tuple[float | None, ...]
    device: tuple[str | None, ...]
    """Latest device at or before each position (None when none yet)."""
    referral: tuple[str | None, ...]


def prepare_history(events: Iterable[Event]) -> History:
    """The events in ``build_features``' order with what every window reads from them."""
    stamped = [(_require_aware(event.occurred_at, "occurred_at"), event) for event in events]
    # Stable order: time, then type, so ties resolve the same whatever the input order.
    stamped.sort(key=lambda pair: (pair[0], pair[1].event_type, sorted(map(str, pair[1].properties.items()))))
    device: str | None = None
    referral: str | None = None
    devices: list[str | None] = []
    referrals: list[str | None] = []
    for _, event in stamped:
        device = _category(event.properties.get("device")) or device
        referral = _category(event.properties.get("referrer_class")) or referral
        devices.append(device)
        referrals.append(referral)
    return History(
        times=tuple(occurred for occurred, _ in stamped),
        dates=tuple(occurred.date() for occurred, _ in stamped),
        event_types=tuple(event.event_type for _, event in stamped),
        dwell=tuple(_number(event.properties.get("dwell_ms")) for _, event in stamped),
        scroll=tuple(_number(event.properties.get("scroll_depth")) for _, event in stamped),
        device=tuple(devices),
        referral=tuple(referrals),
    )


def build_features(events: Iterable[Event], as_of: datetime) -> FeatureVector:
    """Features of the history visible at ``as_of`` (events after it are ignored)."""
    return features_at(prepare_history(events), as_of)


def features_at(history: History, as_of: datetime) -> FeatureVector:
    """Features of a prepared history at ``as_of``: the same vector as ``build_features``."""
    moment = _require_aware(as_of, "as_of")
    visible = bisect_right(history.times, moment)  # times are sorted: the visible events are a prefix
    if visible == 0:
        return default_features(moment)
    short_start, long_start = moment - _WINDOW_SHORT, moment - _WINDOW_LONG
    days_7: set[object] = set()
    days_30: set[object] = set()
    clicks = sessions = 0
    dwell: list[float] = []
    scroll: list[float] = []
    for index in range(bisect_right(history.times, long_start, hi=visible), visible):
        days_30.add(history.dates[index])
        if history.times[index] > short_start:
            days_7.add(history.dates[index])
        event_type = history.event_types[index]
        clicks += event_type == "click"
        sessions += event_type == "session_start"
        if (value := history.dwell[index]) is not None:
            dwell.append(value)
        if (value := history.scroll[index]) is not None:
            scroll.append(value)

    latest = history.times[visible - 1]
    recency = (moment - latest).total_seconds() / 86_400.0
    hour, day_of_week = _calendar(moment)
    return FeatureVector(
        has_history=1.0,
        recency_days=min(recency, RECENCY_CAP_DAYS),
        visits_7d=float(len(days_7)),
        visits_30d=float(len(days_30)),
        clicks_30d=float(clicks),
        sessions_30d=float(sessions),
        dwell_mean=_mean(dwell),
        scroll_mean=_mean(scroll),
        hour=hour,
        day_of_week=day_of_week,
        device=history.device[visible - 1] or UNKNOWN,
        referral_source=history.referral[visible - 1] or UNKNOWN,
    )

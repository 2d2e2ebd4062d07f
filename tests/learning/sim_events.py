"""Simulated behaviour sent through TrackEvents, where conversion depends on features.

Each subject has a latent engagement level. Engaged subjects visit more often,
click and scroll more; the daily conversion probability rises with engagement,
on desktop and from email referrals — so recency, frequency, engagement,
device and referral source all carry signal. Subjects drop out (churn) with a
probability that falls with engagement.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import numpy as np

from tacit.v1 import common_pb2, event_pb2, event_pb2_grpc

DEVICES = ("mobile", "desktop", "tablet")
REFERRALS = ("search", "social", "direct", "email")


@dataclass(frozen=True)
class SimEvent:
    event_id: str
    subject_id: str
    event_type: str
    occurred_at: datetime
    properties: dict[str, str | float]


DWELL_LOG_MEAN = 9.0
DWELL_LOG_SD = 0.5

DwellShift = Callable[[datetime, str], float]
"""(moment, device) -> amount added to the log-mean of dwell_ms: an injected drift."""


def expected_dwell_seconds(engagement: float, shift: float = 0.0) -> float:
    """The true mean of one page view's dwell: E[lognormal(mu, sd)] = exp(mu + sd^2 / 2), in seconds."""
    return math.exp(DWELL_LOG_MEAN + 0.3 * engagement + shift + DWELL_LOG_SD**2 / 2) / 1000.0


def simulate_events(
    n_subjects: int = 300, days: int = 84, seed: int = 0, end: datetime | None = None,
    conversion_intercept: float = -3.2, truth: dict[str, tuple[float, str]] | None = None,
    dwell_shift: DwellShift | None = None,
) -> list[SimEvent]:  # fmt: skip
    """Events of ``n_subjects`` over ``days`` days ending at ``end`` (default: now).

    ``truth``, when given, receives every subject's latent engagement and device;
    ``dwell_shift`` moves the dwell distribution (the random draws stay the same).
    """
    rng = np.random.default_rng(seed)
    end = end or datetime.now(UTC).replace(microsecond=0)
    start = end - timedelta(days=days)
    events: list[SimEvent] = []
    for s in range(n_subjects):
        subject = f"sim-user-{seed}-{s:05d}"
        engagement = float(rng.gamma(2.0, 0.5))
        device = DEVICES[int(rng.choice(3, p=[0.55, 0.35, 0.10]))]
        referral = REFERRALS[int(rng.choice(4, p=[0.4, 0.25, 0.25, 0.10]))]
        if truth is not None:
            truth[subject] = (engagement, device)
        joined = int(rng.integers(0, days // 2))
        visit_probability = min(0.85, 0.12 + 0.25 * engagement)
        dropout = 0.02 / (0.5 + engagement)
        count = 0
        for day in range(joined, days):
            if rng.random() < dropout:
                break
            if rng.random() >= visit_probability:
                continue
            moment = start + timedelta(days=day, seconds=float(rng.uniform(6 * 3600, 23 * 3600)))
            if moment > end:
                break
            day_events: list[tuple[str, datetime, dict[str, str | float]]] = []
            add = day_events.append
            add(("session_start", moment, {"device": device, "referrer_class": referral}))
            views = 1 + int(rng.poisson(engagement))
            for v in range(views):
                at = moment + timedelta(seconds=30 * (v + 1))
                add(("page_view", at, {
                    "device": device,
                    "dwell_ms": float(rng.lognormal(DWELL_LOG_MEAN + 0.3 * engagement, DWELL_LOG_SD))
                    * (math.exp(dwell_shift(at, device)) if dwell_shift else 1.0),
                    "scroll_depth": float(min(1.0, rng.beta(2.0, 2.0) * (0.6 + 0.3 * engagement))),
                }))  # fmt: skip
                if rng.random() < 0.3 + 0.15 * min(engagement, 3.0):
                    add(("click", at + timedelta(seconds=5), {"device": device}))
            logit = (
                conversion_intercept + 0.9 * math.log1p(engagement) + 0.8 * (device == "desktop")
                + 1.0 * (referral == "email") - 0.3 * (referral == "social")
            )  # fmt: skip
            if rng.random() < 1.0 / (1.0 + math.exp(-logit)):
                converted_at = moment + timedelta(seconds=30 * views + 60)
                add(("conversion", converted_at, {"device": device, "value": 20.0}))
            for kind, at, properties in day_events:
                count += 1
                events.append(SimEvent(f"ev-{seed}-{s:05d}-{count:05d}", subject, kind, at, properties))
    events.sort(key=lambda e: e.occurred_at)
    return events


def _features(values: dict[str, str | float]) -> common_pb2.Features:
    features = common_pb2.Features()
    for name, value in values.items():
        if isinstance(value, str):
            features.values[name].string_value = value
        else:
            features.values[name].number_value = float(value)
    return features


def _batches(events: list[SimEvent], size: int) -> Iterator[list[SimEvent]]:
    for start in range(0, len(events), size):
        yield events[start : start + size]


def send_events(channel: grpc.Channel, metadata: tuple[tuple[str, str], ...], events: list[SimEvent]) -> int:
    """Sends the events with TrackEvents in batches; returns how many were accepted."""
    stub = event_pb2_grpc.EventServiceStub(channel)
    accepted = 0
    for batch in _batches(events, 500):
        request = event_pb2.TrackEventsRequest()
        for event in batch:
            message = request.events.add(
                event_id=event.event_id,
                subject_id=event.subject_id,
                event_type=event.event_type,
                properties=_features(event.properties),
            )
            message.occurred_at.FromDatetime(event.occurred_at)
        accepted += stub.TrackEvents(request, metadata=metadata).accepted
    return accepted

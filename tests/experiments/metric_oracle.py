"""The per-subject Python path: rows pulled into Python, one value per subject.

Kept only as the tests' oracle for `tacit.experiments.sql_stats` (which never pulls rows):
`oracle_stats` for any `MetricSpec`, and below it, unchanged, the functions that computed the
built-in conversion, dwell time (with their CUPED covariates) and revenue per click before
issue 15 ("today's Python path").
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tacit.experiments.metric_specs import Aggregation, MetricSpec, Side
from tacit.experiments.repository import MetricInputs, _in_experiment, as_utc, first_exposure_subquery
from tacit.experiments.stats import CovariateStats, MeanStats, RatioStats, SampleStats
from tacit.store.schema import Decision, TrackedEvent


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _aggregate(side: Side, events: list[tuple[str, dict]]) -> float | None:
    matching = [properties for event_type, properties in events if event_type in side.event_types]
    values = [v for v in (_number(p.get(side.value_property)) for p in matching) if v is not None]
    match side.aggregation:
        case Aggregation.ANY:
            return float(len(matching) > 0)
        case Aggregation.SINGLE:
            return float(len(matching) == 1)
        case Aggregation.COUNT:
            return float(len(matching))
        case Aggregation.SUM:
            return sum(values) * side.scale
        case Aggregation.MEAN:
            return sum(values) / len(values) * side.scale if values else None
        case Aggregation.MAX:
            return max(values) * side.scale if values else None
        case Aggregation.QUANTILE:
            if not values:
                return None
            rank = math.ceil(side.quantile * len(values))
            return sorted(values)[rank - 1] * side.scale
    raise AssertionError(side.aggregation)


def _cap(value: float | None, spec: MetricSpec) -> float | None:
    if value is None:
        return None
    if not math.isnan(spec.cap_upper) and value > spec.cap_upper:
        return spec.cap_upper
    if not math.isnan(spec.cap_lower) and value < spec.cap_lower:
        return spec.cap_lower
    return value


def oracle_stats(
    session: Session, inputs: MetricInputs, spec: MetricSpec, lookback: timedelta | None = None
) -> dict[str, MeanStats | CovariateStats]:
    """arm -> statistics, computed subject by subject in Python."""
    first = first_exposure_subquery(inputs)
    exposures: dict[str, dict[str, datetime]] = {arm: {} for arm in inputs.arms}
    for arm, subject, at in session.execute(select(first.c.arm, first.c.subject, first.c.first)).all():
        if arm in exposures:
            exposures[arm][subject] = as_utc(at)
    window = timedelta(seconds=spec.window_seconds) if spec.window_seconds else inputs.conversion_window
    by_subject: dict[str, list[tuple[datetime, str, dict]]] = defaultdict(list)
    sides = (spec.value,) if spec.denominator is None else (spec.value, spec.denominator)
    types = sorted({t for side in sides for t in side.event_types})
    for subject, event_type, at, properties in session.execute(
        select(
            TrackedEvent.subject, TrackedEvent.event_type, TrackedEvent.occurred_at, TrackedEvent.properties
        ).where(TrackedEvent.event_type.in_(types))
    ):
        by_subject[subject].append((as_utc(at), event_type, properties or {}))
    out: dict[str, MeanStats | CovariateStats] = {}
    for arm, subjects in exposures.items():
        ys, ds, xs = [], [], []
        for subject, exposed in subjects.items():
            post = [(t, p) for at, t, p in by_subject[subject] if exposed <= at <= exposed + window]
            y = _cap(_aggregate(spec.value, post), spec)
            if spec.denominator is not None:
                ys.append(y)
                ds.append(_aggregate(spec.denominator, post))
                continue
            if y is None:
                continue
            ys.append(y)
            if lookback is not None:
                pre = [(t, p) for at, t, p in by_subject[subject] if exposed - lookback <= at < exposed]
                x = _cap(_aggregate(spec.value, pre), spec)
                xs.append(0.0 if x is None else x)
        if spec.denominator is not None:
            out[arm] = RatioStats.from_values(ys, ds)
        elif lookback is not None:
            out[arm] = CovariateStats.from_values(ys, xs, proportion=spec.is_proportion)
        elif spec.is_proportion:
            out[arm] = SampleStats.from_proportion(int(sum(ys)), len(ys))
        else:
            out[arm] = SampleStats.from_values(np.asarray(ys, dtype=float))
    return out


# ---------------------------------------------------------------- the pre-issue-15 path


def _exposures(session: Session, inputs: MetricInputs) -> dict[str, dict[str, datetime]]:
    """arm -> subject -> first exposure."""
    rows = session.execute(
        select(Decision.arm, Decision.subject, func.min(Decision.created_at))
        .where(_in_experiment(inputs))
        .group_by(Decision.arm, Decision.subject)
    ).all()
    out: dict[str, dict[str, datetime]] = {arm: {} for arm in inputs.arms}
    for arm, subject, first in rows:
        if arm in out:
            out[arm][subject] = as_utc(first)
    return out


def _windowed_events(
    session: Session, inputs: MetricInputs, event_types: tuple[str, ...]
) -> list[tuple[str, str, dict]]:
    """(arm, subject, properties) of events within the window after first exposure."""
    first = first_exposure_subquery(inputs)
    rows = session.execute(
        select(first.c.arm, first.c.subject, first.c.first, TrackedEvent.occurred_at, TrackedEvent.properties)
        .join(TrackedEvent, TrackedEvent.subject == first.c.subject)
        .where(TrackedEvent.event_type.in_(event_types), TrackedEvent.occurred_at >= first.c.first)
    ).all()
    out = []
    for arm, subject, first_at, occurred_at, properties in rows:
        if as_utc(occurred_at) <= as_utc(first_at) + inputs.conversion_window:
            out.append((arm, subject, properties or {}))
    return out


def _pre_exposure_events(
    session: Session, inputs: MetricInputs, event_types: tuple[str, ...], lookback: timedelta
) -> list[tuple[str, str, dict]]:
    """(arm, subject, properties) of events in [first exposure − lookback, first exposure)."""
    first = first_exposure_subquery(inputs)
    rows = session.execute(
        select(first.c.arm, first.c.subject, first.c.first, TrackedEvent.occurred_at, TrackedEvent.properties)
        .join(TrackedEvent, TrackedEvent.subject == first.c.subject)
        .where(TrackedEvent.event_type.in_(event_types), TrackedEvent.occurred_at < first.c.first)
    ).all()
    out = []
    for arm, subject, first_at, occurred_at, properties in rows:
        if as_utc(occurred_at) >= as_utc(first_at) - lookback:
            out.append((arm, subject, properties or {}))
    return out


Events = list[tuple[str, str, dict]]
PerSubject = dict[str, dict[str, float]]  # arm -> subject -> value


def _converted(exposures: dict[str, dict[str, datetime]], events: Events) -> PerSubject:
    converted = {(arm, subject) for arm, subject, _ in events}
    return {
        arm: {subject: float((arm, subject) in converted) for subject in subjects}
        for arm, subjects in exposures.items()
    }


def _dwell_seconds(exposures: dict[str, dict[str, datetime]], events: Events) -> PerSubject:
    seconds: dict[tuple[str, str], float] = defaultdict(float)
    for arm, subject, properties in events:
        dwell = _number(properties.get("dwell_ms"))
        if dwell is not None and dwell >= 0:
            seconds[(arm, subject)] += dwell / 1000.0
    return {
        arm: {subject: seconds.get((arm, subject), 0.0) for subject in subjects}
        for arm, subjects in exposures.items()
    }


_CONVERSION_EVENTS = ("conversion",)
_DWELL_EVENTS = ("page_view", "custom")


def conversion(session: Session, inputs: MetricInputs) -> dict[str, MeanStats]:
    values = _converted(_exposures(session, inputs), _windowed_events(session, inputs, _CONVERSION_EVENTS))
    return {arm: SampleStats.from_proportion(int(sum(per.values())), len(per)) for arm, per in values.items()}


def dwell_time(session: Session, inputs: MetricInputs) -> dict[str, MeanStats]:
    values = _dwell_seconds(_exposures(session, inputs), _windowed_events(session, inputs, _DWELL_EVENTS))
    return {arm: SampleStats.from_values(list(per.values())) for arm, per in values.items()}


def _paired(post: PerSubject, pre: PerSubject, proportion: bool) -> dict[str, CovariateStats]:
    out = {}
    for arm, per in post.items():
        subjects = list(per)
        out[arm] = CovariateStats.from_values(
            [per[s] for s in subjects], [pre[arm][s] for s in subjects], proportion=proportion
        )
    return out


def conversion_with_covariate(
    session: Session, inputs: MetricInputs, lookback: timedelta
) -> dict[str, CovariateStats]:
    """Conversion after exposure, paired with conversion in the lookback before it."""
    exposures = _exposures(session, inputs)
    post = _converted(exposures, _windowed_events(session, inputs, _CONVERSION_EVENTS))
    pre = _converted(exposures, _pre_exposure_events(session, inputs, _CONVERSION_EVENTS, lookback))
    return _paired(post, pre, proportion=True)


def dwell_time_with_covariate(
    session: Session, inputs: MetricInputs, lookback: timedelta
) -> dict[str, CovariateStats]:
    """Dwell seconds after exposure, paired with dwell seconds in the lookback before it."""
    exposures = _exposures(session, inputs)
    post = _dwell_seconds(exposures, _windowed_events(session, inputs, _DWELL_EVENTS))
    pre = _dwell_seconds(exposures, _pre_exposure_events(session, inputs, _DWELL_EVENTS, lookback))
    return _paired(post, pre, proportion=False)


def revenue_per_click(session: Session, inputs: MetricInputs) -> dict[str, MeanStats]:
    exposures = _exposures(session, inputs)
    clicks: dict[tuple[str, str], float] = defaultdict(float)
    for arm, subject, count in session.execute(
        select(Decision.arm, Decision.subject, func.count())
        .where(_in_experiment(inputs), Decision.reward > 0)
        .group_by(Decision.arm, Decision.subject)
    ).all():
        clicks[(arm, subject)] = float(count)
    revenue: dict[tuple[str, str], float] = defaultdict(float)
    for arm, subject, properties in _windowed_events(session, inputs, ("conversion",)):
        value = _number(properties.get("value"))
        if value is not None:
            revenue[(arm, subject)] += value
    out: dict[str, MeanStats] = {}
    for arm, subjects in exposures.items():
        keys = [(arm, subject) for subject in subjects]
        out[arm] = RatioStats.from_values(
            [revenue.get(key, 0.0) for key in keys], [clicks.get(key, 0.0) for key in keys]
        )
    return out

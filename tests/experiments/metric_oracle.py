"""The per-subject Python path for a `MetricSpec`: rows pulled into Python, one value per subject.

Kept only as the tests' oracle for `tacit.experiments.sql_stats` (which never pulls rows).
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from tacit.experiments.metric_specs import Aggregation, MetricSpec, Side
from tacit.experiments.repository import MetricInputs, as_utc, first_exposure_subquery
from tacit.experiments.stats import CovariateStats, MeanStats, RatioStats, SampleStats
from tacit.store.schema import TrackedEvent


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

"""Sufficient statistics per arm, computed from what the server stored.

The decision rows are the exposure log: a subject is exposed to an arm from its first
decision tagged with the experiment. Metrics, per arm (`MetricInputs` says how long):

* ``click_through`` — per-decision reward of the experiment's decisions (a decision whose
  reward window closed without a reward counts the slot's default reward; one still
  waiting is left out); 0/1 rewards are a proportion (variance p(1 − p), as gbstats),
  other reward values a mean;
* ``conversion`` — per exposed subject, 1 when a ``conversion`` event occurred within
  the conversion window after its first exposure;
* ``dwell_time`` — per exposed subject, the seconds of ``dwell_ms`` its events reported
  within the window (0 when none);
* ``revenue_per_click`` — ratio metric: per subject, conversion ``value`` within the
  window over its clicked decisions (reward > 0), combined by the delta method.

CUPED covariates (``conversion`` and ``dwell_time``, the per-subject metrics): the same
metric computed over ``[first exposure − lookback, first exposure)`` from the subject's
stored (anonymized, pseudonymous) event history, paired with the post-exposure value in
`CovariateStats`. A subject with no events in the window has covariate 0.

Only pseudonyms are read here; nothing is logged.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import Session

from tacit.experiments.stats import CovariateStats, MeanStats, ProportionStats, RatioStats, SampleStats
from tacit.store.schema import Decision, TrackedEvent

__all__ = ["COVARIATE_COMPUTERS", "METRIC_COMPUTERS", "MetricInputs", "arm_counts", "as_utc", "metric_stats"]


def as_utc(moment: datetime) -> datetime:
    """SQLite returns naive datetimes; every stored time is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class MetricInputs:
    """Which decisions count and how metrics are windowed."""

    experiment_id: str
    arms: tuple[str, ...]
    until: datetime  # decisions after this moment (the experiment ended) do not count
    now: datetime
    default_reward: float
    conversion_window: timedelta


def _in_experiment(inputs: MetricInputs):  # type: ignore[no-untyped-def]
    return and_(Decision.experiment_id == inputs.experiment_id, Decision.created_at <= inputs.until)


def arm_counts(session: Session, inputs: MetricInputs) -> dict[str, int]:
    """Distinct exposed subjects per arm (0 for an arm nobody reached yet)."""
    rows = session.execute(
        select(Decision.arm, func.count(func.distinct(Decision.subject)))
        .where(_in_experiment(inputs))
        .group_by(Decision.arm)
    ).all()
    counts = dict.fromkeys(inputs.arms, 0)
    for arm, count in rows:
        if arm in counts:
            counts[arm] = int(count)
    return counts


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


def first_exposure_subquery(inputs: MetricInputs):  # type: ignore[no-untyped-def]
    return (
        select(
            Decision.arm.label("arm"),
            Decision.subject.label("subject"),
            func.min(Decision.created_at).label("first"),
        )
        .where(_in_experiment(inputs))
        .group_by(Decision.arm, Decision.subject)
        .subquery()
    )


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


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def click_through(session: Session, inputs: MetricInputs) -> dict[str, MeanStats]:
    """Mean reward per decision; `ProportionStats` (variance p(1 − p)) when every reward of
    the arm is 0 or 1, the unbiased `SampleStats` when rewards take other values."""
    reward = func.coalesce(Decision.reward, inputs.default_reward)
    not_binary = func.sum(case((reward.in_([0.0, 1.0]), 0), else_=1))
    rows = session.execute(
        select(Decision.arm, func.count(), func.sum(reward), func.sum(reward * reward), not_binary)
        .where(
            _in_experiment(inputs),
            or_(Decision.reward.is_not(None), Decision.reward_deadline <= inputs.now),
        )
        .group_by(Decision.arm)
    ).all()
    out: dict[str, MeanStats] = {arm: ProportionStats(0, 0.0, 0.0) for arm in inputs.arms}
    for arm, n, total, squares, others in rows:
        if arm not in out:
            continue
        if not others:
            out[arm] = SampleStats.from_proportion(round(float(total or 0.0)), int(n))
        else:
            out[arm] = SampleStats(int(n), float(total or 0.0), float(squares or 0.0))
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


MetricComputer = Callable[[Session, MetricInputs], dict[str, MeanStats]]

# Registered by name, like the metric definitions in `metrics.BUILTIN_METRICS`.
METRIC_COMPUTERS: Mapping[str, MetricComputer] = {
    "click_through": click_through,
    "conversion": conversion,
    "dwell_time": dwell_time,
    "revenue_per_click": revenue_per_click,
}


CovariateComputer = Callable[[Session, MetricInputs, timedelta], dict[str, CovariateStats]]

# Metrics that have a pre-exposure covariate (`MetricDefinition.supports_covariate`).
COVARIATE_COMPUTERS: Mapping[str, CovariateComputer] = {
    "conversion": conversion_with_covariate,
    "dwell_time": dwell_time_with_covariate,
}


def metric_stats(
    session: Session,
    inputs: MetricInputs,
    metrics: tuple[str, ...],
    covariates: Mapping[str, timedelta] | None = None,
) -> dict[str, dict[str, MeanStats | CovariateStats]]:
    """metric -> arm -> sufficient statistics, for the named metrics only; a metric named
    in `covariates` (metric -> lookback) gets `CovariateStats` for CUPED."""
    covariates = covariates or {}
    out: dict[str, dict[str, MeanStats | CovariateStats]] = {}
    for name in dict.fromkeys(metrics):
        if name in covariates:
            out[name] = dict(COVARIATE_COMPUTERS[name](session, inputs, covariates[name]))
        else:
            out[name] = dict(METRIC_COMPUTERS[name](session, inputs))
    return out

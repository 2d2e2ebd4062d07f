"""The exposure log and the decision-log metric, as SQL over what the server stored.

The decision rows are the exposure log: a subject is exposed to an arm from its first
decision tagged with the experiment (`first_exposure_subquery`, `arm_counts`).
``click_through`` is the per-decision reward of the experiment's decisions (a decision whose
reward window closed without a reward counts the slot's default reward; one still waiting is
left out); 0/1 rewards are a proportion (variance p(1 − p), as gbstats), other reward values
a mean. Event metrics (conversion, dwell time, any definition) are `metric_specs.MetricSpec`s
computed by `sql_stats`; the per-subject Python path that computed them before lives on only
as the tests' oracle (`tests/experiments/metric_oracle.py`).

Only pseudonyms are read here; nothing is logged.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import Session

from tacit.experiments.stats import MeanStats, ProportionStats, SampleStats
from tacit.store.schema import Decision

__all__ = ["MetricInputs", "arm_counts", "as_utc", "click_through", "first_exposure_subquery"]


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

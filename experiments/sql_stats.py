"""Sufficient statistics of a `MetricSpec`, per arm, from ONE GROUP BY query in the database.

The query has three levels, all inside the database: the exposed subjects' events in the
metric's window (left-joined, so a subject without events still counts), one value per
subject (`GROUP BY arm, subject`), and per arm n, Σy, Σy² (ratios add Σd, Σd², Σy·d; CUPED
adds the pre-exposure covariate's Σx, Σx², Σy·x). Only one row per arm reaches Python, so
memory is flat in the number of subjects. SQLite and PostgreSQL differ only in the two
small expressions below (seconds between two times, a numeric JSON property).

The per-subject Python path (`tests/experiments/metric_oracle.py`) computes the same
numbers from rows; it is kept only as the tests' oracle.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import Float, and_, case, cast, func, literal, select, text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import Subquery

from tacit.experiments.metric_specs import Aggregation, MetricSpec, Side
from tacit.experiments.repository import MetricInputs, click_through, first_exposure_subquery
from tacit.experiments.stats import CovariateStats, MeanStats, ProportionStats, RatioStats, SampleStats
from tacit.store.db import extend_statement_deadline
from tacit.store.schema import Decision, TrackedEvent

__all__ = [
    "DECISION_COMPUTERS",
    "report_stats",
    "revenue_per_click",
    "spec_stats",
    "subject_values",
    "tune_session",
]


class _SecondsAfter(ColumnElement[float]):
    """Seconds from `start` to `moment` (negative before it)."""

    inherit_cache = True
    type = Float()

    def __init__(self, moment: ColumnElement[Any], start: ColumnElement[Any]) -> None:
        self.moment = moment
        self.start = start


@compiles(_SecondsAfter, "postgresql")
def _seconds_after_postgresql(element: _SecondsAfter, compiler: SQLCompiler, **kw: Any) -> str:
    moment = compiler.process(element.moment, **kw)
    start = compiler.process(element.start, **kw)
    return f"EXTRACT(EPOCH FROM ({moment} - {start}))"


@compiles(_SecondsAfter, "sqlite")
def _seconds_after_sqlite(element: _SecondsAfter, compiler: SQLCompiler, **kw: Any) -> str:
    moment = compiler.process(element.moment, **kw)
    start = compiler.process(element.start, **kw)
    return f"((julianday({moment}) - julianday({start})) * 86400.0)"


class _JsonNumber(ColumnElement[float]):
    """A JSON property's value when it is a number (not a boolean, string or object), else NULL."""

    inherit_cache = False  # the property name is part of the SQL text
    type = Float()

    def __init__(self, column: ColumnElement[Any], key: str) -> None:
        self.column = column
        self.key = key


@compiles(_JsonNumber, "postgresql")
def _json_number_postgresql(element: _JsonNumber, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(element.column, **kw)
    key = compiler.process(literal(element.key), **kw)
    return (
        f"(CASE WHEN json_typeof({column} -> {key}) = 'number' "
        f"THEN CAST(({column} ->> {key}) AS DOUBLE PRECISION) END)"
    )


@compiles(_JsonNumber, "sqlite")
def _json_number_sqlite(element: _JsonNumber, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(element.column, **kw)
    path = compiler.process(literal(f"$.{element.key}"), **kw)
    return (
        f"(CASE WHEN json_type({column}, {path}) IN ('integer', 'real') "
        f"THEN json_extract({column}, {path}) END)"
    )


def _window_seconds(spec: MetricSpec, inputs: MetricInputs) -> float:
    return spec.window_seconds or inputs.conversion_window.total_seconds()


def tune_session(
    session: Session, work_mem_mb: int, parallel_workers: int = -1, statement_timeout_seconds: float = 0.0
) -> None:
    """PostgreSQL, for this transaction only (SET LOCAL): lets the report's GROUP BYs and hash joins
    use `work_mem_mb` each instead of spilling to disk (one row per subject at the middle level),
    up to `parallel_workers` parallel workers per scan (-1: the server's setting), and its own
    statement timeout (0: the connection's, `storage.statement_timeout_seconds`). SQLite has no such
    knobs."""
    if session.get_bind().dialect.name != "postgresql":
        return
    if work_mem_mb > 0:
        session.execute(text(f"SET LOCAL work_mem = '{int(work_mem_mb)}MB'"))
    if parallel_workers >= 0:
        session.execute(text(f"SET LOCAL max_parallel_workers_per_gather = {int(parallel_workers)}"))
    if statement_timeout_seconds > 0:
        milliseconds = max(1, round(statement_timeout_seconds * 1000))
        session.execute(text(f"SET LOCAL statement_timeout = {milliseconds}"))
        extend_statement_deadline(session, statement_timeout_seconds)  # the client-side watchdog too


def spec_stats(
    session: Session, inputs: MetricInputs, spec: MetricSpec, lookback: timedelta | None = None
) -> dict[str, MeanStats | CovariateStats]:
    """arm -> sufficient statistics of `spec` (with its CUPED covariate over `lookback`)."""
    return report_stats(session, inputs, [(spec, lookback)])[0]


def report_stats(
    session: Session, inputs: MetricInputs, metrics: Sequence[tuple[MetricSpec, timedelta | None]]
) -> list[dict[str, MeanStats | CovariateStats]]:
    """For each (spec, CUPED lookback or None): arm -> its sufficient statistics, all from ONE
    statement: one scan of exposures ⋈ events (the union of the metrics' event types and windows),
    one GROUP BY arm, subject with each metric's conditional aggregates, then per-arm sums."""
    if not metrics:
        return []
    per_subject = _subject_values(inputs, [(str(i), spec, lb) for i, (spec, lb) in enumerate(metrics)])
    shapes = [(str(i), spec.denominator is not None, lb is not None) for i, (spec, lb) in enumerate(metrics)]
    found = _arm_sums(session, inputs, per_subject, shapes)
    return [
        {arm: _stats(spec, found.get(arm, {}).get(str(i)), lb is not None) for arm in inputs.arms}
        for i, (spec, lb) in enumerate(metrics)
    ]


def subject_values(inputs: MetricInputs, spec: MetricSpec, lookback: timedelta | None = None) -> Subquery:
    """The per-subject query (arm, subject, y [, d] [, x]) of `spec`; nothing is executed."""
    return _subject_values(inputs, [("", spec, lookback)])


def _subject_values(
    inputs: MetricInputs, metrics: Sequence[tuple[str, MetricSpec, timedelta | None]]
) -> Subquery:
    """(arm, subject, then y<tag> [, d<tag>] [, x<tag>] per metric): one join, one GROUP BY."""
    first = first_exposure_subquery(inputs)
    events = TrackedEvent.__table__.alias("ev")
    seconds = _SecondsAfter(events.c.occurred_at, first.c.first)
    periods: list[tuple[str, MetricSpec, Side, ColumnElement[bool]]] = []
    latest = 0.0
    earliest: float | None = None  # seconds before exposure the covariates reach back (None: none)
    for tag, spec, lookback in metrics:
        window = _window_seconds(spec, inputs)
        latest = max(latest, window)
        post = and_(events.c.occurred_at >= first.c.first, seconds <= window)
        periods.append((f"y{tag}", spec, spec.value, post))
        if spec.denominator is not None:
            periods.append((f"d{tag}", spec, spec.denominator, post))
        if lookback is not None:
            before = lookback.total_seconds()
            earliest = max(earliest or 0.0, before)
            pre = and_(events.c.occurred_at < first.c.first, seconds >= -before)
            periods.append((f"x{tag}", spec, spec.value, pre))
    if earliest is None:
        joined_time = and_(events.c.occurred_at >= first.c.first, seconds <= latest)
    else:
        joined_time = and_(seconds >= -earliest, seconds <= latest)
    event_types = sorted({t for _, _, side, _ in periods for t in side.event_types})

    # Level 1: exposed subjects × their events in the window(s): a match flag and value per column.
    columns: list[ColumnElement[Any]] = [first.c.arm.label("arm"), first.c.subject.label("subject")]
    for key, _, side, period in periods:
        matched = and_(events.c.event_type.in_(side.event_types), period)
        columns.append(case((matched, 1), else_=0).label(f"m_{key}"))
        if side.value_property:
            value = case((matched, _JsonNumber(events.c.properties, side.value_property)))
            columns.append(value.label(f"v_{key}"))
            if side.aggregation is Aggregation.QUANTILE:
                columns.append(
                    func.row_number()
                    .over(partition_by=(first.c.arm, first.c.subject, value.is_(None)), order_by=value)
                    .label(f"r_{key}")
                )
                columns.append(
                    func.count(value).over(partition_by=(first.c.arm, first.c.subject)).label(f"c_{key}")
                )
    rows = (
        select(*columns)
        .select_from(first)
        .outerjoin(
            events,
            and_(events.c.subject == first.c.subject, events.c.event_type.in_(event_types), joined_time),
        )
        .subquery("rows")
    )

    # Level 2: one value per subject and metric.
    per_subject_columns = [rows.c.arm, rows.c.subject]
    for key, spec, side, _ in periods:
        subject_value = _per_subject(rows.c, key, side)
        if key[0] != "d":
            subject_value = _capped(subject_value, spec)
        if key[0] == "x":
            subject_value = func.coalesce(subject_value, 0.0)
        per_subject_columns.append(subject_value.label(key))
    return select(*per_subject_columns).group_by(rows.c.arm, rows.c.subject).subquery("subjects")


def _arm_sums(
    session: Session, inputs: MetricInputs, per_subject: Subquery, shapes: Sequence[tuple[str, bool, bool]]
) -> dict[str, dict[str, tuple[float, ...]]]:
    """Level 3, per arm and metric (tag, ratio?, covariate?): n, Σy, Σy² [, Σd, Σd², Σy·d]
    [, Σx, Σx², Σy·x] — the one query executed. arm -> tag -> sums."""
    sums: list[ColumnElement[Any]] = [per_subject.c.arm]
    widths = []
    for tag, ratio, covariate in shapes:
        y = per_subject.c[f"y{tag}"]
        own: list[ColumnElement[Any]] = [func.count(y), func.sum(y), func.sum(y * y)]
        if ratio:
            d = per_subject.c[f"d{tag}"]
            own += [func.sum(d), func.sum(d * d), func.sum(y * d)]
        if covariate:
            x = per_subject.c[f"x{tag}"]
            own += [
                func.sum(case((y.is_not(None), x))),
                func.sum(case((y.is_not(None), x * x))),
                func.sum(y * x),
            ]
        sums += own
        widths.append((tag, len(own)))
    result = session.execute(
        select(*sums).where(per_subject.c.arm.in_(inputs.arms)).group_by(per_subject.c.arm)
    ).all()
    out: dict[str, dict[str, tuple[float, ...]]] = {}
    for row in result:
        values = [float(v or 0.0) for v in row[1:]]
        at = 0
        out[row[0]] = {}
        for tag, width in widths:
            out[row[0]][tag] = tuple(values[at : at + width])
            at += width
    return out


REVENUE = MetricSpec("revenue_per_click", Side(("conversion",), Aggregation.SUM, "value"))


def revenue_per_click(session: Session, inputs: MetricInputs) -> dict[str, MeanStats]:
    """Ratio: per subject, conversion `value` in the window over its clicked decisions (reward > 0)."""
    revenue = subject_values(inputs, REVENUE)
    clicks = (
        select(Decision.arm, Decision.subject, func.count().label("clicks"))
        .where(
            Decision.experiment_id == inputs.experiment_id,
            Decision.created_at <= inputs.until,
            Decision.reward > 0,
        )
        .group_by(Decision.arm, Decision.subject)
        .subquery("clicks")
    )
    per_subject = (
        select(revenue.c.arm, revenue.c.y, cast(func.coalesce(clicks.c.clicks, 0), Float).label("d"))
        .select_from(revenue)
        .outerjoin(clicks, and_(clicks.c.arm == revenue.c.arm, clicks.c.subject == revenue.c.subject))
        .subquery("paired")
    )
    found = _arm_sums(session, inputs, per_subject, [("", True, False)])
    ratio = MetricSpec("revenue_per_click", REVENUE.value, denominator=Side(("click",), Aggregation.COUNT))
    return {arm: _stats(ratio, found.get(arm, {}).get(""), False) for arm in inputs.arms}  # type: ignore[misc]


DecisionMetric = Callable[[Session, MetricInputs], dict[str, MeanStats]]

# The decision-log metrics (`metric_specs.DECISION_METRICS`), each one GROUP BY query too.
DECISION_COMPUTERS: Mapping[str, DecisionMetric] = {
    "click_through": click_through,
    "revenue_per_click": revenue_per_click,
}


def _per_subject(rows: Any, key: str, side: Side) -> ColumnElement[Any]:
    count = func.sum(rows[f"m_{key}"])
    match side.aggregation:
        case Aggregation.ANY:
            return case((count > 0, 1.0), else_=0.0)
        case Aggregation.SINGLE:
            return case((count == 1, 1.0), else_=0.0)
        case Aggregation.COUNT:
            return cast(count, Float)
        case Aggregation.SUM:
            return func.coalesce(func.sum(rows[f"v_{key}"]), 0.0) * side.scale
        case Aggregation.MEAN:
            return func.avg(rows[f"v_{key}"]) * side.scale
        case Aggregation.MAX:
            return func.max(rows[f"v_{key}"]) * side.scale
        case Aggregation.QUANTILE:
            value, rank, total = rows[f"v_{key}"], rows[f"r_{key}"], rows[f"c_{key}"]
            target = total * side.quantile  # nearest rank: r − 1 < q·n ≤ r
            return (
                func.max(case((and_(value.is_not(None), rank - 1 < target, target <= rank), value)))
                * side.scale
            )
    raise AssertionError(side.aggregation)


def _capped(value: ColumnElement[Any], spec: MetricSpec) -> ColumnElement[Any]:
    """Winsorizes a subject's value into [cap_lower, cap_upper] (NULL stays NULL)."""
    whens = []
    if spec.cap_upper == spec.cap_upper:  # not NaN
        whens.append((value > spec.cap_upper, literal(spec.cap_upper)))
    if spec.cap_lower == spec.cap_lower:
        whens.append((value < spec.cap_lower, literal(spec.cap_lower)))
    return case(*whens, else_=value) if whens else value


def _stats(
    spec: MetricSpec, sums: tuple[float, ...] | None, with_covariate: bool
) -> MeanStats | CovariateStats:
    width = 3 + (3 if spec.denominator is not None else 0) + (3 if with_covariate else 0)
    n_float, *rest = sums or (0.0,) * width
    n = int(n_float)
    total, squares = rest[0], rest[1]
    if spec.denominator is not None:
        sum_den, sum_den_sq, cross = rest[2:5]
        return RatioStats(n, total, sum_den, squares, sum_den_sq, cross)
    post: SampleStats = (
        SampleStats.from_proportion(round(total), n) if spec.is_proportion else SampleStats(n, total, squares)
    )
    if not with_covariate:
        return post
    pre_sum, pre_squares, products = rest[2:5]
    pre: SampleStats = (
        ProportionStats(n, float(round(pre_sum)), float(round(pre_sum)))
        if spec.is_proportion
        else SampleStats(n, pre_sum, pre_squares)
    )
    return CovariateStats(post, pre, products)

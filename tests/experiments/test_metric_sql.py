"""Sufficient statistics from one SQL statement (per metric, and for all event metrics of a report
together) equal the per-subject Python oracle, for every aggregation kind, capping, ratios and
CUPED covariates, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import event, insert, text

from tacit.experiments.metric_specs import BUILTIN_SPECS, Aggregation, MetricSpec, Side
from tacit.experiments.repository import MetricInputs
from tacit.experiments.sql_stats import report_stats, revenue_per_click, spec_stats, tune_session
from tacit.experiments.stats import CovariateStats
from tacit.store.db import Database, StorageUnavailable, Timeouts
from tacit.store.schema import Decision, TrackedEvent
from tests.experiments import metric_oracle
from tests.experiments.metric_oracle import oracle_stats

START = datetime(2026, 5, 1, tzinfo=UTC)
ARMS = ("control", "treatment")
TYPES = ("page_view", "click", "conversion", "session_start", "custom")


def decision_row(event_id: str, subject: str, arm: str, experiment_id: str, at: datetime) -> dict:
    return dict(
        event_id=event_id,
        slot="home",
        subject=subject,
        arm=arm,
        experiment_id=experiment_id,
        policy="uniform",
        model_version="uniform",
        context={},
        candidate_ids=["a"],
        probabilities=[1.0],
        chosen_index=0,
        created_at=at,
        reward_deadline=at + timedelta(seconds=1),
        deferred=False,
        reward=None,
        reward_count=0,
        learn_state=0,
    )


def _property(rng: np.random.Generator) -> object:
    draw = rng.random()
    if draw < 0.55:
        return round(float(rng.gamma(2.0, 30.0)), 3)
    if draw < 0.75:
        return int(rng.integers(0, 500))
    if draw < 0.82:
        return "12"  # a string is not a number
    if draw < 0.88:
        return True  # nor is a boolean
    return None  # missing


def generate(db: Database, subjects: int = 240, seed: int = 7) -> None:
    """Exposed subjects (1–3 decisions each, some in another experiment) and events around their
    first exposure, at whole seconds (the windows end at half seconds: no ties at a boundary)."""
    rng = np.random.default_rng(seed)
    decisions, events = [], []
    for i in range(subjects + 30):
        subject = f"s{i}"
        exposed = START + timedelta(seconds=int(rng.integers(0, 86_400)))
        if i < subjects:
            arm = ARMS[i % 2]
            for k in range(int(rng.integers(1, 4))):
                at = exposed + timedelta(seconds=int(rng.integers(0, 600)) * (k > 0))
                row = decision_row(f"d{i}-{k}", subject, arm, "exp", at)
                draw = rng.random()
                row["reward"] = 1.0 if draw < 0.35 else 0.0 if draw < 0.8 else None
                decisions.append(row)
        else:
            decisions.append(decision_row(f"o{i}", subject, "control", "other", exposed))
        for k in range(int(rng.poisson(16 if i % 2 else 12))):
            at = exposed + timedelta(seconds=int(rng.integers(-3_600, 5_400)))
            properties = {}
            for name in ("value", "dwell_ms"):
                drawn = _property(rng)
                if drawn is not None:
                    properties[name] = drawn
            events.append(
                dict(
                    event_id=f"e{i}-{k}",
                    subject=subject,
                    event_type=TYPES[int(rng.integers(0, 5))],
                    occurred_at=at,
                    received_at=at,
                    properties=properties,
                )
            )
    with db.transaction() as session:
        session.execute(insert(Decision), decisions)
        session.execute(insert(TrackedEvent), events)


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database.open(database_url)
    generate(database)
    yield database
    database.dispose()


def inputs() -> MetricInputs:
    return MetricInputs(
        "exp", ARMS, START + timedelta(days=3), START + timedelta(days=3), 0.0, timedelta(hours=1.5)
    )


def _spec(value: Side, **changes: object) -> MetricSpec:
    return MetricSpec("m", value, window_seconds=3600.5, **changes)  # type: ignore[arg-type]


CASES = {
    "any": _spec(Side(("conversion",), Aggregation.ANY)),
    "single": _spec(Side(("page_view",), Aggregation.SINGLE)),
    "count": _spec(Side(("page_view", "click"), Aggregation.COUNT)),
    "sum": _spec(Side(("conversion", "custom"), Aggregation.SUM, "value")),
    "mean": _spec(Side(("page_view",), Aggregation.MEAN, "dwell_ms", scale=0.001)),
    "max": _spec(Side(("custom", "page_view"), Aggregation.MAX, "value")),
    "quantile": _spec(Side(("page_view", "custom"), Aggregation.QUANTILE, "value", quantile=0.5)),
    "quantile_p90": _spec(Side(("click", "custom"), Aggregation.QUANTILE, "dwell_ms", quantile=0.9)),
    "ratio": _spec(
        Side(("conversion",), Aggregation.SUM, "value"), denominator=Side(("click",), Aggregation.COUNT)
    ),
    "capped_sum": _spec(Side(("custom",), Aggregation.SUM, "value"), cap_lower=5.0, cap_upper=150.0),
    "server_window": MetricSpec("m", Side(("click",), Aggregation.COUNT)),  # 0: the 1.5 h of the inputs
    "bounce_rate": BUILTIN_SPECS["bounce_rate"],
}


def _same(sql: object, oracle: object) -> None:
    assert type(sql) is type(oracle)
    for item in dataclasses.fields(sql):  # type: ignore[arg-type]
        got, want = getattr(sql, item.name), getattr(oracle, item.name)
        if dataclasses.is_dataclass(got):
            _same(got, want)
        elif isinstance(want, int):
            assert got == want, item.name
        else:
            assert got == pytest.approx(want, rel=1e-9, abs=1e-9), item.name


@pytest.mark.parametrize("kind", list(CASES))
def test_sql_statistics_equal_the_python_oracle(db: Database, kind: str) -> None:
    spec = CASES[kind]
    spec.validate()
    statements, count = _statement_counter()
    engine = db.engine
    with db.transaction() as session:
        event.listen(engine, "before_cursor_execute", count)
        try:
            sql = spec_stats(session, inputs(), spec)
        finally:
            event.remove(engine, "before_cursor_execute", count)
        oracle = oracle_stats(session, inputs(), spec)
    assert len([s for s in statements if "GROUP BY" in s.upper()]) == 1  # one statement
    for arm in ARMS:
        assert oracle[arm].n > 40  # the data exercises the metric
        _same(sql[arm], oracle[arm])
    # The two arms differ (the generated treatment has more events): not a constant.
    assert sql["control"].n != sql["treatment"].n or sql["control"].mean != sql["treatment"].mean


@pytest.mark.parametrize("kind", ["any", "sum", "quantile"])
def test_sql_covariates_equal_the_python_oracle(db: Database, kind: str) -> None:
    spec = CASES[kind]
    lookback = timedelta(seconds=1800.5)
    with db.transaction() as session:
        sql = spec_stats(session, inputs(), spec, lookback)
        oracle = oracle_stats(session, inputs(), spec, lookback)
    for arm in ARMS:
        assert isinstance(sql[arm], CovariateStats)
        assert oracle[arm].pre.sum > 0  # pre-exposure events exist
        _same(sql[arm], oracle[arm])


def _statement_counter() -> tuple[list[str], Callable[..., None]]:
    """(the statements executed, the listener that records them)."""
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        statements.append(statement)

    return statements, count


def test_all_event_metrics_of_a_report_come_from_one_statement(db: Database) -> None:
    """Every aggregation kind, with and without a covariate, different windows: ONE statement
    (one scan of exposures ⋈ events) gives each metric exactly the oracle's numbers."""
    lookback = timedelta(seconds=1800.5)
    metrics = [(spec, None) for spec in CASES.values()]
    metrics += [(CASES["sum"], lookback), (CASES["quantile"], lookback)]
    statements, count = _statement_counter()
    with db.transaction() as session:
        event.listen(db.engine, "before_cursor_execute", count)
        try:
            together = report_stats(session, inputs(), metrics)
        finally:
            event.remove(db.engine, "before_cursor_execute", count)
        oracles = [oracle_stats(session, inputs(), spec, lb) for spec, lb in metrics]
    assert len(statements) == 1
    assert len(together) == len(metrics)
    for (spec, _), sql, oracle in zip(metrics, together, oracles, strict=True):
        for arm in ARMS:
            assert oracle[arm].n > 40, spec.name
            _same(sql[arm], oracle[arm])


def test_an_arm_nobody_reached_has_empty_statistics(db: Database) -> None:
    nobody = MetricInputs(
        "exp", ("control", "ghost"), START + timedelta(days=3), START, 0.0, timedelta(hours=1)
    )
    with db.transaction() as session:
        stats = spec_stats(session, nobody, CASES["sum"])
        ratio = spec_stats(session, nobody, CASES["ratio"])
    assert stats["ghost"].n == 0 and stats["control"].n > 0
    assert ratio["ghost"].n == 0 and math.isnan(ratio["ghost"].mean)


def test_revenue_per_click_in_sql_equals_the_python_path(db: Database) -> None:
    """The decision-log ratio metric: conversion value in the window over clicked decisions."""
    with db.transaction() as session:
        sql = revenue_per_click(session, inputs())
        python = metric_oracle.revenue_per_click(session, inputs())
    for arm in ARMS:
        assert python[arm].sum_den > 20 and python[arm].sum_num > 0
        _same(sql[arm], python[arm])


def test_report_queries_get_their_work_mem_on_postgresql(db: Database) -> None:
    with db.transaction() as session:
        before = (
            session.execute(text("SHOW work_mem")).scalar() if db.engine.dialect.name == "postgresql" else ""
        )
        tune_session(session, 48)
        if db.engine.dialect.name == "postgresql":
            assert session.execute(text("SHOW work_mem")).scalar() == "48MB" != before
        assert spec_stats(session, inputs(), CASES["count"])["control"].n > 0


def test_report_queries_get_their_own_statement_timeout_and_parallel_workers(db: Database) -> None:
    """PostgreSQL: the report's transaction has its own statement timeout (not storage's), and it
    is enforced: a statement longer than it is cancelled. Outside the transaction storage's is back."""
    if db.engine.dialect.name != "postgresql":
        with db.transaction() as session:  # SQLite: no knobs, the report still runs
            tune_session(session, 48, 2, 0.5)
            assert spec_stats(session, inputs(), CASES["count"])["control"].n > 0
        return
    with db.transaction() as session:
        storage_timeout = session.execute(text("SHOW statement_timeout")).scalar()
    with db.transaction() as session:
        tune_session(session, 48, 1, 120.0)
        assert session.execute(text("SHOW statement_timeout")).scalar() == "2min" != storage_timeout
        assert session.execute(text("SHOW max_parallel_workers_per_gather")).scalar() == "1"
        assert spec_stats(session, inputs(), CASES["count"])["control"].n > 0
    with db.transaction() as session:
        assert session.execute(text("SHOW statement_timeout")).scalar() == storage_timeout
    with pytest.raises(StorageUnavailable) as cancelled, db.transaction() as session:
        tune_session(session, 0, -1, 0.2)
        session.execute(text("SELECT pg_sleep(3)"))
    assert "statement timeout" in str(cancelled.value.__context__)  # the server cancelled it


def test_a_report_outlives_the_storage_statement_timeout(database_url: str) -> None:
    """With storage's statement timeout at 1 s (client watchdog at 3 s), a 4 s statement fails in
    an ordinary transaction but completes in one tuned with a report timeout of 30 s: neither the
    server's timeout nor the client-side watchdog cut it; the next transaction has storage's again."""
    if not database_url.startswith("postgresql"):
        pytest.skip("statement timeouts are PostgreSQL's")
    database = Database.open(database_url, timeouts=Timeouts(statement_seconds=1.0))
    try:
        with pytest.raises(StorageUnavailable) as cancelled, database.transaction() as session:
            session.execute(text("SELECT pg_sleep(4)"))
        assert "statement timeout" in str(cancelled.value.__context__)
        with database.transaction() as session:
            tune_session(session, 0, -1, 30.0)
            session.execute(text("SELECT pg_sleep(4)"))
            assert session.execute(text("SELECT 1")).scalar() == 1
        with pytest.raises(StorageUnavailable) as again, database.transaction() as session:
            session.execute(text("SELECT pg_sleep(4)"))
        assert "statement timeout" in str(again.value.__context__)
    finally:
        database.dispose()


def test_builtin_definitions_equal_the_pre_definition_python_path(db: Database) -> None:
    """conversion and dwell_time as definitions in SQL give the numbers the old functions gave
    (dwell events here are non-negative numbers or ignored values, as the privacy policy keeps them)."""
    lookback = timedelta(seconds=1800.5)
    with db.transaction() as session:
        for name, old, old_with_covariate in (
            ("conversion", metric_oracle.conversion, metric_oracle.conversion_with_covariate),
            ("dwell_time", metric_oracle.dwell_time, metric_oracle.dwell_time_with_covariate),
        ):
            spec = BUILTIN_SPECS[name]
            plain, paired = spec_stats(session, inputs(), spec), spec_stats(session, inputs(), spec, lookback)
            before, before_paired = old(session, inputs()), old_with_covariate(session, inputs(), lookback)
            for arm in ARMS:
                assert before[arm].sum > 0
                _same(plain[arm], before[arm])
                _same(paired[arm], before_paired[arm])

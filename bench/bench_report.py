"""Report inputs for 5 metrics: one SQL statement for all of them against the per-subject Python path.

    .venv/bin/python bench/bench_report.py [--subjects 1000000] [--events 5000000] [--url URL]
        [--schema NAME] [--sql-only]

`--schema NAME` keeps the generated data for the next run (reused, not regenerated; drop it by hand:
DROP SCHEMA NAME CASCADE); `--sql-only` skips the per-subject Python path.

Data (generated inside PostgreSQL with generate_series, in a fresh schema dropped at the end):
`--subjects` exposed subjects, each with one decision in the experiment, half per arm, and
`--events` events spread over them (page_view, click, conversion, session_start, custom) from
one hour before to two hours after each subject's exposure, with numeric `value` and `dwell_ms`.
The SQL path sets `experiments.report_work_mem_mb` (`--work-mem-mb`) and
`experiments.report_parallel_workers` (`--parallel-workers`) as the server's evaluator does.
The 5 metrics are definitions: conversion, dwell_time, engagement_rate, bounce_rate (ratio) and
a capped sum of `value`. For each path: wall time for all 5 metrics, Python heap peak
(tracemalloc) and the process's peak RSS growth. The SQL path runs first, so its RSS figure is not
inflated by the Python path. Before timing, both paths' numbers are checked to agree.
  ratio = Python path / SQL path (time and heap peak)
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import time
import tracemalloc
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tacit.experiments.metric_specs import BUILTIN_SPECS, Aggregation, MetricSpec, Side  # noqa: E402
from tacit.experiments.repository import MetricInputs  # noqa: E402
from tacit.experiments.sql_stats import report_stats, tune_session  # noqa: E402
from tacit.store.db import migrate  # noqa: E402
from tests.experiments.metric_oracle import oracle_stats  # noqa: E402

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
START = datetime(2026, 1, 1, tzinfo=UTC)
METRICS = (
    BUILTIN_SPECS["conversion"],
    BUILTIN_SPECS["dwell_time"],
    BUILTIN_SPECS["engagement_rate"],
    BUILTIN_SPECS["bounce_rate"],
    MetricSpec("order_value", Side(("conversion",), Aggregation.SUM, "value"), cap_upper=150.0),
)

DECISIONS = """
INSERT INTO decisions (event_id, slot, subject, arm, experiment_id, policy, model_version, context,
    candidate_ids, probabilities, chosen_index, created_at, reward_deadline, deferred, reward,
    reward_count, learn_state)
SELECT 'd' || g, 'home', 's' || g, CASE WHEN g % 2 = 0 THEN 'control' ELSE 'treatment' END, 'bench',
    'uniform', 'uniform', '{}', '["a"]', '[1.0]', 0,
    TIMESTAMPTZ '2026-01-01 00:00:00+00' + (g % 86400) * INTERVAL '1 second',
    TIMESTAMPTZ '2026-01-01 00:00:01+00' + (g % 86400) * INTERVAL '1 second', false, NULL, 0, 0
FROM generate_series(1, :subjects) AS g
"""

EVENTS = """
INSERT INTO events (event_id, subject, event_type, occurred_at, received_at, properties)
SELECT 'e' || g, 's' || s, (ARRAY['page_view', 'page_view', 'click', 'conversion', 'session_start',
        'custom'])[1 + floor(random() * 6)::int], at, at,
    json_build_object('value', round((random() * 200)::numeric, 2), 'dwell_ms', floor(random() * 60000))
FROM (
    SELECT g, s, TIMESTAMPTZ '2026-01-01 00:00:00+00' + (s % 86400) * INTERVAL '1 second'
        + (floor(random() * 10800) - 3600) * INTERVAL '1 second' AS at
    FROM (
        SELECT g, CASE WHEN g <= :subjects THEN g ELSE 1 + floor(random() * :subjects)::bigint END AS s
        FROM generate_series(1, :events) AS g
    ) AS picks
) AS timed
"""


def fill(engine: Any, subjects: int, events: int) -> float:
    started = time.perf_counter()
    with engine.begin() as connection:
        connection.execute(text(DECISIONS), {"subjects": subjects})
        connection.execute(text(EVENTS), {"subjects": subjects, "events": events})
    with engine.begin() as connection:
        connection.execute(text("ANALYZE decisions"))
        connection.execute(text("ANALYZE events"))
    return time.perf_counter() - started


def measure(
    engine: Any, compute: Callable[[Session, MetricInputs], list]
) -> tuple[float, float, float, list]:
    """(seconds, Python heap peak MB, peak RSS growth MB, results) for all metrics."""
    inputs = MetricInputs(
        "bench",
        ("control", "treatment"),
        START + timedelta(days=3),
        START + timedelta(days=3),
        0.0,
        timedelta(hours=1),
    )
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    started = time.perf_counter()
    with Session(engine) as session:
        results = compute(session, inputs)
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024  # KB on Linux
    return seconds, peak / 2**20, rss_growth, results


def _agree(sql: list, python: list) -> None:
    for spec, by_sql, by_python in zip(METRICS, sql, python, strict=True):
        for arm, stats in by_sql.items():
            other = by_python[arm]
            if stats.n != other.n or not math.isclose(stats.mean, other.mean, rel_tol=1e-9, abs_tol=1e-12):
                raise SystemExit(f"{spec.name}/{arm}: SQL {stats} differs from Python {other}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subjects", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--work-mem-mb", type=int, default=128, help="experiments.report_work_mem_mb")
    parser.add_argument(
        "--parallel-workers", type=int, default=2, help="experiments.report_parallel_workers (-1: server's)"
    )
    parser.add_argument("--url", default=DEFAULT_URL, help="PostgreSQL (the bench makes and drops a schema)")
    parser.add_argument(
        "--schema",
        help="keep the data in this schema: generated if it does not exist, reused (not regenerated, "
        "--subjects/--events ignored) if it does, and not dropped at the end",
    )
    parser.add_argument("--sql-only", action="store_true", help="skip the per-subject Python path")
    args = parser.parse_args()

    schema = args.schema or f"bench_report_{uuid.uuid4().hex[:10]}"
    admin = create_engine(args.url)
    with admin.begin() as connection:
        exists = connection.execute(
            text("SELECT 1 FROM information_schema.schemata WHERE schema_name = :name"), {"name": schema}
        ).first()
        if not exists:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in args.url else "?"
    engine = create_engine(f"{args.url}{separator}options=-csearch_path%3D{schema}")
    try:
        migrate(engine)
        if exists and args.schema:
            with engine.connect() as connection:
                subjects = connection.execute(text("SELECT count(*) FROM decisions")).scalar()
                events = connection.execute(text("SELECT count(*) FROM events")).scalar()
            print(f"data: {subjects} exposed subjects, {events} events, reused from schema {schema}")
        else:
            fill_seconds = fill(engine, args.subjects, args.events)
            print(
                f"data: {args.subjects} exposed subjects, {args.events} events, "
                f"generated in {fill_seconds:.1f} s"
            )

        def sql_path(session: Session, inputs: MetricInputs) -> list:
            # as the server's evaluator does: all 5 metrics from one statement
            tune_session(session, args.work_mem_mb, args.parallel_workers)
            return report_stats(session, inputs, [(spec, None) for spec in METRICS])

        def python_path(session: Session, inputs: MetricInputs) -> list:
            return [oracle_stats(session, inputs, spec) for spec in METRICS]

        sql_time, sql_heap, sql_rss, sql_results = measure(engine, sql_path)
        print(f"{'path':<26}{'seconds':>10}{'heap peak MB':>15}{'RSS growth MB':>15}")
        print(f"{'SQL (1 query, 5 metrics)':<26}{sql_time:>10.2f}{sql_heap:>15.1f}{sql_rss:>15.1f}")
        if args.sql_only:
            print(f"metrics: {', '.join(spec.name for spec in METRICS)}; Python path skipped (--sql-only)")
            return 0
        py_time, py_heap, py_rss, py_results = measure(engine, python_path)
        _agree(sql_results, py_results)
        print(f"{'Python per subject':<26}{py_time:>10.2f}{py_heap:>15.1f}{py_rss:>15.1f}")
        heap_ratio = py_heap / max(sql_heap, 1e-3)
        print(f"ratio (Python / SQL): time {py_time / sql_time:.1f}x, heap peak {heap_ratio:.0f}x")
        print(f"metrics: {', '.join(spec.name for spec in METRICS)}; SQL and Python agree")
    finally:
        engine.dispose()
        if not args.schema:
            with admin.begin() as connection:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

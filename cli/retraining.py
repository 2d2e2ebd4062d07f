"""`tacit train engagement` and `tacit retraining list|run`: the engagement regression and the
retraining scheduler's record, run against the database.

    tacit train engagement [--label-window-days 7]     train, print RMSE/MAE vs the mean baseline, register
    tacit retraining list [--task engagement]          the scheduler's runs, newest first, with their steps
    tacit retraining run                               one check of every configured task now
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table

from tacit.learning.engagement import EngagementError, EngagementJob, run_engagement_training
from tacit.learning.retraining import RunRecord, list_runs
from tacit.server.config import Settings, load_settings
from tacit.store.db import Database

Runner = Callable[[Callable[[argparse.Namespace, TextIO], int]], Callable[[argparse.Namespace], int]]


def _settings(args: argparse.Namespace) -> Settings:
    storage = {"data_dir": str(args.data_dir)} if getattr(args, "data_dir", None) else {}
    return load_settings(args.config, **({"storage": storage} if storage else {}))


def _console(out: TextIO) -> Console:
    return Console(file=out, width=None if out.isatty() else 160)


def _fmt(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.4f}"


def cmd_train_engagement(args: argparse.Namespace, out: TextIO) -> int:
    settings = _settings(args)
    db = Database.open(settings.database_url)
    job = EngagementJob(
        label_window=timedelta(days=args.label_window_days),
        snapshot_every=timedelta(days=args.snapshot_every_days),
        max_rows=args.max_rows,
        seed=args.seed,
    )
    try:
        trained = run_engagement_training(db, settings.storage.data_dir / "models", job)
    except EngagementError as error:
        print(f"tacit train engagement: {error}", file=sys.stderr)
        return 1
    finally:
        db.dispose()
    metrics = trained.record.metrics
    table = Table(title=f"engagement {trained.record.version}: mean dwell seconds, test = later time window")
    for column in ("model", "test rmse", "test mae", "validation rmse", "validation mae"):
        table.add_column(column, justify="left" if column == "model" else "right")
    table.add_row(
        f"[bold]{trained.bundle.model.candidate}[/bold]",
        _fmt(metrics.get("test_rmse")), _fmt(metrics.get("test_mae")),
        _fmt(metrics.get("validation_rmse")), _fmt(metrics.get("validation_mae")),
    )  # fmt: skip
    table.add_row(
        f"mean baseline ({_fmt(metrics.get('baseline_mean'))} s)",
        _fmt(metrics.get("test_baseline_rmse")), _fmt(metrics.get("test_baseline_mae")),
        _fmt(metrics.get("validation_baseline_rmse")), _fmt(metrics.get("validation_baseline_mae")),
    )  # fmt: skip
    console = _console(out)
    console.print(f"{trained.data.events} events → {trained.data.labels.size} labelled snapshots")
    console.print(table)
    console.print(
        f"registered {trained.record.name} (active): RMSE skill over the baseline "
        f"{metrics.get('test_rmse_skill', math.nan):.1%}, sha256 {trained.record.sha256[:12]}…"
    )
    return 0


def _run_row(run: RunRecord) -> tuple[str, ...]:
    return (
        str(run.id), run.task, run.started_at.strftime("%Y-%m-%d %H:%M:%S"), run.outcome,
        ",".join(run.triggers) or "—", run.active_version or "—", run.candidate_version or "—",
        _fmt(run.active_score), _fmt(run.candidate_score), str(run.holdout_rows),
    )  # fmt: skip


def cmd_retraining_list(args: argparse.Namespace, out: TextIO) -> int:
    settings = _settings(args)
    db = Database.open(settings.database_url)
    try:
        runs, _ = list_runs(db, args.task, args.limit, None)
    finally:
        db.dispose()
    table = Table(title="retraining runs, newest first (scores: holdout RMSE, lower is better)")
    for column in ("id", "task", "started (UTC)", "outcome", "triggers", "active", "candidate",
                   "active score", "candidate score", "holdout rows"):  # fmt: skip
        table.add_column(column)
    for run in runs:
        table.add_row(*_run_row(run))
    console = _console(out)
    console.print(table)
    if args.steps:
        for run in runs:
            for step in run.steps:
                figures = ", ".join(f"{k}={v:.4g}" for k, v in step.get("figures", {}).items())
                console.print(f"run {run.id} {step['name']}: {step.get('note', '')} [{figures}]")
    return 0


def cmd_retraining_run(args: argparse.Namespace, out: TextIO) -> int:
    from tacit.server.app import retrainer_from

    settings = _settings(args)
    db = Database.open(settings.database_url)
    try:
        retrainer = retrainer_from(settings, db)
        if retrainer is None:
            print("tacit retraining run: retraining.enabled is false", file=sys.stderr)
            return 2
        runs = retrainer.run_once()
    finally:
        db.dispose()
    table = Table(title="retraining runs just made")
    for column in ("id", "task", "started (UTC)", "outcome", "triggers", "active", "candidate",
                   "active score", "candidate score", "holdout rows"):  # fmt: skip
        table.add_column(column)
    for run in runs:
        table.add_row(*_run_row(run))
    _console(out).print(table)
    return 1 if any(run.outcome == "failed" for run in runs) else 0


def add_retraining_parser(subparsers: Any, runner: Runner) -> None:
    """Registers `retraining list` and `retraining run` (`train engagement` is on `train`)."""
    retraining = subparsers.add_parser("retraining", help="the retraining scheduler's runs")
    sub = retraining.add_subparsers(dest="retraining_command", required=True)
    listing = sub.add_parser("list", help="runs, newest first")
    listing.add_argument("--task", default=None)
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--steps", action="store_true", help="print every step of the listed runs")
    listing.add_argument("--data-dir", type=Path, default=None)
    listing.set_defaults(func=runner(cmd_retraining_list))
    run = sub.add_parser("run", help="check every configured task now: drift, age, retrain, validate")
    run.add_argument("--data-dir", type=Path, default=None)
    run.set_defaults(func=runner(cmd_retraining_run))

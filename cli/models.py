"""`tacit train`, `tacit evaluate`, `tacit drift`: the model tools, run against the database.

    tacit train conversion|churn|engagement [--label-window-days 7]   train, print metrics, register
        [--search randomized|optuna] [--smote auto|always|never] [--mlflow-tracking-uri URI]
    tacit evaluate --slot home [--policy vw:...]             off-policy estimates table
    tacit drift conversion|churn|engagement|bandit:<slot>    PSI table; exit code 3 when stale
    tacit retraining list|run [--task engagement]            the scheduler's runs; one run now
    tacit model export-mlflow models/<task>/versions/<v> DIR  a registered version as an MLflow model
    tacit model import-mlflow DIR --trust                     an exported MLflow model as a new version
    tacit model export|import|reset|explain --slot home ...   slot models (see cli/model_lifecycle.py)

`tacit drift conversion || tacit train conversion` retrains only a stale model
(schedule it with cron or a systemd timer).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tacit.learning.classifiers import Task, TrainingConfig, TrainingError
from tacit.learning.engagement import ENGAGEMENT_TASK, ServingEngagement
from tacit.learning.evaluation import (
    DEFAULT_POLICIES,
    DRIFT_RECENT,
    DRIFT_REWARD_ALPHA,
    DRIFT_THRESHOLD,
    DriftSummary,
    EvaluationError,
    bandit_drift_report,
    drift_report,
    evaluate_policies,
    model_drift,
)
from tacit.learning.mlflow_models import MlflowImportError, MlflowUnavailableError, export_model, import_model
from tacit.learning.registry import ModelIntegrityError
from tacit.learning.registry_models import ModelNotFoundError, ServingClassifiers, get_record, load_bundle
from tacit.learning.training import TrainJob, TrainOutcome, run_training
from tacit.server.config import Settings, load_settings
from tacit.store.db import Database

EXIT_STALE = 3
EXIT_MLFLOW_FAILED = 4
"""`tacit train`: the version is registered and served, but logging the run to MLflow failed."""
IMBALANCE_LABELS = {
    "unweighted": "none (unweighted)",
    "balanced": "class weights (balanced)",
    "smote": "SMOTE",
}
_HEADLINE = ("roc_auc", "pr_auc", "brier", "precision", "recall", "f1", "positive_rate")


def _settings(args: argparse.Namespace) -> Settings:
    storage = {"data_dir": str(args.data_dir)} if getattr(args, "data_dir", None) else {}
    return load_settings(args.config, **({"storage": storage} if storage else {}))


def _console(out: TextIO) -> Console:
    """Wide enough for the metrics table even when the output is a file or a pipe."""
    return Console(file=out, width=None if out.isatty() else 160)


def _fmt(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.4f}"


def metrics_table(task: str, version: str, metrics: dict[str, float]) -> Table:
    """The chosen model's metrics, then every candidate × imbalance option (none, class weights,
    SMOTE) side by side: CV, validation and test."""
    table = Table(title=f"{task} {version}: chosen model and every candidate (test = later time window)")
    table.add_column("model")
    table.add_column("imbalance")
    # test positive_rate: the base rate
    for name in ("cv pr_auc", "val pr_auc", *(f"test {n}" for n in _HEADLINE)):
        table.add_column(name, justify="right")
    table.add_row(
        "[bold]chosen[/bold]",
        "",
        _fmt(metrics.get("cv_pr_auc")),
        _fmt(metrics.get("validation_pr_auc")),
        *(_fmt(metrics.get(f"test_{n}")) for n in _HEADLINE),
    )
    candidates = sorted(
        {tuple(k.split(".")[1:3]) for k in metrics if k.startswith("candidates.") and k.count(".") >= 3}
    )
    order = list(IMBALANCE_LABELS)
    candidates = sorted(candidates, key=lambda c: (c[0], order.index(c[1]) if c[1] in order else len(order)))
    for name, weighting in candidates:
        prefix = f"candidates.{name}.{weighting}."
        table.add_row(
            name,
            IMBALANCE_LABELS.get(weighting, weighting),
            _fmt(metrics.get(prefix + "cv_pr_auc")),
            _fmt(metrics.get(prefix + "validation_pr_auc")),
            *(_fmt(metrics.get(prefix + f"test_{n}")) for n in _HEADLINE),
        )
    return table


def cmd_train(args: argparse.Namespace, out: TextIO) -> int:
    if args.task == ENGAGEMENT_TASK:
        from tacit.cli.retraining import cmd_train_engagement

        return cmd_train_engagement(args, out)
    settings = _settings(args)
    console = _console(out)
    training = settings.training
    db = Database.open(settings.database_url)
    job = TrainJob(
        task=Task(args.task),
        label_window=timedelta(days=args.label_window_days),
        snapshot_every=timedelta(days=args.snapshot_every_days),
        max_rows=args.max_rows,
        seed=args.seed,
        classifier=TrainingConfig(
            min_positives=args.min_positives,
            search=args.search or training.search,
            search_iterations=args.search_iterations or training.search_iterations,
            smote=args.smote or training.smote,
        ),
        mlflow_tracking_uri=training.mlflow_tracking_uri if args.mlflow_tracking_uri is None
        else args.mlflow_tracking_uri,
        mlflow_experiment=training.mlflow_experiment,
    )  # fmt: skip
    try:
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=Console(file=sys.stderr), transient=True,
        ) as progress:  # fmt: skip
            bars: dict[str, Any] = {}

            def report(stage: str, done: int, total: int) -> None:
                if stage not in bars:
                    bars[stage] = progress.add_task(stage, total=total or None)
                progress.update(bars[stage], completed=done, total=total or None)

            outcome: TrainOutcome = run_training(db, settings.storage.data_dir / "models", job, report)
    except (TrainingError, MlflowUnavailableError) as error:
        print(f"tacit train {args.task}: {error}", file=sys.stderr)
        return 1
    finally:
        db.dispose()
    console.print(
        f"{outcome.events} events of {outcome.subjects} subjects → {outcome.rows} snapshots, "
        f"{outcome.positives} positive ({outcome.positives / max(outcome.rows, 1):.1%})"
    )
    console.print(metrics_table(args.task, outcome.record.version, outcome.metrics))
    details = outcome.record.details
    console.print(
        f"registered {outcome.record.name} (active): {details['candidate']}, "
        f"imbalance {details.get('imbalance', details['class_weight'])}, search {details.get('search', '')}, "
        f"threshold {details['threshold']:.3f}, sha256 {outcome.record.sha256[:12]}…"
    )
    if outcome.mlflow_run_id:
        console.print(f"MLflow run {outcome.mlflow_run_id} in experiment {job.mlflow_experiment!r}")
    if outcome.mlflow_error:
        print(
            f"tacit train {args.task}: {outcome.record.name} is registered and served, but logging the run "
            f"to MLflow failed: {outcome.mlflow_error}",
            file=sys.stderr,
        )
        return EXIT_MLFLOW_FAILED
    return 0


_MODEL_NAME = re.compile(r"^models/(?P<task>conversion|churn)/versions/(?P<version>v\d{6})$")


def cmd_export_mlflow(args: argparse.Namespace, out: TextIO) -> int:
    match = _MODEL_NAME.match(args.name)
    if match is None:
        print("tacit model export-mlflow: name must look like models/<conversion|churn>/versions/v000001",
              file=sys.stderr)  # fmt: skip
        return 2
    settings = _settings(args)
    db = Database.open(settings.database_url)
    try:
        record = get_record(db, match["task"], match["version"])
        directory = export_model(load_bundle(record), record, args.directory)
    except (ModelNotFoundError, ModelIntegrityError, MlflowUnavailableError, FileExistsError) as error:
        print(f"tacit model export-mlflow: {error}", file=sys.stderr)
        return 1
    finally:
        db.dispose()
    print(f"exported {record.name} to {directory} (MLflow sklearn flavour)", file=out)
    return 0


def cmd_import_mlflow(args: argparse.Namespace, out: TextIO) -> int:
    if not args.trust:
        print(
            "tacit model import-mlflow: loading a model runs code from its files; pass --trust if this "
            "directory comes from a source you trust (e.g. your own export-mlflow)",
            file=sys.stderr,
        )
        return 2
    # MLflow's own switch for loading serialized models; set for this process only.
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "true"
    settings = _settings(args)
    db = Database.open(settings.database_url)
    try:
        record = import_model(db, settings.storage.data_dir / "models", args.directory)
    except (MlflowImportError, MlflowUnavailableError) as error:
        print(f"tacit model import-mlflow: {error}", file=sys.stderr)
        return 1
    finally:
        db.dispose()
    print(f"imported {args.directory} as {record.name} (active)", file=out)
    return 0


def cmd_evaluate(args: argparse.Namespace, out: TextIO) -> int:
    settings = _settings(args)
    slot = settings.slots.get(args.slot)
    if slot is None:
        print(f"tacit evaluate: slot is not configured: {args.slot}", file=sys.stderr)
        return 2
    db = Database.open(settings.database_url)
    try:
        estimates = evaluate_policies(
            db, args.slot, slot.vw_args, slot.default_reward, args.policy or DEFAULT_POLICIES,
            train_fraction=args.train_fraction, reward_range=slot.reward_range,
        )  # fmt: skip
    except EvaluationError as error:
        print(f"tacit evaluate: {error}", file=sys.stderr)
        return 1
    finally:
        db.dispose()
    table = Table(
        title=f"off-policy estimates for slot {args.slot} (95% intervals: IPS betting, SNIPS/DR "
        f"empirical-Bernstein, clipped to rewards [{slot.reward_min:g}, {slot.reward_max:g}]; "
        "evaluation part of the log)"
    )
    for column in (
        "policy",
        "estimator",
        "value",
        "ci low",
        "ci high",
        "n",
        "matched",
        "rewards",
        "ESS",
        "status",
    ):
        table.add_column(column, justify="left" if column in ("policy", "estimator", "status") else "right")
    for e in estimates:
        table.add_row(
            e.policy, e.estimator, _fmt(e.value), _fmt(e.ci_low), _fmt(e.ci_high), str(e.n),
            str(e.matched), str(e.matched_rewards),
            f"{e.effective_sample_size:.0f}" if math.isfinite(e.effective_sample_size) else "—", e.status,
        )  # fmt: skip
    _console(out).print(table)
    return 0


def _drift_task(text: str) -> str:
    """conversion, churn, engagement or bandit:<slot>."""
    known = {*(t.value for t in Task), ENGAGEMENT_TASK}
    if text in known or (text.startswith("bandit:") and len(text) > len("bandit:")):
        return text
    raise argparse.ArgumentTypeError(
        f"must be {', '.join(t.value for t in Task)}, {ENGAGEMENT_TASK} or bandit:<slot>"
    )


def _when(moment: datetime | None) -> str:
    return "—" if moment is None else moment.strftime("%Y-%m-%d %H:%M UTC")


def _drift_summary(args: argparse.Namespace, settings: Settings, db: Database) -> DriftSummary:
    recent = timedelta(days=args.recent_days)
    if args.task.startswith("bandit:"):
        name = args.task.removeprefix("bandit:")
        slot = settings.slots.get(name)
        if slot is None:
            raise EvaluationError(f"slot is not configured: {name}")
        return bandit_drift_report(
            db, name, slot.default_reward, recent, threshold=args.threshold, alpha=args.reward_alpha
        )
    if args.task == ENGAGEMENT_TASK:
        engagement = ServingEngagement(db).get()
        model = engagement.bundle.model
        return model_drift(
            db, args.task, engagement.version, engagement.bundle.drift_reference, model.training_window,
            model.predict, recent, threshold=args.threshold,
        )  # fmt: skip
    served = ServingClassifiers(db).get(args.task)
    return drift_report(db, args.task, served, recent, threshold=args.threshold)


def cmd_drift(args: argparse.Namespace, out: TextIO) -> int:
    settings = _settings(args)
    db = Database.open(settings.database_url)
    try:
        summary = _drift_summary(args, settings, db)
    except (ModelNotFoundError, ModelIntegrityError, EvaluationError) as error:
        print(f"tacit drift: {error}", file=sys.stderr)
        return 1
    finally:
        db.dispose()
    report = summary.report
    bandit = args.task.startswith("bandit:")
    reference = "earlier decisions" if bandit else "training window"
    version = summary.version or "no checkpoint"
    table = Table(title=f"{args.task} {version}: PSI {reference} vs last {args.recent_days:g} days")
    table.add_column("feature")
    table.add_column("psi", justify="right")
    for name, psi in sorted(report.feature_psi.items(), key=lambda item: -item[1]):
        flag = " ⚠" if psi >= report.threshold else ""
        table.add_row(name, _fmt(psi) + flag)
    if not bandit:
        flag = " ⚠" if report.prediction_psi is not None and report.prediction_psi >= report.threshold else ""
        table.add_row("[italic]predictions[/italic]", _fmt(report.prediction_psi) + flag)
    console = _console(out)
    console.print(table)
    console.print(
        f"reference: {_when(summary.reference_start)} → {_when(summary.reference_end)}, "
        f"{report.n_reference} {'decisions' if bandit else 'training rows'}; "
        f"current: {_when(summary.window_start)} → {_when(summary.window_end)}, "
        f"{report.n_current} {'decisions' if bandit else 'recent subjects'}"
    )
    drifted = ", ".join(report.drifted_features) or "none"
    console.print(f"drifted features (psi ≥ {report.threshold}): {drifted}")
    reward = report.reward
    if reward is not None:
        verdict = "DRIFTED" if reward.significant else "stable"
        console.print(
            f"reward rate: {_fmt(reward.reference_rate)} → {_fmt(reward.current_rate)}, "
            f"z {_fmt(reward.z)}, p {reward.p_value:.3g} (status {reward.status.value}): {verdict}"
        )
    for note in report.notes:
        console.print(f"note: {note}")
    console.print(f"threshold {report.threshold}: {'STALE — retrain' if report.stale else 'fresh'}")
    return EXIT_STALE if report.stale else 0


def _runner(command: Callable[[argparse.Namespace, TextIO], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return command(args, sys.stdout)

    return run


def add_model_parsers(subparsers: Any) -> None:
    """Registers `train`, `evaluate` and `drift` on the `tacit` command."""
    train = subparsers.add_parser(
        "train", help="train and register a conversion or churn classifier or the engagement regression"
    )
    train.add_argument("task", choices=[*(t.value for t in Task), ENGAGEMENT_TASK])
    train.add_argument("--data-dir", type=Path, default=None)
    train.add_argument("--label-window-days", type=float, default=7.0,
                       help="conversion horizon / churn inactivity period")  # fmt: skip
    train.add_argument("--snapshot-every-days", type=float, default=7.0)
    train.add_argument("--max-rows", type=int, default=50_000)
    train.add_argument("--min-positives", type=int, default=20,
                       help="minimum positives (and negatives) in the training window")  # fmt: skip
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--search", choices=["randomized", "optuna"], default=None,
                       help="hyperparameter search (default: training.search)")  # fmt: skip
    train.add_argument("--search-iterations", type=int, default=None,
                       help="trial budget per candidate (default: training.search_iterations)")  # fmt: skip
    train.add_argument("--smote", choices=["auto", "always", "never"], default=None,
                       help="also train with SMOTE; auto: rare labels (default: training.smote)")  # fmt: skip
    train.add_argument("--mlflow-tracking-uri", default=None,
                       help="log the run to MLflow (default: training.mlflow_tracking_uri)")  # fmt: skip
    train.set_defaults(func=_runner(cmd_train))

    model = subparsers.add_parser(
        "model", help="slot models: export, import, reset, explain; classifiers to and from MLflow"
    )
    model_sub = model.add_subparsers(dest="model_command", required=True)
    export = model_sub.add_parser("export-mlflow", help="write a registered version as an MLflow model")
    export.add_argument("name", help="models/<task>/versions/<version>")
    export.add_argument("directory", type=Path, help="a new directory")
    export.add_argument("--data-dir", type=Path, default=None)
    export.set_defaults(func=_runner(cmd_export_mlflow))
    imported = model_sub.add_parser(
        "import-mlflow", help="register an exported MLflow model as its task's new active version"
    )
    imported.add_argument("directory", type=Path)
    imported.add_argument("--trust", action="store_true", help="allow loading the model's serialized code")
    imported.add_argument("--data-dir", type=Path, default=None)
    imported.set_defaults(func=_runner(cmd_import_mlflow))
    from tacit.cli.model_lifecycle import add_lifecycle_commands

    add_lifecycle_commands(model_sub)

    evaluate = subparsers.add_parser("evaluate", help="off-policy estimates of policies on a slot's log")
    evaluate.add_argument("--slot", required=True)
    evaluate.add_argument("--policy", action="append", default=None,
                          help="current, static:first, uniform or vw:<args>; repeatable")  # fmt: skip
    evaluate.add_argument("--train-fraction", type=float, default=0.5)
    evaluate.add_argument("--data-dir", type=Path, default=None)
    evaluate.set_defaults(func=_runner(cmd_evaluate))

    drift = subparsers.add_parser(
        "drift", help="feature, prediction and reward-rate drift of a model; exit 3 when stale"
    )
    drift.add_argument("task", type=_drift_task, help="conversion, churn, engagement or bandit:<slot>")
    drift.add_argument("--recent-days", type=float, default=DRIFT_RECENT / timedelta(days=1))
    drift.add_argument("--threshold", type=float, default=DRIFT_THRESHOLD)
    drift.add_argument("--reward-alpha", type=float, default=DRIFT_REWARD_ALPHA,
                       help="significance level of the reward-rate test (bandit:<slot>)")  # fmt: skip
    drift.add_argument("--data-dir", type=Path, default=None)
    drift.set_defaults(func=_runner(cmd_drift))
    from tacit.cli.retraining import add_retraining_parser

    add_retraining_parser(subparsers, _runner)

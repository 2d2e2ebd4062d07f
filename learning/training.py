"""Training jobs: events table → point-in-time training set → classifier → registry.

Snapshots are taken on a regular grid (every ``snapshot_every``) for every
pseudonym that has history at that instant; each snapshot's features see only
events up to it, and its label only events after it (a conversion within
``label_window`` for conversion, no event at all for ``label_window`` for
churn). Snapshots whose label window runs past the newest stored event are
censored, not negatives.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from tacit.learning.classifiers import (
    Task,
    TrainingConfig,
    TrainingError,
    make_training_set,
    time_split,
    train_classifier,
)
from tacit.learning.drift import DriftMonitor
from tacit.learning.features import CATEGORICAL_FEATURES, Event, FeatureVector
from tacit.learning.profiles import iter_histories
from tacit.learning.registry_models import ClassifierBundle, ModelRecord, register_classifier
from tacit.store.db import Database

__all__ = ["TrainJob", "TrainOutcome", "TrainingError", "build_training_set", "run_training"]

logger = logging.getLogger("tacit.learning")

CALENDAR_FEATURES = ("hour", "day_of_week")

Progress = Callable[[str, int, int], None]
"""(stage, done, total): stages are 'events', 'features', 'training', 'registering'."""


@dataclass(frozen=True)
class TrainJob:
    """What `tacit train <task>` does; the defaults suit daily or weekly data."""

    task: Task
    label_window: timedelta = timedelta(days=7)
    """Conversion horizon, or the inactivity period that counts as churn."""
    snapshot_every: timedelta = timedelta(days=7)
    observed_until: datetime | None = None
    """Newest instant whose events are complete; default: the newest stored event."""
    max_rows: int = 50_000
    seed: int = 0
    classifier: TrainingConfig = field(default_factory=TrainingConfig)
    mlflow_tracking_uri: str = ""
    """When set, the run is also logged to this MLflow tracking store (tacit.learning.mlflow_models)."""
    mlflow_experiment: str = "tacit"


@dataclass(frozen=True)
class TrainingSet:
    rows: list[FeatureVector]
    labels: np.ndarray
    times: list[datetime]
    subjects: int
    events: int
    observed_until: datetime


@dataclass(frozen=True)
class TrainOutcome:
    record: ModelRecord
    metrics: dict[str, float]
    rows: int
    positives: int
    subjects: int
    events: int
    mlflow_run_id: str | None = None
    mlflow_error: str | None = None
    """Why logging to MLflow failed after the version was registered (it stays registered)."""


def _noop(stage: str, done: int, total: int) -> None:
    return None


def _snapshots(events: list[Event], grid: list[datetime], jitter: np.ndarray) -> list[datetime]:
    """Grid instants moved back by a per-subject jitter (so hour and weekday vary), with history."""
    first = events[0].occurred_at
    moved = (moment - timedelta(seconds=float(j)) for moment, j in zip(grid, jitter, strict=True))
    return [moment for moment in moved if moment >= first]


def build_training_set(db: Database, job: TrainJob, progress: Progress = _noop) -> TrainingSet:
    """Point-in-time rows and labels for every (pseudonym, grid instant) with history."""
    histories: dict[str, list[Event]] = {}
    count = 0
    for subject, events in iter_histories(db):
        histories[subject] = events
        count += len(events)
        progress("events", count, 0)
    if not histories:
        raise TrainingError("no stored events: send behaviour with TrackEvents before training")
    earliest = min(events[0].occurred_at for events in histories.values())
    latest = max(events[-1].occurred_at for events in histories.values())
    observed_until = job.observed_until or latest
    grid: list[datetime] = []
    moment = earliest + job.snapshot_every
    while moment + job.label_window <= observed_until:
        grid.append(moment)
        moment += job.snapshot_every
    if not grid:
        raise TrainingError(
            "the stored events span too little time for one labelled snapshot "
            f"(need more than {job.snapshot_every + job.label_window} of history)"
        )
    rng = np.random.default_rng(job.seed)
    spread = job.snapshot_every.total_seconds()
    pairs = [
        (subject, at)
        for subject, events in histories.items()
        for at in _snapshots(events, grid, rng.uniform(0.0, spread, len(grid)))
    ]
    if len(pairs) > job.max_rows:
        chosen = rng.choice(len(pairs), size=job.max_rows, replace=False)
        pairs = [pairs[i] for i in sorted(chosen)]
    rows: list[FeatureVector] = []
    labels: list[np.ndarray] = []
    times: list[datetime] = []
    step = max(1, len(pairs) // 50)
    for start in range(0, len(pairs), step):
        chunk = pairs[start : start + step]
        chunk_rows, chunk_labels, chunk_times = make_training_set(
            histories, chunk, job.task, job.label_window, observed_until
        )
        rows.extend(chunk_rows)
        labels.append(chunk_labels)
        times.extend(chunk_times)
        progress("features", min(start + step, len(pairs)), len(pairs))
    y = np.concatenate(labels) if labels else np.empty(0, dtype=np.int64)
    return TrainingSet(rows, y, times, len(histories), count, observed_until)


def run_training(
    db: Database, models_dir: Path, job: TrainJob, progress: Progress = _noop
) -> TrainOutcome:
    """Builds the training set, trains and registers the new active version of the task.

    With ``job.mlflow_tracking_uri`` the run is then logged to MLflow; MLflow missing is an
    error before any work, a failure while logging is reported in the outcome.
    """
    if job.mlflow_tracking_uri:
        from tacit.learning.mlflow_models import require_mlflow

        require_mlflow()
    data = build_training_set(db, job, progress)
    positives = int(data.labels.sum())
    minimum = job.classifier.min_positives + 2 * job.classifier.min_evaluation_positives
    if positives < minimum:
        raise TrainingError(
            f"too few positive {job.task.value} labels: {positives} in {data.labels.size} snapshots "
            f"(at least {minimum} needed); collect more events or widen the label window"
        )
    progress("training", 0, 1)
    config = replace(job.classifier, random_state=job.seed)
    model = train_classifier(job.task, data.rows, data.labels, data.times, config)
    progress("training", 1, 1)
    train_end = model.training_window[1]
    reference = [r for r, t in zip(data.rows, data.times, strict=True) if t.timestamp() <= train_end]
    reference_scores = model.predict_proba(reference)
    # The calendar of a snapshot is not behaviour: hour and weekday are left out of drift.
    behaviour = tuple(n for n in model.feature_names if n not in CALENDAR_FEATURES)
    monitor = DriftMonitor(features=behaviour, categorical_features=CATEGORICAL_FEATURES)
    monitor.fit(reference, scores=reference_scores)
    progress("registering", 0, 1)
    details: dict[str, Any] = {
        "label_window_days": job.label_window.total_seconds() / 86_400,
        "snapshot_every_days": job.snapshot_every.total_seconds() / 86_400,
        "observed_until": data.observed_until.isoformat(),
        "rows": int(data.labels.size),
        "positives": positives,
        "imbalance": model.imbalance,
        "search": model.search,
    }
    bundle = ClassifierBundle(model, monitor)
    record = register_classifier(db, bundle, models_dir, details)
    progress("registering", 1, 1)
    logger.info("model registered", extra={"task": job.task.value, "version": record.version})
    run_id, error = None, None
    if job.mlflow_tracking_uri:
        run_id, error = _log_to_mlflow(job, config, data, bundle, record)
    return TrainOutcome(
        record=record,
        metrics=dict(model.metrics),
        rows=int(data.labels.size),
        positives=positives,
        subjects=data.subjects,
        events=data.events,
        mlflow_run_id=run_id,
        mlflow_error=error,
    )


def _log_to_mlflow(
    job: TrainJob, config: TrainingConfig, data: TrainingSet, bundle: ClassifierBundle, record: ModelRecord
) -> tuple[str | None, str | None]:
    """(run id, None) or (None, why): the registered version stands either way."""
    from tacit.learning.mlflow_models import log_training_run

    seconds = np.array([t.timestamp() for t in data.times], dtype=np.float64)
    _, _, test = time_split(seconds, config.validation_fraction, config.test_fraction)
    params = {
        "task": job.task.value,
        "label_window_days": job.label_window.total_seconds() / 86_400,
        "snapshot_every_days": job.snapshot_every.total_seconds() / 86_400,
        "max_rows": job.max_rows,
        "seed": job.seed,
        "rows": int(data.labels.size),
        "positives": int(data.labels.sum()),
        "search": config.search,
        "search_iterations": config.search_iterations,
        "cv_folds": config.cv_folds,
        "smote": config.smote,
        "selection_metric": config.selection_metric,
        "calibration_method": config.calibration_method,
    }
    try:
        run_id = log_training_run(
            job.mlflow_tracking_uri, job.mlflow_experiment, bundle, record, params,
            [r for r, keep in zip(data.rows, test, strict=True) if keep], data.labels[test],
        )  # fmt: skip
    except Exception as error:  # noqa: BLE001 - any MLflow failure leaves the registered version serving
        logger.warning("mlflow logging failed", extra={"task": job.task.value, "version": record.version})
        return None, f"{type(error).__name__}: {error}"
    logger.info("mlflow run logged", extra={"task": job.task.value, "version": record.version})
    return run_id, None

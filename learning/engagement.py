"""Engagement regression: expected dwell time per page view of a subject in a context.

The label of a snapshot ``(subject, as_of)`` is the mean ``dwell_ms`` (in seconds)
of the subject's events that carry one in ``(as_of, as_of + label_window]``; a
snapshot with no such event has no label (nothing to average), and one whose
window runs past the newest complete instant is censored. The features are the
same point-in-time features as the classifiers' (``tacit.learning.features``),
so a context can override them at serving time.

``train_engagement`` splits the rows by snapshot time into train / validation /
test windows (oldest to newest), fits every setting of every candidate regressor
on the training window, picks the one with the lowest validation RMSE and reports
its RMSE and MAE on the test window beside those of the baseline that always
predicts the training window's mean. The served model is the one trained on the
training window only: what is reported is exactly what is served.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sqlalchemy import update
from threadpoolctl import threadpool_limits

from tacit.learning.drift import DriftMonitor
from tacit.learning.features import (
    CATEGORICAL_FEATURES,
    FEATURE_NAMES,
    Event,
    FeatureError,
    FeatureVector,
    build_features,
)
from tacit.learning.profiles import iter_histories
from tacit.learning.registry import ModelIntegrityError, file_sha256, next_version
from tacit.learning.registry_models import ModelNotFoundError, ModelRecord, active_record, get_record
from tacit.store.db import Database
from tacit.store.schema import ModelVersion

__all__ = [
    "ENGAGEMENT_TASK",
    "EngagementError",
    "EngagementBundle",
    "EngagementData",
    "EngagementJob",
    "EngagementModel",
    "ServingEngagement",
    "build_engagement_set",
    "engagement_label",
    "engagement_rows",
    "load_engagement",
    "regression_metrics",
    "register_engagement",
    "run_engagement_training",
    "train_engagement",
]

logger = logging.getLogger("tacit.learning")

ENGAGEMENT_TASK = "engagement"
DWELL_PROPERTY = "dwell_ms"
BUNDLE_FORMAT = 1
CALENDAR_FEATURES = ("hour", "day_of_week")
FloatArray = NDArray[np.float64]


class EngagementError(ValueError):
    """The data cannot train a trustworthy engagement model (too few labelled snapshots)."""


# --------------------------------------------------------------------------- labels and rows


def _dwell_seconds(event: Event) -> float | None:
    value = event.properties.get(DWELL_PROPERTY)
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number / 1000.0 if math.isfinite(number) and number >= 0 else None


def engagement_label(
    events: Iterable[Event], as_of: datetime, window: timedelta, observed_until: datetime
) -> float | None:
    """Mean dwell (seconds) in (as_of, as_of + window]; None when censored or nothing to average."""
    if as_of + window > observed_until:
        return None
    end = as_of + window
    values = [
        dwell for e in events if as_of < e.occurred_at <= end and (dwell := _dwell_seconds(e)) is not None
    ]
    return math.fsum(values) / len(values) if values else None


@dataclass(frozen=True)
class EngagementData:
    """Labelled point-in-time rows; ``subjects[i]`` is the history key row i came from."""

    rows: list[FeatureVector]
    labels: FloatArray
    times: list[datetime]
    subjects: list[str]
    events: int = 0
    observed_until: datetime | None = None


def engagement_rows(
    histories: Mapping[str, Sequence[Event]],
    snapshot_every: timedelta,
    window: timedelta,
    observed_until: datetime,
    max_rows: int = 50_000,
    seed: int = 0,
    since: datetime | None = None,
) -> EngagementData:
    """A snapshot of every subject on a grid (jittered per subject), labelled where possible.

    Only snapshots after ``since`` (when given) are kept: a retrain on fresh data.
    """
    if not histories:
        return EngagementData([], np.empty(0), [], [], 0, observed_until)
    earliest = min(events[0].occurred_at for events in histories.values() if events)
    grid: list[datetime] = []
    moment = earliest + snapshot_every
    while moment + window <= observed_until:
        grid.append(moment)
        moment += snapshot_every
    rng = np.random.default_rng(seed)
    spread = snapshot_every.total_seconds()
    pairs: list[tuple[str, datetime]] = []
    for subject, events in histories.items():
        jitter = rng.uniform(0.0, spread, len(grid))
        first = events[0].occurred_at
        for at, shift in zip(grid, jitter, strict=True):
            at = at - timedelta(seconds=float(shift))
            if at >= first and (since is None or at > since):
                pairs.append((subject, at))
    if len(pairs) > max_rows:
        chosen = rng.choice(len(pairs), size=max_rows, replace=False)
        pairs = [pairs[i] for i in sorted(chosen)]
    rows: list[FeatureVector] = []
    labels: list[float] = []
    times: list[datetime] = []
    subjects: list[str] = []
    for subject, at in pairs:
        history = histories[subject]
        label = engagement_label(history, at, window, observed_until)
        if label is None:
            continue
        rows.append(build_features(history, at))
        labels.append(label)
        times.append(at)
        subjects.append(subject)
    count = sum(len(events) for events in histories.values())
    return EngagementData(rows, np.asarray(labels, dtype=np.float64), times, subjects, count, observed_until)


@dataclass(frozen=True)
class EngagementJob:
    """What `tacit train engagement` does; the defaults suit daily or weekly data."""

    label_window: timedelta = timedelta(days=7)
    snapshot_every: timedelta = timedelta(days=7)
    observed_until: datetime | None = None
    """Newest instant whose events are complete; default: the newest stored event."""
    since: datetime | None = None
    """Only snapshots after this instant (None: the whole history)."""
    max_rows: int = 50_000
    seed: int = 0
    min_rows: int = 60


def build_engagement_set(db: Database, job: EngagementJob) -> EngagementData:
    """Every stored history → labelled rows (the pseudonyms stay inside this function's result)."""
    histories = dict(iter_histories(db))
    if not histories:
        raise EngagementError("no stored events: send behaviour with TrackEvents before training")
    latest = max(events[-1].occurred_at for events in histories.values())
    observed_until = job.observed_until or latest
    return engagement_rows(
        histories, job.snapshot_every, job.label_window, observed_until, job.max_rows, job.seed, job.since
    )


# --------------------------------------------------------------------------- the regressor


def _matrix(rows: Sequence[Mapping[str, Any] | FeatureVector], names: Sequence[str]) -> NDArray[Any]:
    """Rows as an object matrix in ``names`` order; FeatureError names what is missing or not a number."""
    categorical = set(CATEGORICAL_FEATURES)
    out: list[list[Any]] = []
    for raw in rows:
        row = raw.as_dict() if isinstance(raw, FeatureVector) else raw
        values: list[Any] = []
        for name in names:
            if name not in row:
                raise FeatureError(name, "missing")
            value = row[name]
            if name in categorical:
                values.append(str(value))
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise FeatureError(name, "not a number") from None
            if not math.isfinite(number):
                raise FeatureError(name, "not finite")
            values.append(number)
        out.append(values)
    return np.array(out, dtype=object) if out else np.empty((0, len(names)), dtype=object)


def _pipeline(model: Any, names: Sequence[str]) -> Pipeline:
    categorical = [i for i, n in enumerate(names) if n in CATEGORICAL_FEATURES]
    numeric = [i for i, n in enumerate(names) if n not in CATEGORICAL_FEATURES]
    columns = ColumnTransformer(
        [
            ("numeric", StandardScaler(), numeric),
            ("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical),
        ]
    )
    return Pipeline([("features", columns), ("model", model)])


CANDIDATES: Mapping[str, tuple[Callable[[int], Any], tuple[Mapping[str, Any], ...]]] = {
    "ridge": (lambda seed: Ridge(), ({"alpha": 0.1}, {"alpha": 1.0}, {"alpha": 10.0})),
    "hist_gradient_boosting": (
        lambda seed: HistGradientBoostingRegressor(max_iter=100, early_stopping=False, random_state=seed),
        ({"learning_rate": 0.05, "max_leaf_nodes": 7}, {"learning_rate": 0.1, "max_leaf_nodes": 15}),
    ),
}
"""Candidate regressors and the settings tried for each, by name."""


def regression_metrics(labels: ArrayLike, predictions: ArrayLike) -> dict[str, float]:
    """RMSE, MAE and R² of predictions against labels."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(predictions, dtype=np.float64)
    error = p - y
    total = float(np.sum((y - y.mean()) ** 2)) if y.size else 0.0
    return {
        "rmse": float(np.sqrt(np.mean(error**2))) if y.size else math.nan,
        "mae": float(np.mean(np.abs(error))) if y.size else math.nan,
        "r2": 1.0 - float(np.sum(error**2)) / total if total > 0 else math.nan,
    }


@dataclass(frozen=True, eq=False)
class EngagementModel:
    """A fitted regressor with what is needed to register, audit and serve it."""

    estimator: Pipeline
    candidate: str
    params: Mapping[str, Any]
    baseline: float
    """The training window's mean label: what the mean baseline predicts for everyone."""
    metrics: Mapping[str, float]
    feature_names: tuple[str, ...]
    training_window: tuple[float, float]
    """First and last snapshot time of the training rows, in POSIX seconds."""
    data_hash: str

    def predict(self, rows: Sequence[Mapping[str, Any] | FeatureVector]) -> FloatArray:
        """Expected dwell seconds per row (never negative); FeatureError on a missing feature."""
        matrix = _matrix(rows, self.feature_names)
        return np.maximum(np.asarray(self.estimator.predict(matrix), dtype=np.float64), 0.0)


def _data_hash(matrix: NDArray[Any], labels: FloatArray, seconds: FloatArray) -> str:
    digest = hashlib.sha256()
    for row in matrix:
        digest.update("\x1f".join(v.hex() if isinstance(v, float) else f"s:{v}" for v in row).encode())
        digest.update(b"\x1e")
    digest.update(np.ascontiguousarray(labels, dtype="<f8").tobytes())
    digest.update(np.ascontiguousarray(seconds, dtype="<f8").tobytes())
    return digest.hexdigest()


def train_engagement(
    rows: Sequence[Mapping[str, Any] | FeatureVector],
    labels: ArrayLike,
    times: Sequence[datetime],
    validation_fraction: float = 0.2,
    test_fraction: float = 0.2,
    random_state: int = 0,
    min_rows: int = 60,
    feature_names: tuple[str, ...] = FEATURE_NAMES,
    refit_on_all: bool = False,
) -> EngagementModel:
    """Fits every candidate on the oldest rows, picks by validation RMSE, reports test metrics.

    ``refit_on_all`` refits the chosen setting on every row before returning it, for a caller
    that scores the result on a holdout of its own (the retraining scheduler): the reported
    validation and test figures are then those of the selection fit, not of the returned model.
    """
    y = np.asarray(labels, dtype=np.float64)
    seconds = np.array([t.timestamp() for t in times], dtype=np.float64)
    if not len(rows) == y.size == seconds.size:
        raise EngagementError(
            f"rows, labels and times differ in length: {len(rows)}, {y.size}, {seconds.size}"
        )
    if y.size < min_rows:
        raise EngagementError(
            f"too few labelled engagement snapshots: {y.size} (at least {min_rows} needed); "
            "collect more events carrying dwell_ms or widen the label window"
        )
    matrix = _matrix(rows, feature_names)
    ordered = np.sort(seconds)
    n = y.size
    validation_start = ordered[min(n - 1, int(n * (1 - validation_fraction - test_fraction)))]
    test_start = ordered[min(n - 1, int(n * (1 - test_fraction)))]
    train = seconds < validation_start
    validation = (seconds >= validation_start) & (seconds < test_start)
    test = seconds >= test_start
    if min(int(train.sum()), int(validation.sum()), int(test.sum())) < 10:
        raise EngagementError(
            "too few snapshots in a time window: need 10 in each of train, validation, test"
        )
    baseline = float(y[train].mean())
    best: tuple[float, str, Mapping[str, Any], Pipeline] | None = None
    metrics: dict[str, float] = {}
    with threadpool_limits(limits=1):
        for name, (make, settings) in CANDIDATES.items():
            for params in settings:
                pipeline = _pipeline(make(random_state).set_params(**params), feature_names)
                pipeline.fit(matrix[train], y[train])
                scored = regression_metrics(y[validation], pipeline.predict(matrix[validation]))
                if best is None or scored["rmse"] < best[0]:
                    best = (scored["rmse"], name, params, pipeline)
                key = f"candidates.{name}." + ".".join(f"{k}={v}" for k, v in params.items())
                metrics[f"{key}.validation_rmse"] = scored["rmse"]
    assert best is not None
    _, name, params, chosen = best
    for window, mask in (("validation", validation), ("test", test)):
        predicted = np.maximum(np.asarray(chosen.predict(matrix[mask]), dtype=np.float64), 0.0)
        metrics.update({f"{window}_{k}": v for k, v in regression_metrics(y[mask], predicted).items()})
        base = regression_metrics(y[mask], np.full(int(mask.sum()), baseline))
        metrics.update({f"{window}_baseline_{k}": v for k, v in base.items() if k != "r2"})
    metrics["test_rmse_skill"] = 1.0 - metrics["test_rmse"] / metrics["test_baseline_rmse"]
    fitted = train
    if refit_on_all:
        chosen = clone(chosen).fit(matrix, y)
        fitted = np.ones(n, dtype=bool)
        baseline = float(y.mean())
    metrics.update(
        {
            "baseline_mean": baseline,
            "n_train": float(fitted.sum()),
            "n_validation": float(validation.sum()),
            "n_test": float(test.sum()),
        }
    )
    return EngagementModel(
        estimator=chosen,
        candidate=name,
        params=dict(params),
        baseline=baseline,
        metrics=metrics,
        feature_names=feature_names,
        training_window=(float(seconds[fitted].min()), float(seconds[fitted].max())),
        data_hash=_data_hash(matrix, y, seconds),
    )


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True, eq=False)
class EngagementBundle:
    """What an engagement model file holds: the model and the reference window for drift."""

    model: EngagementModel
    drift_reference: DriftMonitor
    format: int = BUNDLE_FORMAT


def drift_reference(
    model: EngagementModel, rows: Sequence[FeatureVector], times: Sequence[datetime]
) -> DriftMonitor:
    """The training window's behaviour features and predictions, the reference for drift."""
    end = model.training_window[1]
    reference = [r for r, t in zip(rows, times, strict=True) if t.timestamp() <= end]
    behaviour = tuple(n for n in model.feature_names if n not in CALENDAR_FEATURES)
    monitor = DriftMonitor(features=behaviour, categorical_features=CATEGORICAL_FEATURES)
    monitor.fit(reference, scores=model.predict(reference))
    return monitor


def register_engagement(
    db: Database,
    bundle: EngagementBundle,
    models_dir: Path,
    details: Mapping[str, Any] | None = None,
    activate: bool = True,
) -> ModelRecord:
    """Writes the bundle as the next engagement version: the only active one unless ``activate`` is False."""
    model = bundle.model
    start, end = model.training_window
    record_details: dict[str, Any] = {
        "kind": "regressor",
        "candidate": model.candidate,
        "best_params": {
            k: v if isinstance(v, int | float | str) else str(v) for k, v in model.params.items()
        },
        "target": "mean dwell seconds per event carrying dwell_ms, next label window",
        "feature_names": list(model.feature_names),
        "training_window": [
            datetime.fromtimestamp(start, UTC).isoformat(),
            datetime.fromtimestamp(end, UTC).isoformat(),
        ],
        "data_hash": model.data_hash,
        **(details or {}),
    }
    with db.transaction() as session:
        version = next_version(session, ENGAGEMENT_TASK)
        path = models_dir / ENGAGEMENT_TASK / f"{version}.joblib"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        joblib.dump(bundle, tmp)
        tmp.replace(path)
        if activate:
            session.execute(
                update(ModelVersion).where(ModelVersion.task == ENGAGEMENT_TASK).values(active=False)
            )
        session.add(
            ModelVersion(
                task=ENGAGEMENT_TASK,
                version=version,
                path=str(path),
                sha256=file_sha256(path),
                created_at=datetime.now(UTC),
                examples=int(model.metrics.get("n_train", 0)),
                metrics={k: float(v) for k, v in model.metrics.items()},
                details=record_details,
                active=activate,
            )
        )
    return get_record(db, ENGAGEMENT_TASK, version)


def load_engagement(record: ModelRecord) -> EngagementBundle:
    """Loads a version after checking its file hash; ModelIntegrityError when it differs."""
    if not record.path.exists():
        raise ModelIntegrityError(f"model {record.task} {record.version}: file is missing")
    if file_sha256(record.path) != record.sha256:
        raise ModelIntegrityError(
            f"model {record.task} {record.version}: file does not match its registry sha256"
        )
    bundle = joblib.load(record.path)
    if not isinstance(bundle, EngagementBundle) or bundle.format != BUNDLE_FORMAT:
        raise ModelIntegrityError(f"model {record.task} {record.version}: not an engagement bundle")
    return bundle


@dataclass(frozen=True)
class TrainedEngagement:
    record: ModelRecord
    bundle: EngagementBundle
    data: EngagementData


def fit_bundle(data: EngagementData, job: EngagementJob) -> EngagementBundle:
    """Trains on ``data`` and pairs the model with its drift reference."""
    model = train_engagement(data.rows, data.labels, data.times, random_state=job.seed, min_rows=job.min_rows)
    return EngagementBundle(model, drift_reference(model, data.rows, data.times))


def job_details(job: EngagementJob, data: EngagementData) -> dict[str, Any]:
    return {
        "label_window_days": job.label_window.total_seconds() / 86_400,
        "snapshot_every_days": job.snapshot_every.total_seconds() / 86_400,
        "observed_until": data.observed_until.isoformat() if data.observed_until else None,
        "rows": int(data.labels.size),
    }


def run_engagement_training(db: Database, models_dir: Path, job: EngagementJob) -> TrainedEngagement:
    """Builds the training set, trains and registers the new active engagement version."""
    data = build_engagement_set(db, job)
    bundle = fit_bundle(data, job)
    record = register_engagement(db, bundle, models_dir, job_details(job, data))
    logger.info("model registered", extra={"task": ENGAGEMENT_TASK, "version": record.version})
    return TrainedEngagement(record, bundle, data)


# --------------------------------------------------------------------------- serving


@dataclass(frozen=True)
class ServedEngagement:
    version: str
    bundle: EngagementBundle

    def predict(self, rows: Sequence[Mapping[str, Any]]) -> FloatArray:
        return self.bundle.model.predict(rows)


@dataclass
class _Slot:
    checked_at: float
    record_id: int | None = None
    served: ServedEngagement | None = None
    error: Exception | None = None


class ServingEngagement:
    """The active engagement version, loaded once and swapped within ``check_interval_seconds``."""

    def __init__(
        self, db: Database, check_interval_seconds: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.db = db
        self.check_interval_seconds = check_interval_seconds
        self._clock = clock
        self._slot: _Slot | None = None
        self._lock = threading.Lock()

    def get(self) -> ServedEngagement:
        """The served model; ModelNotFoundError or ModelIntegrityError when none can be."""
        now = self._clock()
        slot = self._slot
        if slot is None or now - slot.checked_at >= self.check_interval_seconds:
            with self._lock:
                slot = self._slot
                if slot is None or now - slot.checked_at >= self.check_interval_seconds:
                    slot = self._refresh(slot, now)
                    self._slot = slot
        if slot.error is not None:
            raise slot.error
        assert slot.served is not None
        return slot.served

    def _refresh(self, previous: _Slot | None, now: float) -> _Slot:
        record = active_record(self.db, ENGAGEMENT_TASK)
        if record is None:
            return _Slot(now, error=ModelNotFoundError(f"no active model for task {ENGAGEMENT_TASK}"))
        if previous is not None and previous.record_id == record.id and previous.served is not None:
            return _Slot(now, record.id, previous.served)
        try:
            bundle = load_engagement(record)
        except ModelIntegrityError as error:
            logger.error("model rejected", extra={"task": ENGAGEMENT_TASK, "version": record.version})
            return _Slot(now, record.id, error=error)
        logger.info("model loaded", extra={"task": ENGAGEMENT_TASK, "version": record.version})
        return _Slot(now, record.id, ServedEngagement(record.version, bundle))

"""Conversion and churn classifiers trained on point-in-time features.

``train_classifier`` splits the rows by snapshot time into train / validation
/ test windows (oldest to newest), and for every candidate model of the task
and every class-weighting option:

1. searches a small hyperparameter grid by stratified K-fold CV on the
   training window (scored by average precision, which tracks the rare class);
2. fits a :class:`~sklearn.calibration.CalibratedClassifierCV` on the training
   window, so that served scores are probabilities (class weights distort
   them; calibration on unweighted held-out folds puts them back).

The candidate with the best validation-window score is chosen; its decision
threshold is the one that maximizes F1 on the validation window; the test
window — never used for any choice — gives the reported metrics. Every
(candidate, weighting) pair's validation and test metrics are kept too, so the
effect of class weights is measured, not assumed.

The served model is the one trained on the training window only: what is
reported is exactly what is served.
"""

from __future__ import annotations

import enum
import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import ClassifierMixin, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.model_selection import RandomizedSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVC
from threadpoolctl import threadpool_limits

from tacit.learning.features import (
    CATEGORICAL_FEATURES,
    FEATURE_NAMES,
    Event,
    FeatureError,
    FeatureVector,
    build_features,
)

__all__ = [
    "CANDIDATES",
    "Task",
    "TrainedModel",
    "TrainingConfig",
    "TrainingError",
    "churn_label",
    "conversion_label",
    "f1_optimal_threshold",
    "make_training_set",
    "train_classifier",
]

FloatArray = NDArray[np.float64]
FeatureRows = Sequence[Mapping[str, Any] | FeatureVector] | NDArray[Any]


class Task(enum.Enum):
    """What a classifier predicts."""

    CONVERSION = "conversion"
    """Converted within a horizon after the snapshot."""
    CHURN = "churn"
    """No activity at all for N days after the snapshot."""


CANDIDATES: Mapping[Task, tuple[str, ...]] = {
    Task.CONVERSION: ("logistic_regression", "hist_gradient_boosting"),
    Task.CHURN: ("random_forest", "svm"),
}
"""Candidate models tried for each task, by name."""


class TrainingError(ValueError):
    """The data cannot train a trustworthy model (too few rows or positives, bad labels)."""


@dataclass(frozen=True)
class TrainingConfig:
    """Settings of ``train_classifier``; the defaults train in seconds on a few thousand rows."""

    validation_fraction: float = 0.2
    test_fraction: float = 0.2
    min_positives: int = 20
    """Minimum positives (and negatives) in the training window."""
    min_evaluation_positives: int = 5
    """Minimum positives (and negatives) in each of the validation and test windows."""
    cv_folds: int = 3
    search_iterations: int = 4
    """Hyperparameter settings sampled per candidate (capped at the grid size)."""
    class_weights: tuple[str | None, ...] = (None, "balanced")
    """Each candidate is trained with each; ``None`` means no imbalance handling."""
    calibration_method: str = "sigmoid"
    calibration_folds: int = 3
    selection_metric: str = "pr_auc"
    """Validation metric that picks the model: 'pr_auc', 'roc_auc' or 'brier' (lower wins)."""
    candidates: tuple[str, ...] | None = None
    """Override of CANDIDATES[task]."""
    feature_names: tuple[str, ...] = FEATURE_NAMES
    categorical_features: tuple[str, ...] = CATEGORICAL_FEATURES
    random_state: int | None = 0
    threads: int | None = 1
    """OpenMP/BLAS threads while training; a few thousand rows train several times faster
    on one thread than with oversubscribed ones. None keeps the library defaults."""


@dataclass(frozen=True, eq=False)
class TrainedModel:
    """A calibrated classifier with what is needed to register, audit and serve it."""

    task: Task
    estimator: CalibratedClassifierCV
    """Calibrated wrapper around Pipeline(ColumnTransformer, classifier)."""
    candidate: str
    class_weight: str | None
    best_params: Mapping[str, Any]
    threshold: float
    """Decision threshold: the one maximizing F1 on the validation window."""
    metrics: Mapping[str, float]
    feature_names: tuple[str, ...]
    categorical_features: tuple[str, ...]
    training_window: tuple[float, float]
    """First and last snapshot time of the training rows, in POSIX seconds."""
    data_hash: str
    """sha256 of the feature rows, labels and times given to train_classifier."""

    def predict_proba(self, rows: FeatureRows) -> FloatArray:
        """Calibrated probability of the positive class; FeatureError on a missing feature."""
        matrix = _feature_matrix(rows, self.feature_names, self.categorical_features)
        return np.asarray(self.estimator.predict_proba(matrix)[:, 1], dtype=np.float64)

    def predict(self, rows: FeatureRows) -> NDArray[np.bool_]:
        """Positive class decision at the stored threshold."""
        return self.predict_proba(rows) >= self.threshold


# --------------------------------------------------------------------------- labels


def _events_between(events: Iterable[Event], start: datetime, end: datetime) -> list[Event]:
    return [e for e in events if start < e.occurred_at <= end]


def conversion_label(
    events: Iterable[Event], as_of: datetime, horizon: timedelta, observed_until: datetime
) -> bool | None:
    """True if a conversion occurs in (as_of, as_of + horizon]; None while unknown.

    A subject with no conversion yet whose horizon extends past ``observed_until``
    is censored (None), not a negative.
    """
    window = _events_between(events, as_of, as_of + horizon)
    if any(e.event_type == "conversion" and e.occurred_at <= observed_until for e in window):
        return True
    return None if as_of + horizon > observed_until else False


def churn_label(
    events: Iterable[Event], as_of: datetime, inactivity: timedelta, observed_until: datetime
) -> bool | None:
    """True if there is no event at all in (as_of, as_of + inactivity]; None while unknown."""
    if any(e.occurred_at <= observed_until for e in _events_between(events, as_of, as_of + inactivity)):
        return False
    return None if as_of + inactivity > observed_until else True


def make_training_set(
    histories: Mapping[str, Sequence[Event]],
    snapshots: Iterable[tuple[str, datetime]],
    task: Task,
    window: timedelta,
    observed_until: datetime,
) -> tuple[list[FeatureVector], NDArray[np.int64], list[datetime]]:
    """Rows, labels and snapshot times for (subject, as_of) pairs; censored ones are skipped.

    ``window`` is the conversion horizon or the churn inactivity period.
    """
    label_of = conversion_label if task is Task.CONVERSION else churn_label
    rows: list[FeatureVector] = []
    labels: list[int] = []
    times: list[datetime] = []
    for subject, as_of in snapshots:
        events = histories.get(subject, ())
        label = label_of(events, as_of, window, observed_until)
        if label is None:
            continue
        rows.append(build_features(events, as_of))
        labels.append(int(label))
        times.append(as_of)
    return rows, np.asarray(labels, dtype=np.int64), times


# --------------------------------------------------------------------------- inputs


def _feature_matrix(
    rows: FeatureRows, feature_names: Sequence[str], categorical: Sequence[str]
) -> NDArray[Any]:
    """Rows as an object matrix in ``feature_names`` order; FeatureError names what is wrong."""
    if isinstance(rows, np.ndarray):
        if rows.ndim != 2 or rows.shape[1] != len(feature_names):
            raise FeatureError("<matrix>", f"expected {len(feature_names)} columns in feature_names order")
        dicts: Iterable[Mapping[str, Any]] = (dict(zip(feature_names, r, strict=True)) for r in rows)
    else:
        dicts = (r.as_dict() if isinstance(r, FeatureVector) else r for r in rows)
    categorical_set = set(categorical)
    matrix_rows = []
    for row in dicts:
        values: list[Any] = []
        for name in feature_names:
            if name not in row:
                raise FeatureError(name, "missing")
            value = row[name]
            if name in categorical_set:
                if value is None or (isinstance(value, float) and math.isnan(value)):
                    raise FeatureError(name, "missing category")
                values.append(str(value))
            else:
                if isinstance(value, bool) or value is None:
                    number = float(value) if isinstance(value, bool) else math.nan
                else:
                    try:
                        number = float(value)
                    except (TypeError, ValueError):
                        raise FeatureError(name, "not a number") from None
                if not math.isfinite(number):
                    raise FeatureError(name, "missing or not finite")
                values.append(number)
        matrix_rows.append(values)
    if not matrix_rows:
        return np.empty((0, len(feature_names)), dtype=object)
    return np.array(matrix_rows, dtype=object)


def _as_seconds(times: Sequence[datetime] | ArrayLike) -> FloatArray:
    """Snapshot times as POSIX seconds; aware datetimes, datetime64 or numbers."""
    if isinstance(times, np.ndarray) and np.issubdtype(times.dtype, np.datetime64):
        return times.astype("datetime64[ns]").astype(np.int64) / 1e9
    values: list[Any] = list(cast(Iterable[Any], times))
    if values and all(isinstance(v, datetime) for v in values):
        if any(v.tzinfo is None for v in values):
            raise TrainingError("snapshot times must be timezone-aware")
        return np.array([v.timestamp() for v in values], dtype=np.float64)
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise TrainingError("times must be aware datetimes, datetime64 or numbers") from None


def _data_hash(
    matrix: NDArray[Any], labels: NDArray[np.int64], seconds: FloatArray, names: Sequence[str]
) -> str:
    digest = hashlib.sha256()
    digest.update("\x1f".join(names).encode())
    for row in matrix:
        digest.update("\x1f".join(v.hex() if isinstance(v, float) else f"s:{v}" for v in row).encode())
        digest.update(b"\x1e")
    digest.update(np.ascontiguousarray(labels, dtype="<i8").tobytes())
    digest.update(np.ascontiguousarray(seconds, dtype="<f8").tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------- models


def _model_and_grid(
    name: str, class_weight: str | None, seed: int
) -> tuple[ClassifierMixin, dict[str, list[Any]]]:
    if name == "logistic_regression":
        return LogisticRegression(max_iter=2000, class_weight=class_weight), {"C": [0.01, 0.1, 1.0, 10.0]}
    if name == "hist_gradient_boosting":
        return HistGradientBoostingClassifier(
            max_iter=100, early_stopping=False, class_weight=class_weight, random_state=seed
        ), {
            "learning_rate": [0.03, 0.1],
            "max_leaf_nodes": [7, 15],
            "l2_regularization": [0.0, 1.0],
        }
    if name == "random_forest":
        return RandomForestClassifier(n_estimators=60, class_weight=class_weight, random_state=seed), {
            "max_depth": [4, 8, None],
            "min_samples_leaf": [1, 5, 20],
        }
    if name == "svm":
        return SVC(kernel="rbf", class_weight=class_weight, random_state=seed), {
            "C": [0.3, 1.0, 3.0],
            "gamma": ["scale", 0.03],
        }
    raise ValueError(f"unknown candidate {name!r}")


def _pipeline(model: ClassifierMixin, feature_names: Sequence[str], categorical: Sequence[str]) -> Pipeline:
    categorical_index = [i for i, n in enumerate(feature_names) if n in categorical]
    numeric_index = [i for i, n in enumerate(feature_names) if n not in categorical]
    columns = ColumnTransformer(
        [
            ("numeric", StandardScaler(), numeric_index),
            (
                "categorical",
                OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                categorical_index,
            ),
        ]
    )
    return Pipeline([("features", columns), ("model", model)])


def f1_optimal_threshold(labels: ArrayLike, scores: ArrayLike) -> float:
    """The score threshold (predict positive when score >= it) with the highest F1."""
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return float(thresholds[int(np.argmax(f1[:-1]))])


def _metrics(labels: NDArray[np.int64], scores: FloatArray, threshold: float) -> dict[str, float]:
    decided = scores >= threshold
    return {
        "roc_auc": float(roc_auc_score(labels, scores)),
        "pr_auc": float(average_precision_score(labels, scores)),
        "brier": float(brier_score_loss(labels, scores)),
        "precision": float(precision_score(labels, decided, zero_division=0.0)),
        "recall": float(recall_score(labels, decided, zero_division=0.0)),
        "f1": float(f1_score(labels, decided, zero_division=0.0)),
        "positive_rate": float(labels.mean()),
    }


@dataclass
class _Fitted:
    name: str
    class_weight: str | None
    params: dict[str, Any]
    estimator: CalibratedClassifierCV
    threshold: float
    validation: dict[str, float]
    test: dict[str, float] = field(default_factory=dict)


def _check_counts(labels: NDArray[np.int64], window: str, minimum: int) -> None:
    positives = int(labels.sum())
    negatives = int(labels.size - positives)
    if positives < minimum or negatives < minimum:
        raise TrainingError(
            f"too few examples in the {window} window: {positives} positives and "
            f"{negatives} negatives, at least {minimum} of each needed"
        )


def train_classifier(
    task: Task,
    X: FeatureRows,
    y: ArrayLike,
    times: Sequence[datetime] | ArrayLike,
    config: TrainingConfig | None = None,
) -> TrainedModel:
    """Train, select, calibrate and evaluate a classifier on a time-based split."""
    config = config or TrainingConfig()
    if config.selection_metric not in ("pr_auc", "roc_auc", "brier"):
        raise ValueError(f"unknown selection_metric {config.selection_metric!r}")
    matrix = _feature_matrix(X, config.feature_names, config.categorical_features)
    labels_raw = np.asarray(y)
    seconds = _as_seconds(times)
    if not (matrix.shape[0] == labels_raw.shape[0] == seconds.shape[0]):
        raise TrainingError(
            f"X, y and times differ in length: {matrix.shape[0]}, {labels_raw.shape[0]}, {seconds.shape[0]}"
        )
    if not np.isin(labels_raw, (0, 1)).all():
        raise TrainingError("labels must be 0/1 (or booleans)")
    labels = labels_raw.astype(np.int64)
    data_hash = _data_hash(matrix, labels, seconds, config.feature_names)

    # Time split: ties at a boundary go to the later window.
    n = labels.size
    if n == 0:
        raise TrainingError("no training rows")
    ordered = np.sort(seconds)
    validation_start = ordered[min(n - 1, int(n * (1 - config.validation_fraction - config.test_fraction)))]
    test_start = ordered[min(n - 1, int(n * (1 - config.test_fraction)))]
    train = seconds < validation_start
    validation = (seconds >= validation_start) & (seconds < test_start)
    test = seconds >= test_start
    _check_counts(labels[train], "training", config.min_positives)
    _check_counts(labels[validation], "validation", config.min_evaluation_positives)
    _check_counts(labels[test], "test", config.min_evaluation_positives)

    rng = np.random.default_rng(config.random_state)
    names = config.candidates or CANDIDATES[task]
    fitted: list[_Fitted] = []
    with threadpool_limits(limits=config.threads):
        for name in names:
            for class_weight in config.class_weights:
                seed = int(rng.integers(2**31 - 1))
                fitted.append(
                    _fit_candidate(name, class_weight, seed, matrix, labels, train, validation, config)
                )
        for candidate in fitted:
            scores = candidate.estimator.predict_proba(matrix[test])[:, 1]
            candidate.test = _metrics(labels[test], scores, candidate.threshold)

    def selection_key(candidate: _Fitted) -> float:
        value = candidate.validation[config.selection_metric]
        return -value if config.selection_metric == "brier" else value

    chosen = max(fitted, key=selection_key)
    metrics: dict[str, float] = {
        "threshold": chosen.threshold,
        "n_train": float(train.sum()),
        "n_validation": float(validation.sum()),
        "n_test": float(test.sum()),
    }
    metrics.update({f"validation_{k}": v for k, v in chosen.validation.items()})
    metrics.update({f"test_{k}": v for k, v in chosen.test.items()})
    for candidate in fitted:
        prefix = f"candidates.{candidate.name}.{candidate.class_weight or 'unweighted'}"
        metrics.update({f"{prefix}.validation_{k}": v for k, v in candidate.validation.items()})
        metrics.update({f"{prefix}.test_{k}": v for k, v in candidate.test.items()})
    return TrainedModel(
        task=task,
        estimator=chosen.estimator,
        candidate=chosen.name,
        class_weight=chosen.class_weight,
        best_params=chosen.params,
        threshold=chosen.threshold,
        metrics=metrics,
        feature_names=tuple(config.feature_names),
        categorical_features=tuple(config.categorical_features),
        training_window=(float(seconds[train].min()), float(seconds[train].max())),
        data_hash=data_hash,
    )


def _fit_candidate(
    name: str,
    class_weight: str | None,
    seed: int,
    matrix: NDArray[Any],
    labels: NDArray[np.int64],
    train: NDArray[np.bool_],
    validation: NDArray[np.bool_],
    config: TrainingConfig,
) -> _Fitted:
    model, grid = _model_and_grid(name, class_weight, seed)
    pipeline = _pipeline(model, config.feature_names, config.categorical_features)
    distributions = {f"model__{k}": v for k, v in grid.items()}
    grid_size = math.prod(len(v) for v in grid.values())
    folds = StratifiedKFold(n_splits=config.cv_folds, shuffle=True, random_state=seed)
    search = RandomizedSearchCV(
        pipeline,
        distributions,
        n_iter=min(config.search_iterations, grid_size),  # all-list grids: no repeats
        scoring="average_precision",
        cv=folds,
        refit=False,
        random_state=seed,
    )
    search.fit(matrix[train], labels[train])
    params: dict[str, Any] = dict(search.best_params_)
    calibrated = CalibratedClassifierCV(
        clone(pipeline).set_params(**params),
        method=config.calibration_method,
        cv=StratifiedKFold(n_splits=config.calibration_folds, shuffle=True, random_state=seed),
    ).fit(matrix[train], labels[train])
    scores = calibrated.predict_proba(matrix[validation])[:, 1]
    threshold = f1_optimal_threshold(labels[validation], scores)
    return _Fitted(
        name=name,
        class_weight=class_weight,
        params={k.removeprefix("model__"): v for k, v in params.items()},
        estimator=calibrated,
        threshold=threshold,
        validation=_metrics(labels[validation], scores, threshold),
    )

"""Conversion and churn classifiers trained on point-in-time features.

``train_classifier`` splits the rows by snapshot time into train / validation
/ test windows (oldest to newest), and for every candidate model of the task
and every imbalance option (none, class weights, and — for rare labels or on
request — SMOTE):

1. searches a small hyperparameter grid on the training window with
   time-ordered, expanding-window CV (each fold validates on snapshots later
   than all of its training rows), scored by average precision, which tracks
   the rare class; the search is randomized (scikit-learn) or Bayesian (Optuna's
   TPE), with the same trial budget and the same folds;
2. fits a :class:`~sklearn.calibration.CalibratedClassifierCV` on the training
   window, so that served scores are probabilities (class weights and SMOTE
   distort them; calibration on untouched held-out folds puts them back).

SMOTE is a step of an imbalanced-learn pipeline, so it only ever resamples the
training part of a fold: validation folds, the calibration folds' held-out
parts, the validation and test windows and served rows are never resampled.

The candidate with the best validation-window score is chosen; its decision
threshold is the one that maximizes F1 on the validation window; the test
window — never used for any choice — gives the reported metrics. Every
(candidate, imbalance option) pair's CV, validation and test metrics are kept
too, so the effect of class weights and SMOTE is measured, not assumed.

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
from imblearn.over_sampling import SMOTE
from imblearn.pipeline import Pipeline as SamplingPipeline
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
from sklearn.model_selection import RandomizedSearchCV, StratifiedKFold, cross_val_score
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
    "IMBALANCE_SMOTE",
    "SEARCH_STRATEGIES",
    "Task",
    "TrainedModel",
    "TrainingConfig",
    "TrainingError",
    "churn_label",
    "conversion_label",
    "f1_optimal_threshold",
    "make_pipeline",
    "make_training_set",
    "search_hyperparameters",
    "time_series_folds",
    "time_split",
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


SEARCH_STRATEGIES = ("randomized", "optuna")
"""Hyperparameter search: scikit-learn's RandomizedSearchCV, or Optuna's TPE sampler."""
IMBALANCE_SMOTE = "smote"
"""The imbalance option (beside the class weights) that oversamples positives with SMOTE."""


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
    """Time-ordered CV folds of the hyperparameter search (expanding window)."""
    search_iterations: int = 4
    """Hyperparameter settings tried per candidate (capped at the grid size): the trial budget of
    either search strategy."""
    search: str = "randomized"
    """'randomized' (scikit-learn) or 'optuna' (TPE); both score the same time-ordered folds."""
    class_weights: tuple[str | None, ...] = (None, "balanced")
    """Each candidate is trained with each; ``None`` means no imbalance handling."""
    smote: str = "auto"
    """'never', 'always', or 'auto' (when the training window's positive rate is below
    ``rare_label_rate``): each candidate is also trained with SMOTE inside its pipeline."""
    rare_label_rate: float = 0.1
    smote_neighbors: int = 5
    """SMOTE's k; lowered when a training fold holds fewer positives than k + 1."""
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
    imbalance: str = "none"
    """How the chosen model handled imbalance: 'none', 'class_weight' or 'smote'."""
    search: str = "randomized"
    """The hyperparameter search strategy that chose ``best_params``."""

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


def make_pipeline(
    model: ClassifierMixin,
    feature_names: Sequence[str],
    categorical: Sequence[str],
    smote: SMOTE | None = None,
) -> Pipeline:
    """Columns (scaled numbers, one-hot categories) → [SMOTE] → model.

    With SMOTE the pipeline is imbalanced-learn's: the sampler runs in ``fit`` only, so
    whatever the pipeline scores or serves is never resampled.
    """
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
    if smote is None:
        return Pipeline([("features", columns), ("model", model)])
    return SamplingPipeline([("features", columns), ("smote", smote), ("model", model)])


def time_split(
    seconds: FloatArray, validation_fraction: float, test_fraction: float
) -> tuple[NDArray[np.bool_], NDArray[np.bool_], NDArray[np.bool_]]:
    """Train / validation / test masks, oldest to newest; ties at a boundary go to the later window."""
    n = seconds.size
    ordered = np.sort(seconds)
    validation_start = ordered[min(n - 1, int(n * (1 - validation_fraction - test_fraction)))]
    test_start = ordered[min(n - 1, int(n * (1 - test_fraction)))]
    train = seconds < validation_start
    validation = (seconds >= validation_start) & (seconds < test_start)
    return train, validation, seconds >= test_start


def time_series_folds(seconds: ArrayLike, n_splits: int) -> list[tuple[NDArray[np.intp], NDArray[np.intp]]]:
    """Expanding-window CV folds in time order, on snapshot times.

    The older half of the rows is always trained on; the newer half is cut into ``n_splits``
    time blocks, and fold k trains on everything before block k and validates on it. A fold
    never trains on a snapshot later than one it validates on (ties at a boundary go to the
    later block), and every fold trains on at least half of the rows, so a rare label's
    scores are not decided by a small first fold. Folds left empty by ties are skipped.
    """
    values = np.asarray(seconds, dtype=np.float64)
    n = values.size
    ordered = np.sort(values)
    bounds = [ordered[min(n - 1, int(n * (0.5 + 0.5 * k / n_splits)))] for k in range(n_splits)]
    bounds.append(math.inf)
    folds = []
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        train = np.flatnonzero(values < start)
        validation = np.flatnonzero((values >= start) & (values < end))
        if train.size and validation.size:
            folds.append((train, validation))
    if not folds:
        raise TrainingError("the training window's snapshot times are too few to cross-validate")
    return folds


def _optuna() -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def search_hyperparameters(
    pipeline: Pipeline,
    grid: Mapping[str, Sequence[Any]],
    matrix: NDArray[Any],
    labels: NDArray[np.int64],
    folds: Sequence[tuple[NDArray[np.intp], NDArray[np.intp]]],
    strategy: str,
    budget: int,
    seed: int,
) -> tuple[dict[str, Any], float]:
    """The best setting of ``grid`` (pipeline parameter names) and its mean CV average precision.

    Both strategies try ``budget`` settings (capped at the grid size) on the same ``folds``.
    Optuna's TPE starts from ``budget // 2`` random trials (at least 2), then samples where the
    earlier trials scored well.
    """
    distributions = {f"model__{k}": list(v) for k, v in grid.items()}
    budget = max(1, min(budget, math.prod(len(v) for v in grid.values())))  # all-list grids: no repeats
    if strategy == "randomized":
        search = RandomizedSearchCV(
            pipeline, distributions, n_iter=budget, scoring="average_precision", cv=list(folds),
            refit=False, random_state=seed,
        )  # fmt: skip
        search.fit(matrix, labels)
        return dict(search.best_params_), float(search.best_score_)
    if strategy != "optuna":
        raise ValueError(f"unknown search strategy {strategy!r}; known: {list(SEARCH_STRATEGIES)}")
    optuna = _optuna()
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, budget // 2))
    study = optuna.create_study(direction="maximize", sampler=sampler)

    def objective(trial: Any) -> float:
        params = {name: trial.suggest_categorical(name, values) for name, values in distributions.items()}
        scores = cross_val_score(
            clone(pipeline).set_params(**params), matrix, labels, scoring="average_precision",
            cv=list(folds),
        )  # fmt: skip
        return float(np.mean(scores))

    study.optimize(objective, n_trials=budget)
    return dict(study.best_params), float(study.best_value)


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
    smote: bool
    params: dict[str, Any]
    cv_score: float
    estimator: CalibratedClassifierCV
    threshold: float
    validation: dict[str, float]
    test: dict[str, float] = field(default_factory=dict)

    @property
    def imbalance_label(self) -> str:
        """The name of its imbalance option in metric keys and reports."""
        return IMBALANCE_SMOTE if self.smote else (self.class_weight or "unweighted")


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
    if config.search not in SEARCH_STRATEGIES:
        raise ValueError(f"unknown search {config.search!r}; known: {list(SEARCH_STRATEGIES)}")
    if config.smote not in ("never", "auto", "always"):
        raise ValueError(f"unknown smote {config.smote!r}; known: never, auto, always")
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

    n = labels.size
    if n == 0:
        raise TrainingError("no training rows")
    train, validation, test = time_split(seconds, config.validation_fraction, config.test_fraction)
    _check_counts(labels[train], "training", config.min_positives)
    _check_counts(labels[validation], "validation", config.min_evaluation_positives)
    _check_counts(labels[test], "test", config.min_evaluation_positives)
    folds = time_series_folds(seconds[train], config.cv_folds)
    use_smote = config.smote == "always" or (
        config.smote == "auto" and float(labels[train].mean()) < config.rare_label_rate
    )
    options: list[tuple[str | None, bool]] = [(weight, False) for weight in config.class_weights]
    if use_smote:
        options.append((None, True))

    rng = np.random.default_rng(config.random_state)
    names = config.candidates or CANDIDATES[task]
    fitted: list[_Fitted] = []
    with threadpool_limits(limits=config.threads):
        for name in names:
            for class_weight, smote in options:
                seed = int(rng.integers(2**31 - 1))
                fitted.append(
                    _fit_candidate(
                        name, class_weight, smote, seed, matrix, labels, train, validation, folds, config
                    )
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
        "cv_pr_auc": chosen.cv_score,
    }
    metrics.update({f"validation_{k}": v for k, v in chosen.validation.items()})
    metrics.update({f"test_{k}": v for k, v in chosen.test.items()})
    for candidate in fitted:
        prefix = f"candidates.{candidate.name}.{candidate.imbalance_label}"
        metrics[f"{prefix}.cv_pr_auc"] = candidate.cv_score
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
        imbalance="smote" if chosen.smote else ("class_weight" if chosen.class_weight else "none"),
        search=config.search,
    )


def _smote_neighbors(
    labels: NDArray[np.int64], folds: Sequence[tuple[Any, Any]], config: TrainingConfig
) -> int:
    """SMOTE's k: at most one less than the positives of the smallest set it will resample."""
    fewest = min(int(labels[train].sum()) for train, _ in folds)
    # Calibration trains on (folds - 1) / folds of the window: never fewer than the first CV fold.
    return max(1, min(config.smote_neighbors, fewest - 1))


def _fit_candidate(
    name: str,
    class_weight: str | None,
    smote: bool,
    seed: int,
    matrix: NDArray[Any],
    labels: NDArray[np.int64],
    train: NDArray[np.bool_],
    validation: NDArray[np.bool_],
    folds: Sequence[tuple[NDArray[np.intp], NDArray[np.intp]]],
    config: TrainingConfig,
) -> _Fitted:
    model, grid = _model_and_grid(name, class_weight, seed)
    sampler = None
    if smote:
        sampler = SMOTE(k_neighbors=_smote_neighbors(labels[train], folds, config), random_state=seed)
    pipeline = make_pipeline(model, config.feature_names, config.categorical_features, sampler)
    params, cv_score = search_hyperparameters(
        pipeline, grid, matrix[train], labels[train], folds, config.search, config.search_iterations, seed
    )
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
        smote=smote,
        params={k.removeprefix("model__"): v for k, v in params.items()},
        cv_score=cv_score,
        estimator=calibrated,
        threshold=threshold,
        validation=_metrics(labels[validation], scores, threshold),
    )

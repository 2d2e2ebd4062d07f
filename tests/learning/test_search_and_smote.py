"""SMOTE resamples only inside a fold's training part; both searches score the same time-ordered
folds; the training report shows none / class weights / SMOTE side by side for a rare label."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from imblearn.over_sampling import SMOTE
from rich.console import Console
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.preprocessing import StandardScaler

from tacit.cli.models import metrics_table
from tacit.learning.classifiers import (
    Task,
    TrainingConfig,
    make_pipeline,
    search_hyperparameters,
    time_series_folds,
    train_classifier,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sim_behaviour import simulate_population  # noqa: E402


class RecordingClassifier(ClassifierMixin, BaseEstimator):
    """A plain scikit-learn classifier that writes down every matrix it is fitted on or scores."""

    calls: ClassVar[list[tuple[str, np.ndarray, np.ndarray | None]]] = []

    def __init__(self, C: float = 1.0) -> None:  # noqa: N803 - scikit-learn's name
        self.C = C

    def fit(self, X: np.ndarray, y: np.ndarray) -> RecordingClassifier:  # noqa: N803
        RecordingClassifier.calls.append(("fit", np.array(X, dtype=float), np.array(y)))
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        RecordingClassifier.calls.append(("predict", np.array(X, dtype=float), None))
        p = 1.0 / (1.0 + np.exp(-self.C * np.asarray(X, dtype=float)[:, 0]))
        return np.column_stack([1.0 - p, p])


def _rare_data(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    seconds = np.sort(rng.uniform(0, 1e6, n))
    labels = (rng.random(n) < 0.1).astype(np.int64)
    labels[::40] = 1  # every fold's training part has positives for SMOTE's neighbours
    matrix = np.column_stack([rng.normal(labels * 1.5, 1.0), rng.normal(0.0, 1.0, n)]).astype(object)
    return matrix, labels, seconds


@pytest.mark.parametrize("strategy", ["randomized", "optuna"])
def test_smote_oversamples_only_the_training_part_of_each_time_ordered_fold(strategy: str) -> None:
    matrix, labels, seconds = _rare_data()
    folds = time_series_folds(seconds, 3)
    for train, validation in folds:  # expanding window: never train on a later snapshot
        assert seconds[train].max() < seconds[validation].min()
    pipeline = make_pipeline(RecordingClassifier(), ("a", "b"), (), SMOTE(k_neighbors=3, random_state=0))
    RecordingClassifier.calls.clear()
    params, score = search_hyperparameters(
        pipeline, {"C": [0.5, 1.0, 2.0]}, matrix, labels, folds, strategy, budget=2, seed=1
    )
    assert params["model__C"] in (0.5, 1.0, 2.0) and 0.0 <= score <= 1.0
    calls = RecordingClassifier.calls
    assert len(calls) == 2 * len(folds) * 2  # 2 trials × every fold × (fit, then score)
    for trial in range(2):
        for index, (train, validation) in enumerate(folds):
            (fit_kind, fitted, fitted_y), (score_kind, scored, _) = calls[2 * (trial * len(folds) + index) :][
                :2
            ]
            assert (fit_kind, score_kind) == ("fit", "predict")
            scaler = StandardScaler().fit(matrix[train].astype(float))
            originals = scaler.transform(matrix[train].astype(float))
            held_out = scaler.transform(matrix[validation].astype(float))
            # Fitted on the fold's training rows plus synthetic positives up to balance ...
            positives = int(labels[train].sum())
            negatives = train.size - positives
            assert fitted.shape[0] == 2 * negatives and int(fitted_y.sum()) == negatives
            np.testing.assert_allclose(fitted[: train.size], originals)
            synthetic = fitted[train.size :]
            assert synthetic.shape[0] == negatives - positives > 0
            # ... and scored on the validation rows exactly, none added, none synthetic.
            np.testing.assert_allclose(scored, held_out)
            distances = np.abs(synthetic[:, None, :] - held_out[None, :, :]).sum(axis=2)
            assert distances.min() > 1e-9
            # Every synthetic row lies between training positives (never a validation row's blend).
            train_positives = originals[labels[train] == 1]
            low, high = train_positives.min(axis=0), train_positives.max(axis=0)
            assert ((synthetic >= low - 1e-9) & (synthetic <= high + 1e-9)).all()


def test_rare_churn_report_shows_none_class_weights_and_smote_side_by_side() -> None:
    population = simulate_population(3000, seed=5, churn_intercept=-4.6)
    labels = population.labels("churn", seed=6)
    assert 0.02 < labels.mean() < 0.07
    config = TrainingConfig(candidates=("random_forest",), search_iterations=1)  # smote = "auto"
    model = train_classifier(Task.CHURN, population.rows, labels, population.times, config)
    for option in ("unweighted", "balanced", "smote"):
        for metric in ("cv_pr_auc", "test_roc_auc", "test_pr_auc", "test_brier"):
            value = model.metrics[f"candidates.random_forest.{option}.{metric}"]
            assert 0.0 <= value <= 1.0, (option, metric)
    assert model.imbalance in ("none", "class_weight", "smote")
    out = io.StringIO()
    Console(file=out, width=200).print(metrics_table("churn", "v000001", dict(model.metrics)))
    report = out.getvalue()
    for label in ("none (unweighted)", "class weights (balanced)", "SMOTE"):
        assert label in report
    # SMOTE's served probabilities are calibrated like the others' (no resampled base rate).
    test = np.arange(labels.size) >= labels.size - int(model.metrics["n_test"])
    smote_brier = model.metrics["candidates.random_forest.smote.test_brier"]
    assert smote_brier <= float(labels[test].mean()) * (1 - float(labels[test].mean())) + 0.01


def test_a_common_label_gets_no_smote_under_auto() -> None:
    population = simulate_population(1200, seed=8, churn_intercept=-1.0)
    labels = population.labels("churn", seed=9)
    assert labels.mean() > 0.2
    config = TrainingConfig(candidates=("random_forest",), search_iterations=1, search="optuna")
    model = train_classifier(Task.CHURN, population.rows, labels, population.times, config)
    assert not any(".smote." in k for k in model.metrics)
    assert model.search == "optuna" and model.imbalance in ("none", "class_weight")


def test_unknown_search_or_smote_setting_is_refused() -> None:
    population = simulate_population(300, seed=1)
    labels = population.labels("churn", seed=2)
    rows: Any = population.rows
    with pytest.raises(ValueError, match="unknown search"):
        train_classifier(Task.CHURN, rows, labels, population.times, TrainingConfig(search="grid"))
    with pytest.raises(ValueError, match="unknown smote"):
        train_classifier(Task.CHURN, rows, labels, population.times, TrainingConfig(smote="sometimes"))

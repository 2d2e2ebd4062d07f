"""The compiled serving form of a classifier scores like the scikit-learn pipeline it was read from.

Every candidate model is trained on simulated snapshots; on the held-out test
window (the rows the registered ROC AUC and Brier figures come from) the
compiled scores must equal the pipeline's to rounding, so the registered
figures hold for what is served.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, roc_auc_score

from tacit.learning.classifiers import Task, TrainedModel, TrainingConfig, train_classifier
from tacit.learning.compiled import CompiledClassifier, compile_classifier
from tacit.learning.drift import DriftMonitor
from tacit.learning.features import FeatureError
from tacit.learning.registry_models import (
    ClassifierBundle,
    ServedModel,
    ServingClassifiers,
    register_classifier,
)
from tacit.store.db import Database

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sim_behaviour import Population, simulate_population  # noqa: E402

N_SUBJECTS = 2500
Trained = tuple[TrainedModel, Population, np.ndarray]

CANDIDATES = [
    ("logistic_regression", Task.CONVERSION, None),
    ("hist_gradient_boosting", Task.CONVERSION, "balanced"),
    ("random_forest", Task.CHURN, None),
    ("svm", Task.CHURN, "balanced"),
]


@pytest.fixture(scope="module", params=CANDIDATES, ids=[c[0] for c in CANDIDATES])
def trained(request: pytest.FixtureRequest) -> Trained:
    name, task, class_weight = request.param
    population = simulate_population(N_SUBJECTS, seed=11)
    labels = population.labels(task.value, seed=12)
    config = TrainingConfig(candidates=(name,), class_weights=(class_weight,))
    return train_classifier(task, population.rows, labels, population.times, config), population, labels


def _compiled(model: TrainedModel) -> CompiledClassifier:
    compiled = compile_classifier(model)
    assert compiled is not None, f"{model.candidate} did not compile"
    return compiled


def test_compiled_scores_equal_the_pipeline_on_the_test_window(trained: Trained) -> None:
    model, population, labels = trained
    n_test = int(model.metrics["n_test"])
    rows, truth = population.rows[-n_test:], labels[-n_test:]  # snapshots are sorted by time
    reference = model.predict_proba(rows)
    fast = _compiled(model).predict_proba(rows)
    # The reference path reproduces the registered figures: these are the right rows.
    assert roc_auc_score(truth, reference) == pytest.approx(model.metrics["test_roc_auc"], abs=1e-12)
    assert brier_score_loss(truth, reference) == pytest.approx(model.metrics["test_brier"], abs=1e-12)
    difference = float(np.abs(reference - fast).max())
    auc, brier = roc_auc_score(truth, fast), brier_score_loss(truth, fast)
    print(
        f"\n{model.candidate}: {n_test} test rows; ROC AUC pipeline {model.metrics['test_roc_auc']:.6f} "
        f"compiled {auc:.6f}; Brier pipeline {model.metrics['test_brier']:.6f} compiled {brier:.6f}; "
        f"largest score difference {difference:.1e}"
    )
    assert difference < 1e-9
    assert abs(auc - model.metrics["test_roc_auc"]) <= 0.005
    assert abs(brier - model.metrics["test_brier"]) <= 0.005


def test_compiled_scores_one_row_like_a_batch_and_takes_every_row_shape(trained: Trained) -> None:
    model, population, _ = trained
    compiled = _compiled(model)
    rows = population.rows[:20]
    batch = compiled.predict_proba(rows)
    one_at_a_time = np.array([compiled.predict_proba([row])[0] for row in rows])
    np.testing.assert_allclose(one_at_a_time, batch, rtol=0, atol=1e-12)
    matrix = np.array([[row[n] for n in model.feature_names] for row in rows], dtype=object)
    np.testing.assert_allclose(compiled.predict_proba(matrix), batch, rtol=0, atol=1e-12)


def test_unseen_category_scores_like_the_pipeline(trained: Trained) -> None:
    model, population, _ = trained
    rows = [
        {**row, "device": "smart-fridge", "referral_source": "carrier-pigeon"} for row in population.rows[:5]
    ]
    np.testing.assert_allclose(
        _compiled(model).predict_proba(rows), model.predict_proba(rows), rtol=0, atol=1e-9
    )


@pytest.mark.parametrize(
    ("change", "feature"),
    [
        ({"visits_7d": None}, "visits_7d"),
        ({"dwell_mean": float("inf")}, "dwell_mean"),
        ({"recency_days": "soon"}, "recency_days"),
        ({"device": None}, "device"),
    ],
)
def test_bad_feature_is_named_like_the_pipeline_names_it(
    trained: Trained, change: dict[str, object], feature: str
) -> None:
    model, population, _ = trained
    row = {**population.rows[0], **change}
    with pytest.raises(FeatureError) as fast_error:
        _compiled(model).predict_proba([row])
    with pytest.raises(FeatureError) as reference_error:
        model.predict_proba([row])
    assert fast_error.value.feature == reference_error.value.feature == feature


def test_missing_feature_is_named(trained: Trained) -> None:
    model, population, _ = trained
    row = {k: v for k, v in population.rows[0].items() if k != "clicks_30d"}
    with pytest.raises(FeatureError) as error:
        _compiled(model).predict_proba([row])
    assert error.value.feature == "clicks_30d"


def test_a_model_it_does_not_know_keeps_the_pipeline() -> None:
    population = simulate_population(1500, seed=13)
    labels = population.labels("conversion", seed=14)
    config = TrainingConfig(
        candidates=("logistic_regression",), class_weights=(None,), calibration_method="isotonic"
    )
    model = train_classifier(Task.CONVERSION, population.rows, labels, population.times, config)
    assert compile_classifier(model) is None
    served = ServedModel.load("v1", ClassifierBundle(model, DriftMonitor()))
    assert served.compiled is None
    rows = population.rows[:30]
    np.testing.assert_array_equal(served.predict_proba(rows), model.predict_proba(rows))


def test_the_registry_serves_the_compiled_form(database_url: str, tmp_path: Path) -> None:
    population = simulate_population(1500, seed=15)
    labels = population.labels("conversion", seed=16)
    config = TrainingConfig(candidates=("hist_gradient_boosting",), class_weights=(None,))
    model = train_classifier(Task.CONVERSION, population.rows, labels, population.times, config)
    db = Database.open(database_url)
    try:
        monitor = DriftMonitor().fit(population.rows[:200])
        record = register_classifier(db, ClassifierBundle(model, monitor), tmp_path / "models")
        served = ServingClassifiers(db).get("conversion")
        assert served.version == record.version
        assert served.compiled is not None
        rows = population.rows[-300:]
        np.testing.assert_allclose(served.predict_proba(rows), model.predict_proba(rows), rtol=0, atol=1e-9)
    finally:
        db.dispose()

"""MLflow: every training run logged to a tracking store; registered classifiers exported and imported.

Tacit's own registry stays the source of truth for serving: nothing here is read on a
request path, and Tacit trains, registers and serves without MLflow installed. MLflow
is the optional extra ``tacit[mlflow]``, imported only when a tracking URI is configured
or an export or import is asked for; a configured URI without MLflow installed is a
clear :class:`MlflowUnavailableError` before any training starts.

A logged run holds the training parameters, the CV, validation and test (holdout) metrics
of the chosen model and of every candidate, the data window and the sha256 of the training
data, a calibration plot of the test window, and the served estimator in MLflow's sklearn
flavour with its signature (one column per feature, in the model's order; the output is
``predict_proba``'s two columns). An exported model directory is the same sklearn flavour
plus the Tacit metadata (``metadata.tacit`` in ``MLmodel``: task, threshold, features,
windows, metrics) and the drift reference (``tacit_drift_reference.json``), which is what
an import needs to register it as a new version.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tacit.learning.classifiers import Task, TrainedModel, _feature_matrix
from tacit.learning.drift import DriftMonitor
from tacit.learning.features import FeatureVector, default_features
from tacit.learning.registry_models import ClassifierBundle, ModelRecord, register_classifier
from tacit.store.db import Database

__all__ = [
    "DRIFT_FILE",
    "MlflowImportError",
    "MlflowUnavailableError",
    "export_model",
    "import_model",
    "log_training_run",
    "require_mlflow",
]

logger = logging.getLogger("tacit.learning")

DRIFT_FILE = "tacit_drift_reference.json"
METADATA_KEY = "tacit"
METADATA_FORMAT = 1
_REQUIREMENTS = ("scikit-learn", "imbalanced-learn", "skops", "numpy", "scipy")


class MlflowUnavailableError(RuntimeError):
    """MLflow is configured or asked for but not installed."""


class MlflowImportError(ValueError):
    """An MLflow model directory cannot become a Tacit model version; the message says why."""


def require_mlflow(setting: str = "training.mlflow_tracking_uri") -> Any:
    """The ``mlflow`` module (with its sklearn flavour), or a clear error naming what needs it."""
    try:
        import mlflow
        import mlflow.sklearn  # noqa: F401 - the flavour is a submodule
    except ImportError:
        raise MlflowUnavailableError(
            f"{setting} needs MLflow, which is not installed: pip install 'tacit[mlflow]'"
        ) from None
    return mlflow


# --------------------------------------------------------------------------- drift reference


def drift_to_json(monitor: DriftMonitor) -> dict[str, Any]:
    """A fitted DriftMonitor as plain JSON (category columns as counts: PSI only needs shares)."""
    columns = {
        name: {category: values.count(category) for category in sorted(set(values))}
        for name, values in monitor.reference_columns_.items()
    }
    return {
        "threshold": monitor.threshold,
        "bins": monitor.bins,
        "epsilon": monitor.epsilon,
        "reward_alpha": monitor.reward_alpha,
        "features": list(monitor.feature_names_in_),
        "categorical_features": list(monitor.categorical_features),
        "edges": {k: v.tolist() for k, v in monitor.edges_.items()},
        "reference_shares": {k: v.tolist() for k, v in monitor.reference_shares_.items()},
        "category_counts": columns,
        "score_edges": None if monitor.score_edges_ is None else monitor.score_edges_.tolist(),
        "score_shares": None if monitor.score_shares_ is None else monitor.score_shares_.tolist(),
        "reward": list(monitor.reward_) if monitor.reward_ is not None else None,
        "n_reference": monitor.n_reference_,
    }


def drift_from_json(data: Mapping[str, Any]) -> DriftMonitor:
    """The DriftMonitor ``drift_to_json`` wrote, ready to ``report``."""
    monitor = DriftMonitor(
        threshold=float(data["threshold"]),
        bins=int(data["bins"]),
        epsilon=float(data["epsilon"]),
        reward_alpha=float(data["reward_alpha"]),
        features=tuple(data["features"]),
        categorical_features=tuple(data["categorical_features"]),
    )
    monitor.feature_names_in_ = tuple(data["features"])
    monitor.edges_ = {k: np.asarray(v, dtype=np.float64) for k, v in data["edges"].items()}
    monitor.reference_shares_ = {
        k: np.asarray(v, dtype=np.float64) for k, v in data["reference_shares"].items()
    }
    monitor.categories_ = {}
    monitor.reference_columns_ = {
        name: [category for category, count in counts.items() for _ in range(int(count))]
        for name, counts in data["category_counts"].items()
    }
    score_edges, score_shares = data.get("score_edges"), data.get("score_shares")
    monitor.score_edges_ = None if score_edges is None else np.asarray(score_edges, dtype=np.float64)
    monitor.score_shares_ = None if score_shares is None else np.asarray(score_shares, dtype=np.float64)
    reward = data.get("reward")
    monitor.reward_ = (int(reward[0]), int(reward[1])) if reward else None
    monitor.n_reference_ = int(data["n_reference"])
    return monitor


# --------------------------------------------------------------------------- the sklearn flavour


def _frame(model: TrainedModel, rows: Sequence[Mapping[str, Any] | FeatureVector]) -> Any:
    """Rows as the DataFrame the signature describes: one column per feature, in model order."""
    import pandas as pd

    matrix = _feature_matrix(rows, model.feature_names, model.categorical_features)
    frame = pd.DataFrame(matrix, columns=list(model.feature_names))
    for name in model.feature_names:
        frame[name] = frame[name].astype(str if name in model.categorical_features else "float64")
    return frame


def _requirements() -> list[str]:
    pinned = []
    for name in _REQUIREMENTS:
        try:
            pinned.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            continue
    return pinned


def _metadata(model: TrainedModel, record: ModelRecord) -> dict[str, Any]:
    details = record.details
    return {
        "format": METADATA_FORMAT,
        "task": model.task.value,
        "version": record.version,
        "candidate": model.candidate,
        "class_weight": model.class_weight or "none",
        "imbalance": getattr(model, "imbalance", "none"),
        "search": getattr(model, "search", "randomized"),
        "best_params": {
            k: v if isinstance(v, int | float | str) else str(v) for k, v in model.best_params.items()
        },
        "threshold": float(model.threshold),
        "feature_names": list(model.feature_names),
        "categorical_features": list(model.categorical_features),
        "training_window": [float(model.training_window[0]), float(model.training_window[1])],
        "data_hash": model.data_hash,
        "metrics": {k: float(v) for k, v in model.metrics.items()},
        "details": {
            k: details[k]
            for k in ("label_window_days", "snapshot_every_days", "observed_until", "rows", "positives")
            if k in details
        },
    }


def _save_arguments(bundle: ClassifierBundle, record: ModelRecord, work: Path) -> dict[str, Any]:
    """What save_model and log_model share: signature, metadata, requirements, safe format."""
    import skops.io
    from mlflow.models import infer_signature

    model = bundle.model
    example = [default_features(datetime.fromtimestamp(model.training_window[1], UTC))]
    frame = _frame(model, example)
    drift_path = work / DRIFT_FILE
    drift_path.write_text(json.dumps(drift_to_json(bundle.drift_reference)))
    return {
        "signature": infer_signature(frame, model.estimator.predict_proba(frame)),
        "metadata": {METADATA_KEY: _metadata(model, record)},
        "pip_requirements": _requirements(),  # pinned here: MLflow's inference imports in a subprocess
        "pyfunc_predict_fn": "predict_proba",
        "serialization_format": "skops",
        "skops_trusted_types": skops.io.get_untrusted_types(data=skops.io.dumps(model.estimator)),
        "extra_files": [str(drift_path)],
    }


def export_model(bundle: ClassifierBundle, record: ModelRecord, directory: Path) -> Path:
    """Writes a registered version as an MLflow model directory (which must not exist yet)."""
    mlflow = require_mlflow("tacit model export-mlflow")
    if directory.exists():
        raise FileExistsError(f"{directory} exists; MLflow writes a new directory")
    with tempfile.TemporaryDirectory() as work:
        arguments = _save_arguments(bundle, record, Path(work))
        mlflow.sklearn.save_model(bundle.model.estimator, str(directory), **arguments)
    return directory


def import_model(db: Database, models_dir: Path, directory: Path) -> ModelRecord:
    """Registers the model in an MLflow directory written by ``export_model`` as its task's new
    active version.

    Loading a model runs code from its file, so MLflow refuses unless
    ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION`` is true: import only directories you trust.
    """
    mlflow = require_mlflow("tacit model import-mlflow")
    from mlflow.models import Model

    try:
        spec = Model.load(str(directory))
    except Exception:  # noqa: BLE001 - MLflow raises several kinds for a missing or bad MLmodel
        raise MlflowImportError(f"{directory} is not an MLflow model directory (no MLmodel)") from None
    meta = (spec.metadata or {}).get(METADATA_KEY)
    if not isinstance(meta, dict) or meta.get("format") != METADATA_FORMAT:
        raise MlflowImportError(
            "the MLflow model carries no Tacit metadata (metadata.tacit): only models exported by "
            "`tacit model export-mlflow` or logged by a Tacit training run can be imported"
        )
    if "sklearn" not in spec.flavors:
        raise MlflowImportError("the MLflow model has no sklearn flavour")
    drift_path = _find_drift_file(directory)
    estimator = mlflow.sklearn.load_model(str(directory))
    if not hasattr(estimator, "predict_proba"):
        raise MlflowImportError("the model has no predict_proba")
    try:
        task = Task(meta["task"])
    except ValueError:
        raise MlflowImportError("metadata.tacit.task is not conversion or churn") from None
    start, end = meta["training_window"]
    model = TrainedModel(
        task=task,
        estimator=estimator,
        candidate=str(meta["candidate"]),
        class_weight=None if meta["class_weight"] == "none" else str(meta["class_weight"]),
        best_params=dict(meta["best_params"]),
        threshold=float(meta["threshold"]),
        metrics={k: float(v) for k, v in meta["metrics"].items()},
        feature_names=tuple(meta["feature_names"]),
        categorical_features=tuple(meta["categorical_features"]),
        training_window=(float(start), float(end)),
        data_hash=str(meta["data_hash"]),
        imbalance=str(meta.get("imbalance", "none")),
        search=str(meta.get("search", "randomized")),
    )
    check = model.predict_proba([default_features(datetime.fromtimestamp(end, UTC))])
    if check.shape != (1,) or not 0.0 <= float(check[0]) <= 1.0:
        raise MlflowImportError("the model does not score a default profile as a probability")
    monitor = drift_from_json(json.loads(drift_path.read_text()))
    details = {
        **dict(meta.get("details", {})),
        "imbalance": model.imbalance,
        "search": model.search,
        "imported_from": {"format": "mlflow", "task": task.value, "version": str(meta["version"])},
    }
    record = register_classifier(db, ClassifierBundle(model, monitor), models_dir, details)
    logger.info("model imported from mlflow", extra={"task": task.value, "version": record.version})
    return record


def _find_drift_file(directory: Path) -> Path:
    found = sorted(directory.rglob(DRIFT_FILE))
    if not found:
        raise MlflowImportError(f"the MLflow model has no {DRIFT_FILE} (the drift reference)")
    return found[0]


# --------------------------------------------------------------------------- tracking


def _calibration_figure(labels: NDArray[np.int64], scores: NDArray[np.float64], title: str) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from sklearn.calibration import calibration_curve

    observed, predicted = calibration_curve(labels, scores, n_bins=10, strategy="quantile")
    figure = Figure(figsize=(5, 5))
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    axes.plot(predicted, observed, marker="o", label="test window")
    axes.set_xlabel("mean predicted probability")
    axes.set_ylabel("observed positive rate")
    axes.set_title(title)
    axes.legend(loc="upper left")
    return figure


def log_training_run(
    tracking_uri: str,
    experiment: str,
    bundle: ClassifierBundle,
    record: ModelRecord,
    params: Mapping[str, Any],
    test_rows: Sequence[Mapping[str, Any] | FeatureVector],
    test_labels: NDArray[np.int64],
) -> str:
    """Logs one training run (params, metrics, data window and hash, calibration plot, model);
    returns the MLflow run id."""
    mlflow = require_mlflow()
    model = bundle.model
    start, end = model.training_window
    client_params = {
        **{k: v for k, v in params.items()},
        "candidate": model.candidate,
        "imbalance": getattr(model, "imbalance", "none"),
        "class_weight": model.class_weight or "none",
        **{f"best.{k}": v for k, v in model.best_params.items()},
        "data_hash": model.data_hash,
        "training_window_start": datetime.fromtimestamp(start, UTC).isoformat(),
        "training_window_end": datetime.fromtimestamp(end, UTC).isoformat(),
        "observed_until": record.details.get("observed_until", ""),
    }
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    scores = model.predict_proba(test_rows)
    with mlflow.start_run(run_name=f"{model.task.value}-{record.version}") as run:
        mlflow.set_tags({"tacit.task": model.task.value, "tacit.version": record.version,
                         "tacit.model": record.name, "tacit.sha256": record.sha256})  # fmt: skip
        mlflow.log_params({k: str(v)[:500] for k, v in client_params.items()})
        mlflow.log_metrics({k: float(v) for k, v in model.metrics.items() if np.isfinite(v)})
        figure = _calibration_figure(test_labels, scores, f"{model.task.value} {record.version}: test window")
        mlflow.log_figure(figure, "calibration.png")
        with tempfile.TemporaryDirectory() as work:
            arguments = _save_arguments(bundle, record, Path(work))
            mlflow.sklearn.log_model(model.estimator, name="model", **arguments)
        return str(run.info.run_id)

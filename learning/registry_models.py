"""The classifier side of the model registry: write, register, list and serve versions.

A classifier version is a joblib file under ``<models_dir>/<task>/<version>.joblib``
with its sha256, metrics, training window, feature list and data hash in
``model_versions``; exactly one version is active per task. A file is hashed
*before* it is unpickled: a file that does not match its record is never
loaded, let alone served.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from numpy.typing import NDArray
from sqlalchemy import select, update
from threadpoolctl import ThreadpoolController

from tacit.learning.classifiers import TrainedModel
from tacit.learning.compiled import CompiledClassifier, compile_classifier
from tacit.learning.drift import DriftMonitor
from tacit.learning.registry import ModelIntegrityError, file_sha256, next_version
from tacit.store.db import Database, newest_first_page
from tacit.store.schema import ModelVersion

__all__ = [
    "CLASSIFIER_TASKS",
    "ClassifierBundle",
    "ModelIntegrityError",
    "ModelNotFoundError",
    "ModelRecord",
    "ServingClassifiers",
    "active_record",
    "get_record",
    "list_records",
    "load_bundle",
    "register_classifier",
]

logger = logging.getLogger("tacit.learning")

FloatArray = NDArray[np.float64]
CLASSIFIER_TASKS = ("conversion", "churn")
BUNDLE_FORMAT = 1


class ModelNotFoundError(LookupError):
    """No (active) version is registered for the task."""


@dataclass(frozen=True, eq=False)
class ClassifierBundle:
    """What a classifier file holds: the model and the reference window for drift."""

    model: TrainedModel
    drift_reference: DriftMonitor
    format: int = BUNDLE_FORMAT


@dataclass(frozen=True)
class ModelRecord:
    """A registry row as plain data."""

    id: int
    task: str
    version: str
    path: Path
    sha256: str
    created_at: datetime
    examples: int
    metrics: Mapping[str, float]
    details: Mapping[str, Any]
    active: bool

    @property
    def name(self) -> str:
        return f"models/{self.task}/versions/{self.version}"


def _record(row: ModelVersion) -> ModelRecord:
    created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
    return ModelRecord(
        id=row.id,
        task=row.task,
        version=row.version,
        path=Path(row.path),
        sha256=row.sha256,
        created_at=created,
        examples=row.examples,
        metrics=dict(row.metrics or {}),
        details=dict(row.details or {}),
        active=row.active,
    )


def register_classifier(
    db: Database,
    bundle: ClassifierBundle,
    models_dir: Path,
    details: Mapping[str, Any] | None = None,
) -> ModelRecord:
    """Writes the bundle as the task's next version and makes it the only active one."""
    model = bundle.model
    task = model.task.value
    start, end = model.training_window
    record_details: dict[str, Any] = {
        "kind": "classifier",
        "candidate": model.candidate,
        "class_weight": model.class_weight or "none",
        "best_params": {
            k: v if isinstance(v, int | float | str) else str(v) for k, v in model.best_params.items()
        },
        "threshold": model.threshold,
        "feature_names": list(model.feature_names),
        "categorical_features": list(model.categorical_features),
        "training_window": [
            datetime.fromtimestamp(start, UTC).isoformat(),
            datetime.fromtimestamp(end, UTC).isoformat(),
        ],
        "data_hash": model.data_hash,
        **(details or {}),
    }
    with db.transaction() as session:
        version = next_version(session, task)
        path = models_dir / task / f"{version}.joblib"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        joblib.dump(bundle, tmp)
        tmp.replace(path)
        session.execute(update(ModelVersion).where(ModelVersion.task == task).values(active=False))
        row = ModelVersion(
            task=task,
            version=version,
            path=str(path),
            sha256=file_sha256(path),
            created_at=datetime.now(UTC),
            examples=int(model.metrics.get("n_train", 0)),
            metrics={k: float(v) for k, v in model.metrics.items()},
            details=record_details,
            active=True,
        )
        session.add(row)
        session.flush()
        return _record(row)


def active_record(db: Database, task: str) -> ModelRecord | None:
    """The active version of ``task``, or None."""
    with db.transaction() as session:
        row = session.execute(
            select(ModelVersion)
            .where(ModelVersion.task == task, ModelVersion.active.is_(True))
            .order_by(ModelVersion.id.desc())
            .limit(1)
        ).scalar_one_or_none()
        return _record(row) if row is not None else None


def get_record(db: Database, task: str, version: str) -> ModelRecord:
    with db.transaction() as session:
        row = session.execute(
            select(ModelVersion).where(ModelVersion.task == task, ModelVersion.version == version)
        ).scalar_one_or_none()
        if row is None:
            raise ModelNotFoundError(f"no model version {version} for task {task}")
        return _record(row)


def list_records(
    db: Database, task: str | None, page_size: int, after_id: int | None
) -> tuple[list[ModelRecord], int | None]:
    """One page of registry rows, newest first; the cursor of the next page or None."""
    criteria = [ModelVersion.task == task] if task else []
    return newest_first_page(db, ModelVersion, _record, page_size, after_id, *criteria)


def load_bundle(record: ModelRecord) -> ClassifierBundle:
    """Loads a version after checking its file hash; ModelIntegrityError when it differs."""
    if not record.path.exists():
        raise ModelIntegrityError(f"model {record.task} {record.version}: file is missing")
    if file_sha256(record.path) != record.sha256:
        raise ModelIntegrityError(
            f"model {record.task} {record.version}: file does not match its registry sha256"
        )
    bundle = joblib.load(record.path)
    if not isinstance(bundle, ClassifierBundle) or bundle.format != BUNDLE_FORMAT:
        raise ModelIntegrityError(f"model {record.task} {record.version}: not a classifier bundle")
    return bundle


_THREADPOOLS = ThreadpoolController()


@dataclass(frozen=True)
class ServedModel:
    """A loaded version; ``compiled`` is its serving form, built once at load (None: not compilable)."""

    version: str
    bundle: ClassifierBundle
    compiled: CompiledClassifier | None = None

    @classmethod
    def load(cls, version: str, bundle: ClassifierBundle) -> ServedModel:
        return cls(version, bundle, compile_classifier(bundle.model))

    def predict_proba(self, rows: Sequence[Mapping[str, Any]]) -> FloatArray:
        """Scores rows with the compiled model; the scikit-learn pipeline when there is none.

        The pipeline runs on one OpenMP thread: for one row, a thread team costs more
        than it saves (measured ~150 ms vs ~8 ms per call on 2 cores; bench/bench_predict.py)."""
        if self.compiled is not None:
            return self.compiled.predict_proba(rows)
        with _THREADPOOLS.limit(limits=1, user_api="openmp"):
            return self.bundle.model.predict_proba(rows)


@dataclass
class _Slot:
    checked_at: float
    record_id: int | None
    served: ServedModel | None
    error: Exception | None


class ServingClassifiers:
    """The active version of every classifier task, loaded once and swapped on a newer one.

    The registry is re-read at most every ``check_interval_seconds`` per task, so
    a newly activated version is served within that interval, without a restart.
    """

    def __init__(
        self,
        db: Database,
        check_interval_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.check_interval_seconds = check_interval_seconds
        self._clock = clock
        self._slots: dict[str, _Slot] = {}
        self._lock = threading.Lock()

    def get(self, task: str) -> ServedModel:
        """The served model; ModelNotFoundError or ModelIntegrityError when none can be."""
        now = self._clock()
        slot = self._slots.get(task)
        if slot is None or now - slot.checked_at >= self.check_interval_seconds:
            with self._lock:
                slot = self._slots.get(task)
                if slot is None or now - slot.checked_at >= self.check_interval_seconds:
                    slot = self._refresh(task, slot, now)
                    self._slots[task] = slot
        if slot.error is not None:
            raise slot.error
        assert slot.served is not None
        return slot.served

    def _refresh(self, task: str, previous: _Slot | None, now: float) -> _Slot:
        record = active_record(self.db, task)
        if record is None:
            return _Slot(now, None, None, ModelNotFoundError(f"no active model for task {task}"))
        if previous is not None and previous.record_id == record.id and previous.served is not None:
            return _Slot(now, record.id, previous.served, None)
        try:
            bundle = load_bundle(record)
        except ModelIntegrityError as error:
            logger.error("model rejected", extra={"task": task, "version": record.version})
            return _Slot(now, record.id, None, error)
        served = ServedModel.load(record.version, bundle)
        logger.info(
            "model loaded",
            extra={"task": task, "version": record.version, "compiled": served.compiled is not None},
        )
        return _Slot(now, record.id, served, None)

    def tasks(self) -> Sequence[str]:
        return tuple(self._slots)

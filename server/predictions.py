"""Scoring a subject for PredictConversion and PredictChurn: the prediction application service.

``Predictions`` composes the privacy boundary, the profile store and the active
classifier of a task (boundary → profile → overrides → active model);
``tacit.server.servicers.prediction`` only converts protobuf.

Documented fallbacks and errors:

* a subject with no stored history is scored on the default profile
  (``tacit.learning.features.default_features``) and the response says
  ``default_profile = true``;
* no active model for the task → FAILED_PRECONDITION (reason MODEL_NOT_FOUND);
* the active model's file does not match its registry sha256 → FAILED_PRECONDITION
  (reason MODEL_INTEGRITY); the file is never unpickled;
* the model needs a feature the profile cannot provide → FAILED_PRECONDITION
  (reason FEATURE_MISSING) naming the feature; never a score on a made-up value;
* an override of a numeric feature that is not a number → INVALID_ARGUMENT.

When the request carries a context, its anonymization audit record is
committed before the score is returned.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from tacit.learning.features import CATEGORICAL_FEATURES, FEATURE_NAMES, FeatureError
from tacit.learning.profiles import ProfileStore
from tacit.learning.registry import ModelIntegrityError
from tacit.learning.registry_models import ModelNotFoundError, ServingClassifiers
from tacit.privacy.audit_log import append_entries
from tacit.privacy.boundary import PrivacyBoundary
from tacit.server.errors import FailedPrecondition, InvalidArgument
from tacit.store.db import Database

Value = str | float | int | bool
PREDICT_CONTEXT_KIND = "predict_context"
T = TypeVar("T")


@dataclass(frozen=True)
class PredictResult:
    probability: float
    model_version: str
    default_profile: bool


def _override(name: str, value: Value) -> float | str:
    if name in CATEGORICAL_FEATURES:
        return str(value).strip().lower()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"context.values[{name}]", "must be a number")
    return float(value)


def context_overrides(
    db: Database, boundary: PrivacyBoundary, context: Mapping[str, Value]
) -> dict[str, float | str]:
    """The request context through the privacy boundary (its audit record committed first),
    as feature overrides; a numeric override that is not a number is INVALID_ARGUMENT."""
    if not context:
        return {}
    anonymized = boundary.anonymize(PREDICT_CONTEXT_KIND, context, "prd_" + uuid.uuid4().hex)
    overrides = {n: _override(n, v) for n, v in anonymized.fields.items() if n in FEATURE_NAMES}
    with db.transaction() as session:
        append_entries(session, [anonymized.audit])
    return overrides


def active_model(task: str, get: Callable[[], T]) -> T:
    """The task's served model, or FAILED_PRECONDITION MODEL_NOT_FOUND / MODEL_INTEGRITY."""
    try:
        return get()
    except ModelNotFoundError:
        raise FailedPrecondition(
            f"no active {task} model: train one with `tacit train {task}`", "MODEL_NOT_FOUND"
        ) from None
    except ModelIntegrityError as error:
        raise FailedPrecondition(
            f"the active {task} model is not served: {error}", "MODEL_INTEGRITY"
        ) from None


def feature_missing(task: str, version: str, error: FeatureError) -> FailedPrecondition:
    return FailedPrecondition(
        f"the {task} model {version} needs feature {error.feature!r}, which is missing at serving time",
        "FEATURE_MISSING",
    )


class Predictions:
    """Scores a subject with the active classifier of a task."""

    def __init__(
        self,
        db: Database,
        boundary: PrivacyBoundary,
        profiles: ProfileStore,
        classifiers: ServingClassifiers,
    ) -> None:
        self.db = db
        self.boundary = boundary
        self.profiles = profiles
        self.classifiers = classifiers

    def predict(
        self, task: str, subject_id: str, context: Mapping[str, Value], now: datetime | None = None
    ) -> PredictResult:
        now = now or datetime.now(UTC)
        pseudonym = self.boundary.pseudonymize_subject(subject_id)
        overrides = context_overrides(self.db, self.boundary, context)
        served = active_model(task, lambda: self.classifiers.get(task))
        profile = self.profiles.lookup(pseudonym, now)
        row = {**profile.features.as_dict(), **overrides}
        try:
            probability = float(served.predict_proba([row])[0])
        except FeatureError as error:
            raise feature_missing(task, served.version, error) from None
        return PredictResult(probability, served.version, profile.default)

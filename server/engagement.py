"""PredictEngagement: boundary → profile → overrides → the active engagement model.

The same documented errors as `tacit.server.predictions` (MODEL_NOT_FOUND,
MODEL_INTEGRITY, FEATURE_MISSING as FAILED_PRECONDITION; a numeric override that
is not a number is INVALID_ARGUMENT naming ``context.values[<name>]``), for the
task ``engagement``. One fallback differs: a subject with no stored history gets
the model's mean baseline (``default_profile = true``) whatever the context —
every training snapshot has history, so the model was never fitted on a subject
without one and would only extrapolate.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from tacit.learning.engagement import ENGAGEMENT_TASK, ServingEngagement
from tacit.learning.features import CATEGORICAL_FEATURES, FEATURE_NAMES, FeatureError
from tacit.learning.profiles import ProfileStore
from tacit.learning.registry import ModelIntegrityError
from tacit.learning.registry_models import ModelNotFoundError
from tacit.privacy.audit_log import append_entries
from tacit.privacy.boundary import PrivacyBoundary
from tacit.server.errors import FailedPrecondition, InvalidArgument
from tacit.store.db import Database

Value = str | float | int | bool
PREDICT_CONTEXT_KIND = "predict_context"


@dataclass(frozen=True)
class EngagementResult:
    expected_dwell_seconds: float
    baseline_dwell_seconds: float
    model_version: str
    default_profile: bool


def _override(name: str, value: Value) -> float | str:
    if name in CATEGORICAL_FEATURES:
        return str(value).strip().lower()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"context.values[{name}]", "must be a number")
    return float(value)


class EngagementPredictions:
    """Expected dwell of a subject (in a context) from the active engagement model."""

    def __init__(
        self, db: Database, boundary: PrivacyBoundary, profiles: ProfileStore, models: ServingEngagement
    ) -> None:
        self.db = db
        self.boundary = boundary
        self.profiles = profiles
        self.models = models

    def predict(
        self, subject_id: str, context: Mapping[str, Value], now: datetime | None = None
    ) -> EngagementResult:
        now = now or datetime.now(UTC)
        pseudonym = self.boundary.pseudonymize_subject(subject_id)
        overrides: dict[str, float | str] = {}
        if context:
            anonymized = self.boundary.anonymize(PREDICT_CONTEXT_KIND, context, "prd_" + uuid.uuid4().hex)
            overrides = {n: _override(n, v) for n, v in anonymized.fields.items() if n in FEATURE_NAMES}
            with self.db.transaction() as session:
                append_entries(session, [anonymized.audit])
        try:
            served = self.models.get()
        except ModelNotFoundError:
            raise FailedPrecondition(
                f"no active {ENGAGEMENT_TASK} model: train one with `tacit train {ENGAGEMENT_TASK}`",
                "MODEL_NOT_FOUND",
            ) from None
        except ModelIntegrityError as error:
            raise FailedPrecondition(
                f"the active {ENGAGEMENT_TASK} model is not served: {error}", "MODEL_INTEGRITY"
            ) from None
        profile = self.profiles.lookup(pseudonym, now)
        baseline = served.bundle.model.baseline
        if profile.default:
            return EngagementResult(baseline, baseline, served.version, True)
        row = {**profile.features.as_dict(), **overrides}
        try:
            expected = float(served.predict([row])[0])
        except FeatureError as error:
            raise FailedPrecondition(
                f"the {ENGAGEMENT_TASK} model {served.version} needs feature {error.feature!r}, "
                "which is missing at serving time",
                "FEATURE_MISSING",
            ) from None
        return EngagementResult(expected, baseline, served.version, False)

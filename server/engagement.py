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

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from tacit.learning.engagement import ENGAGEMENT_TASK, ServingEngagement
from tacit.learning.features import FeatureError
from tacit.learning.profiles import ProfileStore
from tacit.privacy.boundary import PrivacyBoundary
from tacit.server.predictions import Value, active_model, context_overrides, feature_missing
from tacit.store.db import Database


@dataclass(frozen=True)
class EngagementResult:
    expected_dwell_seconds: float
    baseline_dwell_seconds: float
    model_version: str
    default_profile: bool


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
        overrides = context_overrides(self.db, self.boundary, context)
        served = active_model(ENGAGEMENT_TASK, self.models.get)
        profile = self.profiles.lookup(pseudonym, now)
        baseline = served.bundle.model.baseline
        if profile.default:
            return EngagementResult(baseline, baseline, served.version, True)
        row = {**profile.features.as_dict(), **overrides}
        try:
            expected = float(served.predict([row])[0])
        except FeatureError as error:
            raise feature_missing(ENGAGEMENT_TASK, served.version, error) from None
        return EngagementResult(expected, baseline, served.version, False)

"""PredictionService: PredictConversion and PredictChurn (around `Predictions`) and
PredictEngagement (around `EngagementPredictions`); converts protobuf.

The documented fallbacks and errors are those of `tacit.server.predictions`.
"""

from __future__ import annotations

from collections.abc import Container

import grpc

from tacit.server import converters
from tacit.server.config import LimitSettings
from tacit.server.engagement import EngagementPredictions
from tacit.server.predictions import Predictions
from tacit.v1 import prediction_pb2, prediction_pb2_grpc


class PredictionServicer(prediction_pb2_grpc.PredictionServiceServicer):
    def __init__(
        self,
        predictions: Predictions,
        limits: LimitSettings,
        known_names: Container[str],
        engagement: EngagementPredictions | None = None,
    ) -> None:
        self._predictions = predictions
        self._engagement = engagement
        self._limits = limits
        self._known_names = known_names

    def _predict(self, task: str, request: prediction_pb2.PredictRequest) -> prediction_pb2.PredictResponse:
        converters.require_text("subject_id", request.subject_id, self._limits)
        context = converters.features_to_dict("context", request.context, self._limits, self._known_names)
        result = self._predictions.predict(task, request.subject_id, context)
        return prediction_pb2.PredictResponse(
            probability=result.probability,
            model_version=result.model_version,
            default_profile=result.default_profile,
        )

    def PredictConversion(  # noqa: N802
        self, request: prediction_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> prediction_pb2.PredictResponse:
        return self._predict("conversion", request)

    def PredictChurn(  # noqa: N802
        self, request: prediction_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> prediction_pb2.PredictResponse:
        return self._predict("churn", request)

    def PredictEngagement(  # noqa: N802
        self, request: prediction_pb2.PredictEngagementRequest, context: grpc.ServicerContext
    ) -> prediction_pb2.PredictEngagementResponse:
        converters.require_text("subject_id", request.subject_id, self._limits)
        features = converters.features_to_dict("context", request.context, self._limits, self._known_names)
        if self._engagement is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "engagement predictions are not wired here")
            raise AssertionError  # abort raises
        result = self._engagement.predict(request.subject_id, features)
        return prediction_pb2.PredictEngagementResponse(
            expected_dwell_seconds=result.expected_dwell_seconds,
            model_version=result.model_version,
            default_profile=result.default_profile,
            baseline_dwell_seconds=result.baseline_dwell_seconds,
        )

"""PredictionService: PredictConversion and PredictChurn; converts protobuf around `Predictions`.

The documented fallbacks and errors are those of `tacit.server.predictions`.
"""

from __future__ import annotations

from collections.abc import Container

import grpc

from tacit.server import converters
from tacit.server.config import LimitSettings
from tacit.server.predictions import Predictions
from tacit.v1 import prediction_pb2, prediction_pb2_grpc


class PredictionServicer(prediction_pb2_grpc.PredictionServiceServicer):
    def __init__(self, predictions: Predictions, limits: LimitSettings, known_names: Container[str]) -> None:
        self._predictions = predictions
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

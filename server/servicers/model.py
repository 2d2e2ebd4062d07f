"""ModelService: the registry (List/Get), offline policy evaluation and drift."""

from __future__ import annotations

import base64
import binascii
import math
import re
from datetime import timedelta

import grpc

from tacit.learning.evaluation import (
    DriftSummary,
    EvaluationError,
    bandit_drift_report,
    drift_report,
    evaluate_policies,
)
from tacit.learning.registry import ModelIntegrityError, needs_retraining
from tacit.learning.registry_models import (
    CLASSIFIER_TASKS,
    ModelNotFoundError,
    ModelRecord,
    ServingClassifiers,
    get_record,
    list_records,
)
from tacit.server import converters
from tacit.server.config import Settings
from tacit.server.errors import FailedPrecondition, InvalidArgument, NotFound
from tacit.store.db import Database
from tacit.v1 import model_pb2, model_pb2_grpc

MAX_PAGE = 500
DEFAULT_PAGE = 50
MAX_POLICIES = 16
TASK = re.compile(r"^(conversion|churn|bandit:[a-z][a-z0-9_\-]{0,63})$")
MODEL_NAME = re.compile(r"^models/(?P<task>[^/]{1,96})/versions/(?P<version>[A-Za-z0-9._\-]{1,64})$")
DRIFT_RECENT = timedelta(days=7)
DRIFT_THRESHOLD = 0.2
DRIFT_REWARD_ALPHA = 0.01


def encode_page_token(after_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{after_id}".encode()).decode()


def decode_page_token(token: str) -> int | None:
    if not token:
        return None
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
        if not text.startswith("id:"):
            raise ValueError
        return int(text[3:])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgument("page_token", "is not a token returned by ListModels") from None


def model_message(record: ModelRecord) -> model_pb2.Model:
    return model_pb2.Model(
        name=record.name,
        task=record.task,
        version=record.version,
        active=record.active,
        metrics={k: float(v) for k, v in record.metrics.items() if math.isfinite(float(v))},
        create_time=converters.to_timestamp(record.created_at),
        needs_retraining=needs_retraining(record.details),
    )


def _finite(value: float, default: float = 0.0) -> float:
    return value if math.isfinite(value) else default


def drift_message(summary: DriftSummary) -> model_pb2.DriftReport:
    """The wire form of a drift summary; NaN figures (nothing to compare) become 0."""
    report = summary.report
    message = model_pb2.DriftReport(
        task=summary.task,
        features=[
            model_pb2.FeatureDrift(feature=name, psi=_finite(psi)) for name, psi in report.feature_psi.items()
        ],
        stale=report.stale,
        threshold=report.threshold,
        drifted_features=list(report.drifted_features),
        current_start_time=converters.to_timestamp(summary.window_start),
        current_end_time=converters.to_timestamp(summary.window_end),
        reference_count=report.n_reference,
        current_count=report.n_current,
        model_version=summary.version,
    )
    if report.prediction_psi is not None and math.isfinite(report.prediction_psi):
        message.prediction_psi = report.prediction_psi
    if summary.reference_start is not None:
        message.reference_start_time.CopyFrom(converters.to_timestamp(summary.reference_start))
    if summary.reference_end is not None:
        message.reference_end_time.CopyFrom(converters.to_timestamp(summary.reference_end))
    reward = report.reward
    if reward is not None:
        message.reward_rate_drift.CopyFrom(
            model_pb2.RewardRateDrift(
                reference_rate=_finite(reward.reference_rate),
                current_rate=_finite(reward.current_rate),
                reference_count=report.n_reference,
                current_count=report.n_current,
                z=_finite(reward.z),
                p_value=_finite(reward.p_value, 1.0),
                drifted=reward.significant,
                alpha=DRIFT_REWARD_ALPHA,
                status=reward.status.value,
            )
        )
    return message


class ModelServicer(model_pb2_grpc.ModelServiceServicer):
    def __init__(self, db: Database, settings: Settings, classifiers: ServingClassifiers) -> None:
        self._db = db
        self._settings = settings
        self._classifiers = classifiers

    def ListModels(  # noqa: N802
        self, request: model_pb2.ListModelsRequest, context: grpc.ServicerContext
    ) -> model_pb2.ListModelsResponse:
        if request.task and not TASK.match(request.task):
            raise InvalidArgument("task", f"must match {TASK.pattern}")
        if request.page_size < 0:
            raise InvalidArgument("page_size", "must not be negative")
        page_size = min(request.page_size or DEFAULT_PAGE, MAX_PAGE)
        after = decode_page_token(request.page_token)
        records, cursor = list_records(self._db, request.task or None, page_size, after)
        return model_pb2.ListModelsResponse(
            models=[model_message(r) for r in records],
            next_page_token=encode_page_token(cursor) if cursor is not None else "",
        )

    def GetModel(  # noqa: N802
        self, request: model_pb2.GetModelRequest, context: grpc.ServicerContext
    ) -> model_pb2.Model:
        match = MODEL_NAME.match(request.name)
        if match is None:
            raise InvalidArgument("name", "must look like models/{task}/versions/{version}")
        try:
            return model_message(get_record(self._db, match["task"], match["version"]))
        except ModelNotFoundError:
            raise NotFound("name: no such model version", "MODEL_NOT_FOUND") from None

    def EvaluatePolicies(  # noqa: N802
        self, request: model_pb2.EvaluatePoliciesRequest, context: grpc.ServicerContext
    ) -> model_pb2.EvaluatePoliciesResponse:
        converters.require_text("slot", request.slot, self._settings.limits, converters.SLOT_NAME)
        slot = self._settings.slots.get(request.slot)
        if slot is None:
            raise NotFound(f"slot is not configured: {request.slot}", "SLOT_NOT_FOUND")
        if len(request.policies) > MAX_POLICIES:
            raise InvalidArgument("policies", f"at most {MAX_POLICIES} policies per request")
        for index, policy in enumerate(request.policies):
            if len(policy) > 512:
                raise InvalidArgument(f"policies[{index}]", "is longer than 512 characters")
        try:
            estimates = evaluate_policies(
                self._db, request.slot, slot.vw_args, slot.default_reward, list(request.policies)
            )
        except EvaluationError as error:
            if error.policy_index is not None:
                raise InvalidArgument(f"policies[{error.policy_index}]", str(error)) from None
            raise FailedPrecondition(str(error), "NOT_ENOUGH_DECISIONS") from None
        return model_pb2.EvaluatePoliciesResponse(
            estimates=[
                model_pb2.PolicyEstimate(
                    policy=e.policy,
                    estimator=e.estimator,
                    value=_finite(e.value),
                    ci_low=_finite(e.ci_low),
                    ci_high=_finite(e.ci_high),
                    n=e.n,
                )
                for e in estimates
            ]
        )

    def GetDriftReport(  # noqa: N802
        self, request: model_pb2.GetDriftReportRequest, context: grpc.ServicerContext
    ) -> model_pb2.DriftReport:
        if request.task.startswith("bandit:"):
            return drift_message(self._bandit_drift(request.task))
        if request.task not in CLASSIFIER_TASKS:
            raise InvalidArgument("task", f"must be one of {list(CLASSIFIER_TASKS)} or bandit:<slot>")
        try:
            served = self._classifiers.get(request.task)
        except ModelNotFoundError:
            raise FailedPrecondition(f"no active {request.task} model", "MODEL_NOT_FOUND") from None
        except ModelIntegrityError as error:
            raise FailedPrecondition(str(error), "MODEL_INTEGRITY") from None
        return drift_message(drift_report(self._db, request.task, served, DRIFT_RECENT, DRIFT_THRESHOLD))

    def _bandit_drift(self, task: str) -> DriftSummary:
        if not TASK.match(task):
            raise InvalidArgument("task", f"must match {TASK.pattern}")
        name = task.removeprefix("bandit:")
        slot = self._settings.slots.get(name)
        if slot is None:
            raise NotFound(f"slot is not configured: {name}", "SLOT_NOT_FOUND")
        try:
            return bandit_drift_report(
                self._db, name, slot.default_reward, DRIFT_RECENT, DRIFT_THRESHOLD, DRIFT_REWARD_ALPHA
            )
        except EvaluationError as error:
            raise FailedPrecondition(str(error), "NOT_ENOUGH_DECISIONS") from None

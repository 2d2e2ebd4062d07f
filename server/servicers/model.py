"""ModelService: the registry (List/Get), offline policy evaluation, drift and the retraining
scheduler's runs; conversions in `converters.model`."""

from __future__ import annotations

import re
from collections.abc import Callable

import grpc

from tacit.learning.bandit import BanditConfigError, check_workspace
from tacit.learning.engagement import ENGAGEMENT_TASK, ServingEngagement
from tacit.learning.evaluation import (
    DRIFT_RECENT,
    DRIFT_REWARD_ALPHA,
    DRIFT_THRESHOLD,
    DriftSummary,
    EvaluationError,
    bandit_drift_report,
    drift_report,
    evaluate_policies,
    model_drift,
)
from tacit.learning.freshness import learning_backlog, new_examples
from tacit.learning.lifecycle import VERSION
from tacit.learning.registry import ModelIntegrityError
from tacit.learning.registry_models import (
    CLASSIFIER_TASKS,
    ModelNotFoundError,
    ServingClassifiers,
    get_record,
    list_records,
)
from tacit.learning.retraining import list_runs
from tacit.server import converters
from tacit.server.auto_optimize import AutoOptimizer
from tacit.server.auto_optimize import list_runs as list_auto_optimize_runs
from tacit.server.config import Settings
from tacit.server.converters.model import (
    auto_optimize_run_message,
    decode_page_token,
    drift_message,
    encode_page_token,
    finite_or,
    model_message,
    retraining_run_message,
)
from tacit.server.converters.model_lifecycle import explain_decision_message, explain_model_message
from tacit.server.errors import FailedPrecondition, InvalidArgument, NotFound
from tacit.server.model_lifecycle import MAX_SAMPLE, ModelLifecycle
from tacit.store.db import Database
from tacit.v1 import model_pb2, model_pb2_grpc

MAX_PAGE = 500
DEFAULT_PAGE = 50
MAX_POLICIES = 16
# A candidate becomes the challenger policy "bandit:<args>", stored in 128 characters.
MAX_CANDIDATE_CHARS = 128 - len("bandit:")
TASK = re.compile(
    r"^(conversion|churn|engagement|bandit:[a-z][a-z0-9_\-]{0,63}"
    r"|challenger:[a-z][a-z0-9\-]{0,62}:[a-z0-9][a-z0-9_\-]{0,20})$"
)
MODEL_NAME = re.compile(r"^models/(?P<task>[^/]{1,96})/versions/(?P<version>[A-Za-z0-9._\-]{1,64})$")


def _page(page_size: int, page_token: str, method: str) -> tuple[int, int | None]:
    """(page size, id to continue after) of a List call; INVALID_ARGUMENT names the bad field."""
    if page_size < 0:
        raise InvalidArgument("page_size", "must not be negative")
    return min(page_size or DEFAULT_PAGE, MAX_PAGE), decode_page_token(page_token, method)


class ModelServicer(model_pb2_grpc.ModelServiceServicer):
    def __init__(
        self,
        db: Database,
        settings: Settings,
        classifiers: ServingClassifiers,
        engagement: ServingEngagement | None = None,
        auto_optimizer: AutoOptimizer | None = None,
        actor: Callable[[grpc.ServicerContext], str] | None = None,
        lifecycle: ModelLifecycle | None = None,
    ) -> None:
        self._auto_optimizer = auto_optimizer
        self._actor = actor
        self._db = db
        self._lifecycle = lifecycle
        self._settings = settings
        self._classifiers = classifiers
        self._engagement = engagement or ServingEngagement(db, settings.learner.reload_interval_seconds)

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
            record = get_record(self._db, match["task"], match["version"])
        except ModelNotFoundError:
            # The name goes into ResourceInfo only when its task is one Tacit knows the shape of.
            name = request.name if TASK.match(match["task"]) else ""
            raise NotFound("name: no such model version", "MODEL_NOT_FOUND", name) from None
        message = model_message(record)
        message.new_examples = new_examples(self._db, record.task, record.version)
        slot = record.task.removeprefix("bandit:")
        if record.task.startswith("bandit:") and slot in self._settings.slots:
            backlog = learning_backlog(self._db, slot)
            message.pending_decisions = backlog.pending_decisions
            message.learning_lag_seconds = backlog.lag_seconds
        return message

    def EvaluatePolicies(  # noqa: N802
        self, request: model_pb2.EvaluatePoliciesRequest, context: grpc.ServicerContext
    ) -> model_pb2.EvaluatePoliciesResponse:
        converters.require_text("slot", request.slot, self._settings.limits, converters.SLOT_NAME)
        slot = self._settings.slots.get(request.slot)
        if slot is None:
            raise NotFound("slot: no slot with this name is configured", "SLOT_NOT_FOUND")
        if len(request.policies) > MAX_POLICIES:
            raise InvalidArgument("policies", f"at most {MAX_POLICIES} policies per request")
        for index, policy in enumerate(request.policies):
            if len(policy) > 512:
                raise InvalidArgument(f"policies[{index}]", "is longer than 512 characters")
        try:
            estimates = evaluate_policies(
                self._db,
                request.slot,
                slot.vw_args,
                slot.default_reward,
                list(request.policies),
                reward_range=slot.reward_range,
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
                    value=finite_or(e.value),
                    ci_low=finite_or(e.ci_low),
                    ci_high=finite_or(e.ci_high),
                    n=e.n,
                    status=e.status,
                    effective_sample_size=finite_or(e.effective_sample_size),
                    matched=e.matched,
                    matched_rewards=e.matched_rewards,
                    interval=e.interval,
                )
                for e in estimates
            ]
        )

    def GetDriftReport(  # noqa: N802
        self, request: model_pb2.GetDriftReportRequest, context: grpc.ServicerContext
    ) -> model_pb2.DriftReport:
        if request.task.startswith("bandit:"):
            return drift_message(self._bandit_drift(request.task), DRIFT_REWARD_ALPHA)
        if request.task == ENGAGEMENT_TASK:
            return drift_message(self._engagement_drift(), DRIFT_REWARD_ALPHA)
        if request.task not in CLASSIFIER_TASKS:
            raise InvalidArgument(
                "task", f"must be one of {[*CLASSIFIER_TASKS, ENGAGEMENT_TASK]} or bandit:<slot>"
            )
        try:
            served = self._classifiers.get(request.task)
        except ModelNotFoundError:
            raise FailedPrecondition(f"no active {request.task} model", "MODEL_NOT_FOUND") from None
        except ModelIntegrityError as error:
            raise FailedPrecondition(str(error), "MODEL_INTEGRITY") from None
        return drift_message(
            drift_report(self._db, request.task, served, DRIFT_RECENT, DRIFT_THRESHOLD), DRIFT_REWARD_ALPHA
        )

    def _bandit_drift(self, task: str) -> DriftSummary:
        if not TASK.match(task):
            raise InvalidArgument("task", f"must match {TASK.pattern}")
        name = task.removeprefix("bandit:")
        slot = self._settings.slots.get(name)
        if slot is None:
            raise NotFound("task: no slot with this name is configured", "SLOT_NOT_FOUND")
        try:
            return bandit_drift_report(
                self._db, name, slot.default_reward, DRIFT_RECENT, DRIFT_THRESHOLD, DRIFT_REWARD_ALPHA
            )
        except EvaluationError as error:
            raise FailedPrecondition(str(error), "NOT_ENOUGH_DECISIONS") from None

    def _engagement_drift(self) -> DriftSummary:
        try:
            served = self._engagement.get()
        except ModelNotFoundError:
            raise FailedPrecondition(f"no active {ENGAGEMENT_TASK} model", "MODEL_NOT_FOUND") from None
        except ModelIntegrityError as error:
            raise FailedPrecondition(str(error), "MODEL_INTEGRITY") from None
        model = served.bundle.model
        return model_drift(
            self._db, ENGAGEMENT_TASK, served.version, served.bundle.drift_reference,
            model.training_window, model.predict, DRIFT_RECENT, DRIFT_THRESHOLD,
        )  # fmt: skip

    def ListRetrainingRuns(  # noqa: N802
        self, request: model_pb2.ListRetrainingRunsRequest, context: grpc.ServicerContext
    ) -> model_pb2.ListRetrainingRunsResponse:
        if request.task and not TASK.match(request.task):
            raise InvalidArgument("task", f"must match {TASK.pattern}")
        page_size, after = _page(request.page_size, request.page_token, "ListRetrainingRuns")
        runs, cursor = list_runs(self._db, request.task or None, page_size, after)
        return model_pb2.ListRetrainingRunsResponse(
            runs=[retraining_run_message(r) for r in runs],
            next_page_token=encode_page_token(cursor) if cursor is not None else "",
        )

    def AutoOptimize(  # noqa: N802
        self, request: model_pb2.AutoOptimizeRequest, context: grpc.ServicerContext
    ) -> model_pb2.AutoOptimizeRun:
        converters.require_text("slot", request.slot, self._settings.limits, converters.SLOT_NAME)
        if request.slot not in self._settings.slots:
            raise NotFound("slot: no slot with this name is configured", "SLOT_NOT_FOUND")
        if len(request.candidates) > MAX_POLICIES:
            raise InvalidArgument("candidates", f"at most {MAX_POLICIES} candidates per request")
        for index, candidate in enumerate(request.candidates):
            if len(candidate) > MAX_CANDIDATE_CHARS:
                raise InvalidArgument(
                    f"candidates[{index}]", f"is longer than {MAX_CANDIDATE_CHARS} characters"
                )
            try:
                check_workspace(candidate)
            except BanditConfigError as error:
                # VW's own refusal quotes the option it did not know: say only that it refused.
                message = (
                    str(error) if "Vowpal Wabbit refuses" not in str(error) else "Vowpal Wabbit refuses it"
                )
                raise InvalidArgument(f"candidates[{index}]", message) from None
        if self._auto_optimizer is None:
            raise FailedPrecondition(
                "auto-optimize is not available in this process", "AUTO_OPTIMIZE_UNAVAILABLE"
            )
        actor = self._actor(context) if self._actor is not None else "api"
        try:
            run = self._auto_optimizer.run(
                request.slot, actor, "command", list(request.candidates), dry_run=request.dry_run
            )
        except EvaluationError as error:
            raise FailedPrecondition(str(error), "NOT_ENOUGH_DECISIONS") from None
        return auto_optimize_run_message(run)

    def ListAutoOptimizeRuns(  # noqa: N802
        self, request: model_pb2.AutoOptimizeListRunsRequest, context: grpc.ServicerContext
    ) -> model_pb2.AutoOptimizeListRunsResponse:
        if request.slot:
            converters.require_text("slot", request.slot, self._settings.limits, converters.SLOT_NAME)
        page_size, after = _page(request.page_size, request.page_token, "ListAutoOptimizeRuns")
        runs, cursor = list_auto_optimize_runs(self._db, request.slot or None, page_size, after)
        return model_pb2.AutoOptimizeListRunsResponse(
            runs=[auto_optimize_run_message(r) for r in runs],
            next_page_token=encode_page_token(cursor) if cursor is not None else "",
        )
    # ---- explanations and model lifecycle (ModelLifecycle does the work)

    def _slot(self, slot: str) -> str:
        return converters.require_text("slot", slot, self._settings.limits, converters.SLOT_NAME)

    def _lifecycle_or_fail(self) -> ModelLifecycle:
        if self._lifecycle is None:
            raise FailedPrecondition("model lifecycle is not enabled on this server", "NOT_ENABLED")
        return self._lifecycle

    def ExplainModel(  # noqa: N802
        self, request: model_pb2.ExplainModelRequest, context: grpc.ServicerContext
    ) -> model_pb2.ExplainModelResponse:
        slot = self._slot(request.slot)
        top_n = _bounded("top_n", request.top_n, 20, 200)
        sample = _bounded("sample_size", request.sample_size, 1_000, MAX_SAMPLE)
        return explain_model_message(self._lifecycle_or_fail().explain_model(slot, top_n, sample))

    def ExplainDecision(  # noqa: N802
        self, request: model_pb2.ExplainDecisionRequest, context: grpc.ServicerContext
    ) -> model_pb2.ExplainDecisionResponse:
        event_id = converters.required_event_id("event_id", request.event_id)
        top_n = _bounded("top_n", request.top_n, 10, 100)
        return explain_decision_message(self._lifecycle_or_fail().explain_decision(event_id, top_n))

    def ExportModel(  # noqa: N802
        self, request: model_pb2.ExportModelRequest, context: grpc.ServicerContext
    ) -> model_pb2.ExportModelResponse:
        slot = self._slot(request.slot)
        if request.version and not VERSION.match(request.version):
            raise InvalidArgument("version", f"must match {VERSION.pattern}")
        exported = self._lifecycle_or_fail().export(slot, request.version or None)
        return model_pb2.ExportModelResponse(
            bundle=exported.bundle, sha256=exported.sha256, task=exported.task, version=exported.version
        )

    def ImportModel(  # noqa: N802
        self, request: model_pb2.ImportModelRequest, context: grpc.ServicerContext
    ) -> model_pb2.ImportModelResponse:
        slot = self._slot(request.slot)
        request_id = converters.event_id_or_empty("request_id", request.request_id)
        record = self._lifecycle_or_fail().import_bundle(slot, request.bundle, request.sha256, request_id)
        return model_pb2.ImportModelResponse(model=model_message(record))

    def ResetModel(  # noqa: N802
        self, request: model_pb2.ResetModelRequest, context: grpc.ServicerContext
    ) -> model_pb2.ResetModelResponse:
        slot = self._slot(request.slot)
        request_id = converters.event_id_or_empty("request_id", request.request_id)
        record, previous = self._lifecycle_or_fail().reset(slot, request_id)
        return model_pb2.ResetModelResponse(model=model_message(record), previous_version=previous or "")


def _bounded(field: str, value: int, default: int, maximum: int) -> int:
    """0 means ``default``; negative is refused; above ``maximum`` is capped."""
    if value < 0:
        raise InvalidArgument(field, "must not be negative")
    return min(value or default, maximum)

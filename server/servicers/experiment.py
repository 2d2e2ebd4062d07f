"""ExperimentService: convert, call `experiments.service`, convert back.

Domain errors become typed server errors here; the interceptor maps those to statuses.
The caller's role (from its bearer token) is recorded as the actor of every change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import grpc

from tacit.experiments.errors import ExperimentConflict, ExperimentExists, ExperimentNotFound, SpecError
from tacit.experiments.service import Experiment, ExperimentService, ExperimentState
from tacit.server import converters
from tacit.server.auth import TokenStore
from tacit.server.challengers import ArmModel
from tacit.server.converters import experiment as convert
from tacit.server.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from tacit.server.offline_gate import REFUSED_REASON, OfflineGate
from tacit.v1 import experiment_pb2, experiment_pb2_grpc

logger = logging.getLogger("tacit.server")


def caller_role(tokens: TokenStore | None) -> Callable[[grpc.ServicerContext], str]:
    """The role behind the call's bearer token ("anonymous" when auth is off)."""

    def role_of(context: grpc.ServicerContext) -> str:
        if tokens is None:
            return "anonymous"
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
                role = tokens.role_of(value[len("Bearer ") :])
                if role is not None:
                    return role.value
        return "unknown"

    return role_of


@contextmanager
def _domain_errors() -> Iterator[None]:
    try:
        yield
    except SpecError as error:
        raise InvalidArgument(error.field, error.message, "INVALID_EXPERIMENT") from None
    except ExperimentNotFound as error:
        raise NotFound(
            "name: no experiment with this id", "EXPERIMENT_NOT_FOUND", f"experiments/{error.experiment_id}"
        ) from None
    except ExperimentExists as error:
        raise AlreadyExists(str(error), "EXPERIMENT_EXISTS") from None
    except ExperimentConflict as error:
        raise FailedPrecondition(error.message, error.reason) from None


class ExperimentServicer(experiment_pb2_grpc.ExperimentServiceServicer):
    def __init__(
        self,
        service: ExperimentService,
        role_of: Callable[[grpc.ServicerContext], str],
        request_digest: Callable[[str], str] | None = None,
        arm_models: Callable[[str], list[ArmModel]] | None = None,
        gate: OfflineGate | None = None,
    ):
        self._service = service
        self._arm_models = arm_models
        self._role_of = role_of
        # Judges a draft's arms on the slot's log before StartExperiment (None: no gate).
        self._gate = gate
        # Client request ids are kept (idempotency keys) only as keyed digests.
        self._request_digest = request_digest

    def _request_key(self, request_id: str) -> str:
        request_id = converters.event_id_or_empty("request_id", request_id)
        if request_id and self._request_digest is not None:
            return self._request_digest(request_id)
        return request_id

    def CreateExperiment(  # noqa: N802
        self, request: experiment_pb2.CreateExperimentRequest, context: grpc.ServicerContext
    ) -> experiment_pb2.Experiment:
        if not request.HasField("experiment"):
            raise InvalidArgument("experiment", "is required")
        experiment_id = request.experiment_id or (
            convert.experiment_id_from_name("experiment.name", request.experiment.name)
            if request.experiment.name
            else ""
        )
        if not experiment_id:
            raise InvalidArgument("experiment_id", "is required")
        definition = convert.definition_from_proto(experiment_id, request.experiment)
        request_id = self._request_key(request.request_id)
        with _domain_errors():
            created = self._service.create(definition, self._role_of(context), request_id)
        return convert.experiment_to_proto(created)

    def GetExperiment(  # noqa: N802
        self, request: experiment_pb2.GetExperimentRequest, context: grpc.ServicerContext
    ) -> experiment_pb2.Experiment:
        experiment_id = convert.experiment_id_from_name("name", request.name)
        with _domain_errors():
            return convert.experiment_to_proto(self._service.get(experiment_id))

    def ListExperiments(  # noqa: N802
        self, request: experiment_pb2.ListExperimentsRequest, context: grpc.ServicerContext
    ) -> experiment_pb2.ListExperimentsResponse:
        with _domain_errors():
            items, token = self._service.list_experiments(request.page_size, request.page_token, request.slot)
        return experiment_pb2.ListExperimentsResponse(
            experiments=[convert.experiment_to_proto(item) for item in items], next_page_token=token
        )

    def _act(
        self,
        request: experiment_pb2.ExperimentActionRequest,
        context: grpc.ServicerContext,
        verb: Callable[..., Experiment],
        gate_note: Callable[[str], str] | None = None,
    ) -> experiment_pb2.Experiment:
        experiment_id = convert.experiment_id_from_name("name", request.name)
        request_id = self._request_key(request.request_id)
        if len(request.reason) > 1000:
            raise InvalidArgument("reason", "is longer than 1000 characters")
        if request.force and gate_note is None:
            raise InvalidArgument("force", "applies to StartExperiment only")
        reason = gate_note(experiment_id) if gate_note is not None else request.reason
        with _domain_errors():
            changed = verb(experiment_id, self._role_of(context), reason, request_id)
        return convert.experiment_to_proto(changed)

    def StartExperiment(  # noqa: N802
        self, request: experiment_pb2.ExperimentActionRequest, context: grpc.ServicerContext
    ) -> experiment_pb2.Experiment:
        def gate_note(experiment_id: str) -> str:
            """The start's reason, with the offline gate's verdict for a draft; refuses unless forced."""
            if self._gate is None:
                return request.reason
            with _domain_errors():
                experiment = self._service.get(experiment_id)
            if experiment.state is not ExperimentState.DRAFT:
                return request.reason  # a resume or a retried start: judged when it first started
            verdict = self._gate.check(experiment)
            if not verdict.passed and not request.force:
                # Arms by position, not by name or policy: errors never repeat a request value
                # (the history entry keeps the full verdict for the experimenter).
                arms = ", ".join(f"experiment.arms[{i}]" for i, c in enumerate(verdict.checks) if c.refused)
                bounds = ", ".join(
                    f"experiment.arms[{i}] {c.estimate.ci_low:.4g}"
                    for i, c in enumerate(verdict.checks)
                    if c.estimate is not None
                )
                raise FailedPrecondition(
                    f"offline gate refused: {arms} has an off-policy lower bound below the control "
                    f"arm's lower bound minus tolerance {verdict.tolerance:.4g} (lower bounds: {bounds}); "
                    "start with force to override",
                    REFUSED_REASON,
                )
            if not verdict.passed:
                logger.warning(
                    "experiment started past the offline gate", extra={"experiment_id": experiment_id}
                )
                note = f"FORCED past the {verdict.summary}"
            else:
                note = verdict.summary
            return f"{request.reason or 'started'}; {note}"

        return self._act(request, context, self._service.start, gate_note)

    def AdvanceExperiment(  # noqa: N802
        self, request: experiment_pb2.ExperimentActionRequest, context: grpc.ServicerContext
    ) -> experiment_pb2.Experiment:
        return self._act(request, context, self._service.advance)

    def PauseExperiment(  # noqa: N802
        self, request: experiment_pb2.ExperimentActionRequest, context: grpc.ServicerContext
    ) -> experiment_pb2.Experiment:
        return self._act(request, context, self._service.pause)

    def RollbackExperiment(  # noqa: N802
        self, request: experiment_pb2.ExperimentActionRequest, context: grpc.ServicerContext
    ) -> experiment_pb2.Experiment:
        return self._act(request, context, self._service.rollback)

    def ConcludeExperiment(  # noqa: N802
        self, request: experiment_pb2.ExperimentActionRequest, context: grpc.ServicerContext
    ) -> experiment_pb2.Experiment:
        return self._act(request, context, self._service.conclude)

    def GetExperimentReport(  # noqa: N802
        self, request: experiment_pb2.GetExperimentReportRequest, context: grpc.ServicerContext
    ) -> experiment_pb2.ExperimentReport:
        experiment_id = convert.experiment_id_from_name("name", request.name)
        with _domain_errors():
            report = convert.report_to_proto(self._service.report(experiment_id))
            if self._arm_models is not None:
                report.arm_models.extend(
                    experiment_pb2.ArmModel(
                        arm=m.arm, policy=m.policy, task=m.task, version=m.version, examples=m.examples
                    )
                    for m in self._arm_models(experiment_id)
                )
            return report

    def ListExperimentChanges(  # noqa: N802
        self, request: experiment_pb2.ListExperimentChangesRequest, context: grpc.ServicerContext
    ) -> experiment_pb2.ListExperimentChangesResponse:
        experiment_id = convert.experiment_id_from_name("name", request.name)
        with _domain_errors():
            entries, token = self._service.history(
                experiment_id, request.page_size, request.page_token, request.include_evaluations
            )
        return experiment_pb2.ListExperimentChangesResponse(
            changes=[convert.change_to_proto(entry) for entry in entries], next_page_token=token
        )

"""Typed domain errors and their one mapping to gRPC statuses (AIP-193).

Messages are written by us and name fields, never values: a request value in an
error could be personal data. INTERNAL never carries exception text.
"""

from __future__ import annotations

import logging

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from sqlalchemy import exc as sa_exc

from tacit.store.db import StorageUnavailable

logger = logging.getLogger("tacit.server")

DOMAIN = "tacit.dev"


class TacitError(Exception):
    """Base of the errors that reach a caller."""

    code = grpc.StatusCode.INTERNAL
    reason = "INTERNAL"

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.message = message
        if reason:
            self.reason = reason


class InvalidArgument(TacitError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    def __init__(self, field: str, description: str, reason: str | None = None):
        super().__init__(f"{field}: {description}", reason)
        self.field = field
        self.description = description


# The resource type each NOT_FOUND reason names in its google.rpc.ResourceInfo.
RESOURCE_TYPES: dict[str, str] = {
    "DECISION_NOT_FOUND": "tacit.v1.Decision",
    "SLOT_NOT_FOUND": "tacit.v1.Slot",
    "EXPERIMENT_NOT_FOUND": "tacit.v1.Experiment",
    "MODEL_NOT_FOUND": "tacit.v1.Model",
    "CATALOGUE_ITEM_NOT_FOUND": "tacit.v1.CatalogueItem",
    "METRIC_NOT_FOUND": "tacit.v1.Metric",
}


class NotFound(TacitError):
    """A missing resource; its status carries a ResourceInfo with the type (from the reason).

    `resource_name` only for names that are not client-chosen free text (an experiment's
    `experiments/{id}`, a model's `models/...`); a decision's event id or a slot string
    a caller sent is client input and stays out (resource_name empty).
    """

    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"

    def __init__(self, message: str, reason: str, resource_name: str = ""):
        if reason not in RESOURCE_TYPES:
            raise ValueError(f"NOT_FOUND reason {reason} has no resource type")  # a bug of ours
        super().__init__(message, reason)
        self.resource_type = RESOURCE_TYPES[reason]
        self.resource_name = resource_name


class AlreadyExists(TacitError):
    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "ALREADY_EXISTS"


class FailedPrecondition(TacitError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class Unavailable(TacitError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = "STORAGE_UNAVAILABLE"


class ResourceExhausted(TacitError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "RESOURCE_EXHAUSTED"


STORAGE_UNAVAILABLE_MESSAGE = "storage is unavailable; retry with the same request id"


def expected_error(error: BaseException) -> TacitError | None:
    """The status for failures that are not bugs: storage down, stalled or timed out.

    Whatever path a database failure takes (our transaction helper, a session used
    directly, the pool's checkout timeout, a statement cut off by its deadline), the
    caller gets UNAVAILABLE with reason STORAGE_UNAVAILABLE and can retry.
    """
    if isinstance(error, StorageUnavailable):
        return Unavailable(STORAGE_UNAVAILABLE_MESSAGE)
    if isinstance(error, sa_exc.DBAPIError) and (
        error.connection_invalidated or isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError)
    ):
        return Unavailable(STORAGE_UNAVAILABLE_MESSAGE)
    if isinstance(error, sa_exc.TimeoutError | sa_exc.PendingRollbackError):  # no connection in time, or cut
        return Unavailable(STORAGE_UNAVAILABLE_MESSAGE)
    return None


_GRPC_TO_RPC = {
    grpc.StatusCode.INVALID_ARGUMENT: code_pb2.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND: code_pb2.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS: code_pb2.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION: code_pb2.FAILED_PRECONDITION,
    grpc.StatusCode.UNAVAILABLE: code_pb2.UNAVAILABLE,
    grpc.StatusCode.PERMISSION_DENIED: code_pb2.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED: code_pb2.UNAUTHENTICATED,
    grpc.StatusCode.INTERNAL: code_pb2.INTERNAL,
    grpc.StatusCode.UNIMPLEMENTED: code_pb2.UNIMPLEMENTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED: code_pb2.RESOURCE_EXHAUSTED,
}


def rich_status(
    code: grpc.StatusCode,
    message: str,
    reason: str,
    field: str | None = None,
    resource: error_details_pb2.ResourceInfo | None = None,
) -> tuple[grpc.StatusCode, str, tuple[tuple[str, bytes], ...]]:
    """Builds the trailing metadata with ErrorInfo and BadRequest or ResourceInfo details."""
    details = []
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN))
    details.append(info)
    if resource is not None:
        packed = any_pb2.Any()
        packed.Pack(resource)
        details.append(packed)
    if field is not None:
        bad = any_pb2.Any()
        bad.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=field, description=message)
                ]
            )
        )
        details.append(bad)
    status = status_pb2.Status(code=_GRPC_TO_RPC[code], message=message, details=details)
    return code, message, (("grpc-status-details-bin", status.SerializeToString()),)


def abort_with(context: grpc.ServicerContext, error: TacitError) -> None:
    """Ends the call with the status for `error` (never returns)."""
    field = error.field if isinstance(error, InvalidArgument) else None
    resource = (
        error_details_pb2.ResourceInfo(resource_type=error.resource_type, resource_name=error.resource_name)
        if isinstance(error, NotFound)
        else None
    )
    code, message, trailers = rich_status(error.code, error.message, error.reason, field, resource)
    context.set_trailing_metadata(trailers)
    context.abort(code, message)

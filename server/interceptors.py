"""Cross-cutting concerns around every RPC: auth, error mapping, metrics, access log.

The access log records the method, the status code and the duration: never a
request field.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from tacit.privacy.boundary import InvalidSubjectError
from tacit.server.auth import TokenStore, required_roles
from tacit.server.errors import InvalidArgument, TacitError, Unavailable, abort_with, rich_status
from tacit.server.metrics import RPC_ERRORS, RPC_SECONDS
from tacit.store.db import StorageUnavailable

logger = logging.getLogger("tacit.server")


def _deny(code: grpc.StatusCode, message: str, reason: str) -> grpc.RpcMethodHandler:
    def behaviour(_request: Any, context: grpc.ServicerContext) -> None:
        status_code, text, trailers = rich_status(code, message, reason)
        context.set_trailing_metadata(trailers)
        context.abort(status_code, text)

    return grpc.unary_unary_rpc_method_handler(behaviour)


class AuthInterceptor(grpc.ServerInterceptor):
    """Checks the bearer token's role against the method before anything runs."""

    def __init__(self, tokens: TokenStore | None):
        self._tokens = tokens

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        roles = required_roles(handler_call_details.method)
        if roles is None or self._tokens is None:
            return continuation(handler_call_details)
        token = ""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
                token = value[len("Bearer ") :]
        role = self._tokens.role_of(token) if token else None
        if role is None:
            return _deny(
                grpc.StatusCode.UNAUTHENTICATED, "missing or unknown bearer token", "UNAUTHENTICATED"
            )
        if role not in roles:
            return _deny(
                grpc.StatusCode.PERMISSION_DENIED,
                f"role {role.value} may not call this method",
                "PERMISSION_DENIED",
            )
        return continuation(handler_call_details)


def _map_error(method: str, error: BaseException, context: grpc.ServicerContext) -> None:
    if isinstance(error, TacitError):
        abort_with(context, error)
    if isinstance(error, InvalidSubjectError):
        abort_with(context, InvalidArgument("subject_id", str(error)))
    if isinstance(error, StorageUnavailable):
        abort_with(context, Unavailable("storage is unavailable; retry with the same request id"))
    RPC_ERRORS.labels(method).inc()
    # The exception text may hold request data: log its type and frames only.
    frames = "".join(traceback.format_list(traceback.extract_tb(error.__traceback__)))
    logger.error(
        "internal error", extra={"method": method, "error_type": type(error).__name__, "frames": frames}
    )
    abort_with(context, TacitError("internal error"))


class ErrorAndMetricsInterceptor(grpc.ServerInterceptor):
    """Maps domain errors to statuses in one place and times every call."""

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method

        def observe(started: float, context: grpc.ServicerContext) -> None:
            code = context.code() if hasattr(context, "code") else None
            name = code.name if isinstance(code, grpc.StatusCode) else "OK"
            elapsed = time.perf_counter() - started
            RPC_SECONDS.labels(method, name).observe(elapsed)
            logger.debug("rpc", extra={"method": method, "code": name, "ms": round(elapsed * 1e3, 3)})

        if handler.unary_unary:
            inner_unary: Callable[..., Any] = handler.unary_unary

            def unary(request: Any, context: grpc.ServicerContext) -> Any:
                started = time.perf_counter()
                try:
                    return inner_unary(request, context)
                except Exception as error:  # noqa: BLE001 - mapped, never leaked
                    if _is_abort(error):
                        raise
                    _map_error(method, error, context)
                finally:
                    observe(started, context)

            return grpc.unary_unary_rpc_method_handler(
                unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream:
            inner_stream: Callable[..., Iterator[Any]] = handler.unary_stream

            def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                started = time.perf_counter()
                try:
                    yield from inner_stream(request, context)
                except Exception as error:  # noqa: BLE001
                    if _is_abort(error):
                        raise
                    _map_error(method, error, context)
                finally:
                    observe(started, context)

            return grpc.unary_stream_rpc_method_handler(
                stream, handler.request_deserializer, handler.response_serializer
            )
        return handler


def _is_abort(error: BaseException) -> bool:
    # grpc's context.abort raises a bare Exception once the status is set.
    return type(error) is Exception

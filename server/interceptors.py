"""Cross-cutting concerns around every RPC: auth, error mapping, metrics, access log, budgets.

The access log records the method, the status code and the duration: never a
request field.

Threads are budgeted per kind of call (`ThreadBudgets`):
- streaming calls run on their own small pool (`server.max_streams`); a stream beyond it
  is answered RESOURCE_EXHAUSTED at once, and a stream that waits on its client (a reader
  that does not read, a bidi caller that does not send) longer than
  `server.stream_idle_seconds` is cancelled;
- calls that never wait for storage (Rank, health Check) run on a pool of their own, so
  unary calls stuck on a stalled database cannot starve them;
- every other unary call shares the main pool (`server.max_workers`).
Health's `Watch` keeps grpc's non-blocking form and holds no thread at all.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
from google.protobuf.message import Message

from tacit.privacy.boundary import InvalidSubjectError
from tacit.server.auth import TokenStore, required_roles
from tacit.server.converters import nul_character_field
from tacit.server.errors import (
    InvalidArgument,
    ResourceExhausted,
    TacitError,
    abort_with,
    expected_error,
    rich_status,
)
from tacit.server.metrics import RPC_ERRORS, RPC_SECONDS, STREAMS_CANCELLED_IDLE, STREAMS_REFUSED

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
            # Known method or not: an unauthenticated caller learns nothing about which exist.
            return _deny(
                grpc.StatusCode.UNAUTHENTICATED, "missing or unknown bearer token", "UNAUTHENTICATED"
            )
        handler = continuation(handler_call_details)
        if handler is None:  # no such method: UNIMPLEMENTED for every authenticated role
            return _deny(grpc.StatusCode.UNIMPLEMENTED, "no such method", "METHOD_NOT_FOUND")
        if role not in roles:
            return _deny(
                grpc.StatusCode.PERMISSION_DENIED,
                f"role {role.value} may not call this method",
                "PERMISSION_DENIED",
            )
        return handler


def _map_error(method: str, error: BaseException, context: grpc.ServicerContext) -> None:
    if isinstance(error, TacitError):
        abort_with(context, error)
    if isinstance(error, InvalidSubjectError):
        abort_with(context, InvalidArgument("subject_id", str(error)))
    expected = expected_error(error)
    if expected is not None:
        abort_with(context, expected)
    RPC_ERRORS.labels(method).inc()
    # The exception text may hold request data: log its type and frames only.
    frames = "".join(traceback.format_list(traceback.extract_tb(error.__traceback__)))
    logger.error(
        "internal error", extra={"method": method, "error_type": type(error).__name__, "frames": frames}
    )
    abort_with(context, TacitError("internal error"))


class _Refused:
    """Stands in for a request refused while deserializing; the handler answers with `error`."""

    def __init__(self, error: InvalidArgument):
        self.error = error


MALFORMED = _Refused(
    InvalidArgument("request", "is not a valid protobuf message for this method", "MALFORMED_REQUEST")
)


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """grpc answers INTERNAL when deserializing fails; this lets the handler say INVALID_ARGUMENT.

    A string field holding a NUL character is refused here too, for every method at once:
    PostgreSQL cannot store one (the database error would be INTERNAL) and SQLite can.
    """
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            request = deserializer(data)
        except Exception:  # noqa: BLE001 - DecodeError and friends: the bytes are the client's fault
            return MALFORMED
        # A NUL character is a 0x00 byte on the wire: no 0x00 byte, nothing to walk.
        if b"\x00" in data and isinstance(request, Message):
            field = nul_character_field(request)
            if field is not None:
                return _Refused(InvalidArgument(field, "must not contain a NUL character", "NUL_CHARACTER"))
        return request

    return deserialize


def _non_blocking(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """Wraps a non-blocking server stream (callback style), keeping the flag grpc looks for."""
    inner = handler.unary_stream

    def watch(request: Any, context: grpc.ServicerContext, send_response_callback: Any = None) -> Any:
        if isinstance(request, _Refused):
            abort_with(context, request.error)
        return inner(request, context, send_response_callback)

    watch.experimental_non_blocking = True  # type: ignore[attr-defined]
    watch.experimental_thread_pool = getattr(inner, "experimental_thread_pool", None)  # type: ignore[attr-defined]
    return grpc.unary_stream_rpc_method_handler(
        watch, _tolerant(handler.request_deserializer), handler.response_serializer
    )


class _Stream:
    """One running stream as the watchdog sees it."""

    __slots__ = ("context", "waiting_since")

    def __init__(self, context: grpc.ServicerContext):
        self.context = context
        self.waiting_since: float | None = None


class StreamBudget:
    """A thread pool for streaming calls, a cap on how many run, and an idle watchdog."""

    def __init__(self, max_streams: int, idle_seconds: float):
        self.max_streams = max_streams
        self.idle_seconds = idle_seconds
        self._slots = threading.BoundedSemaphore(max_streams)
        # Two threads beyond the budget so that refusals are answered at once even when
        # every budgeted thread is held by a stream.
        self.pool = futures.ThreadPoolExecutor(max_workers=max_streams + 2, thread_name_prefix="tacit-stream")
        self._running: dict[int, _Stream] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="tacit-stream-watchdog", daemon=True)
        self._watchdog.start()

    def acquire(self) -> bool:
        return self._slots.acquire(blocking=False)

    def release(self) -> None:
        self._slots.release()

    def track(self, context: grpc.ServicerContext) -> _Stream:
        stream = _Stream(context)
        with self._lock:
            self._running[id(stream)] = stream
        return stream

    def untrack(self, stream: _Stream) -> None:
        with self._lock:
            self._running.pop(id(stream), None)

    def _watch(self) -> None:
        interval = min(1.0, max(0.05, self.idle_seconds / 4))
        while not self._stop.wait(interval):
            now = time.monotonic()
            with self._lock:
                idle = [
                    s
                    for s in self._running.values()
                    if s.waiting_since is not None and now - s.waiting_since > self.idle_seconds
                ]
            for stream in idle:
                stream.waiting_since = None
                STREAMS_CANCELLED_IDLE.inc()
                logger.info("stream cancelled: client idle beyond stream_idle_seconds")
                stream.context.cancel()

    def close(self) -> None:
        self._stop.set()
        self.pool.shutdown(wait=False, cancel_futures=True)


def _waiting(stream: _Stream, requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
    """The client's request stream, marked as waiting while we block on it."""
    while True:
        stream.waiting_since = time.monotonic()
        try:
            request = next(requests)
        except StopIteration:
            return
        finally:
            stream.waiting_since = None
        if isinstance(request, _Refused):
            abort_with(context, request.error)
        yield request


class ThreadBudgets:
    """The thread pools besides grpc's main one: streams, and calls that never wait for storage."""

    def __init__(
        self,
        max_streams: int,
        stream_idle_seconds: float,
        storage_free_threads: int,
        storage_free_methods: frozenset[str],
    ):
        self.streams = StreamBudget(max_streams, stream_idle_seconds)
        self.storage_free = futures.ThreadPoolExecutor(
            max_workers=storage_free_threads, thread_name_prefix="tacit-memory"
        )
        self.storage_free_methods = storage_free_methods

    def close(self) -> None:
        self.streams.close()
        self.storage_free.shutdown(wait=False, cancel_futures=True)


class ErrorAndMetricsInterceptor(grpc.ServerInterceptor):
    """Maps domain errors to statuses in one place, times every call, applies the thread budgets."""

    def __init__(self, budgets: ThreadBudgets | None = None):
        self._budgets = budgets
        self._streams = budgets.streams if budgets is not None else None

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        if handler.unary_stream is not None and getattr(
            handler.unary_stream, "experimental_non_blocking", False
        ):
            return _non_blocking(handler)  # health's Watch: it must keep holding no thread

        def observe(started: float, context: grpc.ServicerContext) -> None:
            code = context.code() if hasattr(context, "code") else None
            name = code.name if isinstance(code, grpc.StatusCode) else "OK"
            elapsed = time.perf_counter() - started
            RPC_SECONDS.labels(method, name).observe(elapsed)
            logger.debug("rpc", extra={"method": method, "code": name, "ms": round(elapsed * 1e3, 3)})

        def guarded(call: Callable[[], Any], context: grpc.ServicerContext) -> Any:
            try:
                return call()
            except Exception as error:  # noqa: BLE001 - mapped, never leaked
                if _is_abort(error) or isinstance(error, grpc.RpcError):
                    raise  # aborted, or the client's stream ended under us (cancelled): grpc's own
                _map_error(method, error, context)

        deserializer = _tolerant(handler.request_deserializer)

        if handler.unary_unary:
            inner_unary: Callable[..., Any] = handler.unary_unary

            def unary(request: Any, context: grpc.ServicerContext) -> Any:
                started = time.perf_counter()
                try:
                    if isinstance(request, _Refused):
                        abort_with(context, request.error)
                    return guarded(lambda: inner_unary(request, context), context)
                finally:
                    observe(started, context)

            if self._budgets is not None and method in self._budgets.storage_free_methods:
                unary.experimental_thread_pool = self._budgets.storage_free  # type: ignore[attr-defined]
            return grpc.unary_unary_rpc_method_handler(unary, deserializer, handler.response_serializer)

        if handler.stream_unary:
            inner_client_stream: Callable[..., Any] = handler.stream_unary

            def client_stream(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
                started = time.perf_counter()
                with self._budgeted(context) as stream:
                    try:
                        feed = _waiting(stream, requests, context) if stream else requests
                        return guarded(lambda: inner_client_stream(feed, context), context)
                    finally:
                        observe(started, context)

            return self._on_stream_pool(
                grpc.stream_unary_rpc_method_handler(client_stream, deserializer, handler.response_serializer)
            )

        inner_stream: Callable[..., Iterator[Any]] | None = handler.unary_stream or handler.stream_stream
        if inner_stream is None:
            return handler
        takes_stream = handler.stream_stream is not None
        run_stream: Callable[..., Iterator[Any]] = inner_stream

        def stream(argument: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            started = time.perf_counter()
            with self._budgeted(context) as watched:
                try:
                    if takes_stream:
                        argument = _waiting(watched, argument, context) if watched else argument
                    elif isinstance(argument, _Refused):
                        abort_with(context, argument.error)
                    responses = guarded(lambda: iter(run_stream(argument, context)), context)
                    while True:
                        response = guarded(lambda: next(responses, _END), context)
                        if response is _END:
                            return
                        if watched is not None:
                            watched.waiting_since = time.monotonic()
                        yield response
                        if watched is not None:
                            watched.waiting_since = None
                finally:
                    observe(started, context)

        if takes_stream:
            wrapped = grpc.stream_stream_rpc_method_handler(stream, deserializer, handler.response_serializer)
        else:
            wrapped = grpc.unary_stream_rpc_method_handler(stream, deserializer, handler.response_serializer)
        return self._on_stream_pool(wrapped)

    def _on_stream_pool(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if self._streams is not None:
            behaviour = handler.unary_stream or handler.stream_stream or handler.stream_unary
            behaviour.experimental_thread_pool = self._streams.pool  # type: ignore[union-attr]
        return handler

    def _budgeted(self, context: grpc.ServicerContext) -> _BudgetSlot:
        return _BudgetSlot(self._streams, context)


_END = object()


class _BudgetSlot:
    """Takes one stream slot for the life of a call, or refuses the call with RESOURCE_EXHAUSTED."""

    def __init__(self, budget: StreamBudget | None, context: grpc.ServicerContext):
        self._budget = budget
        self._context = context
        self._stream: _Stream | None = None

    def __enter__(self) -> _Stream | None:
        if self._budget is None:
            return None
        if not self._budget.acquire():
            STREAMS_REFUSED.inc()
            abort_with(
                self._context,
                ResourceExhausted(
                    f"more than server.max_streams={self._budget.max_streams} streams are open; retry later",
                    "STREAM_BUDGET_EXHAUSTED",
                ),
            )
        self._stream = self._budget.track(self._context)
        return self._stream

    def __exit__(self, *_exc: object) -> None:
        if self._budget is not None and self._stream is not None:
            self._budget.untrack(self._stream)
            self._budget.release()
            self._stream = None


def _is_abort(error: BaseException) -> bool:
    # grpc's context.abort raises a bare Exception once the status is set.
    return type(error) is Exception

"""A Watch stream that never reads, or one closing while a status changes, cannot freeze health.

grpc's own servicer sends to watchers while holding its lock: a send stuck on one watcher
blocked `set` (the readiness probe, shutdown) and every `Check`. The stuck watcher here is a
send callback that blocks, as grpc's does when a client stops reading.
"""

from __future__ import annotations

import threading

from grpc_health.v1 import health, health_pb2

from tacit.server.health import HealthServicer

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


class _Context:
    def __init__(self) -> None:
        self.callbacks: list = []

    def add_callback(self, callback) -> None:  # type: ignore[no-untyped-def]
        self.callbacks.append(callback)


def _stuck_watcher(servicer: health.HealthServicer, release: threading.Event) -> list[int]:
    """Registers a watcher whose second send blocks until `release` (a client that stopped reading)."""
    seen: list[int] = []

    def send(response: health_pb2.HealthCheckResponse | None) -> None:
        if response is None:
            return
        seen.append(response.status)
        if len(seen) > 1:
            release.wait()

    servicer.Watch(health_pb2.HealthCheckRequest(service=""), _Context(), send_response_callback=send)
    return seen


def _set_returns(servicer: health.HealthServicer, status: int, seconds: float = 5.0) -> bool:
    done = threading.Event()

    def run() -> None:
        servicer.set("", status)
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done.wait(seconds)


def test_grpc_servicer_blocks_on_a_stuck_watcher_which_is_why_ours_exists() -> None:
    release = threading.Event()
    servicer = health.HealthServicer(experimental_non_blocking=True)
    _stuck_watcher(servicer, release)
    assert not _set_returns(servicer, NOT_SERVING, seconds=1.0)
    release.set()


def test_a_stuck_watcher_blocks_neither_set_nor_check_and_the_others_are_told() -> None:
    release = threading.Event()
    servicer = HealthServicer()
    try:
        stuck = _stuck_watcher(servicer, release)
        assert _set_returns(servicer, NOT_SERVING)
        assert _set_returns(servicer, SERVING)
        reply = servicer.Check(health_pb2.HealthCheckRequest(service=""), _Context())
        assert reply.status == SERVING
        release.set()
        told = threading.Event()
        later: list[int] = []

        def send(response: health_pb2.HealthCheckResponse | None) -> None:
            if response is not None:
                later.append(response.status)
                if response.status == NOT_SERVING:
                    told.set()

        servicer.Watch(health_pb2.HealthCheckRequest(service=""), _Context(), send_response_callback=send)
        assert _set_returns(servicer, NOT_SERVING)
        assert told.wait(5.0), later
        assert stuck[0] == SERVING and NOT_SERVING in stuck
    finally:
        release.set()
        servicer.close()


def test_graceful_shutdown_with_a_stuck_watcher_returns_and_freezes_the_status() -> None:
    release = threading.Event()
    servicer = HealthServicer()
    try:
        _stuck_watcher(servicer, release)
        finished = threading.Event()
        shutdown = threading.Thread(
            target=lambda: (servicer.enter_graceful_shutdown(), finished.set()), daemon=True
        )
        shutdown.start()
        assert finished.wait(5.0)
        servicer.set("", SERVING)  # ignored after shutdown began
        assert servicer.Check(health_pb2.HealthCheckRequest(service=""), _Context()).status == NOT_SERVING
    finally:
        release.set()
        servicer.close()

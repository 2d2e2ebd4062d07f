"""grpc.health.v1 for Tacit: grpc's servicer, minus the way a watcher can freeze it.

grpc's `HealthServicer.set` sends to every Watch stream while holding the servicer's
lock. A send waits for the server's event thread; that thread, closing another Watch
stream, waits for the same lock (deadlock), and a watcher that never reads blocks the
send once its flow-control window is full — while `Check` waits for the lock too.
Here statuses change under the lock and watchers are told outside it, by one notifier
thread that keeps only the newest status per service; a stuck watcher can delay other
watchers' updates (until the idle-stream watchdog cancels it), never `set` or `Check`.
"""

from __future__ import annotations

import threading

from grpc_health.v1 import health, health_pb2


class HealthServicer(health.HealthServicer):
    """Statuses set under the lock; Watch streams notified outside it, newest status only."""

    def __init__(self) -> None:
        super().__init__(experimental_non_blocking=True)
        self._pending: dict[str, int] = {}
        self._wake = threading.Condition()
        self._closed = False
        self._notifier = threading.Thread(target=self._notify_loop, name="tacit-health-notify", daemon=True)
        self._notifier.start()

    def set(self, service: str, status: int) -> None:
        with self._lock:
            if self._gracefully_shutting_down:
                return
            self._server_status[service] = status
        with self._wake:
            self._pending[service] = status
            self._wake.notify()

    def enter_graceful_shutdown(self) -> None:
        with self._lock:
            if self._gracefully_shutting_down:  # type: ignore[has-type]
                return
            services = list(self._server_status)
        for service in services:
            self.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        with self._lock:
            self._gracefully_shutting_down = True

    def close(self) -> None:
        """Stops the notifier once what is pending was handed to the watchers."""
        with self._wake:
            self._closed = True
            self._wake.notify()

    def _notify_loop(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._closed:
                    self._wake.wait()
                if not self._pending:
                    return
                pending, self._pending = self._pending, {}
            for service, status in pending.items():
                with self._lock:
                    callbacks = list(self._send_response_callbacks.get(service, ()))
                for send in callbacks:
                    send(health_pb2.HealthCheckResponse(status=status))

"""Several server processes on one port: gRPC Python's answer to the GIL.

`tacit serve` with `server.workers > 1` prepares the shared state once (schema,
tokens, pseudonym keys), picks the port, then spawns that many worker
processes that each bind it with SO_REUSEPORT so the kernel spreads
connections. Worker 0 also runs the learner and the rollout rules; the others
only serve and log. With a metrics port the parent serves one Prometheus
endpoint that sums the workers' values (prometheus_client's multiprocess
mode, see `tacit.server.metrics`).
A reward that reaches a worker other than the one that ranked its decision
waits up to a few flush intervals for the decision to be committed (see
`DecisionEngine.reward`).
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import threading
from pathlib import Path
from typing import Any

from tacit.privacy.pseudonym import KeyRing
from tacit.server.auth import TokenStore
from tacit.server.config import Settings
from tacit.server.metrics import mark_worker_dead
from tacit.store.db import Database

logger = logging.getLogger("tacit.server")


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def prepare_shared_state(settings: Settings) -> None:
    """Creates what every worker reads, once, before any worker starts."""
    from tacit.server.app import require_shared_keys

    settings.storage.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database.open(settings.database_url)
    # Checked here, once, so a replica with other keys fails with the clear error, not a dead worker.
    require_shared_keys(db, KeyRing.load_or_create(settings.keys_path), settings)
    db.dispose()
    if settings.auth.enabled:
        TokenStore.load_or_create(settings.tokens_path)


def worker_settings(settings: Settings, index: int, address: str) -> Settings:
    data = settings.model_dump()
    data["server"]["address"] = address
    data["server"]["reuse_port"] = True
    data["learner"]["enabled"] = settings.learner.enabled and index == 0
    data["experiments"]["evaluate"] = settings.experiments.evaluate and index == 0
    if settings.server.seed is not None:
        # Each worker its own reproducible stream: the same seed would make them choose in lockstep.
        data["server"]["seed"] = (settings.server.seed + index) % 2**32
    return Settings(**data)


def _worker_main(settings_data: dict[str, Any], ready: Any, stop: Any) -> None:
    from tacit.server.app import RunningServer
    from tacit.server.logs import configure_logging

    settings = Settings(**settings_data)
    configure_logging(settings.server.log_level)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    running = RunningServer(settings)
    ready.release()
    stop.wait()
    running.stop()


class WorkerPool:
    """Starts, watches and stops the worker processes.

    `metrics_dir` is the multiprocess metrics directory the workers write to (already
    in PROMETHEUS_MULTIPROC_DIR, see `prepare_multiprocess_dir`); None without metrics.
    """

    def __init__(self, settings: Settings, metrics_dir: Path | None = None):
        self.settings = settings
        self.metrics_dir = metrics_dir
        host, _, port = settings.server.address.rpartition(":")
        self.host = host or "127.0.0.1"
        self.port = int(port) if port and int(port) != 0 else _free_port(self.host)
        self._context = multiprocessing.get_context("spawn")
        self._stop = self._context.Event()
        self._processes: list[Any] = []

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        prepare_shared_state(self.settings)
        ready = self._context.Semaphore(0)
        address = f"{self.host}:{self.port}"
        for index in range(self.settings.server.workers):
            data = worker_settings(self.settings, index, address).model_dump(mode="json")
            process = self._context.Process(
                target=_worker_main, args=(data, ready, self._stop), name=f"tacit-worker-{index}"
            )
            process.start()
            self._processes.append(process)
        for _ in self._processes:
            if not ready.acquire(timeout=120):
                self.stop()
                raise RuntimeError("a worker did not start")

    def stop(self, timeout: float = 60.0) -> None:
        self._stop.set()
        for process in self._processes:
            process.join(timeout)
            if process.is_alive():
                process.terminate()
                process.join(5)
            if self.metrics_dir is not None and process.pid is not None:
                mark_worker_dead(self.metrics_dir, process.pid)

    def wait(self, stopping: threading.Event) -> None:
        """Blocks until `stopping` is set or a worker dies."""
        while not stopping.wait(0.5):
            if any(not p.is_alive() for p in self._processes):
                logger.error("a worker exited; stopping the pool")
                break

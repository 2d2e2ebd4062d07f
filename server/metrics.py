"""Every Prometheus metric Tacit exports, defined here and imported where it is observed.

One process: the metrics live in prometheus_client's default registry and
`MetricsEndpoint` serves it. Several worker processes (`server.workers > 1`):
the parent points PROMETHEUS_MULTIPROC_DIR at a fresh per-run directory
before it spawns the workers, every worker writes its values to files there,
and the parent alone serves one endpoint that sums them
(`MultiProcessCollector`). Gauges say how their per-process values combine
(`multiprocess_mode`). Labels carry method names, status codes, slot names
(operator configuration) and fixed outcome words: never a request value.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from tacit.learning.learner import SlotProgress

logger = logging.getLogger("tacit.server")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# --- RPCs (observed by the interceptors) ---------------------------------------------------------
RPC_SECONDS = Histogram(
    "tacit_rpc_seconds",
    "RPC handling time by method and status code",
    ["method", "code"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1, 5),
)
RPC_ERRORS = Counter("tacit_rpc_internal_errors_total", "RPCs that failed with INTERNAL", ["method"])
STREAMS_REFUSED = Counter(
    "tacit_streams_refused_total", "Streaming calls refused because the stream budget was spent"
)
STREAMS_CANCELLED_IDLE = Counter(
    "tacit_streams_idle_cancelled_total", "Streams cancelled because their client stopped reading or sending"
)

# --- The decision loop (observed by DecisionEngine) ----------------------------------------------
DECISIONS_RANKED = Counter("tacit_decisions_total", "Decisions ranked, by slot", ["slot"])
REWARDS = Counter(
    "tacit_rewards_total",
    "Rewards received for a logged decision, by slot and outcome (joined, late, duplicate)",
    ["slot", "outcome"],
)

# --- The decision log (observed by DecisionLog) --------------------------------------------------
DECISIONS_LOGGED = Counter("tacit_decisions_logged_total", "Decisions committed to the log")
DECISIONS_LOST = Counter(
    "tacit_decisions_lost_total", "Decisions dropped because the log could not be written"
)
DECISIONS_PENDING = Gauge(
    "tacit_decisions_pending",
    "Decisions waiting in memory for the next flush (summed over live processes)",
    multiprocess_mode="livesum",
)

# --- Models, learner and audit chain (set by MetricsSampler) -------------------------------------
MODEL_VERSION = Gauge(
    "tacit_model_version",
    "Checkpoint version number each serving process uses for a slot or a challenger task (0 = untrained)",
    ["slot"],
    multiprocess_mode="liveall",
)
LEARNER_NEWEST_LEARNED = Gauge(
    "tacit_learner_newest_learned_timestamp_seconds",
    "Ranking time of the newest decision the learner has learned from, by slot (lag = time() - this)",
    ["slot"],
    multiprocess_mode="max",
)
LEARNER_BACKLOG = Gauge(
    "tacit_learner_backlog_decisions",
    "Decisions whose reward is final but that the learner has not learned yet, by slot",
    ["slot"],
    multiprocess_mode="mostrecent",
)
AUDIT_CHAIN_LENGTH = Gauge(
    "tacit_audit_chain_length",
    "Records in the anonymization audit chain (sequence number of its head)",
    multiprocess_mode="livemostrecent",
)


def version_number(version: str) -> int | None:
    """`v000042` -> 42; None for a version that is not a checkpoint number."""
    digits = version.removeprefix("v")
    return int(digits) if digits.isdigit() else None


class MetricsSampler:
    """Sets the gauges that describe state rather than events, every `interval` seconds."""

    def __init__(
        self,
        interval: float,
        served_versions: Callable[[], Mapping[str, str]],
        audit_chain_length: Callable[[], int],
        learner_progress: Callable[[], Mapping[str, SlotProgress]] | None = None,
    ):
        self._interval = interval
        self._served_versions = served_versions
        self._audit_chain_length = audit_chain_length
        self._learner_progress = learner_progress
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        for slot, version in self._served_versions().items():
            number = version_number(version)
            if number is not None:
                MODEL_VERSION.labels(slot).set(number)
        AUDIT_CHAIN_LENGTH.set(self._audit_chain_length())
        if self._learner_progress is not None:
            for slot, progress in self._learner_progress().items():
                if progress.newest_learned_at is not None:
                    LEARNER_NEWEST_LEARNED.labels(slot).set(progress.newest_learned_at.timestamp())
                LEARNER_BACKLOG.labels(slot).set(progress.backlog)

    def _run(self) -> None:
        while True:
            try:
                self.sample()
            except Exception:
                logger.warning("metrics sampling failed", exc_info=True)
            if self._stop.wait(self._interval):
                return

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tacit-metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def prepare_multiprocess_dir(data_dir: Path) -> Path:
    """Empties `<data_dir>/metrics` (mode 0700) and points this process's children at it.

    Called by the parent before it spawns the workers, which inherit the variable and
    so write their values to files there. One `tacit serve` per data directory.
    """
    path = data_dir.resolve() / "metrics"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o700, parents=True)
    os.chmod(path, 0o700)  # mkdir's mode is subject to the umask
    os.environ[MULTIPROC_ENV] = str(path)
    return path


class MetricsEndpoint:
    """The HTTP endpoint Prometheus scrapes: this process's registry or the workers' files."""

    def __init__(self, port: int, multiprocess_dir: Path | None = None, addr: str = "127.0.0.1"):
        registry: CollectorRegistry = REGISTRY
        if multiprocess_dir is not None:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=str(multiprocess_dir))
        self._server: WSGIServer
        self._server, self._thread = start_http_server(port, addr=addr, registry=registry)

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def mark_worker_dead(multiprocess_dir: Path, pid: int) -> None:
    """Drops an exited worker's live gauges; its counters keep counting in the sums."""
    multiprocess.mark_process_dead(pid, str(multiprocess_dir))

"""Wiring: build every collaborator from settings and compose the gRPC server.

`Runtime` owns the long-lived pieces (database, privacy boundary, models,
decision log, learner); `create_server` composes interceptors and servicers as
in grpc's own interceptor examples.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Container
from concurrent import futures
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from sqlalchemy.orm import Session

from tacit.experiments.service import ExperimentService
from tacit.learning.engagement import ServingEngagement
from tacit.learning.erasure import mark_models_for_erasure
from tacit.learning.learner import Learner, Rebuild, SlotLearning
from tacit.learning.profiles import ProfileStore
from tacit.learning.registry import ServingModels
from tacit.learning.registry_models import ServingClassifiers
from tacit.learning.retraining import Retrainer, RetrainPolicy
from tacit.privacy import audit_log
from tacit.privacy.analyzer import AnalyzerSettings, build_analyzer
from tacit.privacy.audit_log import append_entries, chain_length
from tacit.privacy.boundary import BoundaryLimits, PrivacyBoundary
from tacit.privacy.client_ids import digest_legacy_ids
from tacit.privacy.erasure import RetentionPurger, model_rebuild_entry, retention_purger
from tacit.privacy.key_registry import KeyRingMismatch, register_key_ring
from tacit.privacy.policy import DEFAULT_POLICIES, PolicySet
from tacit.privacy.pseudonym import KeyRing
from tacit.server.apprentice import ApprenticeHook, AutoSwitch, SlotModes
from tacit.server.auth import TokenStore, require_private
from tacit.server.auto_optimize import AutoOptimizer
from tacit.server.catalogue import Catalogue
from tacit.server.challengers import arm_models, challenger_source, policy_check, promoter
from tacit.server.config import ConfigError, Settings
from tacit.server.decision_log import DecisionLog
from tacit.server.decisions import DecisionEngine
from tacit.server.engagement import EngagementPredictions
from tacit.server.events import EventRecorder
from tacit.server.health import HealthServicer
from tacit.server.interceptors import AuthInterceptor, ErrorAndMetricsInterceptor, ThreadBudgets
from tacit.server.metrics import MetricsSampler
from tacit.server.model_lifecycle import ModelLifecycle
from tacit.server.offline_gate import OfflineGate
from tacit.server.predictions import Predictions
from tacit.server.reflection import enable_reflection
from tacit.server.servicers.audit import AuditServicer
from tacit.server.servicers.catalogue import CatalogueRank, CatalogueServicer
from tacit.server.servicers.decision import DecisionServicer
from tacit.server.servicers.event import EventServicer
from tacit.server.servicers.experiment import ExperimentServicer, caller_role
from tacit.server.servicers.metric import MetricServicer
from tacit.server.servicers.model import ModelServicer
from tacit.server.servicers.prediction import PredictionServicer
from tacit.server.servicers.slot import SlotServicer
from tacit.store.db import Database, StorageUnavailable, Timeouts, make_private_dir
from tacit.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    catalogue_pb2,
    catalogue_pb2_grpc,
    decision_pb2,
    decision_pb2_grpc,
    event_pb2,
    event_pb2_grpc,
    experiment_pb2,
    experiment_pb2_grpc,
    metric_pb2,
    metric_pb2_grpc,
    model_pb2,
    model_pb2_grpc,
    prediction_pb2,
    prediction_pb2_grpc,
    slot_pb2,
    slot_pb2_grpc,
)

logger = logging.getLogger("tacit.server")

SERVICE_NAMES = (
    decision_pb2.DESCRIPTOR.services_by_name["DecisionService"].full_name,
    event_pb2.DESCRIPTOR.services_by_name["EventService"].full_name,
    prediction_pb2.DESCRIPTOR.services_by_name["PredictionService"].full_name,
    experiment_pb2.DESCRIPTOR.services_by_name["ExperimentService"].full_name,
    metric_pb2.DESCRIPTOR.services_by_name["MetricService"].full_name,
    audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name,
    model_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name,
    slot_pb2.DESCRIPTOR.services_by_name["SlotService"].full_name,
    catalogue_pb2.DESCRIPTOR.services_by_name["CatalogueService"].full_name,
)


def require_shared_keys(db: Database, keyring: KeyRing, settings: Settings) -> None:
    """Refuses to start a replica whose pseudonym keys differ from the database's (see key_registry)."""
    try:
        register_key_ring(db, keyring)
    except KeyRingMismatch as error:
        db.dispose()  # the caller never gets the database to close
        raise ConfigError(
            f"{error}. Every process on one database must use the same pseudonym keys: copy "
            f"the key file of a running replica to {settings.keys_path}, or point privacy.keys_file "
            "(TACIT_PRIVACY__KEYS_FILE) at one shared 0600 secret file, then start again"
        ) from None


def audit_rebuilds(policy_version: str, key_id: str) -> Callable[[Session, Rebuild], None]:
    """The learner's rebuild hook: one audit record per rebuilt slot, in the registering transaction."""

    def record(session: Session, rebuild: Rebuild) -> None:
        append_entries(
            session,
            [
                model_rebuild_entry(
                    datetime.now(UTC),
                    rebuild.task,
                    rebuild.old_version,
                    rebuild.new_version,
                    rebuild.examples_before,
                    rebuild.examples_after,
                    rebuild.files_deleted,
                    policy_version,
                    key_id,
                )
            ],
        )

    return record


# Calls that never wait for storage (Rank logs through the in-memory decision log): they get
# threads of their own, so calls stuck on a stalled database cannot starve them.
STORAGE_FREE_METHODS = frozenset({"/tacit.v1.DecisionService/Rank", "/grpc.health.v1.Health/Check"})


def thread_budgets(settings: Settings) -> ThreadBudgets:
    server = settings.server
    return ThreadBudgets(
        server.max_streams, server.stream_idle_seconds, server.max_workers, STORAGE_FREE_METHODS
    )


def policy_set(settings: Settings) -> PolicySet:
    """The built-in policies with the configured kinds replacing theirs."""
    return PolicySet.from_mapping({**DEFAULT_POLICIES, **settings.privacy.policies})


@dataclass
class Runtime:
    """Every long-lived collaborator of one server process."""

    settings: Settings
    db: Database
    keyring: KeyRing
    boundary: PrivacyBoundary
    models: ServingModels
    decision_log: DecisionLog
    engine: DecisionEngine
    events: EventRecorder
    tokens: TokenStore | None
    learner: Learner | None
    experiments: ExperimentService
    _stop: threading.Event = field(default_factory=threading.Event)
    _reloader: threading.Thread | None = None
    retention: RetentionPurger | None = None
    _evaluator: threading.Thread | None = None
    profiles: ProfileStore | None = None
    _metrics: MetricsSampler | None = None
    _routes_refresher: threading.Thread | None = None
    retrainer: Retrainer | None = None
    apprentice: AutoSwitch | None = None
    auto_optimizer: AutoOptimizer | None = None
    catalogue: Catalogue | None = None

    @classmethod
    def build(cls, settings: Settings, seed: int | None = None) -> Runtime:
        """Builds every collaborator; `seed` (else `server.seed`) makes sampling reproducible."""
        seed = seed if seed is not None else settings.server.seed
        # Everything a server writes (database, WAL, checkpoints, secrets) is for its user only.
        os.umask(0o077)
        data_dir = settings.storage.data_dir
        make_private_dir(data_dir)
        require_private(settings.keys_path)
        require_private(settings.tokens_path)
        storage = settings.storage
        db = Database.open(
            settings.database_url,
            Timeouts(
                connect_seconds=storage.connect_timeout_seconds,
                statement_seconds=storage.statement_timeout_seconds,
                pool_seconds=storage.pool_timeout_seconds,
            ),
            probe_seconds=storage.probe_timeout_seconds,
        )
        keyring = KeyRing.load_or_create(settings.keys_path)
        require_shared_keys(db, keyring, settings)
        audit_keys = audit_log.load_or_create_keys(db, settings.audit_keys_path)
        audit_log.bind_audit_keys(db, audit_keys, settings.audit_keys_path)
        digest_legacy_ids(db, keyring)  # ids an older version stored raw
        analyzer = build_analyzer(
            AnalyzerSettings(
                ner_model=settings.privacy.ner_model, max_text_chars=settings.privacy.max_text_chars
            )
        )
        boundary = PrivacyBoundary(
            policy_set(settings),
            keyring,
            analyzer,
            BoundaryLimits(max_text_chars=settings.privacy.max_text_chars),
        )
        experiments = ExperimentService(
            db,
            slots=settings.slots.keys(),
            default_rewards={slot: cfg.default_reward for slot, cfg in settings.slots.items()},
            conversion_window=timedelta(seconds=settings.experiments.conversion_window_seconds),
            refresh_seconds=settings.experiments.refresh_seconds,
            refresh_on_read=False,  # the runtime's refresher thread keeps routes fresh, off Rank's path
            sequential_tuning_n=settings.experiments.sequential_tuning_n,
            report_work_mem_mb=settings.experiments.report_work_mem_mb,
            report_parallel_workers=settings.experiments.report_parallel_workers,
            report_statement_timeout_seconds=settings.experiments.report_statement_timeout_seconds,
            policy_check=policy_check(db),
            on_ship=promoter(data_dir / "models", lambda slot: settings.slots[slot].vw_args),
        )
        challengers = challenger_source(experiments)
        models = ServingModels(
            db, {slot: cfg.vw_args for slot, cfg in settings.slots.items()}, seed, challengers=challengers
        )
        decision_log = DecisionLog(
            db,
            settings.decision_log.flush_interval_ms,
            settings.decision_log.max_batch,
            journal_dir=data_dir,  # counts a crash's lost decisions at the next start
        )
        tokens = None
        if settings.auth.enabled:
            tokens, created = TokenStore.load_or_create(settings.tokens_path)
            if created:
                logger.warning("created API tokens", extra={"tokens_file": str(settings.tokens_path)})
        learner = None
        if settings.learner.enabled:
            learner = Learner(
                db,
                {slot: SlotLearning(cfg.vw_args, cfg.default_reward) for slot, cfg in settings.slots.items()},
                models_dir=data_dir / "models",
                checkpoint_interval_seconds=settings.learner.checkpoint_interval_seconds,
                poll_interval_seconds=settings.learner.poll_interval_seconds,
                keep_checkpoints=settings.learner.keep_checkpoints,
                checkpoint_grace_seconds=settings.learner.checkpoint_grace_seconds,
                random_seed=seed,
                rebuild_mode=settings.privacy.erasure_model_rebuild,
                rebuild_hour_utc=settings.privacy.erasure_rebuild_hour_utc,
                on_rebuilt=audit_rebuilds(boundary.policies.version, keyring.active_key_id),
                challengers=challengers,
            )
        profiles = ProfileStore(db)
        engine = DecisionEngine(settings, db, boundary, models, decision_log, seed=seed, profiles=profiles)
        experiments.refresh_routes()
        engine.assigner = experiments.assigner
        modes = SlotModes(db, settings.slots, boundary.policies.version, keyring.active_key_id)
        modes.refresh()
        engine.apprentice = ApprenticeHook(modes)
        retrainer = retrainer_from(settings, db) if settings.learner.enabled else None  # worker 0 only
        auto_optimizer = AutoOptimizer(
            db, settings, experiments, boundary.policies.version, keyring.active_key_id
        )
        return cls(
            settings,
            db,
            keyring,
            boundary,
            models,
            decision_log,
            engine,
            EventRecorder(db, boundary),
            tokens,
            learner,
            experiments,
            profiles=profiles,
            retrainer=retrainer,
            apprentice=AutoSwitch(db, modes),
            auto_optimizer=auto_optimizer,
            catalogue=Catalogue(
                db,
                boundary,
                engine.candidates,
                settings.catalogue.refresh_seconds,
                settings.limits.max_scrub_chars_per_request,
                seed,
            ),
        )

    def start_background(self) -> None:
        if self.catalogue is not None:
            self.catalogue.start()
        if self.learner is not None:
            self.learner.start()
        if self.retrainer is not None:
            self.retrainer.start()
        if (
            self.auto_optimizer is not None
            and self.settings.auto_optimize.schedule
            and self.learner is not None
        ):
            self.auto_optimizer.start()  # the schedule runs in the learner's process only
        privacy = self.settings.privacy
        self.retention = retention_purger(
            self.db,
            privacy.retention_days,
            privacy.retention_interval_seconds,
            self.boundary.policies.version,
            self.keyring.active_key_id,
        )
        if self.retention is not None:
            self.retention.start()
        self._reloader = threading.Thread(target=self._reload_loop, name="tacit-model-reload", daemon=True)
        self._reloader.start()
        if self.settings.server.metrics_port:
            self._metrics = MetricsSampler(
                self.settings.server.metrics_sample_seconds,
                served_versions=self.models.versions,
                audit_chain_length=lambda: chain_length(self.db),
                learner_progress=self.learner.progress if self.learner is not None else None,
            )
            self._metrics.start()
        self._routes_refresher = threading.Thread(
            target=self._routes_loop, name="tacit-experiment-routes", daemon=True
        )
        self._routes_refresher.start()
        if self.apprentice is not None:  # the automatic switch runs beside the learner only
            self.apprentice.start(self.settings.experiments.refresh_seconds, check=self.learner is not None)
        if self.settings.experiments.evaluate:
            self._evaluator = threading.Thread(
                target=self._evaluate_loop, name="tacit-experiment-rules", daemon=True
            )
            self._evaluator.start()

    def _evaluate_loop(self) -> None:
        while not self._stop.wait(self.settings.experiments.evaluation_interval_seconds):
            try:
                self.experiments.evaluate_running()
            except StorageUnavailable:
                pass  # the outage is logged once by Database; the next interval retries
            except Exception:
                logger.exception("experiment evaluation failed")

    def _routes_loop(self) -> None:
        """Keeps Rank's snapshot of experiment routes fresh, so Rank never reads the database."""
        while not self._stop.wait(self.settings.experiments.refresh_seconds):
            try:
                self.experiments.refresh_routes()
            except StorageUnavailable:
                pass  # Rank keeps the last snapshot
            except Exception:
                logger.exception("experiment routes refresh failed")

    def _reload_loop(self) -> None:
        while not self._stop.wait(self.settings.learner.reload_interval_seconds):
            try:
                changed = self.models.refresh()
                if changed:
                    logger.debug("models reloaded", extra={"slots": changed})
            except StorageUnavailable:
                pass  # serving keeps the loaded models
            except Exception:
                logger.exception("model reload failed")

    def close(self) -> None:
        """Flushes the decision log, stops the learner (final checkpoint), closes storage."""
        self._stop.set()
        if self._metrics is not None:
            self._metrics.stop()
        if self._reloader is not None:
            self._reloader.join()
        if self._routes_refresher is not None:
            self._routes_refresher.join()
        if self._evaluator is not None:
            self._evaluator.join()
        if self.apprentice is not None:
            self.apprentice.stop()
        self.decision_log.close()
        if self.catalogue is not None:
            self.catalogue.stop()
        if self.retention is not None:
            self.retention.stop()
        if self.learner is not None:
            self.learner.stop()
        if self.retrainer is not None:
            self.retrainer.stop()
        if self.auto_optimizer is not None:
            self.auto_optimizer.stop()
        self.models.close()
        self.db.dispose()


def retrainer_from(settings: Settings, db: Database) -> Retrainer | None:
    """The retraining scheduler the settings describe; None when disabled."""
    config = settings.retraining
    if not config.enabled:
        return None
    days = timedelta(days=1)
    policy = RetrainPolicy(
        max_age=config.max_model_age_days * days if config.max_model_age_days is not None else None,
        psi_threshold=config.psi_threshold,
        recent=config.recent_days * days,
        tolerance=config.tolerance,
        training_span=config.training_days * days,
        holdout_span=config.holdout_days * days,
        label_window=config.label_window_days * days,
        snapshot_every=config.snapshot_every_days * days,
    )
    return Retrainer(
        db, settings.storage.data_dir / "models", policy, tuple(config.tasks), config.interval_seconds
    )


def prediction_and_model_servicers(
    runtime: Runtime, known_names: Container[str]
) -> tuple[PredictionServicer, ModelServicer]:
    """Both services share one set of served classifiers (loaded once per version)."""
    settings = runtime.settings
    classifiers = ServingClassifiers(runtime.db, settings.learner.reload_interval_seconds)
    profiles = runtime.profiles if runtime.profiles is not None else ProfileStore(runtime.db)
    predictions = Predictions(runtime.db, runtime.boundary, profiles, classifiers)
    engagement = ServingEngagement(runtime.db, settings.learner.reload_interval_seconds)
    expected = EngagementPredictions(runtime.db, runtime.boundary, profiles, engagement)
    return (
        PredictionServicer(predictions, settings.limits, known_names, expected),
        ModelServicer(
            runtime.db,
            settings,
            classifiers,
            engagement,
            auto_optimizer=runtime.auto_optimizer,
            actor=caller_role(runtime.tokens),
            lifecycle=ModelLifecycle(
                runtime.db, settings, runtime.keyring, runtime.boundary.policies.version
            ),
        ),
    )


def create_server(
    runtime: Runtime, address: str | None = None, budgets: ThreadBudgets | None = None
) -> tuple[grpc.Server, int, HealthServicer]:
    """Composes interceptors and servicers; binds `address` and returns the bound port.

    Unary calls share `server.max_workers` threads; streams, and the calls that never wait
    for storage, have their own (`ThreadBudgets`), so neither open streams nor calls stuck
    on a stalled database take a thread Rank or a health check needs.
    """
    settings = runtime.settings
    budgets = budgets or thread_budgets(settings)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.server.max_workers, thread_name_prefix="tacit-rpc"),
        interceptors=[AuthInterceptor(runtime.tokens), ErrorAndMetricsInterceptor(budgets)],
        # Admission bound: beyond it a call is refused with RESOURCE_EXHAUSTED, so a flood
        # cannot grow the executor's queue (and memory, and every queued call's wait) unbounded.
        maximum_concurrent_rpcs=settings.server.max_concurrent_rpcs,
        options=[
            ("grpc.max_receive_message_length", 8 * 1024 * 1024),
            ("grpc.so_reuseport", 1 if settings.server.reuse_port else 0),
        ],
    )
    # Declared field names may be named in errors; any other key is client input.
    known_names = frozenset(
        name for policy in runtime.boundary.policies.policies.values() for name in policy.fields
    )
    decision_pb2_grpc.add_DecisionServiceServicer_to_server(
        DecisionServicer(
            runtime.engine,
            settings,
            known_names,
            CatalogueRank(runtime.catalogue) if runtime.catalogue is not None else None,
        ),
        server,
    )
    if runtime.catalogue is not None:
        catalogue_pb2_grpc.add_CatalogueServiceServicer_to_server(
            CatalogueServicer(runtime.catalogue, settings, known_names, caller_role(runtime.tokens)), server
        )
    event_pb2_grpc.add_EventServiceServicer_to_server(
        EventServicer(runtime.events, settings, known_names), server
    )
    audit_pb2_grpc.add_AuditServiceServicer_to_server(
        AuditServicer(
            runtime.db,
            runtime.keyring,
            runtime.boundary.policies.version,
            settings,
            on_erased=runtime.profiles.invalidate if runtime.profiles is not None else None,
            before_erase=runtime.decision_log.flush,
            erasure_hooks=(mark_models_for_erasure,),
        ),
        server,
    )
    predictor, model_servicer = prediction_and_model_servicers(runtime, known_names)
    prediction_pb2_grpc.add_PredictionServiceServicer_to_server(predictor, server)
    experiment_pb2_grpc.add_ExperimentServiceServicer_to_server(
        ExperimentServicer(
            runtime.experiments,
            caller_role(runtime.tokens),
            runtime.keyring.digest,
            arm_models(runtime.db, runtime.experiments),
            gate=OfflineGate(runtime.db, settings.slots),
        ),
        server,
    )
    model_pb2_grpc.add_ModelServiceServicer_to_server(model_servicer, server)
    if runtime.apprentice is not None:
        slot_servicer = SlotServicer(runtime.apprentice.modes, settings, caller_role(runtime.tokens))
        slot_pb2_grpc.add_SlotServiceServicer_to_server(slot_servicer, server)
    metric_pb2_grpc.add_MetricServiceServicer_to_server(
        MetricServicer(runtime.experiments.metrics, caller_role(runtime.tokens), runtime.keyring.digest),
        server,
    )
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in SERVICE_NAMES:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    enable_reflection((*SERVICE_NAMES, health.SERVICE_NAME), server)
    port = server.add_insecure_port(address or settings.server.address)
    if port == 0:
        raise RuntimeError("could not bind the server address")
    return server, port, health_servicer


class RunningServer:
    """A started server with its runtime; `stop` drains calls then flushes and checkpoints."""

    def __init__(self, settings: Settings, address: str | None = None, seed: int | None = None):
        self.runtime = Runtime.build(settings, seed=seed)
        self.budgets = thread_budgets(settings)
        self.server, self.port, self.health = create_server(self.runtime, address, self.budgets)
        self._stopped = False
        self._ready_stop = threading.Event()
        self._readiness = threading.Thread(target=self._readiness_loop, name="tacit-readiness", daemon=True)
        self.runtime.start_background()
        self.server.start()
        self._readiness.start()
        logger.info("serving", extra={"port": self.port})

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _readiness_loop(self) -> None:
        """Health says NOT_SERVING while storage does not answer, SERVING again once it does.

        Rank keeps answering from memory meanwhile (its decisions wait in the log); the
        status tells load balancers that writes would get UNAVAILABLE here.
        """
        serving = True
        interval = self.runtime.settings.storage.probe_interval_seconds
        while not self._ready_stop.wait(interval):
            ok = self.runtime.db.ping()
            if ok != serving:
                serving = ok
                status = (
                    health_pb2.HealthCheckResponse.SERVING
                    if ok
                    else health_pb2.HealthCheckResponse.NOT_SERVING
                )
                for name in ("", *SERVICE_NAMES):
                    self.health.set(name, status)

    def stop(self, grace: float | None = None) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._ready_stop.set()
        self._readiness.join()
        self.health.enter_graceful_shutdown()
        grace = self.runtime.settings.server.grace_seconds if grace is None else grace
        self.server.stop(grace).wait()
        self.health.close()
        self.budgets.close()
        self.runtime.close()
        logger.info("stopped")

    @property
    def data_dir(self) -> Path:
        return self.runtime.settings.storage.data_dir

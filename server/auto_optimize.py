"""Auto-optimize runs: learning's offline verdict on candidate VW configurations, composed with the
experiment layer's staged rollout (the two never import each other; they meet here).

A run (on command through ModelService.AutoOptimize or `tacit auto-optimize run`, or on the
[auto_optimize] schedule) evaluates the grid on the slot's log (`tacit.learning.auto_optimize`),
persists the run (`auto_optimize_runs`), and when a candidate is proposed and the slot allows it
(`slots.<name>.auto_optimize_challenger`), creates and starts an experiment whose control arm is
the slot's policy (`bandit`) and whose challenger arm is `bandit:<proposed arguments>`, with the
configured stages and auto-advance: the rollout rules then ship it (the challenger becomes the
slot's policy) or roll it back. A run that may start one (not a dry run) first concludes the
slot's ended auto-optimize experiments, which would otherwise hold the slot. Every run writes
one audit record (kind "auto_optimize") with counts only.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tacit.experiments.errors import ExperimentConflict, ExperimentExists, SpecError
from tacit.experiments.rules import Stage
from tacit.experiments.service import ExperimentService
from tacit.experiments.service.definitions import ArmConfig, ExperimentDefinition, ExperimentState
from tacit.learning.auto_optimize import DEFAULT_GRID, ConfigEstimate, OptimizeResult, optimize_slot
from tacit.learning.evaluation import EvaluationError
from tacit.learning.registry import bandit_task, newest_checkpoint
from tacit.privacy.audit import AuditEntry, FieldAudit
from tacit.privacy.audit_log import append_entries
from tacit.server.config import Settings
from tacit.store.db import Database, StorageUnavailable, newest_first_page
from tacit.store.schema import AutoOptimizeRun

logger = logging.getLogger("tacit.server")

AUTO_OPTIMIZE_KIND = "auto_optimize"
ACTOR = "auto-optimize"
CONTROL_ARM = "current"
CHALLENGER_ARM = "proposed"
EXPERIMENT_PREFIX = "autoopt-"


@dataclass(frozen=True)
class RunRecord:
    """A stored run, as the API and the CLI show it."""

    id: int
    slot: str
    trigger: str
    actor: str
    started_at: datetime
    finished_at: datetime | None
    outcome: str
    current_args: str
    best_args: str
    margin: float
    decisions: int
    estimates: tuple[dict[str, Any], ...]
    experiment_id: str
    note: str


def current_args(db: Database, slot: str, configured: str) -> str:
    """The arguments the slot's policy runs with: a shipped challenger's, else the configured ones."""
    with db.transaction() as session:
        checkpoint = newest_checkpoint(session, bandit_task(slot))
    return checkpoint.vw_args if checkpoint is not None and checkpoint.vw_args else configured


def _figures(config: ConfigEstimate) -> dict[str, Any]:
    e = config.estimate

    def finite(value: float) -> float | None:
        return float(value) if math.isfinite(value) else None

    return {
        "vw_args": config.vw_args, "current": config.current, "estimator": e.estimator,
        "value": finite(e.value), "ci_low": finite(e.ci_low), "ci_high": finite(e.ci_high), "n": e.n,
        "status": e.status.value, "effective_sample_size": finite(e.effective_sample_size),
        "matched": e.matched, "matched_rewards": e.matched_rewards, "interval": e.interval,
    }  # fmt: skip


def _record(row: AutoOptimizeRun) -> RunRecord:
    return RunRecord(
        row.id, row.slot, row.trigger, row.actor, row.started_at, row.finished_at, row.outcome,
        row.current_args, row.best_args, row.margin, row.decisions, tuple(row.estimates or ()),
        row.experiment_id, row.note,
    )  # fmt: skip


def list_runs(
    db: Database, slot: str | None, page_size: int, after_id: int | None
) -> tuple[list[RunRecord], int | None]:
    """One page of runs, newest first; the cursor of the next page or None."""
    criteria = [AutoOptimizeRun.slot == slot] if slot else []
    return newest_first_page(db, AutoOptimizeRun, _record, page_size, after_id, *criteria)


class AutoOptimizer:
    """Runs auto-optimize on a slot (on command or on the schedule) and records what it did."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        experiments: ExperimentService,
        policy_version: str = "",
        key_id: str = "",
    ) -> None:
        self.db = db
        self.settings = settings
        self.experiments = experiments
        self.policy_version = policy_version
        self.key_id = key_id
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one run at a time per process: each replays the log per config

    def run(
        self,
        slot: str,
        actor: str,
        trigger: str = "command",
        candidates: Sequence[str] = (),
        dry_run: bool = False,
    ) -> RunRecord:
        """Evaluates, records, and (when proposed and allowed) starts the challenger experiment.

        Raises EvaluationError when the slot's log is too short (nothing is recorded then).
        """
        config = self.settings.auto_optimize
        slot_settings = self.settings.slots[slot]
        grid = tuple(candidates) or tuple(config.grid) or DEFAULT_GRID
        started_at = datetime.now(UTC)
        with self._lock:
            current = current_args(self.db, slot, slot_settings.vw_args)
            result = optimize_slot(
                self.db, slot, current, slot_settings.default_reward, grid, limit=config.max_decisions,
                margin=config.margin, warmup_fraction=config.warmup_fraction,
                reward_range=slot_settings.reward_range, random_seed=self.settings.server.seed or 0,
            )  # fmt: skip
            row_id = self._insert(slot, actor, trigger, started_at, result)
            if not dry_run:
                self._conclude_ended(slot, row_id)
            outcome, experiment_id, note = self._act(slot, row_id, result, dry_run)
            return self._finish(row_id, slot, result, outcome, experiment_id, note)

    def _insert(
        self, slot: str, actor: str, trigger: str, started_at: datetime, result: OptimizeResult
    ) -> int:
        with self.db.transaction() as session:
            row = AutoOptimizeRun(
                slot=slot, trigger=trigger, actor=actor, started_at=started_at, outcome="running",
                current_args=result.current.vw_args,
                best_args=result.best.vw_args if result.best is not None else "",
                margin=result.margin, decisions=result.decisions,
                estimates=[_figures(result.current), *(_figures(c) for c in result.candidates)],
                experiment_id="", note=result.reason,
            )  # fmt: skip
            session.add(row)
            session.flush()
            return int(row.id)

    def _conclude_ended(self, slot: str, run_id: int) -> None:
        """Concludes this slot's ended (shipped or rolled back) auto-optimize experiments, which would
        hold the slot; the slot's policy serves on unchanged (a shipped winner is already its policy)."""
        experiments, _ = self.experiments.list_experiments(page_size=500, slot=slot)
        ended = (ExperimentState.SHIPPED, ExperimentState.ROLLED_BACK)
        for experiment in experiments:
            experiment_id = experiment.definition.experiment_id
            if experiment_id.startswith(EXPERIMENT_PREFIX) and experiment.state in ended:
                with contextlib.suppress(ExperimentConflict):  # concluded meanwhile by someone else
                    reason = f"auto-optimize run {run_id}: rollout ended"
                    self.experiments.conclude(experiment_id, ACTOR, reason)

    def _act(self, slot: str, run_id: int, result: OptimizeResult, dry_run: bool) -> tuple[str, str, str]:
        """(outcome, experiment id, note) after the verdict."""
        if not result.proposed or result.best is None:
            return "kept_current", "", result.reason
        if dry_run:
            return "proposed", "", f"{result.reason}; dry run: no experiment started"
        if not self.settings.slots[slot].auto_optimize_challenger:
            return "proposed", "", f"{result.reason}; slots.{slot}.auto_optimize_challenger is off"
        config = self.settings.auto_optimize
        experiment_id = f"{EXPERIMENT_PREFIX}{run_id}"
        definition = ExperimentDefinition(
            experiment_id=experiment_id,
            slot=slot,
            arms=(
                ArmConfig(CONTROL_ARM, "bandit", 0.5),
                ArmConfig(CHALLENGER_ARM, f"bandit:{result.best.vw_args}", 0.5, config.learn_from_all),
            ),
            primary_metric=config.primary_metric,
            stages=tuple(Stage(percent, min_sample) for percent, min_sample in config.stages),
            auto_advance=True,
        )
        try:
            self.experiments.create(definition, ACTOR)
            self.experiments.start(experiment_id, ACTOR, f"auto-optimize run {run_id}: {result.reason}")
        except (ExperimentConflict, ExperimentExists, SpecError, ValueError) as error:
            logger.warning("auto-optimize could not start its experiment", extra={"run_id": run_id})
            return "proposed", "", f"{result.reason}; no experiment started: {error}"
        return "started", experiment_id, f"{result.reason}; challenger experiment {experiment_id} started"

    def _finish(
        self, run_id: int, slot: str, result: OptimizeResult, outcome: str, experiment_id: str, note: str
    ) -> RunRecord:
        now = datetime.now(UTC)
        with self.db.transaction() as session:
            row = session.get(AutoOptimizeRun, run_id)
            assert row is not None
            row.outcome, row.experiment_id, row.note, row.finished_at = outcome, experiment_id, note, now
            append_entries(session, [self._audit(now, run_id, slot, result, outcome, experiment_id)])
            session.flush()
            return _record(row)

    def _audit(
        self, now: datetime, run_id: int, slot: str, result: OptimizeResult, outcome: str, experiment_id: str
    ) -> AuditEntry:
        return AuditEntry(
            occurred_at=now,
            payload_kind=AUTO_OPTIMIZE_KIND,
            correlation_id=f"auto_optimize:{run_id}",
            policy_version=self.policy_version,
            key_id=self.key_id,
            fields=(
                FieldAudit(
                    field=bandit_task(slot),
                    operator="auto_optimize",
                    outcome=outcome,
                    entity_counts={
                        "run_id": run_id,
                        "configurations": 1 + len(result.candidates),
                        "decisions": result.decisions,
                        "scored": result.scored,
                        "proposed": int(result.proposed),
                        "experiment_started": int(bool(experiment_id)),
                    },
                ),
            ),
        )

    # ------------------------------------------------------------------ schedule

    def start(self) -> None:
        """Runs every configured slot each interval, in a daemon thread (learner process only)."""
        self._thread = threading.Thread(target=self._loop, name="tacit-auto-optimize", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def run_scheduled(self) -> list[RunRecord]:
        """One scheduled pass over the configured slots; a slot whose log is too short is skipped."""
        names = self.settings.auto_optimize.slots or list(self.settings.slots)
        runs = []
        for slot in names:
            if slot not in self.settings.slots:
                continue
            try:
                runs.append(self.run(slot, ACTOR, "schedule"))
            except EvaluationError:
                logger.info("auto-optimize skipped a slot: too few decisions", extra={"slot": slot})
        return runs

    def _loop(self) -> None:
        interval = self.settings.auto_optimize.interval_seconds
        while not self._stop.wait(interval):
            try:
                self.run_scheduled()
            except StorageUnavailable:
                pass  # the next interval retries
            except Exception:
                logger.exception("auto-optimize run failed")

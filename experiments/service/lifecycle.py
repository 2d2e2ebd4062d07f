"""The experiment lifecycle: create, read, list, start, advance, pause, roll back, conclude, and the
periodic evaluation that acts on reports; each change one locked transaction, recorded with its numbers."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tacit.experiments import repository
from tacit.experiments.errors import ExperimentConflict, ExperimentExists, SpecError
from tacit.experiments.metric_catalog import MetricCatalog
from tacit.experiments.metric_specs import DECISION_METRICS
from tacit.experiments.metrics import BUILTIN_METRICS, MetricDefinition
from tacit.experiments.report import ChangeEntry, Report
from tacit.experiments.rules import Action, validate_spec, validate_traffic_range
from tacit.experiments.service import records
from tacit.experiments.service.definitions import (
    CHALLENGER_ARM_NAME,
    EXPERIMENT_ID,
    HOLDS_SLOT,
    MAX_POLICY_CHARS,
    POLICIES,
    SYSTEM_ACTOR,
    ArmAssignment,
    Challenger,
    Experiment,
    ExperimentDefinition,
    ExperimentState,
    is_challenger,
)
from tacit.experiments.service.evaluation import Evaluator
from tacit.experiments.service.snapshot import AssignmentSnapshot
from tacit.store.db import Database
from tacit.store.schema import ExperimentChange, ExperimentRecord

logger = logging.getLogger("tacit.experiments")

PolicyCheck = Callable[[str, str], None]
"""Checks a challenger policy (slot, policy) and raises ValueError with a message when it is unusable.

The server supplies it (VW arguments, registered checkpoints: knowledge this layer does not have)."""

ShipHook = Callable[[Session, Challenger], str]
"""Called inside the transaction that ships an experiment whose winner is a challenger; makes it the
slot's policy and returns what changed (recorded in the experiment's history as a "promote" change)."""


class ExperimentService:
    """Stored experiments, their evaluation by the rules, and the Rank-time assigner."""

    def __init__(
        self,
        db: Database,
        *,
        slots: Collection[str] | None = None,
        default_rewards: Mapping[str, float] | None = None,
        conversion_window: timedelta = timedelta(days=7),
        refresh_seconds: float = 1.0,
        refresh_on_read: bool = True,
        sequential_tuning_n: float = 5000,
        registry: Mapping[str, MetricDefinition] = BUILTIN_METRICS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        policy_check: PolicyCheck | None = None,
        on_ship: ShipHook | None = None,
        report_work_mem_mb: int = 0,
        report_parallel_workers: int = -1,
        report_statement_timeout_seconds: float = 0.0,
    ) -> None:
        self.db = db
        self.policy_check = policy_check
        self.on_ship = on_ship
        self.slots = frozenset(slots) if slots is not None else None
        self.default_rewards = dict(default_rewards or {})
        self.conversion_window = conversion_window
        self.refresh_seconds = refresh_seconds
        self.sequential_tuning_n = sequential_tuning_n
        # Decision-log metrics come from `registry`; event metrics are definitions in `metrics`.
        self.registry = {name: d for name, d in registry.items() if name in DECISION_METRICS}
        self.clock = clock
        self.metrics = MetricCatalog(db, clock)
        self._evaluator = Evaluator(
            default_rewards=self.default_rewards,
            conversion_window=conversion_window,
            sequential_tuning_n=sequential_tuning_n,
            registry=self.registry,
            catalog=self.metrics,
            work_mem_mb=report_work_mem_mb,
            parallel_workers=report_parallel_workers,
            statement_timeout_seconds=report_statement_timeout_seconds,
        )
        self._snapshot = AssignmentSnapshot(db, refresh_seconds, refresh_on_read)

    # ------------------------------------------------------------------ resources

    def create(
        self, definition: ExperimentDefinition, actor: str, request_id: str = "", now: datetime | None = None
    ) -> Experiment:
        """Validates and stores a draft; refuses an id in use or a slot another experiment holds."""
        now = now or self.clock()
        self._validate(definition)
        try:
            return self._create(definition, actor, request_id, now)
        except IntegrityError:
            # A concurrent twin committed first (PostgreSQL: the unique key waited for it).
            # The same request id is answered with what it created; anything else is a clash.
            with self.db.transaction() as session:
                if request_id and records.seen(session, "experiment.create", request_id):
                    return self._get(session, definition.experiment_id)
            raise ExperimentExists("an experiment with this id already exists") from None

    def _create(
        self, definition: ExperimentDefinition, actor: str, request_id: str, now: datetime
    ) -> Experiment:
        with self.db.transaction() as session:
            # SQLite: take the write lock before the first read, so that twins run one after
            # the other and the second sees the first's idempotency key.
            self.db.hold_write_lock(session)
            if request_id and records.seen(session, "experiment.create", request_id):
                return self._get(session, definition.experiment_id)
            if session.get(ExperimentRecord, definition.experiment_id) is not None:
                # PostgreSQL (read committed): a twin may have committed between the two
                # reads; its key and its row commit together, so a second look settles it.
                if request_id and records.seen(session, "experiment.create", request_id):
                    return self._get(session, definition.experiment_id)
                raise ExperimentExists("an experiment with this id already exists")
            records.check_slot_free(session, definition.slot, definition.experiment_id, definition.traffic)
            row = ExperimentRecord(
                experiment_id=definition.experiment_id,
                slot=definition.slot,
                spec=definition.to_json(),
                salt=secrets.token_hex(16),
                state=ExperimentState.DRAFT.value,
                stage_index=0,
                created_at=now,
                updated_at=now,
                created_by=actor,
            )
            session.add(row)
            records.record(session, row, now, actor, "create", ExperimentState.DRAFT, 0, "created", None)
            if request_id:
                records.remember(session, "experiment.create", request_id, now)
            session.flush()
            return records.to_domain(row)

    def get(self, experiment_id: str) -> Experiment:
        with self.db.transaction() as session:
            return self._get(session, experiment_id)

    def list_experiments(
        self, page_size: int = 50, page_token: str = "", slot: str = ""
    ) -> tuple[list[Experiment], str]:
        """Experiments by id; the token is the last id returned (opaque to callers)."""
        if page_size < 0:
            raise SpecError("page_size", "must not be negative")
        page_size = min(page_size or 50, 500)
        after = records.decode_token("experiments", page_token) if page_token else ""
        with self.db.transaction() as session:
            query = select(ExperimentRecord).where(ExperimentRecord.experiment_id > after)
            if slot:
                query = query.where(ExperimentRecord.slot == slot)
            rows = (
                session.execute(query.order_by(ExperimentRecord.experiment_id).limit(page_size + 1))
                .scalars()
                .all()
            )
        items = [records.to_domain(row) for row in rows[:page_size]]
        token = records.encode_token("experiments", items[-1].experiment_id) if len(rows) > page_size else ""
        return items, token

    def history(
        self,
        experiment_id: str,
        page_size: int = 100,
        page_token: str = "",
        include_evaluations: bool = False,
    ) -> tuple[list[ChangeEntry], str]:
        """Stored changes (and evaluations when asked) in order; page token is the last sequence."""
        if page_size < 0:
            raise SpecError("page_size", "must not be negative")
        page_size = min(page_size or 100, 1000)
        after = 0
        if page_token:
            decoded = records.decode_token("changes", page_token)
            if not decoded.isdigit():
                raise SpecError("page_token", "is not a token this service issued")
            after = int(decoded)
        with self.db.transaction() as session:
            self._get(session, experiment_id)
            query = select(ExperimentChange).where(
                ExperimentChange.experiment_id == experiment_id, ExperimentChange.id > after
            )
            if not include_evaluations:
                query = query.where(ExperimentChange.action != "evaluate")
            rows = session.execute(query.order_by(ExperimentChange.id).limit(page_size + 1)).scalars().all()
        entries = [
            ChangeEntry(
                sequence=row.id,
                occurred_at=repository.as_utc(row.occurred_at),
                actor=row.actor,
                action=row.action,
                from_state=row.from_state,
                to_state=row.to_state,
                from_stage=row.from_stage,
                to_stage=row.to_stage,
                reason=row.reason,
                report=Report.from_dict(row.report) if row.report else None,
            )
            for row in rows[:page_size]
        ]
        token = records.encode_token("changes", str(entries[-1].sequence)) if len(rows) > page_size else ""
        return entries, token

    # ------------------------------------------------------------------ state changes

    def start(
        self,
        experiment_id: str,
        actor: str,
        reason: str = "",
        request_id: str = "",
        now: datetime | None = None,
    ) -> Experiment:
        """Draft → running at the first stage, or paused → running (resume) at the same stage."""

        def apply(session: Session, row: ExperimentRecord, now: datetime) -> Experiment:
            state = ExperimentState(row.state)
            if state is ExperimentState.DRAFT:
                records.check_slot_free(
                    session,
                    row.slot,
                    row.experiment_id,
                    ExperimentDefinition.from_json(row.experiment_id, row.slot, row.spec).traffic,
                )
                row.started_at = now
                row.stage_started_at = now
                self._evaluator.pin(session, row)  # a running experiment keeps these versions
                return records.transition(
                    session, row, now, actor, "start", ExperimentState.RUNNING, 0, reason or "started", None
                )
            if state is ExperimentState.PAUSED:
                report = self._evaluator.report(session, row, now)
                return records.transition(
                    session,
                    row,
                    now,
                    actor,
                    "resume",
                    ExperimentState.RUNNING,
                    row.stage_index,
                    reason or "resumed",
                    report,
                )
            raise ExperimentConflict("INVALID_STATE", f"cannot start an experiment that is {state.value}")

        return self._mutate(experiment_id, "start", request_id, now, apply)

    def advance(
        self,
        experiment_id: str,
        actor: str,
        reason: str = "",
        request_id: str = "",
        now: datetime | None = None,
    ) -> Experiment:
        """Next stage (or ship from the last) only with a passing report."""

        def apply(session: Session, row: ExperimentRecord, now: datetime) -> Experiment:
            records.require_state(row, "advance", ExperimentState.RUNNING)
            last = row.stage_index == len(row.spec["stages"]) - 1
            _, report = self._evaluator.evaluate(session, row, now, applies=frozenset(Action))
            passing = {Action.SHIP} if last else {Action.ADVANCE, Action.RECOMMEND_ADVANCE}
            if Action(report.action) not in passing:
                raise ExperimentConflict(
                    "REPORT_NOT_PASSING",
                    f"advance needs a passing report; the report says {report.action}: "
                    + "; ".join(report.reasons),
                )
            return self._apply_advance(session, row, now, actor, reason, report)

        return self._mutate(experiment_id, "advance", request_id, now, apply)

    def pause(
        self,
        experiment_id: str,
        actor: str,
        reason: str = "",
        request_id: str = "",
        now: datetime | None = None,
    ) -> Experiment:
        """Running → paused: nobody is exposed until it is started again."""

        def apply(session: Session, row: ExperimentRecord, now: datetime) -> Experiment:
            records.require_state(row, "pause", ExperimentState.RUNNING)
            report = self._evaluator.report(session, row, now)
            return records.transition(
                session,
                row,
                now,
                actor,
                "pause",
                ExperimentState.PAUSED,
                row.stage_index,
                reason or "paused",
                report,
            )

        return self._mutate(experiment_id, "pause", request_id, now, apply)

    def rollback(
        self,
        experiment_id: str,
        actor: str,
        reason: str = "",
        request_id: str = "",
        now: datetime | None = None,
    ) -> Experiment:
        """All traffic to control; the evidence so far is stored with the change."""

        def apply(session: Session, row: ExperimentRecord, now: datetime) -> Experiment:
            records.require_state(row, "roll back", ExperimentState.RUNNING, ExperimentState.PAUSED)
            report = self._evaluator.report(session, row, now)
            row.ended_at = now
            return records.transition(
                session,
                row,
                now,
                actor,
                "rollback",
                ExperimentState.ROLLED_BACK,
                row.stage_index,
                reason or "rolled back by hand",
                report,
            )

        return self._mutate(experiment_id, "rollback", request_id, now, apply)

    def conclude(
        self,
        experiment_id: str,
        actor: str,
        reason: str = "",
        request_id: str = "",
        now: datetime | None = None,
    ) -> Experiment:
        """Ends the experiment and frees its slot (the slot's default policy serves again)."""

        def apply(session: Session, row: ExperimentRecord, now: datetime) -> Experiment:
            state = ExperimentState(row.state)
            if state is ExperimentState.STOPPED:
                raise ExperimentConflict("INVALID_STATE", "the experiment is already stopped")
            collecting = state in (ExperimentState.RUNNING, ExperimentState.PAUSED)
            report = self._evaluator.report(session, row, now) if collecting else None
            row.ended_at = row.ended_at or now
            return records.transition(
                session,
                row,
                now,
                actor,
                "conclude",
                ExperimentState.STOPPED,
                row.stage_index,
                reason or "concluded",
                report,
            )

        return self._mutate(experiment_id, "conclude", request_id, now, apply)

    # ------------------------------------------------------------------ reports

    def report(self, experiment_id: str, now: datetime | None = None) -> Report:
        """The current report (computed from stored decisions and events, not stored)."""
        now = now or self.clock()
        with self.db.transaction() as session:
            row = records.row(session, experiment_id)
            if ExperimentState(row.state) is ExperimentState.DRAFT:
                raise ExperimentConflict(
                    "NOT_STARTED", "a draft has no report yet; start the experiment first"
                )
            return self._evaluator.report(session, row, now)

    def evaluate_running(self, now: datetime | None = None) -> list[Report]:
        """Applies the rules to every running experiment: records each evaluation and acts on
        it (rollback always; advance/ship when auto_advance; a new SRM alert records a hold)."""
        now = now or self.clock()
        with self.db.transaction() as session:
            ids = list(
                session.execute(
                    select(ExperimentRecord.experiment_id).where(
                        ExperimentRecord.state == ExperimentState.RUNNING.value
                    )
                ).scalars()
            )
        reports = []
        for experiment_id in ids:
            try:
                reports.append(self._evaluate_one(experiment_id, now))
            except ExperimentConflict:
                continue  # changed state under us (another replica or a person)
        if ids:
            self.refresh_routes()
        return reports

    def _evaluate_one(self, experiment_id: str, now: datetime) -> Report:
        with self.db.transaction() as session:
            row = records.row(session, experiment_id, lock=True)
            if ExperimentState(row.state) is not ExperimentState.RUNNING:
                raise ExperimentConflict("INVALID_STATE", "no longer running")
            applies = {Action.ROLLBACK, Action.ADVANCE} | (
                {Action.SHIP} if row.spec["auto_advance"] else set()
            )
            evaluation, report = self._evaluator.evaluate(session, row, now, applies=frozenset(applies))
            action = evaluation.action
            definition = ExperimentDefinition.from_json(row.experiment_id, row.slot, row.spec)
            records.record(
                session,
                row,
                now,
                SYSTEM_ACTOR,
                "evaluate",
                ExperimentState.RUNNING,
                row.stage_index,
                "periodic evaluation",
                report,
            )
            if action is Action.ROLLBACK:
                row.ended_at = now
                records.transition(
                    session,
                    row,
                    now,
                    SYSTEM_ACTOR,
                    "rollback",
                    ExperimentState.ROLLED_BACK,
                    row.stage_index,
                    "; ".join(report.reasons),
                    report,
                )
                logger.warning("experiment rolled back by its rules", extra={"experiment_id": experiment_id})
            elif action is Action.ADVANCE or (action is Action.SHIP and definition.auto_advance):
                self._apply_advance(session, row, now, SYSTEM_ACTOR, "; ".join(report.reasons), report)
            elif action is Action.HOLD_SRM and records.last_action(session, experiment_id) != "hold":
                records.record(
                    session,
                    row,
                    now,
                    SYSTEM_ACTOR,
                    "hold",
                    ExperimentState.RUNNING,
                    row.stage_index,
                    "; ".join(report.reasons),
                    report,
                )
                logger.warning(
                    "experiment held: sample ratio mismatch", extra={"experiment_id": experiment_id}
                )
            return report

    # ------------------------------------------------------------------ assignment

    def challengers(self) -> list[Challenger]:
        """Challenger arms of the experiments that route traffic (running, paused, rolled back, shipped):
        what the learner trains and serving processes load."""
        with self.db.transaction() as session:
            rows = session.execute(
                select(ExperimentRecord)
                .where(ExperimentRecord.state.in_([s.value for s in HOLDS_SLOT]))
                .order_by(ExperimentRecord.experiment_id)
            ).scalars()
            return [
                challenger
                for row in rows
                for challenger in ExperimentDefinition.from_json(
                    row.experiment_id, row.slot, row.spec
                ).challengers()
            ]

    def assigner(self, slot: str, subject_pseudonym: str) -> ArmAssignment | None:
        """The arm serving this subject on `slot`, from the in-memory snapshot (no DB per Rank)."""
        return self._snapshot.assign(slot, subject_pseudonym)

    def refresh_routes(self) -> None:
        """Reloads the snapshot of experiments that route traffic."""
        self._snapshot.refresh()

    # ------------------------------------------------------------------ internals

    def _validate(self, definition: ExperimentDefinition) -> None:
        if not EXPERIMENT_ID.match(definition.experiment_id):
            raise SpecError("experiment_id", f"must match {EXPERIMENT_ID.pattern}")
        if self.slots is not None and definition.slot not in self.slots:
            raise SpecError("experiment.slot", "is not a configured slot")
        for index, arm in enumerate(definition.arms):
            field = f"experiment.arms[{index}]"
            if arm.policy in POLICIES:
                if arm.learn_from_all:
                    raise SpecError(f"{field}.learn_from_all", "applies to bandit:<config> arms only")
                continue
            if not is_challenger(arm.policy):
                raise SpecError(
                    f"{field}.policy",
                    f"must be one of {list(POLICIES)}, bandit:<VW arguments> or model:<version>",
                )
            if len(arm.policy) > MAX_POLICY_CHARS:
                raise SpecError(f"{field}.policy", f"is longer than {MAX_POLICY_CHARS} characters")
            if arm.learn_from_all and not arm.policy.startswith("bandit:"):
                raise SpecError(f"{field}.learn_from_all", "applies to bandit:<config> arms only")
            if not CHALLENGER_ARM_NAME.match(arm.name):
                raise SpecError(
                    f"{field}.name",
                    f"an arm with a challenger policy must match {CHALLENGER_ARM_NAME.pattern}",
                )
            if self.policy_check is None:
                raise SpecError(f"{field}.policy", "challenger policies need the server's model registry")
            try:
                self.policy_check(definition.slot, arm.policy)
            except ValueError as error:
                raise SpecError(f"{field}.policy", str(error)) from None
        try:
            validate_traffic_range(definition.traffic_start, definition.traffic_end)
            validate_spec(definition.spec(self.sequential_tuning_n), self._registry())
        except SpecError as error:
            raise SpecError(f"experiment.{error.field}", error.message) from None

    def _registry(self) -> dict[str, MetricDefinition]:
        """Every metric an experiment may name now: decision-log metrics and the newest definitions."""
        with self.db.transaction() as session:
            latest = self.metrics.latest(session)
        return {**self.registry, **{name: spec.definition() for name, spec in latest.items()}}

    def _apply_advance(
        self, session: Session, row: ExperimentRecord, now: datetime, actor: str, reason: str, report: Report
    ) -> Experiment:
        last = row.stage_index == len(row.spec["stages"]) - 1
        if last:
            row.ended_at = now
            shipped = records.transition(
                session,
                row,
                now,
                actor,
                "ship",
                ExperimentState.SHIPPED,
                row.stage_index,
                reason or "shipped",
                report,
            )
            self._promote(session, row, now, actor, shipped.definition)
            return shipped
        row.stage_started_at = now
        return records.transition(
            session,
            row,
            now,
            actor,
            "advance",
            ExperimentState.RUNNING,
            row.stage_index + 1,
            reason or "advanced",
            report,
        )

    def _promote(
        self,
        session: Session,
        row: ExperimentRecord,
        now: datetime,
        actor: str,
        definition: ExperimentDefinition,
    ) -> None:
        """A shipped challenger becomes the slot's policy in the shipping transaction (a "promote" change)."""
        winner = next((c for c in definition.challengers() if c.arm == definition.treatment), None)
        if winner is None or self.on_ship is None:
            return
        change = self.on_ship(session, winner)
        records.record(
            session, row, now, actor, "promote", ExperimentState.SHIPPED, row.stage_index, change, None
        )
        logger.info("shipped challenger promoted", extra={"experiment_id": row.experiment_id})

    def _mutate(
        self,
        experiment_id: str,
        action: str,
        request_id: str,
        now: datetime | None,
        apply: Callable[[Session, ExperimentRecord, datetime], Experiment],
    ) -> Experiment:
        """One locked transaction around a state change; a retried request id changes nothing."""
        now = now or self.clock()
        scope = f"experiment.{action}"
        try:
            with self.db.transaction() as session:
                self.db.hold_write_lock(session)  # SQLite: FOR UPDATE is a no-op there
                row = records.row(session, experiment_id, lock=True)
                if request_id and records.seen(session, scope, request_id):
                    return records.to_domain(row)
                result = apply(session, row, now)
                if request_id:
                    records.remember(session, scope, request_id, now)
        except IntegrityError:
            return self.get(experiment_id)  # a concurrent retry with the same request id won
        self.refresh_routes()
        return result

    def _get(self, session: Session, experiment_id: str) -> Experiment:
        return records.to_domain(records.row(session, experiment_id))

"""Experiments as stored resources: create, read, list, start, advance, pause, roll back,
conclude; the assigner that `Rank` consults; periodic evaluation by the rules.

States: draft → running (stage k) ⇄ paused; running/paused → rolled_back (all traffic to
control) | shipped (all traffic to treatment) ; anything → stopped (the slot's default
policy again). Experiments that hold a slot (running, paused, rolled back or shipped)
must declare disjoint traffic ranges on it (layers: see `assignment`); the default
range is the whole slot, so by default one experiment holds a slot at a time. Every
change is stored in `experiment_changes` with the caller's role, the time, the reason
and, once there is data, the report that justified it (DESIGN invariant 5: nothing
reaches 100% without a passing report).
"""

from __future__ import annotations

import base64
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tacit.experiments import repository
from tacit.experiments.assignment import (
    BUCKETS,
    WHOLE_SLOT,
    assign,
    layer_bucket,
    ranges_overlap,
    traffic_buckets,
)
from tacit.experiments.errors import (
    ExperimentConflict,
    ExperimentExists,
    ExperimentNotFound,
    SpecError,
)
from tacit.experiments.metrics import BUILTIN_METRICS, MetricDefinition
from tacit.experiments.report import ChangeEntry, Report, build_report
from tacit.experiments.rules import (
    Action,
    Arm,
    Evaluation,
    ExperimentSpec,
    Guardrail,
    Stage,
    evaluate,
    validate_spec,
    validate_traffic_range,
)
from tacit.experiments.stats import ToleranceKind
from tacit.store.db import Database
from tacit.store.schema import ExperimentChange, ExperimentRecord, IdempotencyKey

logger = logging.getLogger("tacit.experiments")

__all__ = [
    "ArmAssignment",
    "ArmConfig",
    "Experiment",
    "ExperimentDefinition",
    "ExperimentService",
    "ExperimentState",
    "POLICIES",
    "SYSTEM_ACTOR",
]

EXPERIMENT_ID = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
POLICIES = ("bandit", "static:first", "uniform")
SYSTEM_ACTOR = "system"


class ExperimentState(StrEnum):
    DRAFT = "draft"
    RUNNING = "running"
    PAUSED = "paused"
    ROLLED_BACK = "rolled_back"
    SHIPPED = "shipped"
    STOPPED = "stopped"


# States in which the experiment routes its slot's traffic (so no other may start on an
# overlapping traffic range of that slot).
HOLDS_SLOT = frozenset(
    {ExperimentState.RUNNING, ExperimentState.PAUSED, ExperimentState.ROLLED_BACK, ExperimentState.SHIPPED}
)
ENDED = frozenset({ExperimentState.ROLLED_BACK, ExperimentState.SHIPPED, ExperimentState.STOPPED})


@dataclass(frozen=True)
class ArmAssignment:
    """The experiment arm that serves a subject on a slot, and that arm's policy.

    Policies: "bandit" (the slot's VW model), "static:first" (the first eligible
    candidate), "uniform" (uniform random over eligible candidates).
    """

    experiment_id: str
    arm: str
    policy: str


@dataclass(frozen=True)
class ArmConfig:
    name: str
    policy: str
    weight: float


@dataclass(frozen=True)
class ExperimentDefinition:
    """What an experimenter creates: a slot, two arms with policies, metrics and stages.

    `traffic_start`/`traffic_end`: the experiment's range [start, end) in percent of the
    slot's subjects (its layer); the default is the whole slot.
    """

    experiment_id: str
    slot: str
    arms: tuple[ArmConfig, ...]
    primary_metric: str
    stages: tuple[Stage, ...]
    control_arm: str = ""  # empty: the first arm
    secondary_metrics: tuple[str, ...] = ()
    guardrails: tuple[Guardrail, ...] = ()
    auto_advance: bool = False
    traffic_start: float = WHOLE_SLOT[0]
    traffic_end: float = WHOLE_SLOT[1]

    @property
    def traffic(self) -> tuple[float, float]:
        return self.traffic_start, self.traffic_end

    @property
    def control(self) -> str:
        return self.control_arm or (self.arms[0].name if self.arms else "")

    def spec(self, sequential_tuning_n: float = 5000) -> ExperimentSpec:
        return ExperimentSpec(
            arms=tuple(Arm(arm.name, arm.weight) for arm in self.arms),
            stages=self.stages,
            primary_metric=self.primary_metric,
            control_arm=self.control,
            guardrails=self.guardrails,
            secondary_metrics=self.secondary_metrics,
            auto_advance=self.auto_advance,
            sequential_tuning_n=sequential_tuning_n,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "arms": [{"name": a.name, "policy": a.policy, "weight": a.weight} for a in self.arms],
            "control_arm": self.control,
            "primary_metric": self.primary_metric,
            "secondary_metrics": list(self.secondary_metrics),
            "guardrails": [
                {"metric": g.metric, "tolerance": g.tolerance, "tolerance_kind": g.tolerance_kind.value}
                for g in self.guardrails
            ],
            "stages": [
                {
                    "percent": s.percent,
                    "min_sample": s.min_sample,
                    "min_duration_seconds": s.min_duration.total_seconds(),
                }
                for s in self.stages
            ],
            "auto_advance": self.auto_advance,
            "traffic_start": self.traffic_start,
            "traffic_end": self.traffic_end,
        }

    @classmethod
    def from_json(cls, experiment_id: str, slot: str, data: Mapping[str, Any]) -> ExperimentDefinition:
        return cls(
            experiment_id=experiment_id,
            slot=slot,
            arms=tuple(ArmConfig(a["name"], a["policy"], float(a["weight"])) for a in data["arms"]),
            control_arm=data["control_arm"],
            primary_metric=data["primary_metric"],
            secondary_metrics=tuple(data["secondary_metrics"]),
            guardrails=tuple(
                # Specs stored before the kind existed have none: their tolerances are relative.
                Guardrail(
                    g["metric"],
                    float(g["tolerance"]),
                    ToleranceKind(g.get("tolerance_kind", ToleranceKind.RELATIVE.value)),
                )
                for g in data["guardrails"]
            ),
            stages=tuple(
                Stage(
                    float(s["percent"]),
                    int(s["min_sample"]),
                    timedelta(seconds=float(s["min_duration_seconds"])),
                )
                for s in data["stages"]
            ),
            auto_advance=bool(data["auto_advance"]),
            # Specs stored before traffic ranges existed have none: the whole slot.
            traffic_start=float(data.get("traffic_start", WHOLE_SLOT[0])),
            traffic_end=float(data.get("traffic_end", WHOLE_SLOT[1])),
        )


@dataclass(frozen=True)
class Experiment:
    """A stored experiment: its definition and where it stands."""

    definition: ExperimentDefinition
    state: ExperimentState
    stage_index: int
    created_at: datetime
    updated_at: datetime
    created_by: str
    stage_started_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    salt: str = field(default="", repr=False)

    @property
    def experiment_id(self) -> str:
        return self.definition.experiment_id

    @property
    def exposure_percent(self) -> float:
        if self.state is ExperimentState.SHIPPED:
            return 100.0
        if self.state is not ExperimentState.RUNNING:
            return 0.0
        return self.definition.stages[self.stage_index].percent


@dataclass(frozen=True)
class _Route:
    """What the assigner needs for one slot, precomputed."""

    experiment_id: str
    state: ExperimentState
    salt: str
    arms: tuple[tuple[str, float], ...]
    policies: Mapping[str, str]
    control: str
    treatment: str
    exposure_percent: float
    traffic: tuple[int, int]  # layer buckets [low, high)


def _as_utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else repository.as_utc(moment)


def _to_domain(row: ExperimentRecord) -> Experiment:
    return Experiment(
        definition=ExperimentDefinition.from_json(row.experiment_id, row.slot, row.spec),
        state=ExperimentState(row.state),
        stage_index=row.stage_index,
        created_at=repository.as_utc(row.created_at),
        updated_at=repository.as_utc(row.updated_at),
        created_by=row.created_by,
        stage_started_at=_as_utc(row.stage_started_at),
        started_at=_as_utc(row.started_at),
        ended_at=_as_utc(row.ended_at),
        salt=row.salt,
    )


def _fmt_range(traffic: tuple[float, float]) -> str:
    return f"[{traffic[0]:g}%, {traffic[1]:g}%)"


def _encode_token(kind: str, value: str) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode()


def _decode_token(kind: str, token: str) -> str:
    """The cursor inside a page token this service issued for `kind`."""
    try:
        decoded = base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        decoded = ""
    if not decoded.startswith(f"{kind}:"):
        raise SpecError("page_token", "is not a token this service issued")
    return decoded[len(kind) + 1 :]


def _require_state(row: ExperimentRecord, verb: str, *allowed: ExperimentState) -> None:
    """Refuses an action the experiment's current state does not allow."""
    state = ExperimentState(row.state)
    if state not in allowed:
        raise ExperimentConflict("INVALID_STATE", f"cannot {verb} an experiment that is {state.value}")


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
    ) -> None:
        self.db = db
        self.slots = frozenset(slots) if slots is not None else None
        self.default_rewards = dict(default_rewards or {})
        self.conversion_window = conversion_window
        self.refresh_seconds = refresh_seconds
        # False when a background thread calls refresh_routes: Rank then never waits for the database.
        self.refresh_on_read = refresh_on_read
        self.sequential_tuning_n = sequential_tuning_n
        self.registry = {name: d for name, d in registry.items() if name in repository.METRIC_COMPUTERS}
        self.clock = clock
        self._routes: dict[str, tuple[_Route, ...]] = {}
        self._routes_loaded = -float("inf")
        self._refresh_lock = threading.Lock()

    # ------------------------------------------------------------------ resources

    def create(
        self, definition: ExperimentDefinition, actor: str, request_id: str = "", now: datetime | None = None
    ) -> Experiment:
        """Validates and stores a draft; refuses an id in use or a slot another experiment holds."""
        now = now or self.clock()
        self._validate(definition)
        with self.db.transaction() as session:
            if request_id and self._seen(session, "experiment.create", request_id):
                return self._get(session, definition.experiment_id)
            if session.get(ExperimentRecord, definition.experiment_id) is not None:
                raise ExperimentExists(f"experiment {definition.experiment_id} already exists")
            self._check_slot_free(session, definition.slot, definition.experiment_id, definition.traffic)
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
            self._record(session, row, now, actor, "create", ExperimentState.DRAFT, 0, "created", None)
            if request_id:
                self._remember(session, "experiment.create", request_id, now)
            session.flush()
            return _to_domain(row)

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
        after = _decode_token("experiments", page_token) if page_token else ""
        with self.db.transaction() as session:
            query = select(ExperimentRecord).where(ExperimentRecord.experiment_id > after)
            if slot:
                query = query.where(ExperimentRecord.slot == slot)
            rows = (
                session.execute(query.order_by(ExperimentRecord.experiment_id).limit(page_size + 1))
                .scalars()
                .all()
            )
        items = [_to_domain(row) for row in rows[:page_size]]
        token = _encode_token("experiments", items[-1].experiment_id) if len(rows) > page_size else ""
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
            decoded = _decode_token("changes", page_token)
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
        token = _encode_token("changes", str(entries[-1].sequence)) if len(rows) > page_size else ""
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
                self._check_slot_free(
                    session,
                    row.slot,
                    row.experiment_id,
                    ExperimentDefinition.from_json(row.experiment_id, row.slot, row.spec).traffic,
                )
                row.started_at = now
                row.stage_started_at = now
                return self._transition(
                    session, row, now, actor, "start", ExperimentState.RUNNING, 0, reason or "started", None
                )
            if state is ExperimentState.PAUSED:
                report = self._report(session, row, now)
                return self._transition(
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
            _require_state(row, "advance", ExperimentState.RUNNING)
            last = row.stage_index == len(row.spec["stages"]) - 1
            _, report = self._evaluate(session, row, now, applies=frozenset(Action))
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
            _require_state(row, "pause", ExperimentState.RUNNING)
            report = self._report(session, row, now)
            return self._transition(
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
            _require_state(row, "roll back", ExperimentState.RUNNING, ExperimentState.PAUSED)
            report = self._report(session, row, now)
            row.ended_at = now
            return self._transition(
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
            report = self._report(session, row, now) if collecting else None
            row.ended_at = row.ended_at or now
            return self._transition(
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
            row = self._row(session, experiment_id)
            if ExperimentState(row.state) is ExperimentState.DRAFT:
                raise ExperimentConflict(
                    "NOT_STARTED", "a draft has no report yet; start the experiment first"
                )
            return self._report(session, row, now)

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
            row = self._row(session, experiment_id, lock=True)
            if ExperimentState(row.state) is not ExperimentState.RUNNING:
                raise ExperimentConflict("INVALID_STATE", "no longer running")
            applies = {Action.ROLLBACK, Action.ADVANCE} | (
                {Action.SHIP} if row.spec["auto_advance"] else set()
            )
            evaluation, report = self._evaluate(session, row, now, applies=frozenset(applies))
            action = evaluation.action
            definition = ExperimentDefinition.from_json(row.experiment_id, row.slot, row.spec)
            self._record(
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
                self._transition(
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
            elif action is Action.HOLD_SRM and self._last_action(session, experiment_id) != "hold":
                self._record(
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

    def assigner(self, slot: str, subject_pseudonym: str) -> ArmAssignment | None:
        """The arm serving this subject on `slot`, from an in-memory snapshot (no DB per Rank).

        The subject's layer bucket on the slot picks at most one of the slot's experiments
        (their traffic ranges are disjoint); that experiment's exposure and arm logic follow.
        """
        routes = self._current_routes().get(slot)
        if not routes:
            return None
        route = self._route_for(routes, slot, subject_pseudonym)
        if route is None:
            return None
        if route.state is ExperimentState.RUNNING:
            arm = assign(subject_pseudonym, route.salt, route.arms, route.exposure_percent)
            if arm is None:
                return None
            return ArmAssignment(route.experiment_id, arm, route.policies[arm])
        if route.state is ExperimentState.ROLLED_BACK:
            return ArmAssignment(route.experiment_id, route.control, route.policies[route.control])
        if route.state is ExperimentState.SHIPPED:
            return ArmAssignment(route.experiment_id, route.treatment, route.policies[route.treatment])
        return None  # paused: nobody is exposed

    @staticmethod
    def _route_for(routes: tuple[_Route, ...], slot: str, subject_pseudonym: str) -> _Route | None:
        if len(routes) == 1 and routes[0].traffic == (0, BUCKETS):
            return routes[0]  # the whole slot (the common case): no layer hash needed
        layer = layer_bucket(subject_pseudonym, slot)
        # Ranges of experiments holding a slot are disjoint; should two ever overlap (a race
        # between two starts), the earliest-updated one wins, deterministically.
        return next((r for r in routes if r.traffic[0] <= layer < r.traffic[1]), None)

    def refresh_routes(self) -> None:
        """Reloads the snapshot of experiments that route traffic."""
        with self.db.transaction() as session:
            rows = (
                session.execute(
                    select(ExperimentRecord)
                    .where(ExperimentRecord.state.in_([s.value for s in HOLDS_SLOT]))
                    .order_by(ExperimentRecord.updated_at)
                )
                .scalars()
                .all()
            )
            routes: dict[str, tuple[_Route, ...]] = {}
            for row in rows:
                experiment = _to_domain(row)
                definition = experiment.definition
                control = definition.control
                routes[row.slot] = routes.get(row.slot, ()) + (
                    _Route(
                        experiment_id=row.experiment_id,
                        state=experiment.state,
                        salt=row.salt,
                        arms=tuple((a.name, a.weight) for a in definition.arms),
                        policies={a.name: a.policy for a in definition.arms},
                        control=control,
                        treatment=next(a.name for a in definition.arms if a.name != control),
                        exposure_percent=experiment.exposure_percent,
                        traffic=traffic_buckets(*definition.traffic),
                    ),
                )
        self._routes = routes
        self._routes_loaded = time.monotonic()

    def _current_routes(self) -> Mapping[str, tuple[_Route, ...]]:
        if not self.refresh_on_read:
            return self._routes
        if time.monotonic() - self._routes_loaded > self.refresh_seconds and self._refresh_lock.acquire(
            blocking=self._routes_loaded == -float("inf")
        ):
            try:
                self.refresh_routes()
            except Exception:  # noqa: BLE001 - Rank keeps the last snapshot
                logger.exception("experiment routes refresh failed")
                self._routes_loaded = time.monotonic()
            finally:
                self._refresh_lock.release()
        return self._routes

    # ------------------------------------------------------------------ internals

    def _validate(self, definition: ExperimentDefinition) -> None:
        if not EXPERIMENT_ID.match(definition.experiment_id):
            raise SpecError("experiment_id", f"must match {EXPERIMENT_ID.pattern}")
        if self.slots is not None and definition.slot not in self.slots:
            raise SpecError("experiment.slot", "is not a configured slot")
        for index, arm in enumerate(definition.arms):
            if arm.policy not in POLICIES:
                raise SpecError(f"experiment.arms[{index}].policy", f"must be one of {list(POLICIES)}")
        try:
            validate_traffic_range(definition.traffic_start, definition.traffic_end)
            validate_spec(definition.spec(self.sequential_tuning_n), self.registry)
        except SpecError as error:
            raise SpecError(f"experiment.{error.field}", error.message) from None

    def _spec(self, row: ExperimentRecord) -> ExperimentSpec:
        return ExperimentDefinition.from_json(row.experiment_id, row.slot, row.spec).spec(
            self.sequential_tuning_n
        )

    def _evaluate(
        self, session: Session, row: ExperimentRecord, now: datetime, applies: frozenset[Action] = frozenset()
    ) -> tuple[Evaluation, Report]:
        """Rules over the stored evidence; actions in `applies` are worded as carried out."""
        spec = self._spec(row)
        ended = _as_utc(row.ended_at)
        inputs = repository.MetricInputs(
            experiment_id=row.experiment_id,
            arms=tuple(arm.name for arm in spec.arms),
            until=ended or now,
            now=now,
            default_reward=self.default_rewards.get(row.slot, 0.0),
            conversion_window=self.conversion_window,
        )
        metrics = (spec.primary_metric, *spec.secondary_metrics, *(g.metric for g in spec.guardrails))
        stats = repository.metric_stats(session, inputs, metrics)
        counts = repository.arm_counts(session, inputs)
        started = _as_utc(row.stage_started_at) or now
        evaluation = evaluate(
            spec,
            stage_index=row.stage_index,
            arm_counts=counts,
            metric_stats=stats,
            elapsed=(ended or now) - started,
            registry=self.registry,
        )
        report = build_report(
            experiment_id=row.experiment_id,
            spec=spec,
            evaluation=evaluation,
            metric_stats=stats,
            arm_counts=counts,
            evaluated_at=now,
            state=row.state,
            auto_applied=evaluation.action in applies,
        )
        return evaluation, report

    def _report(self, session: Session, row: ExperimentRecord, now: datetime) -> Report:
        return self._evaluate(session, row, now)[1]

    def _apply_advance(
        self, session: Session, row: ExperimentRecord, now: datetime, actor: str, reason: str, report: Report
    ) -> Experiment:
        last = row.stage_index == len(row.spec["stages"]) - 1
        if last:
            row.ended_at = now
            return self._transition(
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
        row.stage_started_at = now
        return self._transition(
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

    def _transition(
        self,
        session: Session,
        row: ExperimentRecord,
        now: datetime,
        actor: str,
        action: str,
        to_state: ExperimentState,
        to_stage: int,
        reason: str,
        report: Report | None,
    ) -> Experiment:
        self._record(session, row, now, actor, action, to_state, to_stage, reason, report)
        row.state = to_state.value
        row.stage_index = to_stage
        row.updated_at = now
        session.flush()
        return _to_domain(row)

    @staticmethod
    def _record(
        session: Session,
        row: ExperimentRecord,
        now: datetime,
        actor: str,
        action: str,
        to_state: ExperimentState,
        to_stage: int,
        reason: str,
        report: Report | None,
    ) -> None:
        session.add(
            ExperimentChange(
                experiment_id=row.experiment_id,
                occurred_at=now,
                actor=actor,
                action=action,
                from_state=row.state,
                to_state=to_state.value,
                from_stage=row.stage_index,
                to_stage=to_stage,
                reason=reason,
                report=report.to_dict() if report is not None else None,
            )
        )

    @staticmethod
    def _last_action(session: Session, experiment_id: str) -> str | None:
        return session.execute(
            select(ExperimentChange.action)
            .where(ExperimentChange.experiment_id == experiment_id, ExperimentChange.action != "evaluate")
            .order_by(ExperimentChange.id.desc())
            .limit(1)
        ).scalar_one_or_none()

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
                row = self._row(session, experiment_id, lock=True)
                if request_id and self._seen(session, scope, request_id):
                    return _to_domain(row)
                result = apply(session, row, now)
                if request_id:
                    self._remember(session, scope, request_id, now)
        except IntegrityError:
            return self.get(experiment_id)  # a concurrent retry with the same request id won
        self.refresh_routes()
        return result

    def _get(self, session: Session, experiment_id: str) -> Experiment:
        return _to_domain(self._row(session, experiment_id))

    @staticmethod
    def _row(session: Session, experiment_id: str, lock: bool = False) -> ExperimentRecord:
        query = select(ExperimentRecord).where(ExperimentRecord.experiment_id == experiment_id)
        row = session.execute(query.with_for_update() if lock else query).scalar_one_or_none()
        if row is None:
            raise ExperimentNotFound(f"no experiment {experiment_id}")
        return row

    @staticmethod
    def _check_slot_free(
        session: Session, slot: str, experiment_id: str, traffic: tuple[float, float]
    ) -> None:
        """Refuses (SLOT_OCCUPIED) when another experiment holding `slot` has a traffic range
        that intersects `traffic`; disjoint ranges (layers) may run side by side."""
        holders = session.execute(
            select(ExperimentRecord)
            .where(
                ExperimentRecord.slot == slot,
                ExperimentRecord.experiment_id != experiment_id,
                ExperimentRecord.state.in_([s.value for s in HOLDS_SLOT]),
            )
            .order_by(ExperimentRecord.experiment_id)
        ).scalars()
        for holder in holders:
            theirs = ExperimentDefinition.from_json(holder.experiment_id, holder.slot, holder.spec).traffic
            overlap = ranges_overlap(traffic, theirs)
            if overlap is not None:
                raise ExperimentConflict(
                    "SLOT_OCCUPIED",
                    f"slot {slot}: experiment {holder.experiment_id} already runs on traffic "
                    f"{_fmt_range(theirs)}, which overlaps {_fmt_range(traffic)} on {_fmt_range(overlap)} "
                    "(experiments on one slot need disjoint traffic ranges; choose another range "
                    "or conclude it first)",
                )

    @staticmethod
    def _seen(session: Session, scope: str, request_id: str) -> bool:
        return session.get(IdempotencyKey, (scope, request_id)) is not None

    @staticmethod
    def _remember(session: Session, scope: str, request_id: str, now: datetime) -> None:
        session.add(IdempotencyKey(scope=scope, request_id=request_id, created_at=now, response={}))

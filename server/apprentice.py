"""Apprentice mode per slot, composed at the edge: Rank's hook, the persisted mode, the report, the switch.

* `ApprenticeHook.serve` is the one call Rank makes: in apprentice mode it mixes the slot
  model's probabilities with the caller's baseline (`tacit.learning.apprentice.mixture`) and
  returns what the decision log keeps beside them; Rank never reads the database for it (the
  modes are a snapshot refreshed in the background).
* `SlotModes` persists a slot's mode (`slot_modes`) and every change of it (`slot_mode_changes`,
  plus one record in the audit chain), in one transaction.
* `slot_status` reads the slot's newest apprentice decisions and builds the report;
  `AutoSwitch.check` switches a slot to online when the configured rule holds.

Mode names are "online" and "apprentice" (the config's spelling).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError

from tacit.learning.apprentice import (
    ApprenticeRecord,
    ApprenticeReport,
    SwitchDecision,
    apprentice_report,
    mixture,
    switch_decision,
)
from tacit.privacy.audit import AuditEntry, FieldAudit
from tacit.privacy.audit_log import append_entries
from tacit.server.config import SlotSettings
from tacit.server.errors import FailedPrecondition, InvalidArgument, NotFound
from tacit.store.db import Database, StorageUnavailable
from tacit.store.schema import Decision, SlotModeChange, SlotModeRecord

logger = logging.getLogger("tacit.server")

ONLINE = "online"
APPRENTICE = "apprentice"
MODES = (ONLINE, APPRENTICE)
APPRENTICE_POLICY = "apprentice"  # the decisions' `policy` column for a mixed decision
SLOT_MODE_KIND = "slot_mode"  # the audit records' payload kind
SYSTEM_ACTOR = "system"  # the actor of an automatic switch


@dataclass(frozen=True)
class Served:
    """What Rank serves: the (possibly mixed) probabilities and what the log keeps beside them."""

    probabilities: tuple[float, ...]
    policy: str
    mode: str
    logged: dict | None = None
    """The decision's `apprentice` column: baseline index, π before mixing, ε (None online)."""

    def served_baseline(self, chosen: int) -> bool:
        return stored_mode(self.logged, chosen)[1]


def stored_mode(logged: Mapping[str, object] | None, chosen: int) -> tuple[str, bool]:
    """A logged decision's mode and whether it served the baseline (a Rank retry answers from the log)."""
    if logged is None:
        return ONLINE, False
    return APPRENTICE, logged["baseline"] == chosen


class _Concurrent(Exception):
    """Another process changed the slot's mode between our read and our write (rolls back)."""


class SlotModes:
    """Every slot's mode: the recorded one, else the configured one; a snapshot for Rank."""

    def __init__(self, db: Database, slots: Mapping[str, SlotSettings], policy_version: str, key_id: str):
        self.db = db
        self.slots = slots
        self.policy_version = policy_version
        self.key_id = key_id
        self._recorded: dict[str, str] = {}

    def mode(self, slot: str) -> str:
        """From memory (a dict read): Rank's view, at most one refresh interval old."""
        return self._recorded.get(slot) or self.slots[slot].mode

    def refresh(self) -> None:
        with self.db.transaction() as session:
            rows = session.execute(select(SlotModeRecord.slot, SlotModeRecord.mode)).all()
        self._recorded = {row.slot: row.mode for row in rows}

    def set_mode(
        self, slot: str, mode: str, actor: str, reason: str, report: Mapping[str, object] | None = None
    ) -> SlotModeChange | None:
        """Records a mode change with its history row and audit record; None when already in `mode`."""
        if mode not in MODES:
            raise InvalidArgument("mode", "must be online or apprentice")
        now = datetime.now(UTC)
        try:
            with self.db.transaction() as session:
                recorded = session.execute(
                    select(SlotModeRecord.mode).where(SlotModeRecord.slot == slot)
                ).scalar_one_or_none()
                current = recorded or self.slots[slot].mode
                if current == mode:
                    self._recorded[slot] = current
                    return None
                if recorded is None:
                    session.add(SlotModeRecord(slot=slot, mode=mode, changed_at=now))
                    session.flush()  # a concurrent first change fails here, on the primary key
                else:
                    # Conditional, like the reward join: a concurrent change makes it match nothing.
                    moved = session.execute(
                        update(SlotModeRecord)
                        .where(SlotModeRecord.slot == slot, SlotModeRecord.mode == current)
                        .values(mode=mode, changed_at=now)
                    ).rowcount
                    if moved == 0:
                        raise _Concurrent
                change = SlotModeChange(
                    slot=slot,
                    occurred_at=now,
                    actor=actor,
                    from_mode=current,
                    to_mode=mode,
                    reason=reason,
                    report=dict(report) if report is not None else None,
                )
                session.add(change)
                session.flush()
                append_entries(session, [self._audit_entry(change)])
                session.expunge(change)
        except (IntegrityError, _Concurrent):
            # A concurrent change of this slot committed first: answer from its outcome.
            self.refresh()
            if self.mode(slot) == mode:
                return None
            raise FailedPrecondition(
                "the slot's mode changed concurrently; retry", "CONCURRENT_CHANGE"
            ) from None
        self._recorded[slot] = mode
        logger.info("slot mode changed", extra={"slot": slot, "to_mode": mode, "actor": actor})
        return change

    def _audit_entry(self, change: SlotModeChange) -> AuditEntry:
        decisions = int(change.report.get("decisions", 0)) if change.report else 0
        return AuditEntry(
            occurred_at=change.occurred_at,
            payload_kind=SLOT_MODE_KIND,
            correlation_id=f"slot_mode:{change.slot}:{change.id}",
            policy_version=self.policy_version,
            key_id=self.key_id,
            fields=(
                FieldAudit(
                    field=change.slot,
                    operator=f"{change.actor}:{change.from_mode}->{change.to_mode}",
                    outcome=change.to_mode,
                    entity_counts={"decisions": decisions, "automatic": int(change.actor == SYSTEM_ACTOR)},
                ),
            ),
        )

    def history(self, slot: str, limit: int, before_id: int | None = None) -> list[SlotModeChange]:
        """The slot's changes, newest first."""
        query = select(SlotModeChange).where(SlotModeChange.slot == slot)
        if before_id is not None:
            query = query.where(SlotModeChange.id < before_id)
        with self.db.transaction() as session:
            rows = list(session.execute(query.order_by(SlotModeChange.id.desc()).limit(limit)).scalars())
            session.expunge_all()
        return rows


class ApprenticeHook:
    """Rank's apprentice step: validates the baseline and, in apprentice mode, mixes it in."""

    def __init__(self, modes: SlotModes):
        self.modes = modes

    def serve(
        self,
        slot: str,
        baseline_id: str,
        candidate_ids: Sequence[str],
        probabilities: tuple[float, ...],
        policy: str,
    ) -> Served:
        """`probabilities` are the policy's; only the slot's own model (policy "bandit") is mixed."""
        baseline = 0
        if baseline_id:
            try:
                baseline = list(candidate_ids).index(baseline_id)
            except ValueError:
                raise InvalidArgument("baseline_id", "is not one of the eligible candidates") from None
        if self.modes.mode(slot) != APPRENTICE or policy != "bandit":
            return Served(probabilities, policy, ONLINE)
        epsilon = self.modes.slots[slot].apprentice.epsilon
        logged = {"baseline": baseline, "target": list(probabilities), "epsilon": epsilon}
        return Served(mixture(probabilities, baseline, epsilon), APPRENTICE_POLICY, APPRENTICE, logged)


def load_apprentice_records(
    db: Database, slot: str, default_reward: float, window: int, now: datetime | None = None
) -> list[ApprenticeRecord]:
    """The slot's newest `window` apprentice decisions whose reward is final, oldest first."""
    now = now or datetime.now(UTC)
    query = (
        select(Decision.apprentice, Decision.chosen_index, Decision.probabilities, Decision.reward)
        .where(Decision.slot == slot, Decision.apprentice.is_not(None))
        .where(or_(Decision.reward.is_not(None), Decision.reward_deadline <= now))
        .order_by(Decision.created_at.desc(), Decision.event_id.desc())
        .limit(window)
    )
    with db.transaction() as session:
        rows = list(reversed(session.execute(query).all()))
    return [
        ApprenticeRecord(
            target=tuple(float(p) for p in row.apprentice["target"]),
            baseline_index=int(row.apprentice["baseline"]),
            chosen_index=int(row.chosen_index),
            logged_probability=float(row.probabilities[row.chosen_index]),
            reward=float(row.reward) if row.reward is not None else default_reward,
        )
        for row in rows
    ]


@dataclass(frozen=True)
class SlotStatus:
    slot: str
    mode: str
    settings: SlotSettings
    report: ApprenticeReport
    decision: SwitchDecision

    def numbers(self) -> dict[str, object]:
        """The report's figures as a history entry keeps them."""
        report = self.report
        return {
            "decisions": report.decisions,
            "baseline_served": report.baseline_served,
            "agreement": report.agreement,
            "learned": [report.learned.value, report.learned.ci_low, report.learned.ci_high],
            "baseline": [report.baseline.value, report.baseline.ci_low, report.baseline.ci_high],
            "learned_status": report.learned.status.value,
            "baseline_status": report.baseline.status.value,
            "margin": self.settings.apprentice.switch_margin,
            "confidence": self.settings.apprentice.confidence,
        }


def slot_status(db: Database, modes: SlotModes, slot: str, now: datetime | None = None) -> SlotStatus:
    """The slot's mode and its apprentice report (the newest `apprentice.window` decisions)."""
    settings = modes.slots.get(slot)
    if settings is None:
        raise NotFound("slot: no slot with this name is configured", "SLOT_NOT_FOUND")
    config = settings.apprentice
    records = load_apprentice_records(db, slot, settings.default_reward, config.window, now)
    report = apprentice_report(records, settings.reward_range, config.confidence)
    with db.transaction() as session:
        recorded = session.get(SlotModeRecord, slot)
    mode = recorded.mode if recorded is not None else settings.mode
    return SlotStatus(
        slot, mode, settings, report, switch_decision(report, config.switch_margin, config.min_decisions)
    )


class AutoSwitch:
    """Checks every apprentice slot with a switch margin on a cadence; switches when the rule holds."""

    def __init__(self, db: Database, modes: SlotModes, interval_seconds: float | None = None):
        self.db = db
        self.modes = modes
        intervals = [s.apprentice.check_interval_seconds for s in modes.slots.values()]
        self.interval_seconds = interval_seconds or min(intervals, default=60.0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self, slot: str) -> SlotModeChange | None:
        status = slot_status(self.db, self.modes, slot)
        if status.mode != APPRENTICE or not status.decision.switch:
            return None
        return self.modes.set_mode(slot, ONLINE, SYSTEM_ACTOR, status.decision.reason, status.numbers())

    def check_all(self) -> list[SlotModeChange]:
        changes = []
        for slot, settings in self.modes.slots.items():
            if settings.apprentice.switch_margin is not None:
                change = self.check(slot)
                if change is not None:
                    changes.append(change)
        return changes

    def start(self, refresh_seconds: float, check: bool) -> None:
        """Refreshes Rank's snapshot of the modes every `refresh_seconds`; with `check` (one
        process per deployment, the learner's) also runs the switch rule every interval."""

        def loop() -> None:
            next_check = time.monotonic() + self.interval_seconds
            while not self._stop.wait(refresh_seconds):
                try:
                    if check and time.monotonic() >= next_check:
                        next_check = time.monotonic() + self.interval_seconds
                        self.check_all()
                    self.modes.refresh()
                except StorageUnavailable:
                    pass  # logged once by Database; Rank keeps the last snapshot
                except Exception:
                    logger.exception("apprentice mode refresh or switch check failed")

        self._thread = threading.Thread(target=loop, name="tacit-apprentice-modes", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

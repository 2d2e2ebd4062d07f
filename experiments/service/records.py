"""The stored form of experiments: rows to domain objects, the change log, idempotency keys, slot holders
and page tokens."""

from __future__ import annotations

import base64
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from tacit.experiments import repository
from tacit.experiments.assignment import ranges_overlap
from tacit.experiments.errors import ExperimentConflict, ExperimentNotFound, SpecError
from tacit.experiments.report import Report
from tacit.experiments.service.definitions import (
    HOLDS_SLOT,
    Experiment,
    ExperimentDefinition,
    ExperimentState,
)
from tacit.store.schema import ExperimentChange, ExperimentRecord, IdempotencyKey


def as_utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else repository.as_utc(moment)


def to_domain(row: ExperimentRecord) -> Experiment:
    return Experiment(
        definition=ExperimentDefinition.from_json(row.experiment_id, row.slot, row.spec),
        state=ExperimentState(row.state),
        stage_index=row.stage_index,
        created_at=repository.as_utc(row.created_at),
        updated_at=repository.as_utc(row.updated_at),
        created_by=row.created_by,
        stage_started_at=as_utc(row.stage_started_at),
        started_at=as_utc(row.started_at),
        ended_at=as_utc(row.ended_at),
        salt=row.salt,
    )


def _fmt_range(traffic: tuple[float, float]) -> str:
    return f"[{traffic[0]:g}%, {traffic[1]:g}%)"


def encode_token(kind: str, value: str) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode()


def decode_token(kind: str, token: str) -> str:
    """The cursor inside a page token this service issued for `kind`."""
    try:
        decoded = base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        decoded = ""
    if not decoded.startswith(f"{kind}:"):
        raise SpecError("page_token", "is not a token this service issued")
    return decoded[len(kind) + 1 :]


def require_state(row: ExperimentRecord, verb: str, *allowed: ExperimentState) -> None:
    """Refuses an action the experiment's current state does not allow."""
    state = ExperimentState(row.state)
    if state not in allowed:
        raise ExperimentConflict("INVALID_STATE", f"cannot {verb} an experiment that is {state.value}")


def row(session: Session, experiment_id: str, lock: bool = False) -> ExperimentRecord:
    query = select(ExperimentRecord).where(ExperimentRecord.experiment_id == experiment_id)
    row = session.execute(query.with_for_update() if lock else query).scalar_one_or_none()
    if row is None:
        raise ExperimentNotFound(experiment_id)
    return row


def record(
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


def transition(
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
    record(session, row, now, actor, action, to_state, to_stage, reason, report)
    row.state = to_state.value
    row.stage_index = to_stage
    row.updated_at = now
    session.flush()
    return to_domain(row)


def last_action(session: Session, experiment_id: str) -> str | None:
    return session.execute(
        select(ExperimentChange.action)
        .where(ExperimentChange.experiment_id == experiment_id, ExperimentChange.action != "evaluate")
        .order_by(ExperimentChange.id.desc())
        .limit(1)
    ).scalar_one_or_none()


def check_slot_free(
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
                # Names the holder and its range (a stored experiment the caller may list),
                # never a value of this request (slot, range): errors do not echo input.
                f"experiment {holder.experiment_id} already runs on traffic {_fmt_range(theirs)} of "
                "this slot, which overlaps experiment.traffic_start..traffic_end (experiments on "
                "one slot need disjoint traffic ranges; choose another range or conclude it first)",
            )


def seen(session: Session, scope: str, request_id: str) -> bool:
    return session.get(IdempotencyKey, (scope, request_id)) is not None


def remember(session: Session, scope: str, request_id: str, now: datetime) -> None:
    session.add(IdempotencyKey(scope=scope, request_id=request_id, created_at=now, response={}))

"""SlotService protobuf <-> domain conversions: modes, reports and mode changes."""

from __future__ import annotations

import math
from collections.abc import Sequence

from tacit.learning.ope import Estimate
from tacit.server.apprentice import APPRENTICE, ONLINE, SlotStatus
from tacit.server.converters import to_timestamp
from tacit.server.errors import InvalidArgument
from tacit.store.schema import SlotModeChange
from tacit.v1 import slot_pb2

SLOT_MODES = {ONLINE: slot_pb2.SLOT_MODE_ONLINE, APPRENTICE: slot_pb2.SLOT_MODE_APPRENTICE}
MODE_NAMES = {number: name for name, number in SLOT_MODES.items()}
MAX_REASON_CHARS = 1_000


def mode_name(mode: int) -> str:
    try:
        return MODE_NAMES[mode]
    except KeyError:
        raise InvalidArgument("mode", "must be SLOT_MODE_ONLINE or SLOT_MODE_APPRENTICE") from None


def reason(text: str) -> str:
    if len(text) > MAX_REASON_CHARS:
        raise InvalidArgument("reason", f"at most {MAX_REASON_CHARS} characters")
    if "\x00" in text:
        raise InvalidArgument("reason", "must not contain NUL characters")
    return text


def _finite(value: float) -> float:
    return value if math.isfinite(value) else math.nan


def policy_value(estimate: Estimate) -> slot_pb2.PolicyValue:
    return slot_pb2.PolicyValue(
        value=_finite(estimate.value),
        ci_low=_finite(estimate.ci_low),
        ci_high=_finite(estimate.ci_high),
        status=estimate.status.value,
        matched=estimate.matched,
    )


def _stored_value(numbers: Sequence[float], status: str, matched: int = 0) -> slot_pb2.PolicyValue:
    value, low, high = (math.nan if x is None else float(x) for x in numbers)
    return slot_pb2.PolicyValue(value=value, ci_low=low, ci_high=high, status=status, matched=matched)


def status_response(status: SlotStatus) -> slot_pb2.GetSlotStatusResponse:
    config = status.settings.apprentice
    report = status.report
    return slot_pb2.GetSlotStatusResponse(
        slot=status.slot,
        mode=SLOT_MODES[status.mode],
        epsilon=config.epsilon,
        has_switch_margin=config.switch_margin is not None,
        switch_margin=config.switch_margin or 0.0,
        confidence=config.confidence,
        decisions=report.decisions,
        baseline_served=report.baseline_served,
        agreement=report.agreement,
        learned=policy_value(report.learned),
        baseline=policy_value(report.baseline),
        lift_lower_bound=report.lift_lower_bound,
        switch_ready=status.decision.switch,
        switch_reason=status.decision.reason,
    )


def change_to_proto(change: SlotModeChange) -> slot_pb2.SlotModeChange:
    message = slot_pb2.SlotModeChange(
        sequence=change.id,
        change_time=to_timestamp(change.occurred_at),
        actor=change.actor,
        from_mode=SLOT_MODES[change.from_mode],
        to_mode=SLOT_MODES[change.to_mode],
        reason=change.reason,
    )
    numbers = change.report
    if numbers:
        message.decisions = int(numbers.get("decisions", 0))
        message.learned.CopyFrom(_stored_value(numbers["learned"], str(numbers.get("learned_status", ""))))
        message.baseline.CopyFrom(_stored_value(numbers["baseline"], str(numbers.get("baseline_status", ""))))
    return message


def page_token(changes: Sequence[SlotModeChange], page_size: int) -> str:
    return f"c{changes[-1].id}" if len(changes) == page_size else ""


def before_id(token: str) -> int | None:
    if not token:
        return None
    if not (token.startswith("c") and token[1:].isdigit() and len(token) <= 20):
        raise InvalidArgument("page_token", "is not a token this service issued")
    return int(token[1:])


def page_size(size: int) -> int:
    if size < 0:
        raise InvalidArgument("page_size", "must not be negative")
    return min(size or 20, 100)

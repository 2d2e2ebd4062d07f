"""Protobuf <-> domain conversions with edge validation.

Errors name the field (`candidates[3].id`, `context.values["x"]`) but never
echo a value. A map key is client input too, so it is named by position, not
by text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Container, Iterable
from datetime import UTC, datetime
from functools import lru_cache

from google.protobuf.timestamp_pb2 import Timestamp

from tacit.privacy.identifiers import personal_data_in_content_id, personal_data_in_identifier
from tacit.server.config import LimitSettings
from tacit.server.decisions import RankInput, RankResult, Value
from tacit.server.errors import InvalidArgument
from tacit.v1 import common_pb2, decision_pb2

CONTENT_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
EVENT_ID = re.compile(r"^[A-Za-z0-9_\-]{8,64}$")
SLOT_NAME = re.compile(r"^[a-z][a-z0-9_\-]{0,63}$")
FEATURE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}$")


def require_text(
    field: str, value: str, limits: LimitSettings, pattern: re.Pattern[str] | None = None
) -> str:
    if not value:
        raise InvalidArgument(field, "is required")
    if len(value) > limits.max_string_chars:
        raise InvalidArgument(field, f"is longer than {limits.max_string_chars} characters")
    if pattern is not None and not pattern.match(value):
        raise InvalidArgument(field, f"must match {pattern.pattern}")
    return value


def event_id_or_empty(field: str, value: str) -> str:
    if value and not EVENT_ID.match(value):
        raise InvalidArgument(field, f"must match {EVENT_ID.pattern}")
    if value and personal_data_in_identifier(value):
        raise InvalidArgument(field, "looks like a phone, SSN, card number or IBAN; use an opaque id")
    return value


@lru_cache(maxsize=8192)
def _valid_name(name: str) -> bool:
    return FEATURE_NAME.match(name) is not None


def _where(field: str, name: str, names: Iterable[str], known_names: Container[str]) -> str:
    """Names a map entry by its key when the key is a declared field, else by its position.

    An undeclared key is client input and could itself be personal data.
    """
    if name in known_names:
        return f"{field}.values[{name}]"
    return f"{field}.values[#{sorted(names).index(name)}]"


def features_to_dict(
    field: str,
    features: common_pb2.Features,
    limits: LimitSettings,
    known_names: Container[str] = frozenset(),
) -> dict[str, Value]:
    """Validates a feature map: size, names, finite numbers, string length."""
    values = features.values
    if len(values) > limits.max_map_entries:
        raise InvalidArgument(field, f"has more than {limits.max_map_entries} entries")
    out: dict[str, Value] = {}
    for name, value in values.items():
        if not _valid_name(name):
            raise InvalidArgument(_where(field, name, values, ()), f"key must match {FEATURE_NAME.pattern}")
        kind = value.WhichOneof("kind")
        if kind == "number_value":
            number = value.number_value
            if not math.isfinite(number):
                raise InvalidArgument(_where(field, name, values, known_names), "must be a finite number")
            out[name] = number
        elif kind == "string_value":
            text = value.string_value
            if len(text) > limits.max_string_chars:
                raise InvalidArgument(
                    _where(field, name, values, known_names),
                    f"is longer than {limits.max_string_chars} characters",
                )
            out[name] = text
        elif kind == "bool_value":
            out[name] = value.bool_value
        else:
            raise InvalidArgument(_where(field, name, values, known_names), "has no value")
    return out


def rank_input(
    request: decision_pb2.RankRequest,
    limits: LimitSettings,
    max_candidates: int,
    known_names: Container[str] = frozenset(),
) -> RankInput:
    require_text("slot", request.slot, limits, SLOT_NAME)
    require_text("subject_id", request.subject_id, limits)
    if not request.candidates:
        raise InvalidArgument("candidates", "at least one candidate is required")
    if len(request.candidates) > max_candidates:
        raise InvalidArgument("candidates", f"more than {max_candidates} candidates for this slot")
    seen: set[str] = set()
    candidates = []
    for index, candidate in enumerate(request.candidates):
        field = f"candidates[{index}]"
        if not CONTENT_ID.match(candidate.id):
            raise InvalidArgument(f"{field}.id", f"must match {CONTENT_ID.pattern}")
        if candidate.id in seen:
            raise InvalidArgument(f"{field}.id", "duplicates an earlier candidate id")
        if personal_data_in_content_id(candidate.id):
            raise InvalidArgument(
                f"{field}.id",
                "looks like personal data (a phone, SSN, card number, IBAN, IP or e-mail address);"
                " use an opaque content id",
            )
        seen.add(candidate.id)
        candidates.append(
            (candidate.id, features_to_dict(f"{field}.features", candidate.features, limits, known_names))
        )
    for index, excluded in enumerate(request.excluded_ids):
        if not CONTENT_ID.match(excluded):
            raise InvalidArgument(f"excluded_ids[{index}]", f"must match {CONTENT_ID.pattern}")
    return RankInput(
        slot=request.slot,
        subject_id=request.subject_id,
        context=features_to_dict("context", request.context, limits, known_names),
        candidates=candidates,
        excluded_ids=frozenset(request.excluded_ids),
        event_id=event_id_or_empty("event_id", request.event_id),
        request_id=event_id_or_empty("request_id", request.request_id),
        defer_activation=request.defer_activation,
    )


def rank_response(result: RankResult) -> decision_pb2.RankResponse:
    return decision_pb2.RankResponse(
        event_id=result.event_id,
        chosen_id=result.chosen_id,
        ranking=[decision_pb2.RankedCandidate(id=cid, probability=p) for cid, p in result.ranking],
        model_version=result.model_version,
        arm=result.arm,
    )


def timestamp_or_none(field: str, stamp: Timestamp, present: bool) -> datetime | None:
    if not present:
        return None
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument(field, "is not a valid timestamp") from None


def to_timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
    return stamp


def finite(field: str, value: float) -> float:
    if not math.isfinite(value):
        raise InvalidArgument(field, "must be a finite number")
    return value


def required_event_id(field: str, value: str) -> str:
    if not value:
        raise InvalidArgument(field, "is required")
    return event_id_or_empty(field, value)

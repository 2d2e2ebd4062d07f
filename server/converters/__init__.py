"""Protobuf <-> domain conversions with edge validation: the shared field checks here, one
module per service beside them (`decision`, `experiment`, `model`).

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

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from tacit.privacy.identifiers import personal_data_in_identifier
from tacit.server.config import LimitSettings
from tacit.server.decisions import Value
from tacit.server.errors import InvalidArgument
from tacit.v1 import common_pb2

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


MAX_FEATURE_NAME_CHARS = 64  # FEATURE_NAME's own bound


@lru_cache(maxsize=8192)
def _cached_name_check(name: str) -> bool:
    return FEATURE_NAME.match(name) is not None


def _valid_name(name: str) -> bool:
    """Feature names repeat across requests, hence the cache; only names short enough to be
    valid reach it, so a client cannot make it hold 8,192 keys of megabytes each."""
    return len(name) <= MAX_FEATURE_NAME_CHARS and _cached_name_check(name)


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


FEATURES_MESSAGE = common_pb2.Features.DESCRIPTOR.full_name


def nul_character_field(message: Message, prefix: str = "") -> str | None:
    """The path of the first string field (or map key) holding a NUL character, else None.

    PostgreSQL cannot store NUL in text, SQLite can: refusing it at the edge for every
    field keeps both backends answering alike (INVALID_ARGUMENT, never INTERNAL). Map
    entries are named by position, like `_where` names undeclared keys.
    """
    if message.DESCRIPTOR.full_name == FEATURES_MESSAGE:
        # Feature maps: names match FEATURE_NAME (no NUL can pass), string values go through
        # the privacy boundary, which drops control-character text (outcome dropped_invalid_text).
        # Skipping them also keeps this walk off Rank's per-candidate path.
        return None
    for field, value in message.ListFields():
        name = f"{prefix}{field.name}"
        if field.type == FieldDescriptor.TYPE_STRING:
            texts = enumerate(value) if field.is_repeated else [(None, value)]
            for index, text in texts:
                if "\x00" in text:
                    return name if index is None else f"{name}[{index}]"
        elif field.type != FieldDescriptor.TYPE_MESSAGE or field.message_type is None:
            continue
        elif field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            for position, key in enumerate(sorted(value)):
                where = f"{name}[#{position}]"
                if isinstance(key, str) and "\x00" in key:
                    return where
                item = value[key]
                if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                    found = nul_character_field(item, f"{where}.")
                    if found:
                        return found
                elif isinstance(item, str) and "\x00" in item:
                    return where
        elif field.is_repeated:
            for index, item in enumerate(value):
                found = nul_character_field(item, f"{name}[{index}].")
                if found:
                    return found
        else:
            found = nul_character_field(value, f"{name}.")
            if found:
                return found
    return None

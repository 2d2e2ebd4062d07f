"""Audit entries and the pure hash-chain logic behind the tamper-evident log.

An entry says what happened to each field (operator, outcome, entity counts,
recognizers) and never holds a value. Storage appends ``ChainedRecord``s;
``verify_chain`` names the first record that does not fit.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any

GENESIS_HASH = "0" * 64
ERASURE_KIND = "erasure"


class Outcome(StrEnum):
    """What the boundary did with one field."""

    KEPT = "kept"
    PSEUDONYMIZED = "pseudonymized"
    GENERALIZED = "generalized"
    SCRUBBED = "scrubbed"  # entities were found and replaced
    CLEAN = "clean"  # scrubbed field in which nothing was found
    DROPPED_POLICY = "dropped_policy"  # the policy says drop
    DROPPED_TYPE = "dropped_type"  # value type not allowed for the operator
    DROPPED_OVERSIZE = "dropped_oversize"
    DROPPED_INVALID_TEXT = "dropped_invalid_text"  # control chars, bad unicode, binary
    DROPPED_UNPARSEABLE = "dropped_unparseable"  # generalizer could not parse it
    DROPPED_ANALYZER_ERROR = "dropped_analyzer_error"
    DROPPED_REGEX_TIMEOUT = "dropped_regex_timeout"
    ERASED = "erased"


@dataclass(frozen=True)
class FieldAudit:
    """What happened to one declared field; no value, only names and counts."""

    field: str
    operator: str
    outcome: str
    entity_counts: Mapping[str, int] = dc_field(default_factory=dict)
    recognizers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "entity_counts", MappingProxyType(dict(sorted(self.entity_counts.items())))
        )
        object.__setattr__(self, "recognizers", tuple(sorted(set(self.recognizers))))


@dataclass(frozen=True)
class AuditEntry:
    """One anonymization (or erasure) of one payload."""

    occurred_at: datetime
    payload_kind: str
    correlation_id: str
    policy_version: str
    key_id: str
    fields: tuple[FieldAudit, ...] = ()
    dropped_undeclared: int = 0

    def __post_init__(self) -> None:
        if self.occurred_at.tzinfo is None:
            raise ValueError("occurred_at must be timezone-aware")
        object.__setattr__(self, "fields", tuple(self.fields))


def erasure_entry(
    occurred_at: datetime,
    correlation_id: str,
    policy_version: str,
    key_id: str,
    removed_counts: Mapping[str, int],
) -> AuditEntry:
    """An audit entry for a subject erasure; ``removed_counts`` is rows per store table."""
    return AuditEntry(
        occurred_at=occurred_at,
        payload_kind=ERASURE_KIND,
        correlation_id=correlation_id,
        policy_version=policy_version,
        key_id=key_id,
        fields=(
            FieldAudit(
                field="subject",
                operator="erase",
                outcome=Outcome.ERASED.value,
                entity_counts=removed_counts,
            ),
        ),
    )


def _entry_to_obj(entry: AuditEntry) -> dict[str, Any]:
    return {
        "occurred_at": entry.occurred_at.isoformat(),
        "payload_kind": entry.payload_kind,
        "correlation_id": entry.correlation_id,
        "policy_version": entry.policy_version,
        "key_id": entry.key_id,
        "dropped_undeclared": entry.dropped_undeclared,
        "fields": [
            {
                "field": f.field,
                "operator": f.operator,
                "outcome": str(f.outcome),
                "entity_counts": dict(f.entity_counts),
                "recognizers": list(f.recognizers),
            }
            for f in entry.fields
        ],
    }


def canonical_json(obj: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 kept: the bytes the chain hashes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_to_json(entry: AuditEntry) -> str:
    """Canonical JSON body of an entry."""
    return canonical_json(_entry_to_obj(entry))


def entry_from_json(body_json: str) -> AuditEntry:
    """Parse a body written by ``entry_to_json``."""
    obj = json.loads(body_json)
    return AuditEntry(
        occurred_at=datetime.fromisoformat(obj["occurred_at"]),
        payload_kind=obj["payload_kind"],
        correlation_id=obj["correlation_id"],
        policy_version=obj["policy_version"],
        key_id=obj["key_id"],
        dropped_undeclared=int(obj["dropped_undeclared"]),
        fields=tuple(
            FieldAudit(
                field=f["field"],
                operator=f["operator"],
                outcome=f["outcome"],
                entity_counts={k: int(v) for k, v in f["entity_counts"].items()},
                recognizers=tuple(f["recognizers"]),
            )
            for f in obj["fields"]
        ),
    )


def chain_hash(prev_hash: str, seq: int, body_json: str) -> str:
    """sha256 over the previous hash, the sequence number and the body."""
    material = f"{prev_hash}\n{seq}\n{body_json}".encode()
    return hashlib.sha256(material).hexdigest()


@dataclass(frozen=True)
class ChainedRecord:
    """One stored link of the chain."""

    seq: int
    prev_hash: str
    body_json: str
    record_hash: str


def append_record(prev: ChainedRecord | None, body_json: str) -> ChainedRecord:
    """The record that follows ``prev`` (or starts the chain at seq 1)."""
    seq = 1 if prev is None else prev.seq + 1
    prev_hash = GENESIS_HASH if prev is None else prev.record_hash
    return ChainedRecord(seq, prev_hash, body_json, chain_hash(prev_hash, seq, body_json))


def build_chain(bodies: Iterable[str]) -> list[ChainedRecord]:
    """Chain a sequence of bodies from genesis (handy for tests and exports)."""
    records: list[ChainedRecord] = []
    for body in bodies:
        records.append(append_record(records[-1] if records else None, body))
    return records


@dataclass(frozen=True)
class ChainVerification:
    """Result of ``verify_chain``; ``first_broken_seq`` names the first bad record."""

    ok: bool
    checked: int
    first_broken_seq: int | None = None
    reason: str | None = None


def verify_chain(
    records: Iterable[ChainedRecord],
    start_prev_hash: str = GENESIS_HASH,
    start_seq: int = 1,
) -> ChainVerification:
    """Walk the records in storage order and report the first that breaks the chain.

    ``start_prev_hash``/``start_seq`` allow verifying a suffix from a trusted
    checkpoint. A deleted tail cannot be detected from the records alone; the
    caller should compare the last hash with a published checkpoint.
    """
    expected_prev = start_prev_hash
    expected_seq = start_seq
    checked = 0
    for record in records:
        if record.seq != expected_seq:
            kind = "missing record (seq gap)" if record.seq > expected_seq else "out-of-order seq"
            return ChainVerification(False, checked, record.seq, f"{kind}: expected seq "
                                     f"{expected_seq}, found {record.seq}")
        if record.prev_hash != expected_prev:
            return ChainVerification(
                False, checked, record.seq, "prev_hash does not match the previous record"
            )
        if chain_hash(record.prev_hash, record.seq, record.body_json) != record.record_hash:
            return ChainVerification(
                False, checked, record.seq, "record_hash does not match the body"
            )
        checked += 1
        expected_prev = record.record_hash
        expected_seq += 1
    return ChainVerification(True, checked)

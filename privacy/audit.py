"""Audit entries and the pure chain logic behind the tamper-evident log.

An entry says what happened to each field (operator, outcome, entity counts,
recognizers) and never holds a value. Records are chained with HMAC-SHA256 under
an audit key that is not in the database (``keyed_body``, ``verify_records``);
the body holds a keyed commitment to the correlation id instead of the id, so the
id's column can be blanked on erasure and the chain still verifies. Records written
before the key existed form a plain SHA-256 prefix (``chain_hash``, ``verify_chain``)
that ends at the seq pinned in the audit key file. An ``Anchor`` is a signed head
kept outside the database; it pins one record's MAC.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from tacit.privacy.audit_keys import AuditKeys, verify_signature

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


# --- the keyed chain -----------------------------------------------------------------


def keyed_body(entry: AuditEntry, keys: AuditKeys, key_id: str) -> str:
    """Canonical JSON body of a keyed record: the correlation id only as its keyed commitment."""
    obj = _entry_to_obj(entry)
    obj["correlation"] = keys.correlation_commitment(key_id, obj.pop("correlation_id"))
    obj["chain_key_id"] = key_id
    return canonical_json(obj)


@dataclass(frozen=True)
class StoredRecord:
    """A stored record with the columns that repeat parts of its body (checked against it)."""

    seq: int
    prev_hash: str
    body_json: str
    record_hash: str
    correlation_id: str
    payload_kind: str
    policy_version: str
    key_id: str
    occurred_at: datetime


def _same_moment(column: datetime, body_moment: datetime) -> bool:
    if column.tzinfo is not None:
        return column == body_moment
    # SQLite keeps the wall time without its zone.
    return column in (body_moment.replace(tzinfo=None), body_moment.astimezone(UTC).replace(tzinfo=None))


def _record_problem(record: StoredRecord, keys: AuditKeys) -> str | None:
    """Why this record's own content does not verify, or None."""
    try:
        body = json.loads(record.body_json)
        chain_key_id = body.get("chain_key_id")
        occurred_at = datetime.fromisoformat(body["occurred_at"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return "record body is not a chain body"
    pin = keys.legacy
    if chain_key_id is None:
        if record.seq > pin.seq:
            return f"unkeyed record after the keyed chain began (legacy prefix ends at seq {pin.seq})"
        if chain_hash(record.prev_hash, record.seq, record.body_json) != record.record_hash:
            return "record_hash does not match the body"
        correlation_ok = record.correlation_id == body.get("correlation_id")
    else:
        if record.seq <= pin.seq:
            return f"keyed record inside the legacy prefix (ends at seq {pin.seq})"
        if not isinstance(chain_key_id, str) or not keys.has(chain_key_id):
            return "record names an audit key that is not in the audit key file"
        expected = keys.record_mac(chain_key_id, record.prev_hash, record.seq, record.body_json)
        if not hmac.compare_digest(expected, record.record_hash):
            return "record_hash (HMAC) does not match the body: rewritten without the audit key"
        # A blanked (redacted) correlation id is fine; any other value must match the commitment.
        correlation_ok = record.correlation_id == "" or hmac.compare_digest(
            keys.correlation_commitment(chain_key_id, record.correlation_id), str(body.get("correlation"))
        )
    if record.seq == pin.seq and record.record_hash != pin.record_hash:
        return "record differs from the legacy head pinned in the audit key file"
    if not correlation_ok:
        return "correlation_id column does not match the record body"
    for column in ("payload_kind", "policy_version", "key_id"):
        if getattr(record, column) != body.get(column):
            return f"{column} column does not match the record body"
    if not _same_moment(record.occurred_at, occurred_at):
        return "occurred_at column does not match the record body"
    return None


def verify_records(
    records: Iterable[StoredRecord],
    keys: AuditKeys,
    start_prev_hash: str = GENESIS_HASH,
    start_seq: int = 1,
) -> ChainVerification:
    """Walk stored records (legacy prefix, then keyed) and report the first that does not fit."""
    expected_prev = start_prev_hash
    expected_seq = start_seq
    checked = 0
    for record in records:
        if record.seq != expected_seq:
            kind = "missing record (seq gap)" if record.seq > expected_seq else "out-of-order seq"
            return ChainVerification(
                False, checked, record.seq, f"{kind}: expected seq {expected_seq}, found {record.seq}"
            )
        if record.prev_hash != expected_prev:
            return ChainVerification(
                False, checked, record.seq, "prev_hash does not match the previous record"
            )
        problem = _record_problem(record, keys)
        if problem is not None:
            return ChainVerification(False, checked, record.seq, problem)
        checked += 1
        expected_prev = record.record_hash
        expected_seq += 1
    return ChainVerification(True, checked)


# --- anchors -------------------------------------------------------------------------

ANCHOR_FORMAT = "tacit-audit-anchor/1"


@dataclass(frozen=True)
class Anchor:
    """A signed head: seq and record MAC at a moment, signed with Ed25519 under an audit key."""

    seq: int
    record_hash: str
    created_at: datetime
    key_id: str
    public_key: bytes
    signature: bytes = b""

    def signed_message(self) -> bytes:
        """The canonical bytes the signature covers (everything but the signature)."""
        return canonical_json(
            {
                "format": ANCHOR_FORMAT,
                "seq": self.seq,
                "record_hash": self.record_hash,
                "created_at": self.created_at.isoformat(),
                "key_id": self.key_id,
                "public_key": base64.b64encode(self.public_key).decode("ascii"),
            }
        ).encode()

    def to_json(self) -> str:
        obj = json.loads(self.signed_message())
        obj["signature"] = base64.b64encode(self.signature).decode("ascii")
        return json.dumps(obj, sort_keys=True, indent=2)

    @classmethod
    def from_json(cls, text: str) -> Anchor:
        """Parse an anchor file; ValueError (without echoing content) when it is not one."""
        try:
            obj = json.loads(text)
            if obj["format"] != ANCHOR_FORMAT:
                raise ValueError
            anchor = cls(
                seq=int(obj["seq"]),
                record_hash=str(obj["record_hash"]),
                created_at=datetime.fromisoformat(obj["created_at"]),
                key_id=str(obj["key_id"]),
                public_key=base64.b64decode(obj["public_key"], validate=True),
                signature=base64.b64decode(obj["signature"], validate=True),
            )
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
            raise ValueError(f"not a {ANCHOR_FORMAT} document") from None
        if anchor.seq < 0:
            raise ValueError(f"not a {ANCHOR_FORMAT} document")
        return anchor

    def signature_valid(self, public_key: bytes | None = None) -> bool:
        """Checks the signature with ``public_key`` (one the reader pinned) or the one it carries."""
        return verify_signature(public_key or self.public_key, self.signature, self.signed_message())


def sign_anchor(keys: AuditKeys, seq: int, record_hash: str, created_at: datetime) -> Anchor:
    """An anchor of (seq, record_hash) signed under the active audit key."""
    unsigned = Anchor(seq, record_hash, created_at, keys.active_key_id, keys.public_key())
    return dataclasses.replace(unsigned, signature=keys.sign(unsigned.signed_message()))


def anchor_problem(anchor: Anchor, keys: AuditKeys) -> str | None:
    """Why ``anchor`` was not signed by this deployment's audit key, or None."""
    if not keys.has(anchor.key_id) or keys.public_key(anchor.key_id) != anchor.public_key:
        return "the anchor is not signed by a key in the audit key file"
    if not anchor.signature_valid():
        return "the anchor's signature does not verify"
    return None

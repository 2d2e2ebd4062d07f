"""The stored audit chain: append under a head lock, verify, anchor, redact, list, export.

Appenders lock the single `audit_head` row before reading it, so several
server processes on one PostgreSQL extend one chain and never fork it. On
SQLite the same UPDATE takes the database write lock. Records are MACed with the
audit key bound to the database (`bind_audit_keys`); a writer without one refuses
to append rather than write an unauthenticated record.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, func, insert, select, text, update
from sqlalchemy.orm import Session

from tacit.privacy.audit import (
    GENESIS_HASH,
    Anchor,
    AuditEntry,
    ChainVerification,
    StoredRecord,
    anchor_problem,
    keyed_body,
    sign_anchor,
    verify_records,
)
from tacit.privacy.audit_keys import AuditKeyError, AuditKeys, LegacyPin
from tacit.store.db import Database
from tacit.store.schema import AuditHead, AuditRecord

_VERIFY_PAGE = 2_000
_REDACT_CHUNK = 500
AUDIT_KEYS_INFO = "tacit.audit_keys"
AUDIT_KEYS_FILE_INFO = "tacit.audit_keys_file"


class AuditKeyMissing(RuntimeError):
    """No audit key is bound to the database: nothing can be appended or verified."""


def bind_audit_keys(db: Database, keys: AuditKeys, path: str | Path | None = None) -> None:
    """Every session of `db` opened from now on appends and verifies with `keys`.

    With `path` (the file the keys came from), verification reloads the file when it
    changed, so a key added by another process's rotation is never taken for tampering.
    """
    db.session_info[AUDIT_KEYS_INFO] = keys
    if path is not None:
        db.session_info[AUDIT_KEYS_FILE_INFO] = (Path(path), _mtime(Path(path)))


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return 0


def bound_audit_keys(db: Database) -> AuditKeys:
    """The bound keys, reloaded first when their file changed since they were read."""
    source = db.session_info.get(AUDIT_KEYS_FILE_INFO)
    if isinstance(source, tuple):
        path, seen = source
        now = _mtime(path)
        if now and now != seen:
            bind_audit_keys(db, AuditKeys.load(path), path)
    keys = db.session_info.get(AUDIT_KEYS_INFO)
    if not isinstance(keys, AuditKeys):
        raise AuditKeyMissing("no audit key is bound to this database (bind_audit_keys)")
    return keys


def read_head(db: Database) -> tuple[int, str]:
    """The chain head as stored: (seq, record MAC) of the last record, (0, genesis) when empty."""
    with db.transaction() as session:
        row = session.execute(select(AuditHead.seq, AuditHead.record_hash).where(AuditHead.id == 1)).one()
    return int(row[0]), str(row[1])


def _head_key_id(db: Database, head_seq: int) -> str | None:
    """The audit key id of the newest record, None when it is unkeyed (or there is none)."""
    if head_seq == 0:
        return None
    with db.transaction() as session:
        body = session.execute(select(AuditRecord.body_json).where(AuditRecord.seq == head_seq)).scalar()
    try:
        key_id = json.loads(body or "{}").get("chain_key_id")
    except (ValueError, AttributeError):
        return None
    return key_id if isinstance(key_id, str) else None


def load_or_create_keys(db: Database, path: str | Path) -> AuditKeys:
    """The audit key file at `path`; created (0600) with the current head as the legacy pin.

    Records already in the database were written by the unkeyed code: they stay a
    plain SHA-256 prefix, verified up to the pinned head; every later record is keyed.
    A chain that is keyed already never gets a new key file: a replica started without
    the shared file (or with another one) refuses instead of forking the key history.
    """
    path = Path(path)
    seq, record_hash = read_head(db)
    head_key_id = _head_key_id(db, seq)
    if head_key_id is not None and not path.exists():
        raise AuditKeyError(
            f"the audit chain in this database is keyed already but {path} does not exist: "
            "copy audit-keys.json from a replica that shares this database"
        )
    keys = AuditKeys.load_or_create(path, LegacyPin(seq, record_hash))
    if head_key_id is not None and not keys.has(head_key_id):
        raise AuditKeyError(
            f"the newest audit record was made with an audit key that is not in {path}: "
            "every replica needs the same audit-keys.json"
        )
    return keys


# Built once: the append runs on Rank's logging path for every batch.
_LOCK_HEAD = update(AuditHead).where(AuditHead.id == 1).values(seq=AuditHead.seq)
_READ_HEAD = select(AuditHead.seq, AuditHead.record_hash).where(AuditHead.id == 1).with_for_update()
_WRITE_HEAD = (
    update(AuditHead)
    .where(AuditHead.id == 1)
    .values(seq=bindparam("head_seq"), record_hash=bindparam("head_hash"))
)
_INSERT_RECORDS = insert(AuditRecord)


def append_entries(session: Session, entries: Sequence[AuditEntry]) -> list[int]:
    """Chains `entries` after the current head inside the caller's transaction."""
    if not entries:
        return []
    keys = session.info.get(AUDIT_KEYS_INFO)
    if not isinstance(keys, AuditKeys):
        raise AuditKeyMissing("no audit key is bound to this database (bind_audit_keys)")
    key_id = keys.active_key_id
    connection = session.connection()
    # The UPDATE takes the row lock (PostgreSQL) or the write lock (SQLite) before the read.
    connection.execute(_LOCK_HEAD)
    seq, prev_hash = connection.execute(_READ_HEAD).one()
    rows: list[dict[str, Any]] = []
    sequences: list[int] = []
    for entry in entries:
        seq += 1
        body = keyed_body(entry, keys, key_id)
        record_hash = keys.record_mac(key_id, prev_hash, seq, body)
        rows.append(
            {
                "seq": seq,
                "occurred_at": entry.occurred_at,
                "payload_kind": entry.payload_kind,
                "correlation_id": entry.correlation_id,
                "policy_version": entry.policy_version,
                "key_id": entry.key_id,
                "body_json": body,
                "prev_hash": prev_hash,
                "record_hash": record_hash,
            }
        )
        prev_hash = record_hash
        sequences.append(seq)
    connection.execute(_INSERT_RECORDS, rows)
    connection.execute(_WRITE_HEAD, {"head_seq": seq, "head_hash": prev_hash})
    return sequences


def _stored(row: AuditRecord) -> StoredRecord:
    return StoredRecord(
        seq=row.seq,
        prev_hash=row.prev_hash,
        body_json=row.body_json,
        record_hash=row.record_hash,
        correlation_id=row.correlation_id,
        payload_kind=row.payload_kind,
        policy_version=row.policy_version,
        key_id=row.key_id,
        occurred_at=row.occurred_at,
    )


@dataclass(frozen=True)
class _Walk:
    result: ChainVerification
    last_seq: int
    last_hash: str
    hash_at: dict[int, str]


def _walk(db: Database, keys: AuditKeys, until_seq: int, wanted: Iterable[int] = ()) -> _Walk:
    """Verifies records 1..until_seq in pages; remembers the MACs at the `wanted` seqs."""
    wanted_set = set(wanted)
    hash_at: dict[int, str] = {}
    checked = 0
    prev_hash, next_seq = GENESIS_HASH, 1
    while next_seq <= until_seq:
        with db.transaction() as session:
            rows = (
                session.execute(
                    select(AuditRecord)
                    .where(AuditRecord.seq >= next_seq, AuditRecord.seq <= until_seq)
                    .order_by(AuditRecord.seq)
                    .limit(_VERIFY_PAGE)
                )
                .scalars()
                .all()
            )
        if not rows:
            break
        result = verify_records((_stored(r) for r in rows), keys, prev_hash, next_seq)
        checked += result.checked
        if not result.ok:
            broken = ChainVerification(False, checked, result.first_broken_seq, result.reason)
            return _Walk(broken, next_seq - 1, prev_hash, hash_at)
        for row in rows:
            if row.seq in wanted_set:
                hash_at[row.seq] = row.record_hash
        prev_hash, next_seq = rows[-1].record_hash, rows[-1].seq + 1
    return _Walk(ChainVerification(True, checked), next_seq - 1, prev_hash, hash_at)


def verify(db: Database, keys: AuditKeys | None = None, anchor: Anchor | None = None) -> ChainVerification:
    """Verifies the chain up to the head read at the start; appends meanwhile are not tampering.

    One snapshot of the head, then every record up to it: each link, each MAC, the
    columns against the body, the end at the head. A head that later moves backwards
    or records beyond the head are tampering. With `anchor` (a signed head kept
    elsewhere), the chain must still hold the anchored record with the anchored MAC,
    which catches a truncation with the head moved back, beyond the key's reach.
    """
    keys = keys or bound_audit_keys(db)
    if anchor is not None:
        problem = anchor_problem(anchor, keys)
        if problem is not None:
            # Nothing in an unauthenticated anchor is ours to repeat back: no record is named.
            return ChainVerification(False, 0, None, f"anchor refused: {problem}")
    head_seq, head_hash = read_head(db)
    walk = _walk(db, keys, head_seq, wanted=[anchor.seq] if anchor is not None else [])
    if not walk.result.ok:
        return walk.result
    checked = walk.result.checked
    if anchor is not None and anchor.seq > head_seq:
        return ChainVerification(
            False,
            checked,
            anchor.seq,
            f"the chain ends at seq {head_seq} but the anchor of {anchor.created_at.isoformat()} "
            f"holds seq {anchor.seq}: records after seq {head_seq} were deleted",
        )
    if walk.last_seq == head_seq and walk.last_hash != head_hash:
        return ChainVerification(
            False, checked, head_seq, f"the head's hash does not match record {head_seq}"
        )
    if walk.last_seq != head_seq:
        return ChainVerification(
            False,
            checked,
            walk.last_seq + 1,
            f"chain ends at seq {walk.last_seq} but the head records seq {head_seq}: "
            "records were deleted from the end",
        )
    if anchor is not None and anchor.seq > 0 and walk.hash_at.get(anchor.seq) != anchor.record_hash:
        return ChainVerification(
            False,
            checked,
            anchor.seq,
            f"record {anchor.seq} contradicts the anchor of {anchor.created_at.isoformat()}: "
            "the chain was rewritten from there or before",
        )
    # Read the highest seq first, then the head: an append commits both together, so a
    # healthy chain always shows head >= highest seq and a head never below the snapshot.
    with db.transaction() as session:
        highest = session.execute(select(func.max(AuditRecord.seq))).scalar_one() or 0
        now_seq = session.execute(select(AuditHead.seq).where(AuditHead.id == 1)).scalar_one()
    if now_seq < head_seq:
        return ChainVerification(
            False, checked, now_seq + 1, f"the head moved back from seq {head_seq} to {now_seq}"
        )
    if highest > now_seq:
        return ChainVerification(
            False, checked, now_seq + 1, f"records exist beyond the head (seq {now_seq})"
        )
    return ChainVerification(True, checked)


def make_anchor(db: Database, keys: AuditKeys | None = None, now: datetime | None = None) -> Anchor:
    """Signs the current head after verifying the chain up to it; ValueError if it is broken."""
    keys = keys or bound_audit_keys(db)
    head_seq, head_hash = read_head(db)
    walk = _walk(db, keys, head_seq)
    if not walk.result.ok:
        raise ValueError(
            f"the chain is broken at record {walk.result.first_broken_seq}: {walk.result.reason}"
        )
    if walk.last_seq != head_seq or walk.last_hash != head_hash:
        raise ValueError(f"the chain ends at seq {walk.last_seq} but the head records seq {head_seq}")
    return sign_anchor(keys, head_seq, head_hash, now or datetime.now(UTC))


def _is_keyed(body_json: str) -> bool:
    try:
        return "chain_key_id" in json.loads(body_json)
    except (ValueError, TypeError):
        return False


def redact_correlations(session: Session, correlation_ids: Iterable[str]) -> int:
    """Blanks the correlation id of keyed records holding one of `correlation_ids`.

    The MAC covers only the id's keyed commitment, so the chain still verifies.
    Records of the legacy (unkeyed) prefix carry the id inside their hashed body and
    are left as they are. Returns the number of records blanked.
    """
    wanted = sorted({c for c in correlation_ids if c})
    redacted = 0
    if wanted and session.get_bind().dialect.name == "sqlite":
        # Overwrite the freed bytes instead of leaving them in the page (this connection only).
        session.execute(text("PRAGMA secure_delete=ON"))
    for start in range(0, len(wanted), _REDACT_CHUNK):
        chunk = wanted[start : start + _REDACT_CHUNK]
        rows = session.execute(
            select(AuditRecord.seq, AuditRecord.body_json).where(AuditRecord.correlation_id.in_(chunk))
        ).all()
        seqs = [seq for seq, body in rows if _is_keyed(body)]
        for part in range(0, len(seqs), _REDACT_CHUNK):
            result = session.execute(
                update(AuditRecord)
                .where(AuditRecord.seq.in_(seqs[part : part + _REDACT_CHUNK]))
                .values(correlation_id="")
            )
            redacted += int(getattr(result, "rowcount", 0) or 0)
    return redacted


@dataclass(frozen=True)
class AuditFilter:
    payload_kind: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    # Digests of one client id under every held key (`KeyRing.digests`); empty = all records.
    correlation_ids: tuple[str, ...] = ()


def _filtered(query, audit_filter: AuditFilter):  # type: ignore[no-untyped-def]
    if audit_filter.payload_kind:
        query = query.where(AuditRecord.payload_kind == audit_filter.payload_kind)
    if audit_filter.start_time:
        query = query.where(AuditRecord.occurred_at >= audit_filter.start_time)
    if audit_filter.end_time:
        query = query.where(AuditRecord.occurred_at < audit_filter.end_time)
    if audit_filter.correlation_ids:
        query = query.where(AuditRecord.correlation_id.in_(audit_filter.correlation_ids))
    return query


def encode_page_token(last_seq: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": last_seq}).encode()).decode()


def decode_page_token(token: str) -> int:
    """Returns the sequence to continue after; raises ValueError for a bad token."""
    if not token:
        return 0
    try:
        after = json.loads(base64.urlsafe_b64decode(token.encode()))["after"]
    except (ValueError, KeyError, TypeError):
        raise ValueError("page_token is not a token this server issued") from None
    if not isinstance(after, int) or after < 0:
        raise ValueError("page_token is not a token this server issued")
    return after


def list_records(
    db: Database, audit_filter: AuditFilter, page_size: int, after_seq: int
) -> tuple[list[AuditRecord], int | None]:
    """One page of records after `after_seq`; the second value is the next cursor."""
    with db.transaction() as session:
        query = _filtered(select(AuditRecord), audit_filter).where(AuditRecord.seq > after_seq)
        rows = list(session.execute(query.order_by(AuditRecord.seq).limit(page_size + 1)).scalars())
    more = len(rows) > page_size
    rows = rows[:page_size]
    return rows, (rows[-1].seq if more and rows else None)


def record_json(record: AuditRecord) -> str:
    """One JSON line per record, as the compliance export carries it.

    The body holds only a keyed commitment to the correlation id; the id itself comes
    from its column (empty once redacted for an erased subject).
    """
    return json.dumps(
        {
            "seq": record.seq,
            "correlation_id": record.correlation_id,
            "prev_hash": record.prev_hash,
            "record_hash": record.record_hash,
            "body": json.loads(record.body_json),
        },
        sort_keys=True,
        separators=(",", ":"),
    )


def export_lines(db: Database, audit_filter: AuditFilter, page_size: int = 1_000) -> Iterator[str]:
    """Streams records as JSON lines, oldest first, a page at a time."""
    after = 0
    while True:
        rows, cursor = list_records(db, audit_filter, page_size, after)
        for row in rows:
            yield record_json(row)
        if cursor is None:
            return
        after = cursor


def chain_length(db: Database) -> int:
    """How many records the chain holds, by its head (what monitoring reads)."""
    with db.transaction() as session:
        return int(session.execute(select(AuditHead.seq).where(AuditHead.id == 1)).scalar_one())

"""The stored audit chain: append under a head lock, verify, list, export.

Appenders lock the single `audit_head` row before reading it, so several
server processes on one PostgreSQL extend one chain and never fork it. On
SQLite the same UPDATE takes the database write lock.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from tacit.privacy.audit import (
    AuditEntry,
    ChainedRecord,
    ChainVerification,
    chain_hash,
    entry_to_json,
    verify_chain,
)
from tacit.store.db import Database
from tacit.store.schema import AuditHead, AuditRecord

_VERIFY_PAGE = 2_000


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
    connection = session.connection()
    # The UPDATE takes the row lock (PostgreSQL) or the write lock (SQLite) before the read.
    connection.execute(_LOCK_HEAD)
    seq, prev_hash = connection.execute(_READ_HEAD).one()
    rows: list[dict[str, Any]] = []
    sequences: list[int] = []
    for entry in entries:
        seq += 1
        body = entry_to_json(entry)
        record_hash = chain_hash(prev_hash, seq, body)
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


def verify(db: Database) -> ChainVerification:
    """Walks the whole chain in pages and checks it ends at the recorded head."""
    checked = 0
    prev_hash = "0" * 64
    next_seq = 1
    with db.transaction() as session:
        head = session.execute(select(AuditHead).where(AuditHead.id == 1)).scalar_one()
        head_seq, head_hash = head.seq, head.record_hash
    while True:
        with db.transaction() as session:
            rows = (
                session.execute(
                    select(AuditRecord)
                    .where(AuditRecord.seq >= next_seq)
                    .order_by(AuditRecord.seq)
                    .limit(_VERIFY_PAGE)
                )
                .scalars()
                .all()
            )
        if not rows:
            break
        result = verify_chain(
            (ChainedRecord(r.seq, r.prev_hash, r.body_json, r.record_hash) for r in rows),
            start_prev_hash=prev_hash,
            start_seq=next_seq,
        )
        checked += result.checked
        if not result.ok:
            return ChainVerification(False, checked, result.first_broken_seq, result.reason)
        prev_hash, next_seq = rows[-1].record_hash, rows[-1].seq + 1
    if next_seq - 1 != head_seq or prev_hash != head_hash:
        return ChainVerification(
            False,
            checked,
            next_seq,
            f"chain ends at seq {next_seq - 1} but the head records seq {head_seq}: "
            "records were deleted from the end",
        )
    return ChainVerification(True, checked)


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
    """One JSON line per record, as the compliance export carries it."""
    return json.dumps(
        {
            "seq": record.seq,
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

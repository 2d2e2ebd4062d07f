"""The stored audit chain: concurrent appenders never fork it; tampering is named by verify."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select, update

from tacit.privacy.audit import AuditEntry, FieldAudit
from tacit.privacy.audit_log import (
    append_entries,
    bind_audit_keys,
    bound_audit_keys,
    load_or_create_keys,
    verify,
)
from tacit.store.db import Database
from tacit.store.schema import AuditHead, AuditRecord

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

WRITER = """
import sys
from datetime import UTC, datetime
from tacit.privacy.audit import AuditEntry, FieldAudit
from tacit.privacy.audit_keys import AuditKeys
from tacit.privacy.audit_log import append_entries, bind_audit_keys
from tacit.store.db import Database, make_engine

url, writer, rounds, key_file = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
db = Database(make_engine(url))
bind_audit_keys(db, AuditKeys.load(key_file))
for n in range(rounds):
    entries = [
        AuditEntry(datetime.now(UTC), "event.click", f"{writer}-{n}-{k}", "v1", "k1",
                   (FieldAudit("text", "scrub", "scrubbed", {"EMAIL_ADDRESS": 1}),))
        for k in range(2)
    ]
    with db.transaction() as session:
        append_entries(session, entries)
db.dispose()
print("done", writer)
"""


def _entry(i: int) -> AuditEntry:
    return AuditEntry(
        occurred_at=NOW,
        payload_kind="event.click",
        correlation_id=f"corr-{i}",
        policy_version="v1",
        key_id="k1",
        fields=(FieldAudit("text", "scrub", "scrubbed", {"EMAIL_ADDRESS": 2}, ("EmailRecognizer",)),),
    )


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return tmp_path / "audit-keys.json"


@pytest.fixture
def db(database_url: str, key_file: Path) -> Iterator[Database]:
    database = Database.open(database_url)
    bind_audit_keys(database, load_or_create_keys(database, key_file))
    yield database
    database.dispose()


@pytest.fixture
def chain(db: Database) -> Database:
    """Ten records, appended in three transactions."""
    for start, stop in ((1, 4), (4, 8), (8, 11)):
        with db.transaction() as session:
            append_entries(session, [_entry(i) for i in range(start, stop)])
    assert verify(db).ok
    return db


def test_concurrent_writer_processes_extend_one_chain(
    db: Database, database_url: str, key_file: Path
) -> None:
    writers, rounds = 4, 15
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, database_url, f"w{w}", str(rounds), str(key_file)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(writers)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    result = verify(db)
    total = writers * rounds * 2
    assert result.ok, result.reason
    assert result.checked == total
    with db.transaction() as session:
        seqs = list(session.execute(select(AuditRecord.seq).order_by(AuditRecord.seq)).scalars())
        distinct_prev = session.execute(select(func.count(func.distinct(AuditRecord.prev_hash)))).scalar_one()
        head = session.execute(select(AuditHead)).scalar_one()
    assert seqs == list(range(1, total + 1))
    assert distinct_prev == total  # no two records claim the same predecessor: no fork
    assert head.seq == total


def _mutate(db: Database, fn: Callable[..., None]) -> None:
    with db.transaction() as session:
        fn(session)


def test_changed_count_is_named(chain: Database) -> None:
    def change(session) -> None:  # type: ignore[no-untyped-def]
        record = session.get(AuditRecord, 4)
        record.body_json = record.body_json.replace('"EMAIL_ADDRESS":2', '"EMAIL_ADDRESS":1')

    _mutate(chain, change)
    result = verify(chain)
    assert not result.ok and result.first_broken_seq == 4
    assert "record_hash" in (result.reason or "")


def test_changed_count_with_recomputed_hash_is_named_at_the_next_link(chain: Database) -> None:
    # An insider holding the audit key re-MACs one record; the next link still names it.
    keys = bound_audit_keys(chain)

    def change(session) -> None:  # type: ignore[no-untyped-def]
        record = session.get(AuditRecord, 4)
        record.body_json = record.body_json.replace('"EMAIL_ADDRESS":2', '"EMAIL_ADDRESS":0')
        record.record_hash = keys.record_mac(
            keys.active_key_id, record.prev_hash, record.seq, record.body_json
        )

    _mutate(chain, change)
    result = verify(chain)
    assert not result.ok and result.first_broken_seq == 5
    assert "prev_hash" in (result.reason or "")


def test_deleted_middle_record_is_named(chain: Database) -> None:
    _mutate(chain, lambda s: s.execute(delete(AuditRecord).where(AuditRecord.seq == 5)))
    result = verify(chain)
    assert not result.ok and result.first_broken_seq == 6
    assert "expected seq 5" in (result.reason or "")


def test_deleted_tail_is_named(chain: Database) -> None:
    _mutate(chain, lambda s: s.execute(delete(AuditRecord).where(AuditRecord.seq >= 9)))
    result = verify(chain)
    assert not result.ok and result.first_broken_seq == 9
    assert "deleted from the end" in (result.reason or "")


def test_swapped_pair_is_named(chain: Database) -> None:
    def swap(session) -> None:  # type: ignore[no-untyped-def]
        session.execute(update(AuditRecord).where(AuditRecord.seq == 3).values(seq=-3))
        session.execute(update(AuditRecord).where(AuditRecord.seq == 4).values(seq=3))
        session.execute(update(AuditRecord).where(AuditRecord.seq == -3).values(seq=4))

    _mutate(chain, swap)
    result = verify(chain)
    assert not result.ok and result.first_broken_seq == 3


def test_untouched_chain_verifies(chain: Database) -> None:
    result = verify(chain)
    assert result.ok and result.checked == 10

"""The audit chain proves itself to someone who does not trust the database.

An attacker here can run any SQL but does not hold the audit key file: each attack
of the must-show list is run against a ten-record chain anchored at its head, and
`tacit audit verify --anchor` must exit 1 naming the first bad record or the anchor
it contradicts, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from tacit.cli import main
from tacit.privacy.audit import GENESIS_HASH, Anchor, AuditEntry, FieldAudit, chain_hash, sign_anchor
from tacit.privacy.audit_keys import AuditKeys
from tacit.privacy.audit_log import (
    append_entries,
    bind_audit_keys,
    load_or_create_keys,
    make_anchor,
    read_head,
    verify,
)
from tacit.store.db import Database
from tacit.store.schema import AuditHead, AuditRecord

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
RECORDS = 10


def _entry(i: int) -> AuditEntry:
    return AuditEntry(
        occurred_at=NOW + timedelta(seconds=i),
        payload_kind="event.click",
        correlation_id=f"evt-{i:04d}",
        policy_version="v1",
        key_id="k1",
        fields=(FieldAudit("text", "scrub", "scrubbed", {"EMAIL_ADDRESS": 2}, ("EmailRecognizer",)),),
    )


@dataclass
class Anchored:
    db: Database
    url: str
    data_dir: Path
    anchor_file: Path

    def cli_verify(self, *extra: str) -> list[str]:
        return ["audit", "--data-dir", str(self.data_dir), "verify", "--database-url", self.url, *extra]


@pytest.fixture
def anchored(database_url: str, tmp_path: Path) -> Iterator[Anchored]:
    """Ten keyed records in three transactions, and an anchor of seq 10 kept in a file."""
    data_dir = tmp_path / "data"
    db = Database.open(database_url)
    bind_audit_keys(db, load_or_create_keys(db, data_dir / "audit-keys.json"))
    for start, stop in ((1, 4), (4, 8), (8, RECORDS + 1)):
        with db.transaction() as session:
            append_entries(session, [_entry(i) for i in range(start, stop)])
    anchor_file = tmp_path / "anchor.json"
    anchor_file.write_text(make_anchor(db).to_json())
    yield Anchored(db, database_url, data_dir, anchor_file)
    db.dispose()


# --- what an attacker without the key can do ------------------------------------------


def _records(session: Session) -> list[AuditRecord]:
    return list(session.execute(select(AuditRecord).order_by(AuditRecord.seq)).scalars())


def _rechain_from(session: Session, seq: int) -> None:
    """Recompute every link from `seq` on with plain SHA-256 (the best a keyless attacker can)
    and move the head to the new last hash."""
    prev = GENESIS_HASH
    for record in _records(session):
        if record.seq >= seq:
            record.prev_hash = prev
            record.record_hash = chain_hash(prev, record.seq, record.body_json)
        prev = record.record_hash
    session.flush()
    last = _records(session)[-1]
    session.execute(update(AuditHead).values(seq=last.seq, record_hash=last.record_hash))


def one_row_edit(session: Session) -> None:
    record = session.get(AuditRecord, 4)
    assert record is not None
    record.body_json = record.body_json.replace('"EMAIL_ADDRESS":2', '"EMAIL_ADDRESS":0')


def rewrite_and_recompute(session: Session) -> None:
    one_row_edit(session)
    _rechain_from(session, 4)


def rewrite_as_unkeyed_chain(session: Session) -> None:
    """Strip the key ids and rebuild the whole chain as an old-style SHA-256 chain."""
    for record in _records(session):
        body = json.loads(record.body_json)
        body.pop("chain_key_id")
        record.body_json = json.dumps(body, sort_keys=True, separators=(",", ":"))
    one_row_edit(session)
    _rechain_from(session, 1)


def middle_delete(session: Session) -> None:
    session.execute(delete(AuditRecord).where(AuditRecord.seq == 5))


def middle_delete_and_renumber(session: Session) -> None:
    session.execute(delete(AuditRecord).where(AuditRecord.seq == 5))
    for seq in range(6, RECORDS + 1):
        session.execute(update(AuditRecord).where(AuditRecord.seq == seq).values(seq=seq - 1))
    _rechain_from(session, 5)


def tail_truncation_with_head_moved_back(session: Session) -> None:
    session.execute(delete(AuditRecord).where(AuditRecord.seq >= 8))
    seventh = session.get(AuditRecord, 7)
    assert seventh is not None
    session.execute(update(AuditHead).values(seq=7, record_hash=seventh.record_hash))


def tail_truncation(session: Session) -> None:
    session.execute(delete(AuditRecord).where(AuditRecord.seq >= 8))


def head_rollback(session: Session) -> None:
    seventh = session.get(AuditRecord, 7)
    assert seventh is not None
    session.execute(update(AuditHead).values(seq=7, record_hash=seventh.record_hash))


def swap_two_records(session: Session) -> None:
    session.execute(update(AuditRecord).where(AuditRecord.seq == 3).values(seq=-3))
    session.execute(update(AuditRecord).where(AuditRecord.seq == 4).values(seq=3))
    session.execute(update(AuditRecord).where(AuditRecord.seq == -3).values(seq=4))


def swap_and_relink(session: Session) -> None:
    swap_two_records(session)
    session.flush()
    _rechain_from(session, 3)


def correlation_column_edit(session: Session) -> None:
    session.execute(update(AuditRecord).where(AuditRecord.seq == 6).values(correlation_id="evt-0002"))


def head_hash_edit(session: Session) -> None:
    session.execute(update(AuditHead).values(record_hash="f" * 64))


def payload_kind_column_edit(session: Session) -> None:
    session.execute(update(AuditRecord).where(AuditRecord.seq == 2).values(payload_kind="rank"))


# (attack, first bad record named, words in the reason)
ATTACKS: list[tuple[Callable[[Session], None], int, str]] = [
    (one_row_edit, 4, "record_hash (HMAC) does not match"),
    (rewrite_and_recompute, 4, "rewritten without the audit key"),
    (rewrite_as_unkeyed_chain, 1, "unkeyed record after the keyed chain began"),
    (middle_delete, 6, "expected seq 5, found 6"),
    (middle_delete_and_renumber, 5, "rewritten without the audit key"),
    (tail_truncation, 8, "records were deleted from the end"),
    (tail_truncation_with_head_moved_back, 10, "anchor"),
    (head_rollback, 10, "anchor"),
    (swap_two_records, 3, "prev_hash does not match"),
    (swap_and_relink, 3, "rewritten without the audit key"),
    (correlation_column_edit, 6, "correlation_id column"),
    (payload_kind_column_edit, 2, "payload_kind column"),
    (head_hash_edit, RECORDS, "the head's hash does not match record 10"),
]


@pytest.mark.parametrize(("attack", "first_bad", "words"), ATTACKS, ids=[a[0].__name__ for a in ATTACKS])
def test_attack_is_detected_with_the_anchor_and_named(
    anchored: Anchored,
    attack: Callable[[Session], None],
    first_bad: int,
    words: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(anchored.cli_verify("--anchor", str(anchored.anchor_file))) == 0
    assert f"audit chain OK: {RECORDS} records" in capsys.readouterr().out
    with anchored.db.transaction() as session:
        attack(session)
    result = verify(anchored.db, anchor=Anchor.from_json(anchored.anchor_file.read_text()))
    assert not result.ok
    assert result.first_broken_seq == first_bad, result.reason
    assert words in (result.reason or "")
    assert main(anchored.cli_verify("--anchor", str(anchored.anchor_file))) == 1
    out = capsys.readouterr().out
    assert f"BROKEN at record {first_bad}:" in out and words in out


def test_truncation_with_the_head_moved_back_is_invisible_without_an_anchor(anchored: Anchored) -> None:
    """Why the anchor exists: a consistent prefix is a valid chain, only the anchor remembers more."""
    with anchored.db.transaction() as session:
        tail_truncation_with_head_moved_back(session)
    assert verify(anchored.db).ok
    anchor = Anchor.from_json(anchored.anchor_file.read_text())
    result = verify(anchored.db, anchor=anchor)
    assert not result.ok and result.first_broken_seq == RECORDS
    assert "the chain ends at seq 7 but the anchor" in (result.reason or "")
    assert "records after seq 7 were deleted" in (result.reason or "")


def test_head_rollback_without_deleting_is_detected_without_an_anchor(anchored: Anchored) -> None:
    with anchored.db.transaction() as session:
        head_rollback(session)
    result = verify(anchored.db)
    assert not result.ok and result.first_broken_seq == 8
    assert "records exist beyond the head" in (result.reason or "")


def test_a_rewrite_that_recomputes_the_anchored_record_contradicts_the_anchor(
    anchored: Anchored, tmp_path: Path
) -> None:
    """Even an insider who re-MACs the chain with the key cannot hide it from an older anchor."""
    keys = AuditKeys.load(anchored.data_dir / "audit-keys.json")
    with anchored.db.transaction() as session:
        one_row_edit(session)
        prev = GENESIS_HASH
        for record in _records(session):
            if record.seq >= 4:
                record.prev_hash = prev
                record.record_hash = keys.record_mac(keys.active_key_id, prev, record.seq, record.body_json)
            prev = record.record_hash
        session.execute(update(AuditHead).values(seq=RECORDS, record_hash=prev))
    assert verify(anchored.db).ok  # the key holder can forge a consistent chain...
    result = verify(anchored.db, anchor=Anchor.from_json(anchored.anchor_file.read_text()))
    assert not result.ok and result.first_broken_seq == RECORDS  # ...but not the anchor kept elsewhere
    assert f"record {RECORDS} contradicts the anchor" in (result.reason or "")


def test_a_forged_or_edited_anchor_is_refused(anchored: Anchored, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    anchor = Anchor.from_json(anchored.anchor_file.read_text())
    edited = tmp_path / "edited.json"
    edited.write_text(dataclasses.replace(anchor, seq=7).to_json())
    assert main(anchored.cli_verify("--anchor", str(edited))) == 1
    out = capsys.readouterr().out
    assert "audit chain NOT VERIFIED: anchor refused: the anchor's signature does not verify" in out
    # An attacker's own key signs a "valid" anchor of a truncated chain: not one of ours.
    forged = sign_anchor(AuditKeys.generate(), 7, anchor.record_hash, NOW)
    assert forged.signature_valid()
    edited.write_text(forged.to_json())
    assert main(anchored.cli_verify("--anchor", str(edited))) == 1
    assert "not signed by a key in the audit key file" in capsys.readouterr().out
    edited.write_text('{"format": "something else"}')
    assert main(anchored.cli_verify("--anchor", str(edited))) == 2
    assert "not a tacit-audit-anchor/1 document" in capsys.readouterr().err


def test_the_anchor_verifies_with_the_public_key_alone(anchored: Anchored) -> None:
    """A compliance team that pinned the public key checks an anchor without any secret."""
    keys = AuditKeys.load(anchored.data_dir / "audit-keys.json")
    pinned = keys.public_key()
    document = json.loads(anchored.anchor_file.read_text())
    assert set(document) == {
        "format", "seq", "record_hash", "created_at", "key_id", "public_key", "signature"
    }
    assert document["seq"] == RECORDS and (document["seq"], document["record_hash"]) == read_head(anchored.db)
    anchor = Anchor.from_json(anchored.anchor_file.read_text())
    assert anchor.signature_valid(pinned)
    assert not dataclasses.replace(anchor, record_hash="0" * 64).signature_valid(pinned)
    assert not anchor.signature_valid(AuditKeys.generate().public_key())


def test_an_older_anchor_still_holds_while_the_chain_grows(anchored: Anchored) -> None:
    with anchored.db.transaction() as session:
        append_entries(session, [_entry(i) for i in range(RECORDS + 1, RECORDS + 6)])
    result = verify(anchored.db, anchor=Anchor.from_json(anchored.anchor_file.read_text()))
    assert result.ok and result.checked == RECORDS + 5


def test_anchor_refuses_to_sign_a_broken_chain(anchored: Anchored, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    with anchored.db.transaction() as session:
        one_row_edit(session)
    with pytest.raises(ValueError, match="broken at record 4"):
        make_anchor(anchored.db)
    target = tmp_path / "new-anchor.json"
    argv = ["audit", "--data-dir", str(anchored.data_dir), "anchor", "--database-url", anchored.url,
            "-o", str(target)]
    assert main(argv) == 1
    assert "BROKEN, no anchor written" in capsys.readouterr().out and not target.exists()


def test_verify_needs_the_audit_key_file(anchored: Anchored, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["audit", "--data-dir", str(tmp_path / "elsewhere"), "verify", "--database-url", anchored.url]
    assert main(argv) == 2
    assert "audit key file not found" in capsys.readouterr().err

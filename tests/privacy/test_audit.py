"""Audit entries round-trip; the hash chain names the first broken record."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tacit.privacy.audit import (
    GENESIS_HASH,
    AuditEntry,
    ChainedRecord,
    FieldAudit,
    append_record,
    build_chain,
    chain_hash,
    entry_from_json,
    entry_to_json,
    erasure_entry,
    verify_chain,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def _entry(i: int) -> AuditEntry:
    return AuditEntry(
        occurred_at=NOW,
        payload_kind="event.click",
        correlation_id=f"corr-{i}",
        policy_version="abc123",
        key_id="k1",
        fields=(
            FieldAudit("text", "scrub", "scrubbed", {"EMAIL_ADDRESS": 2}, ("EmailRecognizer",)),
            FieldAudit("dwell_ms", "keep", "kept"),
        ),
        dropped_undeclared=i % 3,
    )


def _chain(n: int) -> list[ChainedRecord]:
    return build_chain(entry_to_json(_entry(i)) for i in range(n))


def test_entry_json_is_canonical_and_round_trips() -> None:
    body = entry_to_json(_entry(1))
    assert " " not in body and "\n" not in body
    assert entry_from_json(body) == _entry(1)
    assert entry_to_json(entry_from_json(body)) == body


def test_erasure_entry_round_trips() -> None:
    entry = erasure_entry(NOW, "erase-1", "abc123", "k1", {"events": 3, "decisions": 1})
    assert entry.payload_kind == "erasure"
    assert entry_from_json(entry_to_json(entry)) == entry


def test_naive_timestamps_are_rejected() -> None:
    with pytest.raises(ValueError):
        dataclasses.replace(_entry(0), occurred_at=datetime(2024, 1, 1))


def test_intact_chain_verifies() -> None:
    records = _chain(5)
    assert records[0].prev_hash == GENESIS_HASH
    assert verify_chain(records).ok
    assert verify_chain(records).checked == 5
    assert verify_chain([]).ok


def test_changed_body_is_named() -> None:
    records = _chain(5)
    records[2] = dataclasses.replace(records[2], body_json=records[2].body_json.replace("2", "9"))
    result = verify_chain(records)
    assert (result.ok, result.first_broken_seq, result.checked) == (False, 3, 2)
    assert "body" in (result.reason or "")


def test_rehashed_body_breaks_the_next_link() -> None:
    records = _chain(5)
    body = records[1].body_json.replace("corr-1", "corr-X")
    records[1] = ChainedRecord(2, records[1].prev_hash, body,
                               chain_hash(records[1].prev_hash, 2, body))
    result = verify_chain(records)
    assert result.first_broken_seq == 3 and "prev_hash" in (result.reason or "")


def test_changed_hash_is_named() -> None:
    records = _chain(4)
    records[3] = dataclasses.replace(records[3], record_hash="f" * 64)
    assert verify_chain(records).first_broken_seq == 4


def test_deleted_record_is_named() -> None:
    records = _chain(5)
    del records[2]
    result = verify_chain(records)
    assert result.first_broken_seq == 4 and "gap" in (result.reason or "")


def test_reordered_pair_is_named() -> None:
    records = _chain(5)
    records[1], records[2] = records[2], records[1]
    assert verify_chain(records).first_broken_seq == 3


def test_suffix_verifies_from_checkpoint() -> None:
    records = _chain(6)
    result = verify_chain(records[3:], start_prev_hash=records[2].record_hash, start_seq=4)
    assert result.ok and result.checked == 3


def test_append_record_continues_the_chain() -> None:
    records = _chain(2)
    nxt = append_record(records[-1], "{}")
    assert nxt.seq == 3 and verify_chain([*records, nxt]).ok


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=12),
    data=st.data(),
)
def test_any_single_tampering_is_detected_at_or_before_it(n: int, data: st.DataObject) -> None:
    records = _chain(n)
    index = data.draw(st.integers(min_value=0, max_value=n - 1))
    how = data.draw(st.sampled_from(["body", "hash", "prev", "seq", "delete"]))
    target = records[index]
    if how == "body":
        records[index] = dataclasses.replace(target, body_json=target.body_json + " ")
    elif how == "hash":
        records[index] = dataclasses.replace(target, record_hash="0" * 63 + "1")
    elif how == "prev":
        records[index] = dataclasses.replace(target, prev_hash="1" * 64)
    elif how == "seq":
        records[index] = dataclasses.replace(target, seq=target.seq + 100)
    else:
        del records[index]
        if index == len(records):  # deleting the tail is invisible without a checkpoint
            return
    result = verify_chain(records)
    assert not result.ok
    if how == "seq":  # the broken record is named by the seq it is stored under
        assert result.first_broken_seq == target.seq + 100
    elif how == "delete":  # the record after the hole is named
        assert result.first_broken_seq == index + 2
    else:
        assert result.first_broken_seq == index + 1

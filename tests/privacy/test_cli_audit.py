"""`tacit audit` against a real server: list, verify (exit 1 when broken), export, summary, erase."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, update

from tacit.cli import main
from tacit.cli.audit import CliError, parse_moment
from tacit.privacy.audit_log import verify
from tacit.server.auth import Role
from tacit.store.schema import AuditHead, AuditRecord
from tacit.v1 import common_pb2, event_pb2, event_pb2_grpc

EMAIL = "harriet.quill@example.org"


def _track(handle: object, subject: str, n: int) -> None:
    events = []
    for i in range(n):
        props = common_pb2.Features()
        props.values["text"].string_value = f"write to {EMAIL} or call 212-555-01{i:02d}"
        props.values["position"].number_value = i
        events.append(event_pb2.Event(event_id=f"cli-{subject}-{i:04d}", subject_id=subject,
                                      event_type="click", properties=props))
    stub = event_pb2_grpc.EventServiceStub(handle.channel)  # type: ignore[attr-defined]
    stub.TrackEvents(event_pb2.TrackEventsRequest(events=events),
                     metadata=handle.metadata(Role.SERVICE))  # type: ignore[attr-defined]


@pytest.fixture
def served(start_server: Callable[..., object]) -> tuple[object, list[str]]:
    handle = start_server()  # type: ignore[operator]
    _track(handle, "subject-a", 3)
    _track(handle, "subject-b", 2)
    base = ["audit", "--target", handle.target, "--data-dir", str(handle.data_dir)]  # type: ignore[attr-defined]
    return handle, base


def test_list_pages_and_filters(served: tuple[object, list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    _, base = served
    assert main([*base, "list", "--page-size", "2"]) == 0
    out = capsys.readouterr().out
    assert "event.click" in out and "next page: --page-token" in out
    assert main([*base, "list", "--all", "--json", "--page-size", "2", "--kind", "event.click"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["seq"] for line in lines] == [1, 2, 3, 4, 5]
    assert main([*base, "list", "--json", "--kind", "rank"]) == 0
    assert capsys.readouterr().out == ""
    assert main([*base, "list", "--json", "--since", "1h", "--until", "2099-01-01"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 5
    assert EMAIL not in out


def test_export_streams_json_lines(
    served: tuple[object, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, base = served
    target = tmp_path / "audit.jsonl"
    assert main([*base, "export", "--output", str(target)]) == 0
    records = [json.loads(line) for line in target.read_text().splitlines()]
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5]
    assert "exported 5 records" in capsys.readouterr().out
    assert main([*base, "export"]) == 0
    assert capsys.readouterr().out.splitlines() == target.read_text().splitlines()
    assert EMAIL not in target.read_text()


def test_summary_counts_entities_per_type_and_field(
    served: tuple[object, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    _, base = served
    assert main([*base, "summary", "--since", "7d"]) == 0
    out = capsys.readouterr().out
    assert "EMAIL_ADDRESS" in out and "PHONE_NUMBER" in out and "text" in out
    assert "5 records; entities by type: EMAIL_ADDRESS=5, PHONE_NUMBER=5" in out


def test_verify_exit_codes_and_offline_mode(
    served: tuple[object, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    handle, base = served
    assert main([*base, "verify"]) == 0
    assert "audit chain OK: 5 records" in capsys.readouterr().out
    db = handle.running.runtime.db  # type: ignore[attr-defined]
    with db.transaction() as session:
        session.execute(update(AuditRecord).where(AuditRecord.seq == 3).values(
            body_json=AuditRecord.body_json.op("||")(" ")))
    assert not verify(db).ok
    assert main([*base, "verify"]) == 1
    assert "BROKEN at record 3" in capsys.readouterr().out
    url = handle.settings.database_url  # type: ignore[attr-defined]
    # Offline verification needs the audit key file (the chain is keyed): --data-dir finds it.
    assert main(["audit", "--data-dir", str(handle.data_dir), "verify", "--database-url", url]) == 1  # type: ignore[attr-defined]
    assert "BROKEN at record 3" in capsys.readouterr().out
    process = subprocess.run(
        [sys.executable, "-m", "tacit.cli", *base, "verify"],
        capture_output=True, text=True, timeout=60,
    )
    assert process.returncode == 1 and "record 3" in process.stdout


def test_erase_subject(served: tuple[object, list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    _, base = served
    assert main([*base, "erase", "subject-a", "--request-id", "erase-req-0001"]) == 0
    assert "erased: 0 decisions, 3 events, 0 rewards" in capsys.readouterr().out
    assert main([*base, "list", "--json", "--kind", "erasure"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "subject-a" not in lines[0]
    assert main([*base, "verify"]) == 0


def test_errors_are_clear(
    served: tuple[object, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    handle, base = served
    assert main(["audit", "--target", handle.target, "--token-file", str(tmp_path / "none.json"),  # type: ignore[attr-defined]
                 "list"]) == 2
    assert "token file not found" in capsys.readouterr().err
    tokens = json.loads(handle.settings.tokens_path.read_text())  # type: ignore[attr-defined]
    service_only = tmp_path / "service.json"
    service_only.write_text(json.dumps({"tokens": [
        {**t, "role": "auditor"} for t in tokens["tokens"] if t["role"] == "service"]}))
    assert main(["audit", "--target", handle.target, "--token-file", str(service_only),  # type: ignore[attr-defined]
                 "verify"]) == 2
    assert "PERMISSION_DENIED" in capsys.readouterr().err
    assert main([*base, "list", "--since", "yesterday-ish"]) == 2
    assert "not a time" in capsys.readouterr().err


def test_parse_moment() -> None:
    now = datetime(2024, 5, 10, tzinfo=UTC)
    assert parse_moment("7d", now) == now - timedelta(days=7)
    assert parse_moment("90m", now) == now - timedelta(minutes=90)
    assert parse_moment("2024-05-01") == datetime(2024, 5, 1, tzinfo=UTC)
    with pytest.raises(CliError):
        parse_moment("soon")


def test_anchor_through_the_server_then_truncation_is_named(
    served: tuple[object, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    handle, base = served
    anchor_file = tmp_path / "head.json"
    assert main([*base, "anchor", "-o", str(anchor_file)]) == 0
    assert f"anchor of seq 5 written to {anchor_file}" in capsys.readouterr().out
    anchor = json.loads(anchor_file.read_text())
    assert anchor["seq"] == 5 and anchor["format"] == "tacit-audit-anchor/1"
    assert main([*base, "anchor"]) == 0  # stdout
    assert json.loads(capsys.readouterr().out)["seq"] == 5
    _track(handle, "subject-c", 2)
    assert main([*base, "verify", "--anchor", str(anchor_file)]) == 0
    assert "audit chain OK: 7 records" in capsys.readouterr().out
    db = handle.running.runtime.db  # type: ignore[attr-defined]
    with db.transaction() as session:  # cut the tail and move the head back to a consistent record
        session.execute(delete(AuditRecord).where(AuditRecord.seq >= 4))
        third = session.get(AuditRecord, 3)
        session.execute(update(AuditHead).values(seq=3, record_hash=third.record_hash))
    assert main([*base, "verify"]) == 0  # a consistent prefix: only the anchor knows better
    capsys.readouterr()
    assert main([*base, "verify", "--anchor", str(anchor_file)]) == 1
    out = capsys.readouterr().out
    assert "BROKEN at record 5" in out and "the chain ends at seq 3 but the anchor" in out
    assert main([*base, "anchor"]) == 0  # the truncated chain is consistent, so it can be anchored...
    capsys.readouterr()
    bad = tmp_path / "bad.json"
    bad.write_text("not json")
    assert main([*base, "verify", "--anchor", str(bad)]) == 2
    assert "not a tacit-audit-anchor/1 document" in capsys.readouterr().err


def test_anchor_of_a_broken_chain_is_refused_by_the_server(
    served: tuple[object, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    handle, base = served
    db = handle.running.runtime.db  # type: ignore[attr-defined]
    with db.transaction() as session:
        session.execute(update(AuditRecord).where(AuditRecord.seq == 2).values(payload_kind="rank"))
    assert main([*base, "anchor"]) == 1
    out = capsys.readouterr().out
    assert "BROKEN, no anchor written" in out and "record 2" in out


def test_audit_key_rotation_keeps_old_records_and_anchors_verifiable(
    start_server: Callable[..., object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "rotating"
    handle = start_server(data_dir=data_dir)  # type: ignore[operator]
    _track(handle, "subject-a", 3)
    base = ["audit", "--target", handle.target, "--data-dir", str(data_dir)]  # type: ignore[attr-defined]
    old_anchor = tmp_path / "old.json"
    assert main([*base, "anchor", "-o", str(old_anchor)]) == 0
    keys_file = data_dir / "audit-keys.json"
    before = json.loads(keys_file.read_text())
    handle.running.stop(grace=1)  # type: ignore[attr-defined]
    capsys.readouterr()
    assert main(["keys", "rotate-audit", "--data-dir", str(data_dir)]) == 0
    assert "active audit key is now" in capsys.readouterr().out
    after = json.loads(keys_file.read_text())
    assert after["active_key_id"] != before["active_key_id"]
    assert set(before["keys"]) < set(after["keys"])  # the old key stays to verify old records
    assert keys_file.stat().st_mode & 0o777 == 0o600
    handle = start_server(data_dir=data_dir)  # type: ignore[operator]
    base = ["audit", "--target", handle.target, "--data-dir", str(data_dir)]  # type: ignore[attr-defined]
    _track(handle, "subject-b", 2)
    new_anchor = tmp_path / "new.json"
    assert main([*base, "anchor", "-o", str(new_anchor)]) == 0
    assert json.loads(new_anchor.read_text())["key_id"] == after["active_key_id"]
    bodies = [json.loads(line)["body"] for line in _export(base, capsys)]
    assert [b["chain_key_id"] for b in bodies] == [before["active_key_id"]] * 3 + [after["active_key_id"]] * 2
    for anchor in (old_anchor, new_anchor):
        assert main([*base, "verify", "--anchor", str(anchor)]) == 0
        assert "audit chain OK: 5 records" in capsys.readouterr().out
    # Without the retired key the old records cannot be verified: keys are never deleted.
    shredded = dict(after, keys={k: v for k, v in after["keys"].items() if k != before["active_key_id"]})
    partial = tmp_path / "partial-keys.json"
    partial.write_text(json.dumps(shredded))
    partial.chmod(0o600)
    url = handle.settings.database_url  # type: ignore[attr-defined]
    assert main(["audit", "--data-dir", str(data_dir), "verify", "--database-url", url,
                 "--audit-keys", str(partial)]) == 1
    assert "BROKEN at record 1: record names an audit key that is not in the audit key file" in (
        capsys.readouterr().out
    )


def _export(base: list[str], capsys: pytest.CaptureFixture[str]) -> list[str]:
    capsys.readouterr()
    assert main([*base, "export"]) == 0
    return capsys.readouterr().out.splitlines()


def test_a_rotation_by_another_process_is_not_taken_for_tampering(
    start_server: Callable[..., object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two replicas share the key file; one rotates and restarts, the other verifies before its restart."""
    data_dir = tmp_path / "shared"
    first = start_server(data_dir=data_dir)  # type: ignore[operator]
    _track(first, "subject-a", 2)
    second = start_server(data_dir=data_dir)  # type: ignore[operator]
    assert main(["keys", "rotate-audit", "--data-dir", str(data_dir)]) == 0
    second.running.stop(grace=1)  # type: ignore[attr-defined]
    second = start_server(data_dir=data_dir)  # type: ignore[operator]
    _track(second, "subject-b", 2)  # made with the new key
    capsys.readouterr()
    base = ["audit", "--target", first.target, "--data-dir", str(data_dir)]  # type: ignore[attr-defined]
    assert main([*base, "verify"]) == 0
    assert "audit chain OK: 4 records" in capsys.readouterr().out

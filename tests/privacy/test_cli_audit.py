"""`tacit audit` against a real server: list, verify (exit 1 when broken), export, summary, erase."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from tacit.cli import main
from tacit.cli.audit import CliError, parse_moment
from tacit.privacy.audit_log import verify
from tacit.server.auth import Role
from tacit.store.schema import AuditRecord
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
    assert main(["audit", "verify", "--database-url", url]) == 1
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

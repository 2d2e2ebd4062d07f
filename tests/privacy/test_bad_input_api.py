"""Bad input through the API: oversized text, regex bait, binary junk in string fields.

Each gets a clear outcome (INVALID_ARGUMENT at the edge, or the field dropped
with the reason in its audit record); the server keeps answering; no raw value
reaches the data dir.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from tacit.server.auth import Role
from tacit.v1 import audit_pb2, audit_pb2_grpc, common_pb2, event_pb2, event_pb2_grpc

SECRET = "ophelia.marsh@example.net"
BAIT = {
    "oversize": SECRET + " " + "lorem ipsum " * 60,  # ~740 chars > privacy.max_text_chars=512
    "digit_run": "1" * 400 + "x",  # card/phone patterns on a long digit run
    "dotted_run": "1." * 200 + SECRET,  # IP/e-mail style patterns
    "at_run": "a@" * 200 + "!",  # e-mail pattern backtracking bait
    "nested_spaces": "(" + " -" * 200 + ")" + " " + SECRET,
    "binary": "\x00\x01\x02\x7f\xff" + SECRET + "\x00",
    "bidi": SECRET.replace("@", "\u202e@\u200b"),
}


def _event(key: str, value: str) -> event_pb2.Event:
    props = common_pb2.Features()
    props.values["text"].string_value = value
    props.values["position"].number_value = 1
    return event_pb2.Event(event_id=f"bad-{key.replace('_', '-')}-01", subject_id="subject-bad",
                           event_type="click", properties=props)


def _search_data_dir(root: Path, needle: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


@pytest.fixture
def handle(start_server: Callable[..., object]) -> object:
    return start_server(privacy={"max_text_chars": 512})  # type: ignore[operator]


def test_hostile_strings_are_dropped_and_audited(handle: object) -> None:
    stub = event_pb2_grpc.EventServiceStub(handle.channel)  # type: ignore[attr-defined]
    service = handle.metadata(Role.SERVICE)  # type: ignore[attr-defined]
    response = stub.TrackEvents(
        event_pb2.TrackEventsRequest(events=[_event(k, v) for k, v in BAIT.items()]),
        metadata=service, timeout=60,
    )
    assert response.accepted == len(BAIT)
    audit = audit_pb2_grpc.AuditServiceStub(handle.channel)  # type: ignore[attr-defined]
    auditor = handle.metadata(Role.AUDITOR)  # type: ignore[attr-defined]
    lines = [json.loads(line.json) for line in
             audit.ExportAuditRecords(audit_pb2.ExportAuditRecordsRequest(), metadata=auditor)]
    # Correlation ids are digests of the client's event ids: map them back with the key ring.
    digest = handle.running.runtime.keyring.digest  # type: ignore[attr-defined]
    by_digest = {digest(_event(k, "").event_id): _event(k, "").event_id for k in BAIT}
    outcomes = {
        by_digest[rec["correlation_id"]]: {f["field"]: f["outcome"] for f in rec["body"]["fields"]}
        for rec in lines
    }
    assert outcomes["bad-oversize-01"]["text"] == "dropped_oversize"
    assert outcomes["bad-binary-01"]["text"] == "dropped_invalid_text"
    # Invisible and bidi characters are stripped before analysis: the e-mail is found.
    assert outcomes["bad-bidi-01"]["text"] == "scrubbed"
    for key in ("digit-run", "dotted-run", "at-run", "nested-spaces"):
        # analyzed within the regex budget (scrubbed/clean) or dropped on time-out: never raw
        assert outcomes[f"bad-{key}-01"]["text"] in {"scrubbed", "clean", "dropped_regex_timeout"}
    assert outcomes["bad-dotted-run-01"]["text"] != "clean"  # the planted e-mail was found
    assert all(o["position"] == "kept" for o in outcomes.values())
    handle.running.stop(grace=1)  # type: ignore[attr-defined]
    assert _search_data_dir(handle.data_dir, SECRET) == []  # type: ignore[attr-defined]


def test_over_the_edge_limit_is_invalid_argument_without_echo(handle: object) -> None:
    stub = event_pb2_grpc.EventServiceStub(handle.channel)  # type: ignore[attr-defined]
    huge = _event("huge", SECRET + "z" * 5000)
    with pytest.raises(grpc.RpcError) as error:
        stub.TrackEvents(event_pb2.TrackEventsRequest(events=[huge]),
                         metadata=handle.metadata(Role.SERVICE), timeout=30)  # type: ignore[attr-defined]
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "events[0].properties" in (error.value.details() or "")
    assert SECRET not in (error.value.details() or "")
    # The server still answers.
    ok = stub.TrackEvents(event_pb2.TrackEventsRequest(events=[_event("after", "fine text")]),
                          metadata=handle.metadata(Role.SERVICE), timeout=30)  # type: ignore[attr-defined]
    assert ok.accepted == 1

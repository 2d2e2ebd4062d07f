"""VerifyAuditLog under concurrent appends: a healthy chain never looks tampered (issue 10 #4).

The verifier snapshots the head once and checks the prefix up to it, so records
appended while it runs (by this process's threads or by another replica on the same
PostgreSQL) are neither missing nor "deleted from the end".
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tacit.privacy.audit import Anchor, AuditEntry, FieldAudit
from tacit.privacy.audit_log import (
    append_entries,
    bind_audit_keys,
    load_or_create_keys,
    make_anchor,
    read_head,
    verify,
)
from tacit.server.auth import Role
from tacit.store.db import Database
from tacit.v1 import audit_pb2, audit_pb2_grpc, common_pb2, event_pb2, event_pb2_grpc

# A second "replica": another process appending to the same chain with the shared audit key file.
REPLICA = """
import sys
from datetime import UTC, datetime
from tacit.privacy.audit import AuditEntry, FieldAudit
from tacit.privacy.audit_keys import AuditKeys
from tacit.privacy.audit_log import append_entries, bind_audit_keys
from tacit.store.db import Database, make_engine

url, key_file, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
db = Database(make_engine(url))
bind_audit_keys(db, AuditKeys.load(key_file))
for n in range(rounds):
    with db.transaction() as session:
        append_entries(session, [AuditEntry(datetime.now(UTC), "event.click", f"replica-{n}-{k}", "v1", "k1",
                                             (FieldAudit("text", "scrub", "clean"),)) for k in range(3)])
db.dispose()
print("done")
"""


def _entry(tag: str) -> AuditEntry:
    return AuditEntry(
        datetime.now(UTC), "event.click", tag, "v1", "k1", (FieldAudit("text", "scrub", "clean"),)
    )


def _replicas(url: str, key_file: Path, count: int, rounds: int) -> list[subprocess.Popen[str]]:
    if not url.startswith("postgresql"):
        return []  # SQLite is one process's embedded database; replicas share PostgreSQL
    return [
        subprocess.Popen(
            [sys.executable, "-c", REPLICA, url, str(key_file), str(rounds)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]


def _finish(replicas: list[subprocess.Popen[str]]) -> None:
    for replica in replicas:
        _, err = replica.communicate(timeout=300)
        assert replica.returncode == 0, err


@pytest.fixture
def keyed_db(database_url: str, tmp_path: Path) -> Iterator[tuple[Database, Path]]:
    db = Database.open(database_url)
    key_file = tmp_path / "audit-keys.json"
    bind_audit_keys(db, load_or_create_keys(db, key_file))
    yield db, key_file
    db.dispose()


def test_verify_never_cries_tamper_while_threads_and_replicas_append(
    keyed_db: tuple[Database, Path], database_url: str
) -> None:
    db, key_file = keyed_db
    with db.transaction() as session:
        append_entries(session, [_entry(f"seed-{i}") for i in range(20)])
    anchor = make_anchor(db)
    stop = threading.Event()
    errors: list[BaseException] = []

    def append_loop(writer: int) -> None:
        n = 0
        try:
            while not stop.is_set():
                with db.transaction() as session:
                    append_entries(session, [_entry(f"t{writer}-{n}-{k}") for k in range(2)])
                n += 1
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=append_loop, args=(w,)) for w in range(3)]
    replicas = _replicas(database_url, key_file, count=2, rounds=40)
    for thread in threads:
        thread.start()
    results = []
    grew = 0
    try:
        while len(results) < 25 or any(r.poll() is None for r in replicas):
            before = read_head(db)[0]
            results.append(verify(db, anchor=anchor))
            grew += read_head(db)[0] > before  # appends landed while this verification ran
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    _finish(replicas)
    assert not errors
    assert [r.reason for r in results if not r.ok] == []
    assert grew >= 5  # the verifications really overlapped with appends
    final = verify(db, anchor=anchor)
    assert final.ok and final.checked == read_head(db)[0]


def _track_loop(handle: object, stop: threading.Event, worker: int, errors: list[BaseException]) -> None:
    stub = event_pb2_grpc.EventServiceStub(handle.channel)  # type: ignore[attr-defined]
    metadata = handle.metadata(Role.SERVICE)  # type: ignore[attr-defined]
    n = 0
    try:
        while not stop.is_set():
            props = common_pb2.Features()
            props.values["dwell_ms"].number_value = n
            events = [event_pb2.Event(event_id=f"live-{worker}-{n:05d}-{k}", subject_id=f"subject-{worker}",
                                      event_type="page_view", properties=props) for k in range(3)]
            stub.TrackEvents(event_pb2.TrackEventsRequest(events=events), metadata=metadata, timeout=30)
            n += 1
    except BaseException as error:  # noqa: BLE001 - reported by the main thread
        errors.append(error)


def test_verify_audit_log_rpc_under_concurrent_track_events(
    server: object, database_url: str, start_server: Callable[..., object]
) -> None:
    handle = server
    audit = audit_pb2_grpc.AuditServiceStub(handle.channel)  # type: ignore[attr-defined]
    auditor = handle.metadata(Role.AUDITOR)  # type: ignore[attr-defined]
    stop = threading.Event()
    errors: list[BaseException] = []
    workers = [threading.Thread(target=_track_loop, args=(handle, stop, w, errors)) for w in range(3)]
    key_file = handle.settings.audit_keys_path  # type: ignore[attr-defined]
    replicas = _replicas(database_url, key_file, count=2, rounds=30)
    for worker in workers:
        worker.start()
    responses = []
    try:
        time.sleep(0.2)
        anchor_json = audit.GetAuditAnchor(audit_pb2.GetAuditAnchorRequest(), metadata=auditor,
                                           timeout=60).anchor_json
        deadline = time.monotonic() + 120  # a liveness bound, not a speed check
        while time.monotonic() < deadline and (
            len(responses) < 20
            or len({r.checked for r in responses}) < 5
            or any(r.poll() is None for r in replicas)
        ):
            responses.append(audit.VerifyAuditLog(
                audit_pb2.VerifyAuditLogRequest(anchor_json=anchor_json if len(responses) % 2 else ""),
                metadata=auditor, timeout=60))
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    _finish(replicas)
    assert not errors
    assert [r.reason for r in responses if not r.ok] == []
    assert len({r.checked for r in responses}) >= 5  # each saw a longer prefix: appends were live
    assert Anchor.from_json(anchor_json).seq > 0
    final = audit.VerifyAuditLog(audit_pb2.VerifyAuditLogRequest(anchor_json=anchor_json),
                                 metadata=auditor, timeout=60)
    assert final.ok

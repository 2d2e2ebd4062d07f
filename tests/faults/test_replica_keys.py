"""Replicas on one database share their pseudonym keys, provably (key fingerprints in the database).

A replica started with its own data dir used to make its own key: the same subject got
two pseudonyms and an erasure through one replica missed the other's rows. Now it
refuses to start, naming the setting; with the key file shared both pseudonymize alike
and erasure through either finds every row. On SQLite (one file) and PostgreSQL.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from tacit.privacy.key_registry import KeyRingMismatch, register_key_ring
from tacit.privacy.pseudonym import KeyRing, key_fingerprint
from tacit.server.auth import Role
from tacit.server.config import ConfigError
from tacit.sim.client import rank_request
from tacit.store.db import Database
from tacit.store.schema import Decision, PseudonymKey
from tacit.v1 import audit_pb2, audit_pb2_grpc, decision_pb2_grpc

CANDIDATES = [("a1", {"topic": "news"}), ("b2", {"topic": "sports"})]


def _rank(handle, subject: str) -> str:  # type: ignore[no-untyped-def]
    stub = decision_pb2_grpc.DecisionServiceStub(handle.channel)
    return stub.Rank(rank_request("home", subject, {}, CANDIDATES), metadata=handle.metadata()).event_id


def test_a_replica_with_its_own_keys_refuses_to_start(database_url, start_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    first = start_server(database_url, data_dir=tmp_path / "replica-a")
    with pytest.raises(ConfigError) as refused:
        start_server(database_url, data_dir=tmp_path / "replica-b")
    message = str(refused.value)
    assert "privacy.keys_file" in message and str(tmp_path / "replica-b" / "keys.json") in message
    # The refused replica registered nothing: the first one's key is still the only one.
    ring = KeyRing.load_or_create(first.settings.keys_path)
    with first.running.runtime.db.transaction() as session:
        rows = session.execute(select(PseudonymKey)).scalars().all()
    assert [(r.key_id, r.fingerprint, r.active) for r in rows] == [
        (ring.active_key_id, key_fingerprint(ring.keys[ring.active_key_id]), True)
    ]
    # Only the fingerprint is stored, never the key.
    key = ring.keys[ring.active_key_id]
    assert all(key.hex() not in r.fingerprint for r in rows)


@pytest.mark.parametrize("workers", [1, 2])
def test_tacit_serve_with_its_own_keys_exits_naming_the_file_to_copy(  # type: ignore[no-untyped-def]
    database_url, start_server, tmp_path, workers: int
) -> None:
    start_server(database_url, data_dir=tmp_path / "replica-a")
    env = {
        **os.environ,
        "TACIT_STORAGE__URL": database_url,
        "TACIT_STORAGE__DATA_DIR": str(tmp_path / "replica-b"),
        "TACIT_SERVER__ADDRESS": "127.0.0.1:0",
        "TACIT_SERVER__WORKERS": str(workers),
        "TACIT_SERVER__LOG_LEVEL": "WARNING",
    }
    tacit = Path(sys.executable).with_name("tacit")
    # A replica that started would serve until killed: the timeout is the failure.
    done = subprocess.run([str(tacit), "serve"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "privacy.keys_file" in done.stderr and str(tmp_path / "replica-b" / "keys.json") in done.stderr
    assert "Traceback" not in done.stderr


def test_replicas_sharing_the_key_file_pseudonymize_alike_and_erase_everywhere(  # type: ignore[no-untyped-def]
    database_url, start_server, tmp_path
) -> None:
    first = start_server(database_url, data_dir=tmp_path / "replica-a")
    shared = {"keys_file": str(first.settings.keys_path)}
    tokens = {"tokens_file": str(first.settings.tokens_path)}
    second = start_server(database_url, data_dir=tmp_path / "replica-b", privacy=shared, auth=tokens)
    on_first = _rank(first, "alice-replica")
    on_second = _rank(second, "alice-replica")
    db = first.running.runtime.db
    first.running.runtime.decision_log.flush()
    second.running.runtime.decision_log.flush()
    digest = first.running.runtime.keyring.digest  # event ids are stored as keyed digests
    with db.transaction() as session:
        subjects = {
            event_id: session.get(Decision, digest(event_id)).subject  # type: ignore[union-attr]
            for event_id in (on_first, on_second)
        }
    assert subjects[on_first] == subjects[on_second]
    audit = audit_pb2_grpc.AuditServiceStub(second.channel)
    erased = audit.EraseSubject(
        audit_pb2.EraseSubjectRequest(subject_id="alice-replica", request_id="erase-0001"),
        metadata=second.metadata(Role.AUDITOR),
    )
    assert erased.decisions_erased == 2
    with db.transaction() as session:
        assert session.get(Decision, digest(on_first)) is None
        assert session.get(Decision, digest(on_second)) is None


def test_key_registry_accepts_rotation_and_refuses_stale_or_forged_rings(database_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = Database.open(database_url)
    try:
        path = tmp_path / "keys.json"
        original = KeyRing.load_or_create(path)
        stale_copy = tmp_path / "stale-keys.json"
        shutil.copy(path, stale_copy)
        register_key_ring(db, original)
        register_key_ring(db, original)  # a restart, or a second replica with the shared file

        forged = KeyRing(keys={original.active_key_id: b"x" * 32}, active_key_id=original.active_key_id)
        with pytest.raises(KeyRingMismatch, match="differs"):
            register_key_ring(db, forged)
        stranger = KeyRing.load_or_create(tmp_path / "other-keys.json")
        with pytest.raises(KeyRingMismatch, match=original.active_key_id):
            register_key_ring(db, stranger)

        rotated = original.rotate(path, timedelta(days=1))
        register_key_ring(db, rotated)  # the rotated ring holds the old key: accepted
        with pytest.raises(KeyRingMismatch, match=rotated.active_key_id):
            register_key_ring(db, KeyRing.load_or_create(stale_copy))  # a replica left on the old file
        # After the verify window the old key is shredded from the file; the ring still matches.
        later = datetime.now(UTC) + timedelta(days=2)
        shredded = rotated.rotate(path, timedelta(0), now=later)
        register_key_ring(db, shredded)
        with db.transaction() as session:
            active = session.execute(select(PseudonymKey.key_id).where(PseudonymKey.active)).scalars().all()
        assert active == [shredded.active_key_id]
    finally:
        db.dispose()

"""Data files are private (0700 dir, 0600 files), world-readable secrets are refused, and an expected
outage logs one WARNING without a traceback — not an ERROR per failed call."""

from __future__ import annotations

import logging
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pg_proxy import PgProxy
from sqlalchemy import text

from tacit.server.app import RunningServer
from tacit.server.auth import InsecureFileError
from tacit.sim.client import rank_request
from tacit.store.db import Database, StorageUnavailable, Timeouts
from tacit.v1 import decision_pb2, decision_pb2_grpc


def _loose(path: Path) -> bool:
    return bool(path.stat().st_mode & 0o077)


def test_data_dir_database_wal_checkpoints_and_secrets_are_private(start_server: Callable[..., Any]) -> None:
    server = start_server()
    stub = decision_pb2_grpc.DecisionServiceStub(server.channel)
    request = rank_request("home", "user-1", {"device": "mobile"}, [("a", {}), ("b", {})])
    for _ in range(5):
        ranked = stub.Rank(request, metadata=server.metadata(), timeout=10)
        stub.Reward(
            decision_pb2.RewardRequest(event_id=ranked.event_id, value=1.0), metadata=server.metadata()
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any((server.data_dir / "models").rglob("*")):
        time.sleep(0.2)
    files = [p for p in server.data_dir.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"tacit.db", "tacit.db-wal", "tacit.db-shm", "tokens.json", "keys.json"} <= names, names
    assert any(p.parent.name == "models" or "models" in p.parts for p in files), "no checkpoint was written"
    assert stat.S_IMODE(server.data_dir.stat().st_mode) == 0o700
    loose = sorted(str(p.relative_to(server.data_dir)) for p in [*files, server.data_dir] if _loose(p))
    assert loose == []


@pytest.mark.parametrize("secret", ["tokens.json", "keys.json"])
def test_a_world_readable_secrets_file_refuses_to_load(
    start_server: Callable[..., Any], tmp_path: Path, secret: str
) -> None:
    first = start_server(data_dir=tmp_path / "data")
    settings = first.settings
    first.running.stop(grace=0)
    path = settings.storage.data_dir / secret
    path.chmod(0o644)
    with pytest.raises(InsecureFileError) as refused:
        RunningServer(settings)
    assert str(path) in str(refused.value) and "chmod 600" in str(refused.value)


def test_an_outage_logs_one_warning_without_traceback_and_recovery_once(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = PgProxy(("127.0.0.1", 5432))
    db = Database.open(
        postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}"),
        Timeouts(connect_seconds=1, statement_seconds=1, pool_seconds=1),
    )
    try:
        caplog.set_level(logging.DEBUG, logger="tacit")
        for _outage in range(2):
            proxy.cut()
            for _ in range(5):
                with pytest.raises(StorageUnavailable), db.transaction() as session:
                    session.execute(text("SELECT 1"))
            assert not db.available
            proxy.restore()
            deadline = time.monotonic() + 10
            while not db.ping() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert db.available
        records = [r for r in caplog.records if r.name.startswith("tacit")]
        assert [r.getMessage() for r in records if r.levelno >= logging.INFO] == [
            "storage unavailable",
            "storage available again",
        ] * 2
        assert all(r.levelno <= logging.WARNING and r.exc_info is None for r in records)
    finally:
        db.dispose()
        proxy.close()


def test_a_full_decision_log_counts_every_drop_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from datetime import UTC, datetime

    from prometheus_client import REGISTRY

    from tacit.privacy.audit import AuditEntry
    from tacit.server.decision_log import DecisionLog

    def lost() -> float:
        return REGISTRY.get_sample_value("tacit_decisions_lost_total") or 0.0

    db = Database.open(f"sqlite:///{tmp_path / 'tacit.db'}")
    log = DecisionLog(db, flush_interval_ms=600_000, max_pending=2)  # never flushes during the test
    before = lost()
    caplog.set_level(logging.DEBUG, logger="tacit")
    audit = AuditEntry(datetime.now(UTC), "rank", "c", "v1", "k1")
    for index in range(10):
        log.submit({"event_id": f"evt-{index}"}, audit)
    assert lost() - before == 8
    assert [r.levelname for r in caplog.records if r.name.startswith("tacit")] == ["ERROR"]
    db.dispose()  # the writer (a daemon) would flush only after ten minutes: the stand-ins are never written

"""Generated stubs match proto/, migrations match the schema, the server speaks health and reflection."""

from __future__ import annotations

import filecmp
import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tacit.server.auth import Role
from tacit.server.config import ConfigError, load_settings
from tacit.store.db import Database
from tacit.store.schema import Base

ROOT = Path(__file__).resolve().parent.parent


def test_generated_stubs_match_the_proto_files(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "scripts" / "gen_proto.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.generate(tmp_path)
    committed = ROOT / "proto" / "tacit" / "v1"
    generated = tmp_path / "tacit" / "v1"
    names = sorted(p.name for p in generated.iterdir() if p.is_file())
    assert names == sorted(p.name for p in committed.iterdir() if p.is_file() and p.suffix in {".py", ".pyi"})
    _, mismatch, errors = filecmp.cmpfiles(generated, committed, names, shallow=False)
    assert not mismatch and not errors, f"regenerate with scripts/gen_proto.py: {mismatch or errors}"


def test_migrations_produce_exactly_the_schema(database_url: str) -> None:
    db = Database.open(database_url)
    with db.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    db.dispose()
    assert diff == []


def test_health_and_reflection_need_no_token(server) -> None:  # type: ignore[no-untyped-def]
    health = health_pb2_grpc.HealthStub(server.channel)
    reply = health.Check(health_pb2.HealthCheckRequest(service="tacit.v1.DecisionService"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(server.channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"tacit.v1.DecisionService", "tacit.v1.AuditService", "grpc.health.v1.Health"} <= names


def test_tokens_are_created_at_first_start_with_private_permissions(server) -> None:  # type: ignore[no-untyped-def]
    path = server.settings.tokens_path
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    roles = {item["role"] for item in json.loads(path.read_text())["tokens"]}
    assert roles == {r.value for r in Role}


def test_missing_or_invalid_config_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nmax_workers = 0\n")
    with pytest.raises(ConfigError, match="server.max_workers"):
        load_settings(bad)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[server]\nadress = 'typo'\n")
    with pytest.raises(ConfigError, match="server.adress"):
        load_settings(unknown)


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "tacit.toml"
    config.write_text("[server]\naddress = '127.0.0.1:6000'\n[slots.feed]\ndefault_reward = 0.5\n")
    monkeypatch.setenv("TACIT_SERVER__ADDRESS", "127.0.0.1:7000")
    settings = load_settings(config)
    assert settings.server.address == "127.0.0.1:7000"
    assert settings.slots["feed"].default_reward == 0.5


def test_serve_finishes_in_flight_work_on_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "tacit.toml"
    config.write_text(
        "[server]\naddress = '127.0.0.1:0'\nlog_level = 'INFO'\n"
        f"[storage]\ndata_dir = '{tmp_path / 'data'}'\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "tacit.cli", "--config", str(config), "serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "serving on" in line, line
        target = line.split("serving on ")[1].split()[0]
        from tacit.server.auth import read_token
        from tacit.sim.client import rank_request
        from tacit.v1 import decision_pb2_grpc

        token = read_token(tmp_path / "data" / "tokens.json", Role.SERVICE)
        with grpc.insecure_channel(target) as channel:
            stub = decision_pb2_grpc.DecisionServiceStub(channel)
            request = rank_request("home", "user-1", {"device": "mobile"}, [("a", {}), ("b", {})])
            event_ids = [
                stub.Rank(request, metadata=(("authorization", f"Bearer {token}"),)).event_id
                for _ in range(10)
            ]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    stderr = process.stderr.read() if process.stderr else ""
    assert "user-1" not in stderr
    db = Database.open(f"sqlite:///{tmp_path / 'data' / 'tacit.db'}")
    from sqlalchemy import select

    from tacit.store.schema import Decision

    with db.transaction() as session:
        stored = set(session.execute(select(Decision.event_id)).scalars())
    db.dispose()
    from tacit.privacy.pseudonym import KeyRing

    keyring = KeyRing.load_or_create(tmp_path / "data" / "keys.json")
    assert {keyring.digest(event_id) for event_id in event_ids} <= stored  # stored as digests


def test_key_rotation_keeps_old_pseudonyms_findable_for_erasure(tmp_path: Path) -> None:
    from tacit.cli import main
    from tacit.privacy.pseudonym import KeyRing

    keys = tmp_path / "data" / "keys.json"
    assert main(["keys", "rotate", "--data-dir", str(tmp_path / "data")]) == 2  # nothing to rotate yet
    before = KeyRing.load_or_create(keys)
    old = before.pseudonymize("subject-7")
    assert main(["keys", "rotate", "--data-dir", str(tmp_path / "data"), "--verify-window-days", "7"]) == 0
    after = KeyRing.load_or_create(keys)
    assert after.active_key_id != before.active_key_id
    assert after.pseudonymize("subject-7") != old
    # Erasure looks under every held key, so data stored under the old key is still found.
    assert old in after.candidates("subject-7")

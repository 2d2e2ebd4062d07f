"""Fixtures that start real things: databases (SQLite and PostgreSQL) and a gRPC server on a real port.

PostgreSQL tests use TACIT_TEST_POSTGRES_URL (default: the local server on
127.0.0.1:5432, database `test`). Each test gets its own schema, dropped after.
Where no PostgreSQL answers, those tests skip with the reason; CI sets
TACIT_REQUIRE_POSTGRES=1 so that a missing PostgreSQL fails instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import create_engine, text

from tacit.server.app import RunningServer
from tacit.server.auth import Role, read_token
from tacit.server.config import Settings, load_settings

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _postgres_base_url() -> str:
    return os.environ.get("TACIT_TEST_POSTGRES_URL", DEFAULT_PG)


_pg_reason: str | None = None
_pg_checked = False


def postgres_unavailable() -> str | None:
    """None when PostgreSQL answers, else the reason to skip."""
    global _pg_checked, _pg_reason
    if not _pg_checked:
        _pg_checked = True
        try:
            engine = create_engine(_postgres_base_url(), connect_args={"connect_timeout": 3})
            with engine.connect() as connection:
                connection.execute(text("select 1"))
            engine.dispose()
        except Exception as error:  # noqa: BLE001 - any failure means "not reachable"
            _pg_reason = f"PostgreSQL not reachable at {_postgres_base_url()}: {type(error).__name__}"
    return _pg_reason


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL whose search_path is a fresh schema, dropped after the test."""
    reason = postgres_unavailable()
    if reason:
        if os.environ.get("TACIT_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(_postgres_base_url())
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in _postgres_base_url() else "?"
    yield f"{_postgres_base_url()}{separator}options=-csearch_path%3D{schema}"
    with admin.begin() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every storage test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tacit.db'}"
    return str(request.getfixturevalue("postgres_url"))


@dataclass
class ServerHandle:
    """A running server and what a client needs to call it."""

    running: RunningServer
    settings: Settings
    channel: grpc.Channel

    @property
    def target(self) -> str:
        return self.running.target

    @property
    def data_dir(self) -> Path:
        return self.settings.storage.data_dir

    def token(self, role: Role = Role.SERVICE) -> str:
        return read_token(self.settings.tokens_path, role)

    def metadata(self, role: Role = Role.SERVICE) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token(role)}"),)


def server_settings(data_dir: Path, database_url: str = "", **overrides: Any) -> Settings:
    sections: dict[str, Any] = {
        "server": {"address": "127.0.0.1:0", "log_level": "WARNING", "grace_seconds": 2},
        "storage": {"data_dir": str(data_dir), "url": database_url},
        "learner": {"checkpoint_interval_seconds": 0.2, "reload_interval_seconds": 0.1},
    }
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(sections.get(section), dict):
            sections[section] = {**sections[section], **values}
        else:
            sections[section] = values
    return load_settings(None, **sections)


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerHandle]]:
    """Starts real servers on port 0; stops them (flush, checkpoint) after the test."""
    started: list[ServerHandle] = []

    def start(
        database_url: str = "", data_dir: Path | None = None, seed: int = 1, **overrides: Any
    ) -> ServerHandle:
        settings = server_settings(data_dir or tmp_path / f"data{len(started)}", database_url, **overrides)
        running = RunningServer(settings, seed=seed)
        handle = ServerHandle(running, settings, grpc.insecure_channel(running.target))
        started.append(handle)
        return handle

    yield start
    for handle in started:
        handle.channel.close()
        if handle.running.server is not None:
            handle.running.stop(grace=1)


@pytest.fixture
def server(database_url: str, start_server: Callable[..., ServerHandle]) -> ServerHandle:
    """A server on SQLite and, where reachable, on PostgreSQL.

    `database_url` comes first so that its schema is dropped after the server stops.
    """
    return start_server(database_url)

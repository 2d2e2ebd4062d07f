"""Engine and session factory: SQLite (WAL) by default, PostgreSQL by URL."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

logger = logging.getLogger("tacit.store")

MIGRATIONS = Path(__file__).with_name("migrations")


class StorageUnavailable(RuntimeError):
    """The database cannot be reached or refused the write; nothing was committed."""


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'tacit.db').resolve()}"


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit is on disk before Reward/TrackEvents answer OK, even across a power
    # loss (NORMAL would only survive a process crash).
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str) -> Engine:
    """Creates the engine; SQLite gets WAL, a busy timeout and a serialized writer."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def migrate(engine: Engine) -> None:
    """Brings the schema to the newest Alembic revision."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


class Database:
    """The engine, a session factory and a transaction helper that maps failures."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str) -> Database:
        engine = make_engine(url)
        migrate(engine)
        return cls(engine)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """Yields a session inside one transaction; connection failures become StorageUnavailable."""
        session = self.sessions()
        try:
            with session.begin():
                yield session
        except (OperationalError, InterfaceError) as error:
            logger.warning("storage error", extra={"error_type": type(error.orig).__name__})
            raise StorageUnavailable("storage unavailable") from None
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()

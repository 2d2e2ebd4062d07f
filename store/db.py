"""Engine and session factory: SQLite (WAL) by default, PostgreSQL by URL."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

logger = logging.getLogger("tacit.store")

MIGRATIONS = Path(__file__).with_name("migrations")


class StorageUnavailable(RuntimeError):
    """The database cannot be reached or refused the write; nothing was committed."""


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'tacit.db').resolve()}"


def _sqlite_pragmas(synchronous: str):  # type: ignore[no-untyped-def]
    def apply(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA foreign_keys=ON")
        # Deleted rows are overwritten with zeros, not left in free pages (erasure).
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.close()

    return apply


def make_engine(url: str, durable: bool = True) -> Engine:
    """Creates the engine; SQLite gets WAL and a busy timeout.

    Durable SQLite connections sync every commit (synchronous=FULL): a Reward or
    TrackEvents that answered OK survives a power loss. The relaxed engine
    (synchronous=NORMAL) is for the decision log only, whose loss on a crash is
    bounded and documented; its commits reach disk with the next durable commit.
    """
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas("FULL" if durable else "NORMAL"))
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def migrate(engine: Engine) -> None:
    """Brings the schema to the newest Alembic revision."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


@dataclass(frozen=True)
class Reclaimed:
    """What `Database.reclaim_deleted` did: the SQLite checkpoint's result or the tables vacuumed."""

    engine: str
    wal_truncated: bool = False
    wal_frames_left: int = 0
    tables_vacuumed: tuple[str, ...] = ()


class Database:
    """The engine, a session factory and a transaction helper that maps failures."""

    def __init__(self, engine: Engine, relaxed_engine: Engine | None = None):
        self.engine = engine
        self.relaxed_engine = relaxed_engine
        # Copied into every new session's `info`: collaborators that writers need on the
        # session itself (the audit chain's key) without the store knowing what they are.
        self.session_info: dict[str, object] = {}
        self.sessions = sessionmaker(engine, expire_on_commit=False, info=self.session_info)
        self._relaxed_sessions = sessionmaker(
            relaxed_engine or engine, expire_on_commit=False, info=self.session_info
        )

    @classmethod
    def open(cls, url: str) -> Database:
        engine = make_engine(url)
        migrate(engine)
        relaxed = make_engine(url, durable=False) if url.startswith("sqlite") else None
        return cls(engine, relaxed)

    @contextmanager
    def transaction(self, durable: bool = True) -> Iterator[Session]:
        """Yields a session inside one transaction; connection failures become StorageUnavailable.

        `durable=False` is for writes whose loss on a crash is allowed and bounded
        (the decision log): SQLite skips the fsync, PostgreSQL commits asynchronously.
        """
        session = (self.sessions if durable else self._relaxed_sessions)()
        try:
            with session.begin():
                if not durable and self.relaxed_engine is None:
                    session.execute(text("SET LOCAL synchronous_commit TO OFF"))
                yield session
        except (OperationalError, InterfaceError) as error:
            logger.warning("storage error", extra={"error_type": type(error.orig).__name__})
            raise StorageUnavailable("storage unavailable") from None
        finally:
            session.close()

    def hold_write_lock(self, session: Session) -> None:
        """Makes a SQLite transaction take the database write lock now, before its first read.

        (PostgreSQL writers lock rows or advisory locks instead; nothing to do.)
        """
        if session.get_bind().dialect.name == "sqlite":
            session.execute(text("UPDATE audit_head SET seq = seq WHERE 1 = 0"))

    def reclaim_deleted(self, tables: Sequence[str], attempts: int = 5) -> Reclaimed:
        """Makes rows deleted by a committed transaction unreadable from the database files.

        SQLite (secure_delete on every connection zeroes the deleted cells): a TRUNCATE
        checkpoint copies the zeroed pages into the database file and empties the WAL,
        whose older frames still held the rows; it waits (busy timeout) for readers and
        writers, and is retried a few times. PostgreSQL: VACUUM of `tables` (outside a
        transaction) prunes the dead row versions and their index entries. The rows are
        already deleted when this runs, so a failure is StorageUnavailable: retry the erasure.
        """
        try:
            if self.engine.dialect.name == "sqlite":
                return self._checkpoint_truncate(attempts)
            vacuumed = []
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                preparer = self.engine.dialect.identifier_preparer
                for table in tables:
                    connection.exec_driver_sql(f"VACUUM {preparer.quote(table)}")
                    vacuumed.append(table)
            return Reclaimed(self.engine.dialect.name, tables_vacuumed=tuple(vacuumed))
        except (OperationalError, InterfaceError, sqlite3.Error) as error:
            logger.warning("reclaiming deleted rows failed", extra={"error_type": type(error).__name__})
            raise StorageUnavailable("storage unavailable") from None

    def _checkpoint_truncate(self, attempts: int) -> Reclaimed:
        frames_left = -1
        for attempt in range(attempts):
            raw = self.engine.raw_connection()
            try:
                cursor = raw.cursor()
                busy, log_frames, _checkpointed = cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                cursor.close()
            finally:
                raw.close()
            frames_left = int(log_frames)
            if not busy and frames_left <= 0:
                return Reclaimed("sqlite", wal_truncated=True)
            time.sleep(0.05 * (attempt + 1))
        logger.warning("wal checkpoint after erasure left frames", extra={"frames": frames_left})
        return Reclaimed("sqlite", wal_truncated=False, wal_frames_left=frames_left)

    def dispose(self) -> None:
        self.engine.dispose()
        if self.relaxed_engine is not None:
            self.relaxed_engine.dispose()

"""Engine and session factory: SQLite (WAL) by default, PostgreSQL by URL.

Every PostgreSQL connection has a connect timeout, TCP keepalives and a TCP user timeout
(a dead peer) and a pool checkout timeout; the server's also a `statement_timeout` and a
client-side statement deadline (`StatementDeadlines`) for the case none of those catch —
a link that accepts bytes and forwards nothing. A failure on any of them is
`StorageUnavailable` (UNAVAILABLE to callers), and the pool recovers by itself once the
database answers again.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import socket
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import ColumnElement, Engine, create_engine, event, make_url, select, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, PendingRollbackError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker

logger = logging.getLogger("tacit.store")

MIGRATIONS = Path(__file__).with_name("migrations")

# Files we create are for this user only (the database, its WAL and SHM, checkpoints, keys).
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


class StorageUnavailable(RuntimeError):
    """The database cannot be reached or refused the write; nothing was committed."""


@dataclass(frozen=True)
class Timeouts:
    """How long any one step with the database may take before it is UNAVAILABLE."""

    connect_seconds: float = 5.0
    # None: no statement limit (schema migrations, batch jobs of the CLI); the server sets
    # storage.statement_timeout_seconds.
    statement_seconds: float | None = None
    pool_seconds: float = 5.0


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'tacit.db').resolve()}"


def make_private_dir(path: Path) -> None:
    """Creates `path` (and parents) mode 0700; tightens an existing one we own."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    if path.stat().st_uid == os.getuid() and path.stat().st_mode & 0o077:
        path.chmod(PRIVATE_DIR_MODE)


def _sqlite_pragmas(synchronous: str, busy_ms: int):  # type: ignore[no-untyped-def]
    def apply(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        cursor.execute("PRAGMA foreign_keys=ON")
        # Deleted rows are overwritten with zeros, not left in free pages (erasure).
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.close()

    return apply


DEADLINE_KEY = "tacit_statement_deadline_seconds"
"""Connection info key: this transaction's client-side deadline, when it has its own (a report)."""


def extend_statement_deadline(session: Session, seconds: float) -> None:
    """Lets this transaction's statements run `seconds` before the client-side watchdog cuts them
    (plus the usual 2 s margin), for a caller that also set its own `SET LOCAL statement_timeout`
    (reports). Ends with the transaction (commit, rollback or return to the pool)."""
    session.connection().info[DEADLINE_KEY] = seconds + 2.0


class StatementDeadlines:
    """Cuts off a connection whose statement, commit or ping outlasts its deadline.

    A stalled link (a proxy or a half-dead peer that accepts bytes and answers nothing)
    blocks the driver forever: keepalives are answered and the server's statement_timeout
    never starts. A watchdog thread shuts the socket of any connection that has been busy
    past the deadline; the driver then raises, SQLAlchemy invalidates the connection, the
    caller gets StorageUnavailable.
    """

    def __init__(self, engine: Engine, seconds: float):
        self.seconds = seconds
        self._busy: dict[int, tuple[float, Any]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        event.listen(engine, "before_cursor_execute", self._arm_cursor)
        event.listen(engine, "after_cursor_execute", self._disarm_cursor)
        event.listen(engine, "commit", self._arm_connection)
        event.listen(engine, "rollback", self._arm_connection)
        event.listen(engine, "handle_error", self._disarm_error)
        event.listen(engine.pool, "reset", self._arm_raw)
        event.listen(engine.pool, "checkin", self._disarm_raw)
        ping = engine.dialect.do_ping

        def guarded_ping(dbapi_connection: Any) -> bool:
            self._arm(dbapi_connection)
            try:
                return bool(ping(dbapi_connection))
            finally:
                self._disarm(dbapi_connection)

        engine.dialect.do_ping = guarded_ping  # type: ignore[method-assign]
        self._thread = threading.Thread(target=self._watch, name="tacit-db-deadlines", daemon=True)
        self._thread.start()

    def _arm(self, dbapi_connection: Any, seconds: float | None = None) -> None:
        if dbapi_connection is not None:
            due = time.monotonic() + (seconds or self.seconds)
            with self._lock:
                self._busy[id(dbapi_connection)] = (due, dbapi_connection)

    def _disarm(self, dbapi_connection: Any) -> None:
        if dbapi_connection is not None:
            with self._lock:
                self._busy.pop(id(dbapi_connection), None)

    def _arm_cursor(self, conn, _cursor, _statement, _parameters, _context, _many) -> None:  # type: ignore[no-untyped-def]
        self._arm(conn.connection.dbapi_connection, conn.info.get(DEADLINE_KEY))

    def _disarm_cursor(self, conn, _cursor, _statement, _parameters, _context, _many) -> None:  # type: ignore[no-untyped-def]
        self._disarm(conn.connection.dbapi_connection)

    def _arm_connection(self, conn) -> None:  # type: ignore[no-untyped-def]
        conn.info.pop(DEADLINE_KEY, None)  # the transaction's own deadline ends with it
        self._arm(conn.connection.dbapi_connection)

    def _disarm_error(self, context) -> None:  # type: ignore[no-untyped-def]
        if context.connection is None or context.connection.invalidated:
            return
        try:
            self._disarm(context.connection.connection.dbapi_connection)
        except Exception:  # noqa: BLE001 - a closed connection has nothing armed
            return

    def _arm_raw(self, dbapi_connection, record, _state=None) -> None:  # type: ignore[no-untyped-def]
        record.info.pop(DEADLINE_KEY, None)
        self._arm(dbapi_connection)

    def _disarm_raw(self, dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        self._disarm(dbapi_connection)

    def _watch(self) -> None:
        interval = min(0.5, self.seconds / 4)
        while not self._stop.wait(interval):
            now = time.monotonic()
            with self._lock:
                overdue = [(key, conn) for key, (due, conn) in self._busy.items() if due < now]
                for key, _conn in overdue:
                    del self._busy[key]
            for _key, conn in overdue:
                _shut_socket(conn)

    def close(self) -> None:
        self._stop.set()


def _shut_socket(dbapi_connection: Any) -> None:
    """Shuts the connection's socket down (its blocked read returns); the driver closes it after."""
    try:
        fd = dbapi_connection.pgconn.socket
    except Exception:  # noqa: BLE001 - already closed: nothing left to cut
        return
    try:
        dup = socket.socket(fileno=os.dup(fd))
    except OSError:
        return
    try:
        dup.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        dup.close()
    logger.debug("database statement exceeded its deadline; connection cut")


def _postgres_connect_args(url: str, timeouts: Timeouts) -> dict[str, Any]:
    args: dict[str, Any] = {
        "connect_timeout": max(1, math.ceil(timeouts.connect_seconds)),
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        # Unacknowledged data for this long closes the connection (a dead peer).
        "tcp_user_timeout": int(max(timeouts.connect_seconds, timeouts.statement_seconds or 0) * 1000) + 5000,
    }
    if timeouts.statement_seconds is not None:
        existing = make_url(url).query.get("options", "")
        if isinstance(existing, tuple):
            existing = " ".join(existing)
        statement_ms = int(timeouts.statement_seconds * 1000)
        args["options"] = f"{existing} -c statement_timeout={statement_ms}".strip()
    return args


def make_engine(url: str, durable: bool = True, timeouts: Timeouts | None = None) -> Engine:
    """Creates the engine; SQLite gets WAL and a busy timeout, PostgreSQL every timeout above.
    Errors never carry a statement's bound values (`hide_parameters`): they reach logs.

    Durable SQLite connections sync every commit (synchronous=FULL): a Reward or
    TrackEvents that answered OK survives a power loss. The relaxed engine
    (synchronous=NORMAL) is for the decision log only, whose loss on a crash is
    bounded and documented; its commits reach disk with the next durable commit.
    """
    timeouts = timeouts or Timeouts()
    busy_seconds = timeouts.statement_seconds or 10.0
    if url.startswith("sqlite"):
        engine = create_engine(
            url, hide_parameters=True, connect_args={"check_same_thread": False, "timeout": busy_seconds}
        )
        event.listen(
            engine, "connect", _sqlite_pragmas("FULL" if durable else "NORMAL", int(busy_seconds * 1000))
        )
        return engine
    engine = create_engine(
        url,
        hide_parameters=True,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=10,
        pool_timeout=timeouts.pool_seconds,
        connect_args=_postgres_connect_args(url, timeouts),
    )
    if timeouts.statement_seconds is not None:
        # A little beyond the server's own statement_timeout, which answers first when it can.
        _DEADLINES[engine] = StatementDeadlines(engine, timeouts.statement_seconds + 2.0)
    return engine


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


_DEADLINES: weakref.WeakKeyDictionary[Engine, StatementDeadlines] = weakref.WeakKeyDictionary()
# PendingRollbackError: the rollback after a connection was cut finds it invalidated.
_UNAVAILABLE_ERRORS = (OperationalError, InterfaceError, PoolTimeoutError, PendingRollbackError)


class Database:
    """The engine, a session factory and a transaction helper that maps failures.

    It also keeps the storage state honest for operators: one WARNING when storage
    becomes unavailable (no traceback: an outage is expected, not a bug) and one INFO
    when it answers again, however many calls fail in between.
    """

    def __init__(
        self, engine: Engine, relaxed_engine: Engine | None = None, probe_engine: Engine | None = None
    ):
        self.engine = engine
        self.relaxed_engine = relaxed_engine
        self.probe_engine = probe_engine
        # Copied into every new session's `info`: collaborators that writers need on the
        # session itself (the audit chain's key) without the store knowing what they are.
        self.session_info: dict[str, object] = {}
        self.sessions = sessionmaker(engine, expire_on_commit=False, info=self.session_info)
        self._relaxed_sessions = sessionmaker(
            relaxed_engine or engine, expire_on_commit=False, info=self.session_info
        )
        self._outage = False
        self._outage_lock = threading.Lock()

    @classmethod
    def open(cls, url: str, timeouts: Timeouts | None = None, probe_seconds: float = 2.0) -> Database:
        timeouts = timeouts or Timeouts()
        _restrict_sqlite_files(url)
        migrator = make_engine(url, timeouts=replace(timeouts, statement_seconds=None))
        try:
            migrate(migrator)
        finally:
            migrator.dispose()
        engine = make_engine(url, timeouts=timeouts)
        if url.startswith("sqlite"):
            return cls(engine, make_engine(url, durable=False, timeouts=timeouts))
        probe = Timeouts(
            connect_seconds=probe_seconds, statement_seconds=probe_seconds, pool_seconds=probe_seconds
        )
        return cls(engine, None, make_engine(url, timeouts=probe))

    @property
    def available(self) -> bool:
        """False from the first failure of an outage until the next success."""
        return not self._outage

    def _storage_failed(self, error: BaseException) -> None:
        with self._outage_lock:
            first = not self._outage
            self._outage = True
        if first:
            cause = getattr(error, "orig", None) or error
            logger.warning("storage unavailable", extra={"error_type": type(cause).__name__})

    def _storage_answered(self) -> None:
        if self._outage:
            with self._outage_lock:
                was_down, self._outage = self._outage, False
            if was_down:
                logger.info("storage available again")

    @contextmanager
    def transaction(self, durable: bool = True) -> Iterator[Session]:
        """Yields a session inside one transaction; connection failures become StorageUnavailable.

        `durable=False` is for writes whose loss on a crash is allowed and bounded
        (the decision log): SQLite skips the fsync, PostgreSQL commits asynchronously.
        """
        session = (self.sessions if durable else self._relaxed_sessions)()
        try:
            try:
                with session.begin():
                    if not durable and self.relaxed_engine is None:
                        session.execute(text("SET LOCAL synchronous_commit TO OFF"))
                    yield session
            finally:
                session.close()  # returning a dead connection can raise too: mapped below
        except _UNAVAILABLE_ERRORS as error:
            self._storage_failed(error)
            raise StorageUnavailable("storage unavailable") from None
        except DBAPIError as error:
            if not error.connection_invalidated:
                raise
            self._storage_failed(error)
            raise StorageUnavailable("storage unavailable") from None
        self._storage_answered()

    def ping(self) -> bool:
        """True when the database answers a trivial query within the probe's timeouts."""
        engine = self.probe_engine or self.engine
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except (DBAPIError, PoolTimeoutError) as error:
            self._storage_failed(error)
            return False
        self._storage_answered()
        return True

    def hold_write_lock(self, session: Session) -> None:
        """Makes a SQLite transaction take the database write lock now, before its first read.

        (PostgreSQL writers lock rows or advisory locks instead; nothing to do.)
        """
        if session.get_bind().dialect.name == "sqlite":
            session.execute(text("UPDATE audit_head SET seq = seq WHERE 1 = 0"))

    def hold_named_lock(self, session: Session, name: str) -> None:
        """Serializes the transactions that name the same lock, across processes and replicas.

        SQLite: the database write lock (one writer at a time anyway). PostgreSQL: a
        transaction-scoped advisory lock on a 64-bit hash of `name`, released at commit or
        rollback. Take it first, before the reads that decide what the transaction writes.
        """
        if session.get_bind().dialect.name == "sqlite":
            self.hold_write_lock(session)
            return
        key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})

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
        for engine in (self.engine, self.relaxed_engine, self.probe_engine):
            if engine is not None:
                deadlines = _DEADLINES.pop(engine, None)
                if deadlines is not None:
                    deadlines.close()
                engine.dispose()


Row = TypeVar("Row")


def newest_first_page(
    db: Database,
    table: type[Any],
    convert: Callable[[Any], Row],
    page_size: int,
    after_id: int | None,
    *criteria: ColumnElement[bool],
) -> tuple[list[Row], int | None]:
    """One page of `table`'s rows (an integer primary key `id`) matching `criteria`, newest first,
    converted inside the transaction; and the cursor (an id) of the next page, or None."""
    query = select(table).where(*criteria).order_by(table.id.desc()).limit(page_size + 1)
    if after_id is not None:
        query = query.where(table.id < after_id)
    with db.transaction() as session:
        rows = list(session.execute(query).scalars())
        page = [convert(r) for r in rows[:page_size]]
    return page, (rows[page_size - 1].id if len(rows) > page_size else None)


def _restrict_sqlite_files(url: str) -> None:
    """The SQLite file is created 0600 before SQLite opens it; its WAL and SHM inherit that mode."""
    parsed = make_url(url)
    if not url.startswith("sqlite") or not parsed.database or parsed.database == ":memory:":
        return
    path = Path(parsed.database)
    if not path.parent.exists():
        make_private_dir(path.parent)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE_MODE))
    elif path.stat().st_uid == os.getuid() and path.stat().st_mode & 0o077:
        path.chmod(PRIVATE_FILE_MODE)
        for suffix in ("-wal", "-shm"):
            sidecar = path.with_name(path.name + suffix)
            if sidecar.exists():
                sidecar.chmod(PRIVATE_FILE_MODE)

"""The appliance's databases. SQLite (one file in the data directory) holds the calls in flight, always, and by
default the stored summaries and the audit trail too; those two can live in PostgreSQL instead
(`server.database_url`), so several appliances share one store.

SQLite: WAL with synchronous=FULL, so a committed row survives `kill -9` and power loss; secure_delete, so a
deleted or replaced row's bytes are overwritten, not left in free pages (what crypto-shredding and the migration
from plaintext rely on); owner-only permissions as well as the vault's encryption.

PostgreSQL is reached through `PgConnection`, which speaks the small part of sqlite3's interface the stores use
(`?` parameters, rows by name or position, `executescript`, `in_transaction`), so both run the same store code.
A write transaction there takes an advisory lock first: the stores' read-check-write steps rely on one writer at a
time, which is what SQLite's BEGIN IMMEDIATE gives.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from aftercall.core.errors import ConfigError

logger = logging.getLogger(__name__)

DATABASE_NAME = "aftercall.db"


def prepare_data_dir(path: Path) -> Path:
    """Created owner-only; an existing directory is used as it is (it may be shared, e.g. a home directory)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def open_database(data_dir: Path) -> sqlite3.Connection:
    try:
        path = prepare_data_dir(data_dir) / DATABASE_NAME
        path.touch(mode=0o600, exist_ok=True)
        os.chmod(path, 0o600)
    except OSError as exc:
        raise ConfigError(f"config server.data_dir: cannot use {data_dir} ({exc.strerror})") from exc
    # Used only from the event loop's thread; autocommit off so every change is an explicit transaction.
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.row_factory = sqlite3.Row
    try:
        connection.execute("PRAGMA busy_timeout=5000")
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA secure_delete=ON")
        # A damaged file (truncated, overwritten) is refused at start rather than half-read later. quick_check
        # reads every page once: a moment for an appliance's database.
        verdict = connection.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        verdict = str(exc)
    if verdict != "ok":
        connection.close()
        raise ConfigError(f"config server.data_dir: {path} is damaged ({verdict}); restore it from a backup (nothing "
                          "was changed)")
    return connection


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """All or nothing; a failure (disk full, I/O error) rolls back, so the shared connection is never left inside a
    half-done transaction that later writes would silently join."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def truncate_log(db: sqlite3.Connection, attempts: int = 20) -> bool:
    """Checkpoint the WAL into the database file and empty it, so the log keeps no old image of a page whose rows
    were deleted (secure_delete has overwritten them in the file). A reader holding an old snapshot blocks that:
    try for a while, then say so. (PostgreSQL: deleted rows stay until VACUUM reclaims them; what protects them
    there is that their data keys' KEK can be rotated and retired.)"""
    if isinstance(db, PgConnection):
        return True
    for _ in range(attempts):
        busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if not busy:
            return True
        time.sleep(0.1)
    logger.warning("the write-ahead log could not be emptied (a reader holds an old snapshot); deleted rows stay "
                   "in it until the next checkpoint")
    return False


IntegrityError: tuple[type[Exception], ...] = (sqlite3.IntegrityError,)
try:
    import psycopg

    IntegrityError += (psycopg.IntegrityError,)
except ImportError:  # SQLite only
    psycopg = None

_WRITER_LOCK = 0x6166746572  # "after": the advisory lock every aftercall writer takes


class _Row(tuple):
    """A row by position or by column name, like sqlite3.Row."""

    names: dict[str, int]

    def __getitem__(self, key):
        return super().__getitem__(self.names[key] if isinstance(key, str) else key)

    def keys(self) -> list[str]:
        return list(self.names)


class PgConnection:
    """PostgreSQL behind the subset of sqlite3.Connection the stores use."""

    def __init__(self, url: str):
        if psycopg is None:
            raise ConfigError("config server.database_url: PostgreSQL needs the psycopg package")
        try:
            self._connection = psycopg.connect(url, autocommit=True, row_factory=_row_factory)
        except psycopg.Error as exc:
            raise ConfigError(f"config server.database_url: cannot connect ({str(exc).strip().splitlines()[0]})") \
                from None

    def execute(self, sql: str, parameters: tuple | list = ()):
        if sql == "BEGIN IMMEDIATE":
            self._connection.execute("BEGIN")
            return self._connection.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITER_LOCK,))
        return self._connection.execute(_postgres(sql), tuple(parameters))

    def executescript(self, script: str) -> None:
        for statement in script.split(";"):
            if statement.strip():
                self.execute(statement)

    @property
    def in_transaction(self) -> bool:
        return self._connection.info.transaction_status != psycopg.pq.TransactionStatus.IDLE

    def close(self) -> None:
        self._connection.close()


def _row_factory(cursor):
    names = {column.name: index for index, column in enumerate(cursor.description or ())}

    def make(values):
        row = _Row(values)
        row.names = names
        return row
    return make


def _postgres(sql: str) -> str:
    """SQLite's dialect as the stores write it -> PostgreSQL's."""
    for sqlite_type, postgres_type in ((" BLOB", " BYTEA"), (" REAL", " DOUBLE PRECISION"),
                                       ("INTEGER PRIMARY KEY", "BIGINT PRIMARY KEY")):
        sql = sql.replace(sqlite_type, postgres_type)
    return sql.replace("?", "%s")


def open_store_database(url: str, data_dir: Path, local: sqlite3.Connection | None = None):
    """Where summaries and the audit trail live: PostgreSQL at `url`, or the data directory's SQLite file (`local`
    when it is open already)."""
    if url:
        return PgConnection(url)
    return local if local is not None else open_database(data_dir)


def table_exists(db, name: str) -> bool:
    if isinstance(db, PgConnection):
        return db.execute("SELECT 1 FROM information_schema.tables WHERE table_name = ?", (name,)).fetchone() \
            is not None
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


def lock_data_dir(data_dir: Path, owner: str) -> Callable[[], None]:
    """An exclusive lock on `<data_dir>/<owner>.lock`, held until the returned function is called. Owner-only, like
    everything in the data directory (one an older release made 0644 is narrowed)."""
    path = data_dir / f"{owner}.lock"
    handle = os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.close()
        raise ConfigError(f"config server.data_dir: another aftercall {owner} is using {data_dir}") from exc
    try:
        os.fchmod(handle.fileno(), 0o600)
    except OSError as exc:
        handle.close()
        raise ConfigError(f"config server.data_dir: cannot make {path} owner-only ({exc.strerror})") from exc
    return handle.close

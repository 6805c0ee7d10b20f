"""The appliance's SQLite database (one file in the data directory): calls in flight and stored summaries.

WAL with synchronous=FULL: a committed row survives `kill -9` and power loss. secure_delete: a deleted or replaced
row's bytes are overwritten, not left in free pages (what crypto-shredding and the migration from plaintext rely on).
Owner-only permissions as well as the vault's encryption.
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
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA secure_delete=ON")
    connection.execute("PRAGMA busy_timeout=5000")
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
    try for a while, then say so."""
    for _ in range(attempts):
        busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if not busy:
            return True
        time.sleep(0.1)
    logger.warning("the write-ahead log could not be emptied (a reader holds an old snapshot); deleted rows stay "
                   "in it until the next checkpoint")
    return False


def lock_data_dir(data_dir: Path, owner: str) -> Callable[[], None]:
    """An exclusive lock on `<data_dir>/<owner>.lock`, held until the returned function is called."""
    handle = open(data_dir / f"{owner}.lock", "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.close()
        raise ConfigError(f"config server.data_dir: another aftercall {owner} is using {data_dir}") from exc
    return handle.close

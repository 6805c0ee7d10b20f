"""The data directory's stores, opened one way for `aftercall serve` and for the admin commands (keys, erase,
retention, reprocess, audit): the calls in flight (SQLite in the data directory), the summaries, audit trail and
CRM outbox (there too, or in PostgreSQL: server.database_url) and the spool, all sealed by the key file's vault."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aftercall.config import Config
from aftercall.core.database import open_database, open_store_database, table_exists
from aftercall.core.errors import ConfigError
from aftercall.crm.outbox import sealed_event_rows
from aftercall.ingest.calls import CallStore
from aftercall.ingest.spool import Spool
from aftercall.review.store import SummaryStore
from aftercall.vault.envelope import Vault
from aftercall.vault.keys import key_file_path, open_key_ring
from aftercall.vault.rotation import Source


@dataclass
class Stores:
    data_dir: Path
    db: sqlite3.Connection  # the calls in flight
    store_db: Any  # the summaries' connection: `db` itself, or a PostgreSQL one
    vault: Vault
    summaries: SummaryStore
    calls: CallStore
    spool: Spool

    def sealed_sources(self) -> tuple[tuple[Any, Source], ...]:
        """Every table of sealed rows with its connection, for key rotation and the counts per key (the spool's
        files are re-wrapped by the spool)."""
        store_db = self.store_db
        return ((store_db, self.summaries.sealed_rows), (store_db, self.summaries.audit.sealed_rows),
                (store_db, lambda: sealed_event_rows(store_db)), (self.db, self.calls.sealed_rows))

    def close(self) -> None:
        if self.store_db is not self.db:
            self.store_db.close()
        self.db.close()


def open_stores(config: Config, data_dir: Path, create_keys: bool = False) -> Stores:
    """The stores, closed again if any fails to open. `create_keys`: make the key file if there is none (`serve`'s
    first start), unless the store already holds records sealed with one; otherwise a missing key file is an
    error before anything is created."""
    keys = None if create_keys else open_key_ring(config.vault, create_missing=False)
    db = open_database(data_dir)
    store_db = None
    try:
        store_db = open_store_database(config.server.database_url, data_dir, db)
        if keys is None:
            key_file = key_file_path(config.vault.key_file)
            if not key_file.exists() and _holds_sealed_records(store_db):
                raise ConfigError(f"vault.key_file: {key_file} does not exist, but the store holds records sealed "
                                  "with a key file: restore that one (a new key file could not open them)")
            keys = open_key_ring(config.vault, create_missing=True)
        vault = Vault(keys)
        return Stores(data_dir, db, store_db, vault, SummaryStore(store_db, vault), CallStore(db, vault),
                      Spool(data_dir / "spool", vault))
    except BaseException:
        if store_db is not None and store_db is not db:
            store_db.close()
        db.close()
        raise


def _holds_sealed_records(db) -> bool:
    return any(table_exists(db, table) and db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone()
               for table in ("sealed_summaries", "audit_log"))

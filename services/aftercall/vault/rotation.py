"""Key rotation across every store: each store lists its sealed rows; re-wrapping moves their data keys to the
active KEK in batches (one transaction each, so the service keeps running), and the counts per KEK tell when an old
KEK protects nothing any more and may be retired."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from aftercall.core.database import transaction
from aftercall.vault.envelope import Vault, kek_of


@dataclass(frozen=True)
class SealedRow:
    table: str
    where: str  # SQL condition that picks this row, with `key` as its parameters
    key: tuple
    column: str
    kind: str
    record_id: str
    blob: bytes


Source = Callable[[], Iterator[SealedRow]]


def count_by_kek(sources: Iterable[Source]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for source in sources:
        for row in source():
            counts[kek_of(row.blob)] = counts.get(kek_of(row.blob), 0) + 1
    return counts


def rewrap_rows(vault: Vault, sources: Iterable[tuple[sqlite3.Connection, Source]], batch: int = 500) -> int:
    """Re-wrap every listed row not yet on the active KEK; returns how many changed. The rows are found with one
    read; each batch is then a short write transaction that takes every row as it is now (the server may have
    changed it meanwhile), so the server waits for the write lock a moment at a time, never for the whole run."""
    active, changed = vault.keys.active.id, 0
    for db, source in sources:
        changed += _rewrap(db, vault, [row for row in source() if kek_of(row.blob) != active], active, batch)
    return changed


def _rewrap(db: sqlite3.Connection, vault: Vault, stale: list[SealedRow], active: int, batch: int) -> int:
    changed = 0
    for start in range(0, len(stale), batch):
        with transaction(db):
            for row in stale[start : start + batch]:
                current = db.execute(f"SELECT {row.column} FROM {row.table} WHERE {row.where}", row.key).fetchone()
                if current is None or not isinstance(current[0], bytes) or kek_of(current[0]) == active:
                    continue  # gone, or already re-sealed by the server
                db.execute(f"UPDATE {row.table} SET {row.column} = ? WHERE {row.where}",
                           (vault.rewrap(current[0], row.kind, row.record_id), *row.key))
                changed += 1
    return changed

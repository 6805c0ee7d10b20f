"""Key rotation across every store: each store lists its sealed rows; re-wrapping moves their data keys to the
active KEK in batches (one transaction each, so the service keeps running), and the counts per KEK tell when an old
KEK protects nothing any more and may be retired."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Protocol, Sequence

from aftercall.core.database import transaction
from aftercall.core.errors import UserError
from aftercall.vault.envelope import Vault, kek_of

if TYPE_CHECKING:  # the audit log lists its own sealed rows with SealedRow
    from aftercall.vault.audit import AuditLog


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


class SealedFiles(Protocol):
    """Sealed data kept in files rather than rows (the spool): listed and re-wrapped by their owner."""

    def sealed_keys(self) -> Iterator[tuple[Any, str, str, bytes]]: ...

    def rewrap(self) -> int: ...


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


def protected_counts(sources: Sequence[tuple[Any, Source]], files: SealedFiles) -> dict[int, int]:
    """How many stored records each KEK protects, rows and files together."""
    counts = count_by_kek(source for _, source in sources)
    for *_, blob in files.sealed_keys():
        counts[kek_of(blob)] = counts.get(kek_of(blob), 0) + 1
    return counts


def rotate_keys(vault: Vault, audit: AuditLog, sources: Sequence[tuple[Any, Source]], files: SealedFiles, actor: str,
                on_active: Callable[[int], None] = lambda kek_id: None) -> tuple[int, int]:
    """A new active KEK (audited), then every record re-wrapped onto it while the service runs. `on_active` hears the
    new key's id before the long part. Returns (new KEK id, records re-wrapped)."""
    fresh = vault.keys.rotate()
    audit.record(actor, "keys.rotate", "", kek=fresh.id)
    on_active(fresh.id)
    return fresh.id, rewrap_rows(vault, sources) + files.rewrap()


def retire_key(vault: Vault, audit: AuditLog, sources: Sequence[tuple[Any, Source]], files: SealedFiles, kek_id: int,
               actor: str) -> None:
    """Erase an old KEK from the key file (audited), refused while any record still needs it."""
    still = protected_counts(sources, files).get(kek_id, 0)
    if still:
        raise UserError(f"key {kek_id} still protects {still} record(s): `aftercall keys rotate` re-wraps them first")
    vault.keys.retire(kek_id)
    audit.record(actor, "keys.retire", "", kek=kek_id)

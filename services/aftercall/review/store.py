"""Stored summaries and every version of them: the AI draft (version 1), each person's edit, and the approval.

Nothing is overwritten: a version row is written once. The vault issue encrypts `summary_json` at rest; the
columns a search needs (agent, queue, tenant, disposition, times) stay clear.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

from aftercall.core.database import transaction
from aftercall.core.errors import AlreadyExistsError, ConflictError, NotFoundError, StateError

DRAFT, EDITED, APPROVED = "draft", "edited", "approved"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS summaries (
    call_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    version INTEGER NOT NULL,
    agent_id TEXT NOT NULL,
    queue TEXT NOT NULL,
    tenant TEXT NOT NULL,
    disposition_code TEXT NOT NULL,
    complete INTEGER NOT NULL,
    summary_json TEXT NOT NULL,
    approved_by TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS summaries_created ON summaries(created_at);
CREATE INDEX IF NOT EXISTS summaries_agent ON summaries(agent_id, created_at);
CREATE TABLE IF NOT EXISTS summary_versions (
    call_id TEXT NOT NULL REFERENCES summaries(call_id),
    version INTEGER NOT NULL,
    author TEXT NOT NULL,
    summary_json TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (call_id, version)
);
"""
MAX_PAGE = 500
DEFAULT_PAGE = 50


@dataclass(frozen=True)
class Version:
    version: int
    author: str
    summary: dict[str, Any]
    created_at: float


@dataclass(frozen=True)
class StoredSummary:
    call_id: str
    summary: dict[str, Any]
    state: str
    version: int
    agent_id: str
    queue: str
    tenant: str
    disposition_code: str
    complete: bool
    approved_by: str
    created_at: float
    updated_at: float
    history: tuple[Version, ...] = field(default=())


@dataclass(frozen=True)
class SummaryFilter:
    agent_id: str = ""
    disposition_code: str = ""
    state: str = ""
    tenant: str = ""
    created_from: float | None = None
    created_to: float | None = None


class SummaryStore:
    def __init__(self, db: sqlite3.Connection, clock=time.time):
        self._db = db
        self._clock = clock
        db.executescript(_SCHEMA)

    def create_draft(self, summary: dict[str, Any], metadata: dict[str, Any], complete: bool, author: str) -> None:
        now = self._clock()
        text = json.dumps(summary, ensure_ascii=False)
        call_id = summary["call_id"]
        try:
            with transaction(self._db):
                self._db.execute(
                    "INSERT INTO summaries (call_id, state, version, agent_id, queue, tenant, disposition_code, "
                    "complete, summary_json, created_at, updated_at) VALUES (?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (call_id, DRAFT, metadata.get("agent_id", ""), metadata.get("queue", ""),
                     metadata.get("tenant", ""), summary["disposition"]["code"], int(complete), text, now, now))
                self._db.execute("INSERT INTO summary_versions VALUES (?, 1, ?, ?, ?)", (call_id, author, text, now))
        except sqlite3.IntegrityError as exc:
            raise AlreadyExistsError(f"a summary for call {call_id!r} already exists") from exc

    def exists(self, call_id: str) -> bool:
        return self._db.execute("SELECT 1 FROM summaries WHERE call_id = ?", (call_id,)).fetchone() is not None

    def get(self, call_id: str, include_history: bool = False) -> StoredSummary:
        row = self._db.execute("SELECT * FROM summaries WHERE call_id = ?", (call_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no summary for call {call_id!r}")
        history: tuple[Version, ...] = ()
        if include_history:
            rows = self._db.execute("SELECT * FROM summary_versions WHERE call_id = ? ORDER BY version",
                                    (call_id,)).fetchall()
            history = tuple(Version(r["version"], r["author"], json.loads(r["summary_json"]), r["created_at"])
                            for r in rows)
        return _stored(row, history)

    def list(self, where: SummaryFilter, page_size: int = 0, offset: int = 0) -> tuple[list[StoredSummary], int | None]:
        """A page, newest first, and the offset of the next page (None on the last)."""
        size = min(page_size or DEFAULT_PAGE, MAX_PAGE)
        clauses, values = [], []
        for column in ("agent_id", "disposition_code", "state", "tenant"):
            if getattr(where, column):
                clauses.append(f"{column} = ?")
                values.append(getattr(where, column))
        if where.created_from is not None:
            clauses.append("created_at >= ?")
            values.append(where.created_from)
        if where.created_to is not None:
            clauses.append("created_at < ?")
            values.append(where.created_to)
        sql = "SELECT * FROM summaries" + (" WHERE " + " AND ".join(clauses) if clauses else "")
        rows = self._db.execute(sql + " ORDER BY created_at DESC, call_id LIMIT ? OFFSET ?",
                                (*values, size + 1, offset)).fetchall()
        next_offset = offset + size if len(rows) > size else None
        return [_stored(r) for r in rows[:size]], next_offset

    def edit(self, call_id: str, expected_version: int, summary: dict[str, Any], author: str) -> StoredSummary:
        now = self._clock()
        text = json.dumps(summary, ensure_ascii=False)
        with transaction(self._db):
            current = self._check_writable(call_id, expected_version)
            version = current.version + 1
            self._db.execute("INSERT INTO summary_versions VALUES (?, ?, ?, ?, ?)",
                             (call_id, version, author, text, now))
            self._db.execute("UPDATE summaries SET state = ?, version = ?, summary_json = ?, disposition_code = ?, "
                             "updated_at = ? WHERE call_id = ?",
                             (EDITED, version, text, summary["disposition"]["code"], now, call_id))
        return self.get(call_id)

    def approve(self, call_id: str, expected_version: int, approver: str) -> StoredSummary:
        with transaction(self._db):
            self._check_writable(call_id, expected_version)
            self._db.execute("UPDATE summaries SET state = ?, approved_by = ?, updated_at = ? WHERE call_id = ?",
                             (APPROVED, approver, self._clock(), call_id))
        return self.get(call_id)

    def _check_writable(self, call_id: str, expected_version: int) -> StoredSummary:
        """Inside the write transaction (BEGIN IMMEDIATE holds the write lock), so another process serving
        Summaries cannot change the row between this check and the update."""
        current = self.get(call_id)
        if current.state == APPROVED:
            raise StateError(f"the summary for call {call_id!r} is approved and can no longer change")
        if expected_version != current.version:
            raise ConflictError(f"the summary for call {call_id!r} is at version {current.version}, not "
                                f"{expected_version}: fetch it again and redo the change")
        return current


def _stored(row: sqlite3.Row, history: tuple[Version, ...] = ()) -> StoredSummary:
    return StoredSummary(
        call_id=row["call_id"], summary=json.loads(row["summary_json"]), state=row["state"], version=row["version"],
        agent_id=row["agent_id"], queue=row["queue"], tenant=row["tenant"],
        disposition_code=row["disposition_code"], complete=bool(row["complete"]), approved_by=row["approved_by"],
        created_at=row["created_at"], updated_at=row["updated_at"], history=history)

"""Stored summaries and every version of them: the AI draft (version 1, and any redraft after a model change), each
person's edit, and the approval.

Nothing is overwritten: a version row is written once. Everything about a call that could identify someone (the
summary, the call id, agent, queue, tenant, customer reference, who approved) is sealed by the vault (a data key per
record); the columns people filter on hold keyed blind indexes (HMACs) of those values, and `summary_entities` those
of each entity a summary names, so searches run on ciphertext. Left clear: the review state, the version number, whether the call arrived whole, and the times, which
order and page the results and drive retention.
"""

from __future__ import annotations

import difflib
import json
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from aftercall.core.database import IntegrityError, table_exists, transaction, truncate_log
from aftercall.core.errors import AlreadyExistsError, ConflictError, NotFoundError, StateError, UserError
from aftercall.vault.audit import AuditLog
from aftercall.vault.envelope import Vault
from aftercall.vault.rotation import SealedRow

DRAFT, EDITED, APPROVED = "draft", "edited", "approved"
SUMMARY, VERSION = "summary", "summary-version"  # the vault's record kinds (part of each record's associated data)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sealed_summaries (
    call_key TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    version INTEGER NOT NULL,
    agent_key TEXT NOT NULL,
    tenant_key TEXT NOT NULL,
    disposition_key TEXT NOT NULL,
    customer_key TEXT NOT NULL,
    complete INTEGER NOT NULL,
    record BLOB NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sealed_summaries_created ON sealed_summaries(created_at);
CREATE INDEX IF NOT EXISTS sealed_summaries_agent ON sealed_summaries(agent_key, created_at);
CREATE INDEX IF NOT EXISTS sealed_summaries_customer ON sealed_summaries(customer_key);
CREATE TABLE IF NOT EXISTS sealed_summary_versions (
    call_key TEXT NOT NULL REFERENCES sealed_summaries(call_key),
    version INTEGER NOT NULL,
    record BLOB NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (call_key, version)
);
"""
# Blind indexes of each summary's entities (what a search by reference or entity matches).
_ENTITY_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS summary_entities (call_key TEXT NOT NULL REFERENCES sealed_summaries(call_key), "
    "entity_key TEXT NOT NULL, PRIMARY KEY (call_key, entity_key))",
    "CREATE INDEX IF NOT EXISTS summary_entities_entity ON summary_entities(entity_key)",
)
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
    customer_ref: str = ""
    # An entity the summary names (a reference, an amount, an error code), as `entity_key` normalises it.
    entity: str = ""
    # The caller's scope: only these agents' calls (None: every call).
    agents: frozenset[str] | None = None
    created_from: float | None = None
    created_to: float | None = None


class SummaryStore:
    def __init__(self, db: sqlite3.Connection, vault: Vault, audit: AuditLog | None = None, clock=time.time):
        self._db = db
        self._vault = vault
        self._audit = audit or AuditLog(db, vault, clock)  # every change is audited in its own transaction
        self._clock = clock
        self._listeners: list[Callable[[str, StoredSummary], None]] = []
        _index_stored_entities(db, self)
        db.executescript(_SCHEMA + "".join(f"{statement};\n" for statement in _ENTITY_SCHEMA))
        _migrate_plaintext(db, self)

    def subscribe(self, listener: Callable[[str, StoredSummary], None]) -> None:
        """Call `listener(event, summary)` for each summary stored as a draft ("draft") or approved ("approved"),
        inside the write's transaction: what it writes (the CRM outbox) commits with the change or not at all."""
        self._listeners.append(listener)

    def _notify(self, event: str, call_id: str) -> None:
        if self._listeners:
            stored = self.get(call_id)
            for listener in self._listeners:
                listener(event, stored)

    # -- keys and sealing -----------------------------------------------------------------------------------------
    def _key(self, field_name: str, value: str) -> str:
        return self._vault.blind_index(field_name, value)

    def _seal(self, kind: str, record_id: str, document: dict[str, Any]) -> bytes:
        return self._vault.seal(json.dumps(document, ensure_ascii=False).encode("utf-8"), kind, record_id)

    def _open(self, kind: str, record_id: str, blob: bytes) -> dict[str, Any]:
        return json.loads(self._vault.open(blob, kind, record_id))

    # -- writes ---------------------------------------------------------------------------------------------------
    def create_draft(self, summary: dict[str, Any], metadata: dict[str, Any], complete: bool, author: str,
                     created_at: float | None = None) -> None:
        now = self._clock() if created_at is None else created_at
        call_id = summary["call_id"]
        try:
            with transaction(self._db):
                self._insert(summary, metadata, DRAFT, 1, complete, "", now, now)
                self._add_version(self._key("call_id", call_id), 1, author, summary, now)
                self._audit.record(author, "create", call_id, version=1)
                self._notify(DRAFT, call_id)
        except IntegrityError as exc:
            raise AlreadyExistsError(f"a summary for call {call_id!r} already exists") from exc

    def _insert(self, summary: dict[str, Any], metadata: dict[str, Any], state: str, version: int, complete: bool,
                approved_by: str, created_at: float, updated_at: float) -> None:
        call_key = self._key("call_id", summary["call_id"])
        record = {"call_id": summary["call_id"], "summary": summary, "agent_id": metadata.get("agent_id", ""),
                  "queue": metadata.get("queue", ""), "tenant": metadata.get("tenant", ""),
                  "customer_ref": metadata.get("customer_ref", ""), "approved_by": approved_by}
        self._db.execute(
            "INSERT INTO sealed_summaries (call_key, state, version, agent_key, tenant_key, disposition_key, "
            "customer_key, complete, record, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (call_key, state, version, self._key("agent_id", record["agent_id"]), self._key("tenant", record["tenant"]),
             self._key("disposition", summary["disposition"]["code"]),
             self._key("customer_ref", record["customer_ref"]), int(complete), self._seal(SUMMARY, call_key, record),
             created_at, updated_at))
        self._index_entities(call_key, summary)

    def _index_entities(self, call_key: str, summary: dict[str, Any]) -> None:
        """The summary's entities as blind indexes, so a search by a reference finds the call without opening it."""
        self._db.execute("DELETE FROM summary_entities WHERE call_key = ?", (call_key,))
        keys = {self._key("entity", entity_key(entity.get("value", ""))) for entity in summary.get("entities") or []
                if isinstance(entity, dict) and entity_key(entity.get("value", ""))}
        for key in sorted(keys):
            self._db.execute("INSERT INTO summary_entities VALUES (?, ?)", (call_key, key))

    def _add_version(self, call_key: str, version: int, author: str, summary: dict[str, Any], now: float) -> None:
        self._db.execute("INSERT INTO sealed_summary_versions VALUES (?, ?, ?, ?)",
                         (call_key, version, self._seal(VERSION, f"{call_key}/{version}",
                                                        {"author": author, "summary": summary}), now))

    def edit(self, call_id: str, expected_version: int, summary: dict[str, Any], author: str) -> StoredSummary:
        """A person's version."""
        return self._new_version(call_id, expected_version, summary, author, EDITED)

    def redraft(self, call_id: str, expected_version: int, summary: dict[str, Any], author: str) -> StoredSummary:
        """A new AI draft (after a model change) of a summary nobody has changed yet; StateError for one a person
        has edited or approved: their work is never replaced."""
        return self._new_version(call_id, expected_version, summary, author, DRAFT)

    def _new_version(self, call_id: str, expected_version: int, summary: dict[str, Any], author: str,
                     state: str) -> StoredSummary:
        now = self._clock()
        with transaction(self._db):
            current, record = self._check_writable(call_id, expected_version)
            if state == DRAFT and current.state != DRAFT:
                raise StateError(f"the summary for call {call_id!r} has been {current.state} by a person: it is "
                                 "not redrafted")
            call_key, version = self._key("call_id", call_id), current.version + 1
            self._add_version(call_key, version, author, summary, now)
            if state == DRAFT:  # what approval measures people's changes against
                record = {**record, "drafted_version": version}
            self._db.execute("UPDATE sealed_summaries SET state = ?, version = ?, record = ?, disposition_key = ?, "
                             "updated_at = ? WHERE call_key = ?",
                             (state, version, self._seal(SUMMARY, call_key, {**record, "summary": summary}),
                              self._key("disposition", summary["disposition"]["code"]), now, call_key))
            self._index_entities(call_key, summary)
            self._audit.record(author, "edit" if state == EDITED else "redraft", call_id, version=version)
        return self.get(call_id)

    def approve(self, call_id: str, expected_version: int, approver: str) -> tuple[StoredSummary, float]:
        """Freeze the summary. Also returns how much people changed the AI draft (the latest one, where it was
        redrafted; a quality signal): the share of the draft's words rewritten, 0.0 (approved as drafted) to 1.0."""
        with transaction(self._db):
            _, record = self._check_writable(call_id, expected_version)
            call_key, drafted = self._key("call_id", call_id), record.get("drafted_version", 1)
            draft = self._open(VERSION, f"{call_key}/{drafted}", self._db.execute(
                "SELECT record FROM sealed_summary_versions WHERE call_key = ? AND version = ?",
                (call_key, drafted)).fetchone()["record"])["summary"]
            distance = edit_distance(draft, record["summary"])
            self._db.execute("UPDATE sealed_summaries SET state = ?, record = ?, updated_at = ? WHERE call_key = ?",
                             (APPROVED, self._seal(SUMMARY, call_key, {**record, "approved_by": approver}),
                              self._clock(), call_key))
            self._audit.record(approver, "approve", call_id, version=expected_version, edit_distance=distance)
            self._notify(APPROVED, call_id)
        return self.get(call_id), distance

    def _check_writable(self, call_id: str, expected_version: int) -> tuple[StoredSummary, dict[str, Any]]:
        """Inside the write transaction (BEGIN IMMEDIATE holds the write lock), so another process serving
        Summaries cannot change the row between this check and the update."""
        row = self._row(call_id)
        record = self._open(SUMMARY, row["call_key"], row["record"])
        current = self._stored(row, record)
        if current.state == APPROVED:
            raise StateError(f"the summary for call {call_id!r} is approved and can no longer change")
        if expected_version != current.version:
            raise ConflictError(f"the summary for call {call_id!r} is at version {current.version}, not "
                                f"{expected_version}: fetch it again and redo the change")
        return current, record

    # -- reads ----------------------------------------------------------------------------------------------------
    def exists(self, call_id: str) -> bool:
        return self._db.execute("SELECT 1 FROM sealed_summaries WHERE call_key = ?",
                                (self._key("call_id", call_id),)).fetchone() is not None

    def _row(self, call_id: str) -> sqlite3.Row:
        row = self._db.execute("SELECT * FROM sealed_summaries WHERE call_key = ?",
                               (self._key("call_id", call_id),)).fetchone()
        if row is None:
            raise NotFoundError(f"no summary for call {call_id!r}")
        return row

    def get(self, call_id: str, include_history: bool = False) -> StoredSummary:
        row = self._row(call_id)
        history: tuple[Version, ...] = ()
        if include_history:
            rows = self._db.execute("SELECT * FROM sealed_summary_versions WHERE call_key = ? ORDER BY version",
                                    (row["call_key"],)).fetchall()
            opened = [(r, self._open(VERSION, f"{r['call_key']}/{r['version']}", r["record"])) for r in rows]
            history = tuple(Version(r["version"], v["author"], v["summary"], r["created_at"]) for r, v in opened)
        return self._stored(row, self._open(SUMMARY, row["call_key"], row["record"]), history)

    def list(self, where: SummaryFilter, page_size: int = 0, offset: int = 0) -> tuple[list[StoredSummary], int | None]:
        """A page, newest first, and the offset of the next page (None on the last). Filters match blind indexes."""
        size = min(page_size or DEFAULT_PAGE, MAX_PAGE)
        clauses, values = [], []
        for attribute, column, index_field in (("agent_id", "agent_key", "agent_id"),
                                               ("disposition_code", "disposition_key", "disposition"),
                                               ("tenant", "tenant_key", "tenant"),
                                               ("customer_ref", "customer_key", "customer_ref")):
            if getattr(where, attribute):
                clauses.append(f"{column} = ?")
                values.append(self._key(index_field, getattr(where, attribute)))
        if where.entity:
            clauses.append("call_key IN (SELECT call_key FROM summary_entities WHERE entity_key = ?)")
            values.append(self._key("entity", entity_key(where.entity)))
        if where.agents is not None:
            clauses.append(f"agent_key IN ({','.join('?' * len(where.agents)) or 'NULL'})")
            values.extend(self._key("agent_id", agent) for agent in sorted(where.agents))
        if where.state:
            clauses.append("state = ?")
            values.append(where.state)
        if where.created_from is not None:
            clauses.append("created_at >= ?")
            values.append(where.created_from)
        if where.created_to is not None:
            clauses.append("created_at < ?")
            values.append(where.created_to)
        sql = "SELECT * FROM sealed_summaries" + (" WHERE " + " AND ".join(clauses) if clauses else "")
        rows = self._db.execute(sql + " ORDER BY created_at DESC, call_key LIMIT ? OFFSET ?",
                                (*values, size + 1, offset)).fetchall()
        next_offset = offset + size if len(rows) > size else None
        return [self._stored(r, self._open(SUMMARY, r["call_key"], r["record"])) for r in rows[:size]], next_offset

    def _stored(self, row: sqlite3.Row, record: dict[str, Any], history: tuple[Version, ...] = ()) -> StoredSummary:
        summary = record["summary"]
        return StoredSummary(
            call_id=record["call_id"], summary=summary, state=row["state"], version=row["version"],
            agent_id=record["agent_id"], queue=record["queue"], tenant=record["tenant"],
            disposition_code=summary["disposition"]["code"], complete=bool(row["complete"]),
            approved_by=record["approved_by"], created_at=row["created_at"], updated_at=row["updated_at"],
            history=history)

    # -- erasure --------------------------------------------------------------------------------------------------
    def call_ids_for_customer(self, customer_ref: str) -> list[str]:
        if not customer_ref:
            raise UserError("a customer reference is needed (an empty one would match every call stored without one)")
        rows = self._db.execute("SELECT call_key, record FROM sealed_summaries WHERE customer_key = ?",
                                (self._key("customer_ref", customer_ref),)).fetchall()
        return [self._open(SUMMARY, r["call_key"], r["record"])["call_id"] for r in rows]

    def erase(self, call_id: str, actor: str, reason: str) -> int:
        """Crypto-shred a call's summary and every version: the rows holding their wrapped data keys are deleted
        (secure_delete overwrites them), so no key can open what may linger elsewhere. Audited."""
        call_key = self._key("call_id", call_id)
        with transaction(self._db):
            versions = self._db.execute("DELETE FROM sealed_summary_versions WHERE call_key = ?",
                                        (call_key,)).rowcount
            self._db.execute("DELETE FROM summary_entities WHERE call_key = ?", (call_key,))
            summaries = self._db.execute("DELETE FROM sealed_summaries WHERE call_key = ?", (call_key,)).rowcount
            if summaries:
                self._audit.record(actor, "erase", call_id, reason=reason, records=summaries + versions)
        truncate_log(self._db)
        return summaries + versions

    def made_before(self, when: float) -> list[tuple[str, str]]:
        """(call id, customer reference) of the summaries made before `when` (retention)."""
        rows = self._db.execute("SELECT call_key, record FROM sealed_summaries WHERE created_at < ?",
                                (when,)).fetchall()
        records = [self._open(SUMMARY, r["call_key"], r["record"]) for r in rows]
        return [(r["call_id"], r["customer_ref"]) for r in records]

    def drop_transcript(self, call_id: str, actor: str, reason: str) -> bool:
        """Re-seal the summary and every version without its transcript, each under a fresh data key; the old
        records are overwritten. False when there was no transcript left to drop."""
        call_key = self._key("call_id", call_id)
        with transaction(self._db):
            row = self._row(call_id)
            record = self._open(SUMMARY, call_key, row["record"])
            if "transcript" not in record["summary"]:
                return False
            record["summary"].pop("transcript")
            self._db.execute("UPDATE sealed_summaries SET record = ? WHERE call_key = ?",
                             (self._seal(SUMMARY, call_key, record), call_key))
            for version in self._db.execute("SELECT version, record FROM sealed_summary_versions WHERE call_key = ?",
                                            (call_key,)).fetchall():
                record_id = f"{call_key}/{version['version']}"
                kept = self._open(VERSION, record_id, version["record"])
                kept["summary"].pop("transcript", None)
                self._db.execute("UPDATE sealed_summary_versions SET record = ? WHERE call_key = ? AND version = ?",
                                 (self._seal(VERSION, record_id, kept), call_key, version["version"]))
            self._audit.record(actor, "retention.transcript", call_id, reason=reason)
        truncate_log(self._db)
        return True

    # -- keys -----------------------------------------------------------------------------------------------------
    def sealed_rows(self) -> Iterator[SealedRow]:
        for row in self._db.execute("SELECT call_key, record FROM sealed_summaries"):
            yield SealedRow("sealed_summaries", "call_key = ?", (row["call_key"],), "record", SUMMARY,
                            row["call_key"], row["record"])
        for row in self._db.execute("SELECT call_key, version, record FROM sealed_summary_versions"):
            yield SealedRow("sealed_summary_versions", "call_key = ? AND version = ?",
                            (row["call_key"], row["version"]), "record", VERSION,
                            f"{row['call_key']}/{row['version']}", row["record"])

    @property
    def audit(self) -> AuditLog:
        return self._audit

    @property
    def vault(self) -> Vault:
        return self._vault


def entity_key(value: str) -> str:
    """An entity value as searched: case, spaces and punctuation do not count ("REF-4471 b" = "ref4471b")."""
    return "".join(character for character in str(value).casefold() if character.isalnum())


def edit_distance(draft: dict[str, Any], final: dict[str, Any]) -> float:
    """1 - the similarity of the two summaries' words (their written fields, not the transcript or bookkeeping)."""
    def words(summary: dict[str, Any]) -> list[str]:
        kept = {k: v for k, v in summary.items() if k not in _NOT_WRITTEN}
        return json.dumps(kept, sort_keys=True, ensure_ascii=False).split()

    return round(1 - difflib.SequenceMatcher(None, words(draft), words(final), autojunk=False).ratio(), 3)


_NOT_WRITTEN = {"transcript", "redactions", "evidence", "timings", "model", "generator", "audio_seconds", "call_id"}


def _index_stored_entities(db: sqlite3.Connection, store: SummaryStore) -> None:
    """A store from before the entity index: its summaries' entities indexed once, under the write lock (so two
    processes starting at once do it once)."""
    if table_exists(db, "summary_entities") or not table_exists(db, "sealed_summaries"):
        return  # indexed already, or a new store
    with transaction(db):
        if table_exists(db, "summary_entities"):
            return
        for statement in _ENTITY_SCHEMA:
            db.execute(statement)
        for row in db.execute("SELECT call_key, record FROM sealed_summaries").fetchall():
            store._index_entities(row["call_key"], store._open(SUMMARY, row["call_key"], row["record"])["summary"])


def _migrate_plaintext(db: sqlite3.Connection, store: SummaryStore) -> None:
    """Summaries stored in the clear by aftercall before the vault: sealed into the new tables, the old ones dropped
    (secure_delete zeroes their pages). Under the write lock, so two processes starting at once migrate once."""
    if not table_exists(db, "summaries"):
        return
    with transaction(db):
        if not table_exists(db, "summaries"):
            return
        for row in db.execute("SELECT * FROM summaries").fetchall():
            summary = {**json.loads(row["summary_json"]), "call_id": row["call_id"]}
            store._insert(summary, dict(row), row["state"], row["version"], row["complete"], row["approved_by"],
                          row["created_at"], row["updated_at"])
        for version in db.execute("SELECT * FROM summary_versions ORDER BY call_id, version").fetchall():
            store._add_version(store._key("call_id", version["call_id"]), version["version"], version["author"],
                               json.loads(version["summary_json"]), version["created_at"])
        db.execute("DROP TABLE summary_versions")
        db.execute("DROP TABLE summaries")
    truncate_log(db)  # the log still holds the plaintext pages' old images

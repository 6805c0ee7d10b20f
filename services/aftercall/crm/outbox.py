"""The CRM outbox: every summary event the site pushes, one row per receiver, written in the transaction of the change
it reports (the store calls `Outbox.enqueue` inside it), so an approval that rolls back leaves no event and one that
commits always has its events, across crashes and restarts. Delivery is at least once: receivers deduplicate by
event_id.

A row is pending until its receiver takes it, then deleted: the summary is the CRM's from then on, and a copy kept
here would outlive the erasure and retention the store applies (secure_delete overwrites the row). A row that failed
crm.max_attempts times is dead: a dead letter, kept (payload and all) for the console to list and retry.

The payload is sealed by the vault, a data key per row. Left clear: the receiver's URL, the event type, the state,
the attempts and times that schedule the retries, and the call's blind index (so an erasure finds its events).
"""

from __future__ import annotations

import datetime
import json
import logging
import sqlite3
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from aftercall.core.database import table_exists, transaction, truncate_log
from aftercall.core.errors import RecordUnreadableError
from aftercall.crm.config import CrmConfig
from aftercall.crm.metrics import CrmMetrics
from aftercall.review.store import StoredSummary
from aftercall.vault.envelope import Vault
from aftercall.vault.rotation import SealedRow

logger = logging.getLogger(__name__)

PENDING, DEAD = "pending", "dead"
KIND = "crm-event"  # the vault's record kind
EVENT_TYPES = {"draft": "summary.draft", "approved": "summary.approved"}  # store event -> webhook type
MAX_ERROR = 200  # characters of last_error kept
# Doublings of crm.backoff_s past which crm.max_backoff_s always wins (2**32 x 0.1 s is over 13 years); bounds the
# arithmetic for a large crm.max_attempts.
_MAX_DOUBLINGS = 32

_SCHEMA = """
CREATE TABLE IF NOT EXISTS crm_outbox (
    event_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    event_type TEXT NOT NULL,
    call_key TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_at REAL NOT NULL,
    created_at REAL NOT NULL,
    last_error TEXT NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (event_id, endpoint)
);
CREATE INDEX IF NOT EXISTS crm_outbox_due ON crm_outbox(state, endpoint, next_at);
CREATE INDEX IF NOT EXISTS crm_outbox_call ON crm_outbox(call_key);
"""


@dataclass(frozen=True)
class OutboxEvent:
    """An event claimed for one attempt at one receiver."""

    event_id: str
    endpoint: str
    event_type: str
    call_id: str
    attempts: int  # failed attempts before this one
    body: bytes  # the JSON payload, signed and sent exactly as it is


@dataclass(frozen=True)
class DeadLetter:
    """An event a receiver failed to take crm.max_attempts times, as the console lists it (never the summary)."""

    event_id: str
    endpoint: str
    event_type: str
    call_id: str  # empty when the payload no longer opens (its key was retired)
    attempts: int
    last_error: str
    created_at: float


class Outbox:
    def __init__(self, db: sqlite3.Connection, vault: Vault, config: CrmConfig, metrics: CrmMetrics,
                 clock: Callable[[], float] = time.time):
        self._db = db  # the summary store's connection: an event commits with the change it reports
        self._vault = vault
        self._config = config
        self._metrics = metrics
        self._clock = clock
        self._field_map = config.field_mapping()
        # A URL listed twice is one receiver: it gets each event once.
        self.endpoints: tuple[str, ...] = tuple(dict.fromkeys(config.endpoints))
        # Called when events become due at once (enqueued, retried); WebhookDelivery sets its wake() here. Called
        # inside the store's transaction: it must only schedule work, never wait for it.
        self.on_due: Callable[[], None] | None = None
        db.executescript(_SCHEMA)
        self._bury_orphans()
        self.publish_counts()

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """In the caller's transaction when one is open (the store's, around `enqueue`), else in one of our own."""
        if self._db.in_transaction:
            yield
        else:
            with transaction(self._db):
                yield

    def _bury_orphans(self) -> None:
        """Pending events for a receiver crm.endpoints no longer lists become dead letters: the site took that URL
        away, so its summaries are not sent there; the console shows them (and can discard them)."""
        where, values = "state = ?", [PENDING]
        if self.endpoints:
            where += f" AND endpoint NOT IN ({','.join('?' * len(self.endpoints))})"
            values.extend(self.endpoints)
        with self._writing():
            buried = self._db.execute(f"UPDATE crm_outbox SET state = ?, last_error = ? WHERE {where}",
                                      (DEAD, "the receiver is no longer in crm.endpoints", *values)).rowcount
        if buried:
            logger.warning("%d CRM events were pending for receivers no longer in crm.endpoints: now dead letters",
                           buried)

    # -- events in ------------------------------------------------------------------------------------------------
    def enqueue(self, event: str, stored: StoredSummary) -> None:
        """The store's listener (`store.subscribe(outbox.enqueue)`): for an event crm.events lists, one pending row
        per receiver, all with the same payload and event id, in the store's open transaction."""
        if event not in self._config.events or not self.endpoints:
            return
        event_id, now = str(uuid.uuid4()), self._clock()
        body = json.dumps(self._payload(event_id, event, stored), ensure_ascii=False).encode("utf-8")
        call_key = self._vault.blind_index("call_id", stored.call_id)
        with self._writing():
            for endpoint in self.endpoints:
                self._db.execute(
                    "INSERT INTO crm_outbox (event_id, endpoint, event_type, call_key, state, attempts, next_at, "
                    "created_at, last_error, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (event_id, endpoint, EVENT_TYPES[event], call_key, PENDING, 0, now, now, "",
                     self._vault.seal(body, KIND, _record_id(event_id, endpoint))))
        self._wake()

    def _payload(self, event_id: str, event: str, stored: StoredSummary) -> dict[str, Any]:
        return {"event_id": event_id, "type": EVENT_TYPES[event], "occurred_at": _utc_iso(stored.updated_at),
                "call_id": stored.call_id, "version": stored.version, "state": stored.state,
                "agent_id": stored.agent_id, "queue": stored.queue, "tenant": stored.tenant,
                "disposition_code": stored.disposition_code, "approved_by": stored.approved_by,
                "summary": self._crm_fields(stored.summary)}

    def _crm_fields(self, summary: dict[str, Any]) -> dict[str, Any]:
        """The summary's top-level fields under the names crm.field_map gives them; with crm.mapped_only, only
        those. An unmapped field whose name a mapped one takes is left out: the mapping is the site's choice."""
        mapped = {target: summary[source] for source, target in self._field_map.items() if source in summary}
        if self._config.mapped_only:
            return mapped
        kept = {name: value for name, value in summary.items() if name not in self._field_map and name not in mapped}
        return {**kept, **mapped}

    def _wake(self) -> None:
        if self.on_due is not None:
            self.on_due()

    # -- the delivery loop ----------------------------------------------------------------------------------------
    def claim_due(self, endpoint: str, limit: int, lease_s: float) -> list[OutboxEvent]:
        """Up to `limit` of the receiver's pending events whose time has come, longest due first, each leased for
        `lease_s`: its next attempt time moves past the lease, so neither the next poll nor another appliance
        sharing the store sends it meanwhile, and an attempt cut short by a crash is due again when it ends."""
        if limit < 1 or lease_s <= 0:
            raise ValueError(f"claim_due needs a positive limit and lease, got {limit} and {lease_s}")
        now, claimed = self._clock(), []
        with self._writing():
            rows = self._db.execute(
                "SELECT event_id, event_type, attempts, payload FROM crm_outbox WHERE state = ? AND endpoint = ? "
                "AND next_at <= ? ORDER BY next_at LIMIT ?", (PENDING, endpoint, now, limit)).fetchall()
            for row in rows:
                key = (row["event_id"], endpoint)
                try:
                    body = self._vault.open(row["payload"], KIND, _record_id(*key))
                except RecordUnreadableError:
                    # Retrying cannot help; a dead letter shows it where a loop of failed attempts would not. (The
                    # error's text is not logged: the record id it names holds the receiver's URL.)
                    logger.warning("CRM event %s: its payload does not open; it is now a dead letter", row["event_id"])
                    self._db.execute("UPDATE crm_outbox SET state = ?, last_error = ? WHERE event_id = ? AND "
                                     "endpoint = ?", (DEAD, "the payload does not open (altered, or its key retired)",
                                                      *key))
                    continue
                self._db.execute("UPDATE crm_outbox SET next_at = ? WHERE event_id = ? AND endpoint = ?",
                                 (now + lease_s, *key))
                claimed.append(OutboxEvent(row["event_id"], endpoint, row["event_type"], json.loads(body)["call_id"],
                                           row["attempts"], body))
        return claimed

    def seconds_until_due(self, endpoints: Iterable[str]) -> float | None:
        """How long until one of these receivers' pending events is due (0: now); None when none is pending."""
        endpoints = tuple(endpoints)
        if not endpoints:
            return None
        row = self._db.execute(f"SELECT MIN(next_at) AS next_at FROM crm_outbox WHERE state = ? AND endpoint IN "
                               f"({','.join('?' * len(endpoints))})", (PENDING, *endpoints)).fetchone()
        return None if row["next_at"] is None else max(0.0, row["next_at"] - self._clock())

    def delivered(self, event: OutboxEvent) -> None:
        # Deleted rather than kept as delivered: see the module's docstring.
        with self._writing():
            self._db.execute("DELETE FROM crm_outbox WHERE event_id = ? AND endpoint = ?",
                             (event.event_id, event.endpoint))
        self.publish_counts()

    def failed(self, event: OutboxEvent, error: str) -> str | None:
        """A failed attempt: the event is due again after `backoff_s(attempts)`, or after crm.max_attempts it is a
        dead letter. Returns its state now (None: erased or discarded meanwhile). `error` is what the console shows:
        a status code, or an exception's class and reason; never the receiver's answer, which could echo data."""
        now = self._clock()
        with self._writing():
            row = self._db.execute("SELECT attempts FROM crm_outbox WHERE event_id = ? AND endpoint = ? AND state = ?",
                                   (event.event_id, event.endpoint, PENDING)).fetchone()
            if row is None:
                return None
            attempts = row["attempts"] + 1
            state = DEAD if attempts >= self._config.max_attempts else PENDING
            self._db.execute("UPDATE crm_outbox SET state = ?, attempts = ?, next_at = ?, last_error = ? "
                             "WHERE event_id = ? AND endpoint = ?",
                             (state, attempts, now + self.backoff_s(attempts), error[:MAX_ERROR], event.event_id,
                              event.endpoint))
        self.publish_counts()
        return state

    def backoff_s(self, attempts: int) -> float:
        """The wait after the `attempts`-th failure: crm.backoff_s, doubled after each further one, at most
        crm.max_backoff_s."""
        doublings = min(max(attempts - 1, 0), _MAX_DOUBLINGS)
        return min(self._config.backoff_s * 2 ** doublings, self._config.max_backoff_s)

    def release(self, event: OutboxEvent) -> None:
        """An attempt abandoned unfinished (the service stopping): due again at once, and not counted."""
        with self._writing():
            self._db.execute("UPDATE crm_outbox SET next_at = ? WHERE event_id = ? AND endpoint = ? AND state = ?",
                             (self._clock(), event.event_id, event.endpoint, PENDING))

    # -- the console ----------------------------------------------------------------------------------------------
    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The newest dead letters first, at most `limit`."""
        if limit < 1:
            raise ValueError(f"dead_letters needs a positive limit, got {limit}")
        rows = self._db.execute("SELECT event_id, endpoint, event_type, attempts, last_error, created_at, payload "
                                "FROM crm_outbox WHERE state = ? ORDER BY created_at DESC, event_id, endpoint LIMIT ?",
                                (DEAD, limit)).fetchall()
        return [DeadLetter(r["event_id"], r["endpoint"], r["event_type"], self._call_id(r), r["attempts"],
                           r["last_error"], r["created_at"]) for r in rows]

    def _call_id(self, row) -> str:
        try:
            body = self._vault.open(row["payload"], KIND, _record_id(row["event_id"], row["endpoint"]))
        except RecordUnreadableError:
            return ""
        return json.loads(body)["call_id"]

    def retry(self, event_id: str, endpoint: str | None = None) -> int:
        """The console's retry: the event's dead letters (or only its one for `endpoint`) pending again, due at once,
        with crm.max_attempts attempts ahead of them. A receiver crm.endpoints no longer lists is not retried.
        Returns how many were revived (0: no such dead letter)."""
        where, values = self._dead_letter(event_id, endpoint)
        if not self.endpoints:
            return 0
        where += f" AND endpoint IN ({','.join('?' * len(self.endpoints))})"
        with self._writing():
            revived = self._db.execute(f"UPDATE crm_outbox SET state = ?, attempts = 0, next_at = ?, last_error = '' "
                                       f"WHERE {where}", (PENDING, self._clock(), *values, *self.endpoints)).rowcount
        self.publish_counts()
        if revived:
            self._wake()
        return revived

    def discard(self, event_id: str, endpoint: str | None = None) -> int:
        """The console's discard: the event's dead letters (or only its one for `endpoint`) deleted, never sent.
        Returns how many."""
        where, values = self._dead_letter(event_id, endpoint)
        with self._writing():
            discarded = self._db.execute(f"DELETE FROM crm_outbox WHERE {where}", values).rowcount
        self.publish_counts()
        return discarded

    @staticmethod
    def _dead_letter(event_id: str, endpoint: str | None) -> tuple[str, tuple[str, ...]]:
        if not event_id:
            raise ValueError("an event id is needed (an empty one would match no dead letter)")
        if endpoint is None:
            return "state = ? AND event_id = ?", (DEAD, event_id)
        return "state = ? AND event_id = ? AND endpoint = ?", (DEAD, event_id, endpoint)

    def counts(self) -> dict[str, int]:
        """Events in the outbox by state: {"pending": n, "dead": n}."""
        counts = {PENDING: 0, DEAD: 0}
        for row in self._db.execute("SELECT state, COUNT(*) AS events FROM crm_outbox GROUP BY state"):
            counts[row["state"]] = row["events"]
        return counts

    def publish_counts(self) -> None:
        """The aftercall_crm_outbox_events gauge from `counts()`."""
        for state, events in self.counts().items():
            self._metrics.crm_outbox.labels(state=state).set(events)

    # -- erasure and keys -----------------------------------------------------------------------------------------
    def erase(self, call_id: str) -> int:
        """Delete every event of a call, pending or dead; see `erase_events`."""
        erased = erase_events(self._db, self._vault, call_id)
        self.publish_counts()
        return erased

    def sealed_rows(self) -> Iterator[SealedRow]:
        return sealed_event_rows(self._db)


# Erasure and key rotation run from the admin commands too, which have no [crm] to build an Outbox with (and must
# not bury a running appliance's events as orphans): they work on the table alone.
def erase_events(db: sqlite3.Connection, vault: Vault, call_id: str) -> int:
    """Delete every event of a call, pending or dead (crypto-shredding: their data keys go with the rows), for the
    erasure and retention that delete its summary. Returns how many."""
    if not table_exists(db, "crm_outbox"):
        return 0
    with transaction(db):
        erased = db.execute("DELETE FROM crm_outbox WHERE call_key = ?",
                            (vault.blind_index("call_id", call_id),)).rowcount
    truncate_log(db)  # the log still holds the deleted rows' pages
    return erased


def sealed_event_rows(db: sqlite3.Connection) -> Iterator[SealedRow]:
    """The outbox's sealed payloads, for key rotation (`aftercall keys rotate` re-wraps them with the store's)."""
    if not table_exists(db, "crm_outbox"):
        return
    for row in db.execute("SELECT event_id, endpoint, payload FROM crm_outbox").fetchall():
        key = (row["event_id"], row["endpoint"])
        yield SealedRow("crm_outbox", "event_id = ? AND endpoint = ?", key, "payload", KIND, _record_id(*key),
                        row["payload"])


def _record_id(event_id: str, endpoint: str) -> str:
    """The row's identity in its sealed payload's associated data: a payload moved to another row does not open."""
    return f"{event_id}|{endpoint}"


def _utc_iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")

"""The audit trail: an append-only table of who did what to which record, when; every entry's MAC covers the one
before it (an HMAC chain keyed from the key file), so an entry changed, removed or moved shows in `verify`.

Who acted and which call, with the rest of the detail, are sealed by the vault (blind indexes let an auditor pick
out one person's or one call's entries); the action and the time stay clear. `aftercall audit list` decrypts.
Cutting entries off the end leaves a valid shorter chain: `verify` prints the head (count and last MAC) so it can be
kept elsewhere and checked with `--expect-head`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any, Iterator

from aftercall.core.database import transaction
from aftercall.core.errors import RecordUnreadableError
from aftercall.vault.envelope import Vault
from aftercall.vault.rotation import SealedRow

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_log (
    seq INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    actor_key TEXT NOT NULL,
    action TEXT NOT NULL,
    target_key TEXT NOT NULL,
    detail BLOB NOT NULL,
    mac TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_target ON audit_log(target_key);
CREATE INDEX IF NOT EXISTS audit_log_actor ON audit_log(actor_key);
"""
_GENESIS = "0" * 64


@dataclass(frozen=True)
class Verdict:
    entries: int
    head: str  # the last entry's MAC (the genesis value for an empty trail)
    problem: str | None  # None: intact


class AuditLog:
    def __init__(self, db: sqlite3.Connection, vault: Vault, clock=time.time):
        self.db = db  # the store's connection: a change and its entry commit together
        self._vault = vault
        self._clock = clock
        db.executescript(_SCHEMA)

    def _chain_key(self) -> bytes:
        # From the blind-index key, which never rotates: the chain stays verifiable across KEK rotations.
        return hmac.new(self._vault.keys.index_key, b"aftercall audit chain", hashlib.sha256).digest()

    def record(self, actor: str, action: str, target: str = "", **detail: Any) -> None:
        """Append one entry (in its own transaction, or in the caller's when one is open)."""
        if self.db.in_transaction:
            self._append(actor, action, target, detail)
        else:
            with transaction(self.db):
                self._append(actor, action, target, detail)

    def _append(self, actor: str, action: str, target: str, detail: dict) -> None:
        last = self.db.execute("SELECT seq, mac FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
        seq, previous = (last["seq"] + 1, last["mac"]) if last else (1, _GENESIS)
        plaintext = json.dumps({"actor": actor, "target": target, **detail}, ensure_ascii=False).encode("utf-8")
        row = (seq, self._clock(), self._vault.blind_index("actor", actor), action,
               self._vault.blind_index("call_id", target) if target else "")
        mac = self._mac(previous, *row, plaintext)
        self.db.execute("INSERT INTO audit_log VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (*row, self._vault.seal(plaintext, "audit", str(seq)), mac))

    def _mac(self, previous: str, seq: int, at: float, actor_key: str, action: str, target_key: str,
             detail: bytes) -> str:
        """Over the detail's plaintext, not its ciphertext: a key rotation re-wraps entries without breaking the
        chain."""
        message = json.dumps([previous, seq, repr(at), actor_key, action, target_key,
                              hashlib.sha256(detail).hexdigest()]).encode("utf-8")
        return hmac.new(self._chain_key(), message, hashlib.sha256).hexdigest()

    def entries(self, target: str = "") -> list[dict[str, Any]]:
        """Readable entries (for an auditor), optionally of one call only."""
        sql, values = "SELECT * FROM audit_log", ()
        if target:
            sql, values = sql + " WHERE target_key = ?", (self._vault.blind_index("call_id", target),)
        return [{"seq": r["seq"], "at": r["at"], "action": r["action"],
                 **json.loads(self._vault.open(r["detail"], "audit", str(r["seq"])))}
                for r in self.db.execute(sql + " ORDER BY seq", values)]

    def sealed_rows(self) -> Iterator[SealedRow]:
        for row in self.db.execute("SELECT seq, detail FROM audit_log"):
            yield SealedRow("audit_log", "seq = ?", (row["seq"],), "detail", "audit", str(row["seq"]), row["detail"])

    def verify(self) -> Verdict:
        previous, expected_seq, count = _GENESIS, 1, 0
        for row in self.db.execute("SELECT * FROM audit_log ORDER BY seq"):
            if row["seq"] != expected_seq:
                return Verdict(count, previous, f"entry {expected_seq} is missing (removed): the next one is "
                                                f"{row['seq']}")
            try:
                detail = self._vault.open(row["detail"], "audit", str(row["seq"]))
            except RecordUnreadableError as exc:
                return Verdict(count, previous, f"entry {row['seq']}: its detail does not open here, so it was "
                                                f"modified or moved ({exc})")
            mac = self._mac(previous, row["seq"], row["at"], row["actor_key"], row["action"], row["target_key"],
                            detail)
            if not hmac.compare_digest(mac, row["mac"]):
                return Verdict(count, previous, f"entry {row['seq']}: its MAC does not match (entry modified, or "
                                                "an entry before it removed or moved)")
            previous, expected_seq, count = row["mac"], expected_seq + 1, count + 1
        return Verdict(count, previous, None)

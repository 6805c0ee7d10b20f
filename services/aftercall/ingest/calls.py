"""Every accepted call is a durable job: a row that moves receiving -> received -> transcribed -> done (or failed),
with the redacted transcript checkpointed so a restart after recognition does not recognise again, and each stretch
of speech recognised during a live call checkpointed (sealed: it holds what was said, before redaction) so a
restart does not recognise it again either.

The job's metadata (the caller's number, agent, customer reference) and its transcript checkpoint are sealed by the
vault; both are emptied once the summary is stored. Rows written before the vault (plain JSON) are still read."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from aftercall.core.audio import Encoding
from aftercall.core.errors import AlreadyExistsError
from aftercall.core.transcript import Word
from aftercall.ingest.errors import StreamProtocolError
from aftercall.ingest.spool import AudioFormat
from aftercall.vault.envelope import Vault
from aftercall.vault.rotation import SealedRow

RECEIVING, RECEIVED, TRANSCRIBED, DONE, FAILED = "receiving", "received", "transcribed", "done", "failed"
# States a restart resumes: audio (or its redacted transcript) is on disk and no summary exists yet.
RESUMABLE = (RECEIVING, RECEIVED, TRANSCRIBED)
# Safe as a directory name: no dots or slashes at the start, nothing outside this set.
_CALL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    call_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    source TEXT NOT NULL,
    encoding TEXT,
    sample_rate INTEGER,
    channels INTEGER,
    roles TEXT NOT NULL,
    metadata TEXT NOT NULL,
    taxonomy_toml TEXT NOT NULL DEFAULT '',
    complete INTEGER NOT NULL DEFAULT 1,
    audio_seconds REAL NOT NULL DEFAULT 0,
    received_at REAL,
    transcript TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_state ON calls(state);
CREATE TABLE IF NOT EXISTS recognised_groups (
    call_id TEXT NOT NULL,
    channel INTEGER NOT NULL,
    spans TEXT NOT NULL,
    segments BLOB NOT NULL,
    PRIMARY KEY (call_id, channel, spans)
);
"""


def check_call_id(call_id: str) -> str:
    if not _CALL_ID.fullmatch(call_id):
        raise StreamProtocolError(f"call_id {call_id[:40]!r} is invalid: 1-128 characters of A-Z a-z 0-9 . _ : - "
                                  "starting with a letter or digit")
    return call_id


@dataclass(frozen=True)
class CallJob:
    call_id: str
    state: str
    source: str
    audio_format: AudioFormat | None
    roles: tuple[str, ...]
    metadata: dict[str, Any]
    taxonomy_toml: str = ""
    complete: bool = True
    audio_seconds: float = 0.0
    received_at: float | None = None
    transcript: dict[str, Any] | None = field(default=None, repr=False)
    attempts: int = 0
    error: str | None = None


class CallStore:
    def __init__(self, db: sqlite3.Connection, vault: Vault, clock=time.time):
        self._db = db
        self._vault = vault
        self._clock = clock
        db.executescript(_SCHEMA)

    def _seal(self, kind: str, call_id: str, document: Any) -> bytes:
        return self._vault.seal(json.dumps(document, ensure_ascii=False).encode("utf-8"), kind, call_id)

    def _open(self, kind: str, call_id: str, value: bytes | str | None) -> Any:
        if value is None:
            return None
        if isinstance(value, str):  # written before the vault
            return json.loads(value)
        return json.loads(self._vault.open(value, kind, call_id))

    def create(self, job: CallJob) -> None:
        now = self._clock()
        fmt = job.audio_format
        try:
            self._db.execute(
                "INSERT INTO calls (call_id, state, source, encoding, sample_rate, channels, roles, metadata, "
                "taxonomy_toml, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job.call_id, job.state, job.source, fmt.encoding.value if fmt else None,
                 fmt.sample_rate if fmt else None, fmt.channels if fmt else None, json.dumps(job.roles),
                 self._seal("call-metadata", job.call_id, job.metadata), job.taxonomy_toml, now, now))
        except sqlite3.IntegrityError as exc:
            raise AlreadyExistsError(f"call_id {job.call_id!r} already exists") from exc

    def get(self, call_id: str) -> CallJob | None:
        row = self._db.execute("SELECT * FROM calls WHERE call_id = ?", (call_id,)).fetchone()
        return None if row is None else self._job(row)

    def delete(self, call_id: str) -> None:
        self._db.execute("DELETE FROM calls WHERE call_id = ?", (call_id,))
        self._forget_recognised(call_id)

    def checkpoint_group(self, call_id: str, channel: int, spans: tuple, segments: list[list[Word]]) -> None:
        """One stretch of a channel recognised during the call: its speech spans (16 kHz sample offsets) and words."""
        words = [[[w.text, w.start, w.end, w.probability] for w in segment] for segment in segments]
        self._db.execute("INSERT OR REPLACE INTO recognised_groups (call_id, channel, spans, segments) "
                         "VALUES (?, ?, ?, ?)", (call_id, channel, json.dumps(spans),
                                                 self._seal("call-recognised", call_id, words)))

    def _forget_recognised(self, call_id: str) -> None:
        self._db.execute("DELETE FROM recognised_groups WHERE call_id = ?", (call_id,))

    def recognised_groups(self, call_id: str, channels: int) -> list[dict[tuple, list[list[Word]]]]:
        """Per channel, the stretches checkpointed during the call, by their spans."""
        found: list[dict[tuple, list[list[Word]]]] = [{} for _ in range(channels)]
        for row in self._db.execute("SELECT channel, spans, segments FROM recognised_groups WHERE call_id = ?",
                                    (call_id,)):
            if row["channel"] < channels:
                spans = tuple(tuple(span) for span in json.loads(row["spans"]))
                found[row["channel"]][spans] = [[Word(*w) for w in segment]
                                                for segment in self._open("call-recognised", call_id, row["segments"])]
        return found

    def mark_received(self, call_id: str, audio_seconds: float, complete: bool) -> None:
        self._update(call_id, state=RECEIVED, audio_seconds=audio_seconds, complete=int(complete),
                     received_at=self._clock())

    def checkpoint_transcript(self, call_id: str, transcript: dict[str, Any]) -> None:
        # The redacted transcript replaces what it was made from.
        self._update(call_id, state=TRANSCRIBED, transcript=self._seal("call-transcript", call_id, transcript))
        self._forget_recognised(call_id)

    def mark_done(self, call_id: str) -> None:
        # The transcript lives on in the summary; the checkpoint is no longer needed, nor the caller's numbers
        # (ANI/DNIS are personal data the summary record does not carry).
        self._update(call_id, state=DONE, transcript=None, error=None,
                     metadata=self._seal("call-metadata", call_id, {}))
        self._forget_recognised(call_id)

    def record_failure(self, call_id: str, error: str, max_attempts: int) -> tuple[int, bool]:
        """Count a failed attempt; after `max_attempts` the call is failed (kept for an operator). -> (n, final)"""
        job = self.get(call_id)
        attempts = (job.attempts if job else 0) + 1
        final = attempts >= max_attempts
        self._update(call_id, attempts=attempts, error=error[:500], **({"state": FAILED} if final else {}))
        return attempts, final

    def resumable(self) -> list[CallJob]:
        rows = self._db.execute(
            f"SELECT * FROM calls WHERE state IN ({','.join('?' * len(RESUMABLE))}) ORDER BY created_at",
            RESUMABLE).fetchall()
        return [self._job(row) for row in rows]

    def _job(self, row: sqlite3.Row) -> CallJob:
        fmt = None
        if row["encoding"]:
            fmt = AudioFormat(Encoding(row["encoding"]), row["sample_rate"], row["channels"])
        return CallJob(
            call_id=row["call_id"], state=row["state"], source=row["source"], audio_format=fmt,
            roles=tuple(json.loads(row["roles"])),
            metadata=self._open("call-metadata", row["call_id"], row["metadata"]),
            taxonomy_toml=row["taxonomy_toml"], complete=bool(row["complete"]), audio_seconds=row["audio_seconds"],
            received_at=row["received_at"], transcript=self._open("call-transcript", row["call_id"], row["transcript"]),
            attempts=row["attempts"], error=row["error"])

    def failed_before(self, when: float) -> list[str]:
        """Calls that failed for good and were last touched before `when` (their audio is kept for an operator)."""
        rows = self._db.execute("SELECT call_id FROM calls WHERE state = ? AND updated_at < ?", (FAILED, when))
        return [row["call_id"] for row in rows]

    def sealed_rows(self) -> Iterator[SealedRow]:
        for row in self._db.execute("SELECT call_id, metadata, transcript FROM calls"):
            for column, kind in (("metadata", "call-metadata"), ("transcript", "call-transcript")):
                if isinstance(row[column], bytes):  # None, or plain JSON from before the vault, holds no key
                    yield SealedRow("calls", "call_id = ?", (row["call_id"],), column, kind, row["call_id"],
                                    row[column])
        for row in self._db.execute("SELECT call_id, channel, spans, segments FROM recognised_groups"):
            yield SealedRow("recognised_groups", "call_id = ? AND channel = ? AND spans = ?",
                            (row["call_id"], row["channel"], row["spans"]), "segments", "call-recognised",
                            row["call_id"], row["segments"])

    def _update(self, call_id: str, **values: Any) -> None:
        values["updated_at"] = self._clock()
        assignments = ", ".join(f"{key} = ?" for key in values)
        self._db.execute(f"UPDATE calls SET {assignments} WHERE call_id = ?", (*values.values(), call_id))



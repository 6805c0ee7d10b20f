"""`aftercall import DIR`: a folder of finished recordings summarised in bulk, each file exactly once.

Each recording goes to the ingest service by `SubmitRecording` under a call id made from its content
(`import-` + the start of its SHA-256). The service keeps every call id it has taken, so a file imported before (by
this run, an earlier one, another importer, or under another name) is refused as ALREADY_EXISTS and counted as
imported: nothing is summarised twice, and no ledger of our own can disagree with the store. A file is answered
once it is durable on the appliance; the summaries follow in the background.

Beside a recording, `NAME.json` (e.g. `call-0001.wav.json`) may give its metadata: agent_id, queue, tenant,
customer_ref, ani, dnis, and started_at (ISO 8601).

With `--watch` the folder is looked at every few seconds and a file is taken once its size and modification time
have stayed the same between two looks (a recorder may still be writing it).
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from aftercall.core.documents import parse_json
from aftercall.core.errors import UserError
from aftercall.ingest.wire import ROLE_CODES
from aftercall.v1 import ingest_pb2 as pb
from aftercall.v1 import ingest_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

# What core.decode reads; anything else in the folder (notes, sidecars, partial downloads) is not a recording.
RECORDING_SUFFIXES = frozenset({".wav", ".mp3", ".flac", ".ogg", ".opus", ".m4a"})
SIDECAR_SUFFIX = ".json"
_METADATA_KEYS = ("agent_id", "queue", "tenant", "customer_ref", "ani", "dnis")
_MAX_SIDECAR_BYTES = 64 * 1024
# The service is busy (its queue of calls to process is full) or restarting: the same file is offered again after
# a pause that doubles up to this, so that no recording is skipped because the appliance was busy.
_MAX_PAUSE_S = 30.0
_BUSY = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED)

ACCEPTED, ALREADY, REFUSED = "accepted", "already imported", "refused"


@dataclass
class ImportCounts:
    accepted: int = 0
    already: int = 0
    refused: int = 0


def recordings(root: Path) -> list[Path]:
    """The recordings under `root` (sub-folders too), in a stable order; hidden files and folders are skipped."""
    return sorted(path for path in root.rglob("*")
                  if path.suffix.lower() in RECORDING_SUFFIXES and path.is_file()
                  and not any(part.startswith(".") for part in path.relative_to(root).parts))


def call_id_for(content: bytes) -> str:
    return "import-" + hashlib.sha256(content).hexdigest()[:32]


def sidecar_metadata(recording: Path) -> pb.CallMetadata:
    """The metadata in `NAME.json` beside the recording, if there is one; UserError naming the file if it is bad."""
    sidecar = recording.with_name(recording.name + SIDECAR_SUFFIX)
    if not sidecar.exists():
        return pb.CallMetadata()
    try:
        with sidecar.open("rb") as file:
            data = file.read(_MAX_SIDECAR_BYTES + 1)  # a stray large file is not read whole
    except OSError as exc:
        raise UserError(f"{sidecar}: cannot read it ({exc.strerror})") from None
    document = parse_json(data, str(sidecar)) if len(data) <= _MAX_SIDECAR_BYTES else None
    if not isinstance(document, dict):
        raise UserError(f"{sidecar}: must be a JSON object of at most {_MAX_SIDECAR_BYTES // 1024} KiB")
    unknown = sorted(set(document) - {*_METADATA_KEYS, "started_at"})
    if unknown or not all(isinstance(value, str) for value in document.values()):
        raise UserError(f"{sidecar}: only string values of {', '.join((*_METADATA_KEYS, 'started_at'))}"
                        + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
    metadata = pb.CallMetadata(**{key: document[key] for key in _METADATA_KEYS if key in document})
    if "started_at" in document:
        try:
            started = datetime.datetime.fromisoformat(document["started_at"].replace("Z", "+00:00"))
        except ValueError:
            raise UserError(f"{sidecar}: started_at is not an ISO 8601 time: {document['started_at']!r}") from None
        if started.tzinfo is None:
            raise UserError(f"{sidecar}: started_at needs a time zone (…Z or +01:00)")
        stamp = Timestamp()
        stamp.FromDatetime(started.astimezone(datetime.timezone.utc))
        metadata.started_at.CopyFrom(stamp)
    return metadata


class FolderImport:
    def __init__(self, channel: grpc.Channel, root: Path, roles: tuple[str, ...], report: Callable[[str], None],
                 stop: threading.Event | None = None, max_attempts: int = 10):
        if not root.is_dir():
            raise UserError(f"{root}: not a folder")
        self._stub = pb_grpc.CallIngestStub(channel)
        self._root = root
        self._roles = [ROLE_CODES[role] for role in roles]
        self._report = report
        self._stop = stop or threading.Event()
        self._max_attempts = max_attempts  # per file and run, while the appliance is busy or unreachable
        self.counts = ImportCounts()

    def run_once(self) -> ImportCounts:
        """Every recording in the folder now, with progress; the counts of this run."""
        files = recordings(self._root)
        self._report(f"import: {len(files)} recording(s) in {self._root}")
        for index, path in enumerate(files, 1):
            if self._stop.is_set():
                break
            self._import(path, f"[{index}/{len(files)}] ")
        return self.counts

    def watch(self, interval_s: float) -> ImportCounts:
        """Import what arrives until `stop` is set: each file once it has stopped changing."""
        seen: dict[Path, tuple[int, int]] = {}  # size and mtime at the last look
        done: dict[Path, tuple[int, int]] = {}  # ... when it was imported (a file replaced later is a new one)
        self._report(f"import: watching {self._root} every {interval_s:g} s")
        while not self._stop.is_set():
            for path in recordings(self._root):
                try:
                    stat = path.stat()
                except OSError:
                    continue  # gone between the listing and now
                state = (stat.st_size, stat.st_mtime_ns)
                if done.get(path) != state and seen.get(path) == state:
                    self._import(path, "")
                    done[path] = state
                seen[path] = state
            self._stop.wait(interval_s)
        return self.counts

    def _import(self, path: Path, position: str) -> None:
        name = path.relative_to(self._root)
        try:
            content = path.read_bytes()
            request = pb.SubmitRecordingRequest(call_id=call_id_for(content), wav=content, channel_roles=self._roles,
                                                metadata=sidecar_metadata(path))
        except OSError as exc:
            self._refused(f"{position}{name}", f"cannot read it ({exc.strerror})")
            return
        except UserError as exc:
            self._refused(f"{position}{name}", str(exc))
            return
        outcome, detail = self._submit(request)
        if outcome == REFUSED:
            self._refused(f"{position}{name}", detail)
            return
        if outcome == ACCEPTED:
            self.counts.accepted += 1
        else:
            self.counts.already += 1
        self._report(f"{position}{name}: {outcome}{detail} (call {request.call_id})")

    def _refused(self, what: str, why: str) -> None:
        self.counts.refused += 1
        self._report(f"{what}: {REFUSED}: {why}")

    def _submit(self, request: pb.SubmitRecordingRequest) -> tuple[str, str]:
        """(outcome, detail); ImportStopped when the appliance stays busy or unreachable."""
        pause = 1.0
        for attempt in range(1, self._max_attempts + 1):
            try:
                answer = self._stub.SubmitRecording(request, timeout=300)
                return ACCEPTED, f", {answer.audio_seconds:.1f} s of audio"
            except grpc.RpcError as exc:
                code, details = exc.code(), exc.details() or ""
                if code is grpc.StatusCode.ALREADY_EXISTS:
                    return ALREADY, ""
                if code not in _BUSY or "larger than max" in details:  # this file's fault: the next one may do
                    return REFUSED, f"{code.name}: {details}"
                if attempt == self._max_attempts or self._stop.is_set():
                    raise ImportStopped(f"the appliance answered {code.name} ({details}) {attempt} times") from None
                logger.info("import: the appliance answered %s; offering the file again in %.0f s", code.name, pause)
                self._stop.wait(pause)
                pause = min(2 * pause, _MAX_PAUSE_S)
        raise ImportStopped("stopped")


class ImportStopped(Exception):
    """The appliance stayed busy or unreachable: the run stops; the files not taken yet are taken by the next one."""

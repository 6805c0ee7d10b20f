"""The reference PBX client behind `aftercall stream`: a WAV streamed through `CallIngest.StreamCall` as a live call
would be (chunks of 20-200 ms, optionally paced in real time), summary back. Synchronous gRPC (see
`aftercall.core.rpc.client_channel`); run several in threads for load."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Iterator

import grpc

from aftercall.core.audio import SAMPLE_BYTES, read_wav
from aftercall.core.errors import AftercallError, UserError
from aftercall.core.rpc import RemoteError
from aftercall.ingest.wire import ENCODING_CODES, ROLE_CODES
from aftercall.v1 import ingest_pb2 as pb
from aftercall.v1 import ingest_pb2_grpc as pb_grpc



@dataclass
class StreamResult:
    call_id: str
    summary: dict
    audio_seconds: float
    # Seconds from sending CallEnd to receiving the summary: the post-call latency a PBX sees.
    post_call_latency_s: float


def stream_call(channel: grpc.Channel, wav: bytes, call_id: str | None = None,
                      roles: tuple[str, ...] = ("agent", "customer"), chunk_ms: int = 100,
                      speed: float | None = None, metadata: dict[str, str] | None = None,
                      on_event: Callable[[pb.CallEvent], None] | None = None, interim: bool = False) -> StreamResult:
    """Stream one recording. `speed`: None = as fast as flow control allows, 1.0 = real time, 2.0 = twice that."""
    if not 20 <= chunk_ms <= 1000:
        raise UserError(f"--chunk-ms must be between 20 and 1000, got {chunk_ms}")
    if speed is not None and speed <= 0:
        raise UserError(f"--speed must be positive, got {speed}")
    audio = read_wav(wav)
    call_id = call_id or f"call-{uuid.uuid4().hex[:12]}"
    channel_roles = roles[: audio.channels]
    frame = SAMPLE_BYTES[audio.encoding] * audio.channels
    chunk_bytes = audio.sample_rate * chunk_ms // 1000 * frame
    ended_at: list[float] = []

    def messages() -> Iterator[pb.CallAudio]:
        yield pb.CallAudio(start=pb.CallStart(
            call_id=call_id, encoding=ENCODING_CODES[audio.encoding], sample_rate_hz=audio.sample_rate,
            channel_roles=[ROLE_CODES[r] for r in channel_roles], metadata=pb.CallMetadata(**(metadata or {})),
            interim_results=interim))
        started = time.monotonic()
        for sequence, offset in enumerate(range(0, len(audio.payload), chunk_bytes)):
            if speed is not None:
                due = started + sequence * chunk_ms / 1000 / speed
                time.sleep(max(0.0, due - time.monotonic()))
            yield pb.CallAudio(chunk=pb.AudioChunk(sequence=sequence, audio=audio.payload[offset : offset + chunk_bytes]))
        ended_at.append(time.monotonic())
        yield pb.CallAudio(end=pb.CallEnd(reason="hangup"))

    stub = pb_grpc.CallIngestStub(channel)
    result = StreamResult(call_id, {}, 0.0, 0.0)
    try:
        for event in stub.StreamCall(messages()):
            kind = event.WhichOneof("event")
            if on_event is not None:
                on_event(event)
            if kind == "received":
                result.audio_seconds = event.received.audio_seconds
            elif kind == "summary":
                result.summary = json.loads(event.summary.summary_json)
                result.post_call_latency_s = time.monotonic() - ended_at[0]
    except grpc.RpcError as exc:
        raise RemoteError(exc) from exc
    if not result.summary:
        raise AftercallError("the server closed the stream without a summary")
    return result

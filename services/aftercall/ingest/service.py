"""`aftercall.v1.CallIngest`: live call streams and finished recordings in; redacted transcript and summary out.

A call is accepted only when there is room (active streams, calls waiting, disk). From CallStart on, audio goes to
disk as it arrives; a stream that breaks off (error, cancel, a client that vanishes or goes silent) still has its
received audio summarised, flagged incomplete. Each stream's memory is one chunk: gRPC flow control holds the rest
back in the client.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import AsyncIterator

import grpc

from aftercall.core.audio import SAMPLE_BYTES, SUPPORTED_RATES
from aftercall.core.config import AudioConfig
from aftercall.core.decode import recording_wav
from aftercall.core.errors import (AudioFormatError, CapacityError, DiskFullError, StreamTimeoutError, UserError,
                                   disk_full_is_capacity, is_disk_full)
from aftercall.core.logsetup import call_id_var
from aftercall.core.rpc import ServiceBinding, timestamp_seconds
from aftercall.core.transcript import Turn
from aftercall.ingest.calls import RECEIVING, CallJob, CallStore, check_call_id
from aftercall.ingest.config import IngestConfig
from aftercall.ingest.errors import StreamProtocolError
from aftercall.ingest.live import LiveRecognition, LiveWorkers
from aftercall.ingest.metrics import IngestMetrics
from aftercall.ingest.processor import CallProcessor
from aftercall.ingest.spool import AudioFormat, Spool, StreamSpool
from aftercall.ingest.wire import ENCODINGS, ROLES
from aftercall.pipeline import Pipeline
from aftercall.review.service import to_proto
from aftercall.summarise.taxonomy import parse_taxonomy
from aftercall.transcribe.base import IncrementalTranscriber, StreamingTranscriber
from aftercall.v1 import ingest_pb2 as pb
from aftercall.v1 import ingest_pb2_grpc as pb_grpc
from aftercall.vault.access import AccessPolicy

logger = logging.getLogger(__name__)

_DIRECTIONS = {pb.CALL_DIRECTION_INBOUND: "inbound", pb.CALL_DIRECTION_OUTBOUND: "outbound"}
_NOT_STORED = "the data disk is full; the call could not be stored"
_CUT_OFF = "the data disk is full; the call was cut off, and what arrived is summarised once there is room"
_FREE_SPACE_CHECK_S = 0.25  # free space is looked up at most this often while streams write (not once a chunk)


def _roles(values, default: tuple[str, ...], channels: int | None) -> tuple[str, ...]:
    if not values:
        return default
    if any(v not in ROLES for v in values):
        raise UserError("channel_roles: every channel needs AGENT or CUSTOMER")
    roles = tuple(ROLES[v] for v in values)
    if channels is not None and len(roles) != channels:
        raise UserError(f"channel_roles names {len(roles)} channel(s) but the audio has {channels}")
    if len(roles) == 2 and sorted(roles) != ["agent", "customer"]:
        raise UserError("channel_roles: a stereo call needs one AGENT and one CUSTOMER channel")
    if len(roles) > 2:
        raise UserError(f"channel_roles: 1 or 2 channels, got {len(roles)}")
    return roles


def _metadata(message: pb.CallMetadata, max_chars: int, now: float | None = None) -> dict[str, str]:
    """The call's metadata as stored (sealed); each text field at most `max_chars` (ingest.max_metadata_chars).
    `now`: a live call's start when the PBX gave none."""
    texts = {name: getattr(message, name) for name in ("agent_id", "queue", "ani", "dnis", "tenant", "customer_ref")}
    for name, value in texts.items():
        if len(value) > max_chars:
            raise UserError(f"metadata.{name} is {len(value)} characters, more than ingest.max_metadata_chars = "
                            f"{max_chars}")
    started = now
    if message.HasField("started_at"):
        started = timestamp_seconds(message.started_at, "metadata.started_at")
        if not _EARLIEST_CALL <= started <= time.time() + _CLOCK_SKEW_S:
            raise UserError("metadata.started_at must be a time between 2000 and now (UTC), got "
                            f"{message.started_at.ToJsonString()}")
    started_at = "" if started is None else datetime.datetime.fromtimestamp(started, datetime.timezone.utc).isoformat(
        timespec="seconds")
    return {**texts, "direction": _DIRECTIONS.get(message.direction, ""), "started_at": started_at}


_EARLIEST_CALL = 946_684_800.0  # 2000-01-01: an earlier start is a PBX clock that was never set
_CLOCK_SKEW_S = 300.0  # a PBX clock a little ahead of ours is still a call that has started


def _taxonomy(text: str) -> str:
    if text:
        parse_taxonomy(text, "taxonomy_toml")  # refuse a bad taxonomy now, not after the call
    return text


class _LiveSegments:
    """Interim segments of one live call (best effort: a failed batch is logged and skipped). Work runs in the
    interim executor, one batch at a time; a batch returns the turns as heard and as redacted, and the turns heard so
    far (memory only) are the next batch's redaction context, so a name said a minute ago still counts."""

    _CONTEXT_TURNS = 40  # enough for the cues that matter; bounded, so a long call's batches stay cheap

    def __init__(self, pipeline: Pipeline, executor: ThreadPoolExecutor):
        self._pipeline, self._executor = pipeline, executor
        self._batch: asyncio.Future | None = None
        self._heard: list[Turn] = []

    def _start(self, work, *args) -> None:
        self._batch = asyncio.get_running_loop().run_in_executor(
            self._executor, work, *args, tuple(self._heard[-self._CONTEXT_TURNS:]))

    def _finished(self) -> list[pb.CallEvent]:
        if self._batch is None or not self._batch.done():
            return []
        batch, self._batch = self._batch, None
        if batch.exception() is not None:
            logger.warning("interim recognition failed (%s); skipped", type(batch.exception()).__name__)
            return []
        heard, redacted = batch.result()
        self._heard += heard
        return [_segment(turn.to_json(), final=False) for turn in redacted]

    async def _settled(self) -> list[pb.CallEvent]:
        if self._batch is not None:
            await asyncio.wait([self._batch])
        return self._finished()

    def close(self) -> None:
        """The call ended early: a batch still running is left to finish, its result (or error) discarded."""
        if self._batch is not None:
            self._batch.add_done_callback(lambda batch: batch.cancelled() or batch.exception())


class _InterimRecognition(_LiveSegments):
    """With a recogniser that cannot stream (the embedded one): each `interval` of new audio is recognised."""

    def __init__(self, pipeline: Pipeline, executor: ThreadPoolExecutor, spool: StreamSpool, roles: tuple[str, ...],
                 interval_s: float):
        super().__init__(pipeline, executor)
        self._spool, self._roles, self._interval_s = spool, roles, interval_s
        self._recognised_until = 0.0

    def poll(self) -> list[pb.CallEvent]:
        events = self._finished()
        if self._batch is None and self._spool.seconds - self._recognised_until >= self._interval_s:
            start, end = self._recognised_until, self._spool.seconds
            self._start(self._pipeline.interim, self._spool.window(start, end), self._roles, start)
            self._recognised_until = end
        return events

    async def drain(self) -> list[pb.CallEvent]:
        """The batch still being recognised when the call ended."""
        return await self._settled()


class _StreamedRecognition(_LiveSegments):
    """With a streaming recogniser (Riva StreamingRecognize): one stream per channel, each fed with its channel's
    audio as it arrives; the streams' final results are redacted in the executor and sent with the next event."""

    def __init__(self, pipeline: Pipeline, executor: ThreadPoolExecutor, channels: list, spool: StreamSpool):
        super().__init__(pipeline, executor)
        self._channels, self._spool = channels, spool
        self._fed = [0] * len(channels)  # bytes of each channel's file sent on: channels may arrive unevenly
        self._heard_waiting: list[Turn] = []

    def poll(self) -> list[pb.CallEvent]:
        for index, channel in enumerate(self._channels):
            received = self._spool.channel_bytes[index]
            if received > self._fed[index]:
                channel.push(self._spool.channel_samples(index, self._fed[index], received).astype("<i2").tobytes())
                self._fed[index] = received
        events = self._finished()
        self._heard_waiting += [t for channel in self._channels for t in channel.take()]
        if self._batch is None and self._heard_waiting:
            turns, self._heard_waiting = sorted(self._heard_waiting, key=lambda t: t.start or 0.0), []
            self._start(self._redact, turns)
        return events

    def _redact(self, turns: list[Turn], context: tuple[Turn, ...]) -> tuple[list[Turn], list[Turn]]:
        return turns, self._pipeline.redact_interim(turns, context)

    async def drain(self) -> list[pb.CallEvent]:
        """The call ended (its last chunk was fed): the streams' last results."""
        await asyncio.gather(*(asyncio.to_thread(channel.finish) for channel in self._channels))
        events = await self._settled()
        self._heard_waiting += [t for channel in self._channels for t in channel.take()]
        if self._heard_waiting:
            self._start(self._redact, sorted(self._heard_waiting, key=lambda t: t.start or 0.0))
            self._heard_waiting = []
            events += await self._settled()
        return events

    def close(self) -> None:
        super().close()
        for channel in self._channels:
            channel.cancel()


def _segment(turn: dict, final: bool) -> pb.CallEvent:
    return pb.CallEvent(segment=pb.TranscriptSegment(
        speaker=turn["speaker"], text=turn["text"], start_s=turn.get("start") or 0.0, end_s=turn.get("end") or 0.0,
        final=final))


class CallIngestService(pb_grpc.CallIngestServicer):
    def __init__(self, limits: IngestConfig, audio: AudioConfig, calls: CallStore, spool: Spool,
                 processor: CallProcessor, metrics: IngestMetrics, pipeline: Pipeline, access: AccessPolicy):
        self._limits = limits
        self._audio = audio
        self._calls = calls
        self._spool = spool
        self._processor = processor
        self._metrics = metrics
        self._pipeline = pipeline
        self._access = access
        self._active = 0
        self._interim_active = 0
        self._free_bytes, self._free_checked = 0, float("-inf")
        # Apart from the post-call workers, so live calls' interim batches never queue behind whole calls.
        self._interim_executor = ThreadPoolExecutor(max_workers=max(1, self._limits.max_interim_calls),
                                                    thread_name_prefix="aftercall-interim")
        self._live_active = 0
        self._live_workers = LiveWorkers(self._limits.live_workers, spare=self._limits.live_spare_cpu)

    def binding(self) -> ServiceBinding:
        return ServiceBinding(pb.DESCRIPTOR.services_by_name["CallIngest"].full_name,
                              lambda server: pb_grpc.add_CallIngestServicer_to_server(self, server))

    # -- admission ---------------------------------------------------------------------------------------------
    def _admit(self, streaming: bool) -> None:
        try:
            if streaming and self._active >= self._limits.max_active_calls:
                raise CapacityError(f"{self._active} calls are streaming, the limit (ingest.max_active_calls); "
                                    "retry shortly or send to another appliance")
            if self._processor.pending >= self._limits.max_pending_calls:
                raise CapacityError(f"{self._processor.pending} calls are waiting to be summarised, the limit "
                                    "(ingest.max_pending_calls); retry later")
            free_mb = self._spool.free_bytes() // (1024 * 1024)
            if free_mb < self._limits.min_free_disk_mb:
                raise CapacityError(f"only {free_mb} MB free on the data disk (ingest.min_free_disk_mb = "
                                    f"{self._limits.min_free_disk_mb}); not accepting calls")
        except CapacityError:
            self._metrics.calls_rejected.labels(code="RESOURCE_EXHAUSTED").inc()
            raise

    # -- StreamCall --------------------------------------------------------------------------------------------
    async def _next(self, messages: AsyncIterator[pb.CallAudio]) -> pb.CallAudio | None:
        try:
            return await asyncio.wait_for(anext(messages), self._limits.stream_idle_timeout_s)
        except StopAsyncIteration:
            return None
        except asyncio.TimeoutError:
            raise StreamTimeoutError(f"no message for {self._limits.stream_idle_timeout_s:g} s "
                                     "(ingest.stream_idle_timeout_s); the call was closed") from None

    def _job_from_start(self, start: pb.CallStart) -> CallJob:
        call_id = check_call_id(start.call_id)
        if start.encoding not in ENCODINGS:
            known = start.encoding in pb.AudioEncoding.values()
            raise AudioFormatError("encoding must be MULAW, ALAW or LINEAR_PCM, got "
                                   f"{pb.AudioEncoding.Name(start.encoding) if known else start.encoding}")
        if start.sample_rate_hz not in SUPPORTED_RATES:
            raise AudioFormatError(f"sample_rate_hz must be 8000 or 16000, got {start.sample_rate_hz}")
        if not start.channel_roles:
            raise UserError("channel_roles: name each channel (1 or 2), e.g. [AGENT, CUSTOMER]")
        roles = _roles(start.channel_roles, self._audio.roles, None)
        audio_format = AudioFormat(ENCODINGS[start.encoding], start.sample_rate_hz, len(roles))
        if len(roles) == 1:
            roles = self._audio.roles  # mono: one mixed channel, attributed by the recogniser
        return CallJob(call_id, RECEIVING, "stream", audio_format, roles,
                       _metadata(start.metadata, self._limits.max_metadata_chars, time.time()),
                       _taxonomy(start.taxonomy_toml))

    def _write_chunk(self, spool: StreamSpool, chunk: pb.AudioChunk, expected: int) -> None:
        fmt = spool.format
        if chunk.sequence != expected:
            raise StreamProtocolError(f"chunk sequence {chunk.sequence}, expected {expected}: chunks must arrive "
                                      "in order, numbered from 0 without gaps")
        size = len(chunk.audio)
        if size == 0:
            raise StreamProtocolError(f"chunk {chunk.sequence} holds no audio")
        per_channel = chunk.HasField("channel")
        if per_channel and chunk.channel >= fmt.channels:
            raise StreamProtocolError(f"chunk {chunk.sequence} is for channel {chunk.channel} but the call has "
                                      f"{fmt.channels}")
        frame = SAMPLE_BYTES[fmt.encoding] if per_channel else fmt.frame_bytes
        if size % frame:
            raise StreamProtocolError(f"chunk {chunk.sequence} is {size} bytes, not a whole number of "
                                      f"{frame}-byte frames")
        limit = fmt.sample_rate * frame * self._limits.max_chunk_ms // 1000
        if size > limit:
            raise StreamProtocolError(f"chunk {chunk.sequence} is {size} bytes, more than "
                                      f"{self._limits.max_chunk_ms} ms of audio ({limit} bytes; ingest.max_chunk_ms)")
        if spool.seconds_after(size, chunk.channel if per_channel else None) > self._audio.max_duration_s:
            raise StreamProtocolError(f"chunk {chunk.sequence} would make the call longer than "
                                      f"audio.max_duration_s = {self._audio.max_duration_s} s")
        if self._free_space() < self._limits.disk_reserve_bytes:
            # The spool is bounded: it stops short of the room kept for the database (summaries, audit entries).
            raise DiskFullError(f"{_CUT_OFF} (under half of ingest.min_free_disk_mb = "
                                f"{self._limits.min_free_disk_mb} free)")
        before = spool.seconds
        with disk_full_is_capacity(_CUT_OFF):
            if per_channel:
                spool.write_channel(chunk.channel, chunk.audio)
            else:
                spool.write_interleaved(chunk.audio)
        self._metrics.audio_seconds.inc(spool.seconds - before)

    def _free_space(self) -> int:
        now = time.monotonic()
        if now - self._free_checked >= _FREE_SPACE_CHECK_S:
            self._free_bytes, self._free_checked = self._spool.free_bytes(), now
        return self._free_bytes

    def _hand_over(self, call_id: str, spool: StreamSpool, complete: bool) -> bool:
        """Make the received audio durable and queue the call; a call with no audio at all is dropped. On a full
        disk the call waits for space in the processor (what reached the disk is summarised then) and DiskFullError
        is raised."""
        try:
            with disk_full_is_capacity(_CUT_OFF):
                spool.finish()
                if spool.seconds == 0:
                    self._calls.delete(call_id)
                    self._spool.remove(call_id)
                    return False
                self._calls.mark_received(call_id, spool.seconds, complete)
        except DiskFullError:
            self._processor.wait_for_space(call_id)
            raise
        self._processor.submit(call_id)
        return True

    async def StreamCall(self, requests: AsyncIterator[pb.CallAudio], context: grpc.aio.ServicerContext):
        self._access.require(self._access.identity(context), "Sending calls", "pbx")
        messages = aiter(requests)
        first = await self._next(messages)
        if first is None:
            raise StreamProtocolError("empty stream: send CallStart first")
        if first.WhichOneof("message") != "start":
            raise StreamProtocolError(f"the first message must be CallStart, got {first.WhichOneof('message')}")
        job = self._job_from_start(first.start)
        self._admit(streaming=True)
        self._calls.create(job)
        call_id_var.set(job.call_id)
        try:
            with disk_full_is_capacity(_NOT_STORED):
                spool = self._spool.open_stream(job.call_id, job.audio_format)
        except BaseException:
            self._forget(job.call_id)  # never accepted: the client may retry with the same call id
            raise
        self._active += 1
        self._metrics.calls_active.inc()
        self._metrics.calls_accepted.labels(source="stream").inc()
        interim = live = None
        handed_over = live_slot = False
        try:
            live = await self._live_transcription(job, spool)
            live_slot = live is not None
            if first.start.interim_results and self._interim_active < self._limits.max_interim_calls:
                self._interim_active += 1
                interim = await self._live_recognition(spool, job.roles)
                if interim is None:
                    self._interim_active -= 1
            yield pb.CallEvent(accepted=pb.CallAccepted(call_id=job.call_id, interim_results=interim is not None))
            expected = 0
            while True:
                message = await self._next(messages)
                kind = message.WhichOneof("message") if message is not None else None
                if message is None:
                    raise StreamProtocolError(f"the stream ended without CallEnd; the {spool.seconds:.1f} s "
                                              "received will be summarised, marked incomplete")
                if kind == "end":
                    break
                if kind != "chunk":
                    raise StreamProtocolError("CallStart sent twice" if kind == "start" else "empty CallAudio message")
                self._write_chunk(spool, message.chunk, expected)
                expected += 1
                if live is not None:
                    live.received(message.chunk.audio, message.chunk.channel if message.chunk.HasField("channel")
                                  else None, spool)
                for event in interim.poll() if interim is not None else ():
                    yield event
            if spool.seconds == 0:
                raise StreamProtocolError("CallEnd without any audio: nothing to summarise")
            if live is not None:
                self._processor.attach_live(job.call_id, live)
                live = None  # the processor finishes it
            try:
                handed_over = self._hand_over(job.call_id, spool, complete=True)
            except DiskFullError:
                handed_over = True  # to the processor, to wait for space
                raise
            logger.info("call received (%.1f s)", spool.seconds)
            yield pb.CallEvent(received=pb.CallReceived(call_id=job.call_id, audio_seconds=spool.seconds,
                                                        complete=True))
            for event in await interim.drain() if interim is not None else ():
                yield event
            record = await self._processor.wait(job.call_id)
            for turn in record.summary.get("transcript", []):
                yield _segment(turn, final=True)
            yield pb.CallEvent(summary=to_proto(record))
        finally:
            if interim is not None:
                interim.close()
                self._interim_active -= 1
            if live is not None:  # the stream broke off: recognised after it ends, with what was checkpointed
                live.close()
            if live_slot:
                self._live_ended()
            try:
                # An error, a cancelled or vanished client: what arrived is still summarised (no call is lost).
                if not handed_over and self._hand_over(job.call_id, spool, complete=False):
                    logger.warning("stream broke off after %.1f s; summarising what arrived", spool.seconds)
            finally:
                self._active -= 1
                self._metrics.calls_active.dec()

    async def _live_recognition(self, spool: StreamSpool, roles: tuple[str, ...]) -> _LiveSegments | None:
        """Interim recognition for this call, or None when the recogniser cannot be had (the call goes on without)."""
        try:
            # Off the event loop: the first call may build the recogniser (load Whisper, open a Riva channel).
            transcriber = await asyncio.to_thread(self._pipeline.transcriber)
            if isinstance(transcriber, StreamingTranscriber):
                channels = []
                try:
                    for speaker in transcriber.speakers(spool.format.channels, roles):
                        channels.append(transcriber.open_live_channel(spool.format.sample_rate, speaker))
                except BaseException:
                    for channel in channels:
                        channel.cancel()
                    raise
                return _StreamedRecognition(self._pipeline, self._interim_executor, channels, spool)
        except Exception as exc:  # noqa: BLE001 - interim text is best effort; the call itself must go on
            logger.warning("no interim results for this call: the recogniser failed to start (%s)",
                           type(exc).__name__)
            return None
        return _InterimRecognition(self._pipeline, self._interim_executor, spool, roles,
                                   self._limits.interim_interval_s)

    # -- SubmitRecording ---------------------------------------------------------------------------------------
    def _recording_bytes(self, request: pb.SubmitRecordingRequest) -> bytes:
        source = request.WhichOneof("source")
        if source == "wav":
            return request.wav
        if source != "path":
            raise UserError("give the recording as wav bytes or a path")
        if not self._limits.import_dir:
            raise UserError("submitting by path is disabled (set ingest.import_dir)")
        if "\0" in request.path:  # no file name holds one; the OS calls would refuse it with a ValueError
            raise UserError("path holds a NUL character")
        root = Path(self._limits.import_dir).resolve()
        path = (root / request.path).resolve()
        if not path.is_relative_to(root):
            raise UserError(f"path must be under ingest.import_dir ({root})")
        try:
            size = path.stat().st_size
            if size > self._limits.max_recording_mb * 1024 * 1024:
                raise UserError(f"{request.path} is {size // (1024 * 1024)} MB, more than ingest.max_recording_mb = "
                                f"{self._limits.max_recording_mb}")
            return path.read_bytes()
        except OSError as exc:
            raise AudioFormatError(f"cannot read {request.path}: {exc.strerror}") from exc

    async def SubmitRecording(self, request: pb.SubmitRecordingRequest, context) -> pb.SubmitRecordingResponse:
        self._access.require(self._access.identity(context), "Sending calls", "pbx")
        call_id = check_call_id(request.call_id)
        call_id_var.set(call_id)
        metadata = _metadata(request.metadata, self._limits.max_metadata_chars)
        self._admit(streaming=False)
        recording = self._recording_bytes(request)  # ingest.max_recording_mb applies to these, as submitted
        # Decoded now, so that a corrupt or unsupported file is refused before it is accepted; off the event loop
        # (an hour of MP3 takes seconds). Past the contract it is stored as PCM16 WAV: larger than sent (32 kB/s
        # per channel at 16 kHz), bounded by audio.max_duration_s.
        wav, seconds, channels = await asyncio.to_thread(recording_wav, recording,
                                                         self._audio.max_duration_s)
        roles = _roles(request.channel_roles, self._audio.roles, channels)
        if len(roles) == 1:
            roles = self._audio.roles
        job = CallJob(call_id, RECEIVING, "recording", None, roles, metadata, _taxonomy(request.taxonomy_toml))
        self._calls.create(job)
        try:
            with disk_full_is_capacity(_NOT_STORED):
                self._spool.write_recording(call_id, wav)
        except BaseException:
            self._forget(call_id)
            raise
        self._calls.mark_received(call_id, seconds, complete=True)
        self._metrics.calls_accepted.labels(source="recording").inc()
        self._metrics.audio_seconds.inc(seconds)
        self._processor.submit(call_id)
        response = pb.SubmitRecordingResponse(call_id=call_id, audio_seconds=seconds)
        if request.wait:
            response.summary.CopyFrom(to_proto(await self._processor.wait(call_id)))
        return response

    def _forget(self, call_id: str) -> None:
        self._spool.remove(call_id)
        try:
            self._calls.delete(call_id)
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            self._processor.wait_for_space(call_id)  # no audio: its row is deleted once there is room

    def close(self) -> None:
        """Interim and live batches still queued are dropped; one running finishes in its thread, its result unused
        (a live call's stretches already checkpointed are reused when it resumes)."""
        self._interim_executor.shutdown(wait=False, cancel_futures=True)
        self._live_workers.shutdown()

    async def _live_transcription(self, job: CallJob, spool: StreamSpool) -> LiveRecognition | None:
        """Recognition during the call, where the recogniser can (the embedded one) and a live slot is free
        (ingest.max_live_calls); otherwise None, and the call is recognised after it ends."""
        if self._live_active >= self._limits.max_live_calls:
            self._metrics.live_calls.labels(outcome="after_call").inc()
            return None
        try:
            # Off the event loop: the first call may load Whisper.
            transcriber = await asyncio.to_thread(self._pipeline.transcriber)
        except Exception as exc:  # noqa: BLE001 - the call is recognised after it ends, as it would be anyway
            logger.warning("no live recognition for this call: the recogniser failed to start (%s)",
                           type(exc).__name__)
            transcriber = None
        if not isinstance(transcriber, IncrementalTranscriber):  # Riva streams its own interim results
            self._metrics.live_calls.labels(outcome="after_call").inc()
            return None
        self._live_active += 1
        self._metrics.live_active.inc()
        return LiveRecognition(transcriber.channel, spool, self._live_workers, self._calls, job.call_id,
                               self._limits.live_max_lag_s, self._metrics)

    def _live_ended(self) -> None:
        self._live_active -= 1
        self._metrics.live_active.dec()


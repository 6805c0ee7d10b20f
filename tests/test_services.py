"""The gRPC services in process: real servers on port 0, real gRPC clients, the real embedded pipeline."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import logging
import re
import shutil
import stat
import threading
import time

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import CollectorRegistry

from aftercall.app import SERVICES, start_appliance
from aftercall.config import Config
from aftercall.core.audio import read_wav
from aftercall.core.decode import decode_audio
from aftercall.core.rpc import error_reason
from aftercall.core.transcript import Transcript, Turn
from aftercall.evaluation.metrics import digit_leak
from aftercall.ingest.config import IngestConfig
from aftercall.ingest.spool import AudioFormat, Spool
from aftercall.pipeline import Pipeline
from aftercall.summarise.contract import REQUIRED_KEYS
from aftercall.summarise.taxonomy import load_taxonomy
from aftercall.v1 import ingest_pb2 as pb
from aftercall.v1 import ingest_pb2_grpc as pb_grpc
from aftercall.v1 import summaries_pb2 as spb
from aftercall.v1 import summaries_pb2_grpc as spb_grpc
from audio_files import encode, sox, speech_wav
from conftest import wav_header


@pytest.fixture(scope="module")
def pipeline(summariser, transcriber):
    return Pipeline(Config(), load_taxonomy(), summariser, transcriber_factory=lambda: transcriber)


@pytest.fixture
async def serve(tmp_path, pipeline):
    """Start the appliance with config overrides: `await serve(max_active_calls=1)` for [ingest] keys, `config=` for
    the rest, `using=` for another pipeline; stopped after the test."""
    started = []

    async def start(config: Config = Config(), using: Pipeline | None = None, **ingest):
        config = dataclasses.replace(config, ingest=dataclasses.replace(config.ingest, **ingest))
        appliance = await start_appliance(config, SERVICES, tmp_path / "data", "127.0.0.1:0", "",
                                          CollectorRegistry(), using or pipeline)
        started.append(appliance)
        return appliance

    yield start
    for appliance in started:
        await appliance.stop(2)


def _start(call_id="call-1", encoding=pb.AUDIO_ENCODING_MULAW, rate=8000, roles=(1, 2), **fields) -> pb.CallAudio:
    return pb.CallAudio(start=pb.CallStart(call_id=call_id, encoding=encoding, sample_rate_hz=rate,
                                           channel_roles=list(roles), **fields))


def _chunk(sequence: int, audio: bytes, channel: int | None = None) -> pb.CallAudio:
    chunk = pb.AudioChunk(sequence=sequence, audio=audio)
    if channel is not None:
        chunk.channel = channel
    return pb.CallAudio(chunk=chunk)


_END = pb.CallAudio(end=pb.CallEnd(reason="hangup"))
_STREAM_CALL = "/aftercall.v1.CallIngest/StreamCall"


def _exchange(port: int, messages, timeout: float = 120,
              raw: bool = False) -> tuple[list[pb.CallEvent], grpc.RpcError | None]:
    """One StreamCall with the synchronous client (see aftercall.core.rpc.client_channel for why); `raw`: the
    messages are bytes, sent as they are, and so are the events that come back."""
    events = []
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.stream_stream(_STREAM_CALL) if raw else pb_grpc.CallIngestStub(channel).StreamCall
        try:
            for event in call(iter(messages), timeout=timeout):
                events.append(event)
        except grpc.RpcError as error:
            return events, error
    return events, None


def _chunks(payload: bytes, size: int = 1600) -> list[pb.CallAudio]:
    return [_chunk(i, payload[o : o + size]) for i, o in enumerate(range(0, len(payload), size))]


async def _summaries(port: int):
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    return channel, spb_grpc.SummariesStub(channel)


async def _wait_for_summary(stub, call_id: str, timeout: float = 120) -> spb.SummaryRecord:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await stub.Get(spb.GetSummaryRequest(call_id=call_id))
        except grpc.aio.AioRpcError as error:
            if error.code() is not grpc.StatusCode.NOT_FOUND or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.2)


@pytest.mark.e2e
async def test_streamed_call_gets_events_in_order_and_a_stored_summary(serve, demo_clip):
    appliance = await serve()
    payload = read_wav(demo_clip).payload
    events, error = await asyncio.to_thread(_exchange, appliance.port, [_start(), *_chunks(payload), _END])
    assert error is None
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[:2] == ["accepted", "received"] and kinds[-1] == "summary"
    assert set(kinds[2:-1]) == {"segment"}
    assert events[1].received.audio_seconds == pytest.approx(14.0) and events[1].received.complete
    segments = [e.segment for e in events if e.WhichOneof("event") == "segment"]
    assert {s.speaker for s in segments} == {"agent", "customer"} and all(s.final for s in segments)
    summary = json.loads(events[-1].summary.summary_json)
    assert set(REQUIRED_KEYS) <= set(summary) and summary["call_id"] == "call-1" and summary["complete"] is True
    channel, stub = await _summaries(appliance.port)
    async with channel:
        stored = await stub.Get(spb.GetSummaryRequest(call_id="call-1", include_history=True))
    assert stored.state == spb.REVIEW_STATE_DRAFT and stored.version == 1 and len(stored.history) == 1
    assert json.loads(stored.summary_json) == summary
    sample = appliance.metrics.registry.get_sample_value
    assert sample("aftercall_pipeline_calls_completed_total") == 1
    assert sample("aftercall_ingest_audio_seconds_total") == pytest.approx(14.0)
    assert sample("aftercall_pipeline_post_call_latency_seconds_count") == 1
    assert sample("aftercall_pipeline_stage_duration_seconds_count", {"stage": "asr"}) == 1
    assert sample("aftercall_ingest_calls_active") == 0


def test_per_channel_and_interleaved_chunks_spool_the_same_audio(tmp_path, demo_clip):
    from aftercall.vault.envelope import Vault
    from aftercall.vault.keys import KeyRing

    wav = read_wav(demo_clip)
    fmt = AudioFormat(wav.encoding, wav.sample_rate, wav.channels)
    spool = Spool(tmp_path, Vault(KeyRing.create(tmp_path / "keys.json")))
    interleaved = spool.open_stream("a", fmt)
    interleaved.write_interleaved(wav.payload)
    interleaved.finish()
    split = spool.open_stream("b", fmt)
    for channel in (1, 0):
        split.write_channel(channel, wav.payload[channel::2])
    split.finish()
    first, second = spool.load("a", fmt), spool.load("b", fmt)
    assert all((x == y).all() for x, y in zip(first.channels, second.channels))
    assert first.duration == pytest.approx(14.0)


_MULAW_20MS = b"\xff" * 320  # 20 ms of stereo mu-law silence


@pytest.mark.service
@pytest.mark.parametrize("messages, code, fragment", [
    ([_chunk(0, _MULAW_20MS)], "INVALID_ARGUMENT", "first message must be CallStart"),
    ([_start(encoding=pb.AUDIO_ENCODING_UNSPECIFIED)], "INVALID_ARGUMENT", "encoding must be MULAW, ALAW"),
    ([_start(encoding=7)], "INVALID_ARGUMENT", "encoding must be"),
    ([_start(rate=11025)], "INVALID_ARGUMENT", "sample_rate_hz must be 8000 or 16000, got 11025"),
    ([_start(roles=(1, 1))], "INVALID_ARGUMENT", "one AGENT and one CUSTOMER"),
    ([_start(roles=(1, 2, 2))], "INVALID_ARGUMENT", "1 or 2 channels"),
    ([_start(call_id="../etc")], "INVALID_ARGUMENT", "call_id '../etc' is invalid"),
    ([_start(), _chunk(0, b"\xff" * 16002)], "INVALID_ARGUMENT", "more than 1000 ms"),
    ([_start(), _chunk(0, _MULAW_20MS), _chunk(2, _MULAW_20MS)], "INVALID_ARGUMENT", "sequence 2, expected 1"),
    ([_start(), _chunk(0, b"\xff" * 3)], "INVALID_ARGUMENT", "not a whole number of 2-byte frames"),
    ([_start(), _chunk(0, _MULAW_20MS, channel=2)], "INVALID_ARGUMENT", "channel 2 but the call has 2"),
    ([_start(), _start()], "INVALID_ARGUMENT", "CallStart sent twice"),
    ([_start(), _END], "INVALID_ARGUMENT", "CallEnd without any audio"),
    ([_start(taxonomy_toml="[[disposition]]\ncode = 1")], "INVALID_ARGUMENT", "taxonomy_toml"),
    ([_start(taxonomy_toml="x = " + "[" * 5000 + "]" * 5000)], "INVALID_ARGUMENT", "TOML (nested too deeply)"),
    ([_start(taxonomy_toml="x = " + "9" * 5000)], "INVALID_ARGUMENT", "not valid TOML (a number has more than 4300"),
    ([_start(metadata=pb.CallMetadata(agent_id="a" * 1024 * 1024))], "INVALID_ARGUMENT",
     "metadata.agent_id is 1048576 characters, more than ingest.max_metadata_chars = 256"),
    ([_start(metadata=pb.CallMetadata(customer_ref="c" * 257))], "INVALID_ARGUMENT", "metadata.customer_ref is 257"),
    ([_start(metadata=pb.CallMetadata(started_at=Timestamp(seconds=4_102_444_800)))], "INVALID_ARGUMENT",
     "metadata.started_at must be a time between 2000 and now (UTC), got 2100-01-01T00:00:00Z"),
    ([_start(metadata=pb.CallMetadata(started_at=Timestamp(seconds=1_790_000_000, nanos=-5)))], "INVALID_ARGUMENT",
     "metadata.started_at is not a valid time stamp (1790000000 s and -5 ns after 1970)"),
])
async def test_bad_streams_get_a_precise_status_and_the_server_carries_on(serve, messages, code, fragment):
    appliance = await serve()
    events, error = await asyncio.to_thread(_exchange, appliance.port, messages)
    assert error is not None, events
    assert error.code().name == code and fragment in error.details(), error.details()
    assert error_reason(error) in ("StreamProtocolError", "AudioFormatError", "UserError", "ConfigError")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{appliance.port}") as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="aftercall.v1.CallIngest"))
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert appliance.metrics.registry.get_sample_value(
        "aftercall_errors_total", {"service": "CallIngest", "code": code}) == 1


@pytest.mark.e2e
async def test_duplicate_call_id_is_refused_without_touching_the_first(serve, demo_clip):
    appliance = await serve()
    payload = read_wav(demo_clip).payload[:16000]
    _, error = await asyncio.to_thread(_exchange, appliance.port, [_start(), *_chunks(payload), _END])
    assert error is None
    _, error = await asyncio.to_thread(_exchange, appliance.port, [_start(), *_chunks(payload), _END])
    assert error.code() is grpc.StatusCode.ALREADY_EXISTS and "call-1" in error.details()
    channel, stub = await _summaries(appliance.port)
    async with channel:
        assert (await stub.Get(spb.GetSummaryRequest(call_id="call-1"))).version == 1


@pytest.mark.e2e
async def test_a_client_that_vanishes_mid_call_still_gets_its_audio_summarised(serve, demo_clip):
    appliance = await serve()
    payload = read_wav(demo_clip).payload[: 6 * 16000]
    released = threading.Event()

    def messages():
        yield _start(call_id="vanished")
        yield from _chunks(payload)
        released.wait(30)  # hold the stream open, then the client goes away without CallEnd

    def vanish():
        with grpc.insecure_channel(f"127.0.0.1:{appliance.port}") as channel:
            call = pb_grpc.CallIngestStub(channel).StreamCall(messages())
            next(call)  # accepted
            time.sleep(0.5)
            call.cancel()
        released.set()

    await asyncio.to_thread(vanish)
    channel, stub = await _summaries(appliance.port)
    async with channel:
        record = await _wait_for_summary(stub, "vanished")
    assert not record.complete and json.loads(record.summary_json)["complete"] is False
    assert json.loads(record.summary_json)["audio_seconds"] == pytest.approx(6.0)


@pytest.mark.e2e
async def test_a_silent_client_is_timed_out_and_its_audio_kept(serve, demo_clip):
    appliance = await serve(stream_idle_timeout_s=1.0)
    payload = read_wav(demo_clip).payload[: 4 * 16000]

    def stalls():
        yield _start(call_id="stalled")
        yield from _chunks(payload)
        time.sleep(5)

    opened = time.time()
    _, error = await asyncio.to_thread(_exchange, appliance.port, stalls())
    assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED and "no message for 1 s" in error.details()
    channel, stub = await _summaries(appliance.port)
    async with channel:
        record = await _wait_for_summary(stub, "stalled")
    assert not record.complete
    # A stream whose PBX sent no start time started when its CallStart arrived.
    started = datetime.datetime.fromisoformat(json.loads(record.summary_json)["call"]["started_at"]).timestamp()
    assert opened - 1 <= started <= opened + 5


@pytest.mark.e2e
async def test_over_capacity_is_resource_exhausted_and_the_open_call_is_unaffected(serve, demo_clip):
    appliance = await serve(max_active_calls=1)
    payload = read_wav(demo_clip).payload[:16000]
    go = threading.Event()
    result = {}

    def first_call():
        def messages():
            yield _start(call_id="first")
            go.wait(30)
            yield from _chunks(payload)
            yield _END
        result["first"] = _exchange(appliance.port, messages())

    worker = threading.Thread(target=first_call)
    worker.start()
    while appliance.metrics.registry.get_sample_value("aftercall_ingest_calls_active") != 1:
        await asyncio.sleep(0.05)
    _, error = await asyncio.to_thread(_exchange, appliance.port, [_start(call_id="second")])
    go.set()
    await asyncio.to_thread(worker.join)
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED and "ingest.max_active_calls" in error.details()
    events, first_error = result["first"]
    assert first_error is None and events[-1].WhichOneof("event") == "summary"
    assert appliance.metrics.registry.get_sample_value(
        "aftercall_ingest_calls_rejected_total", {"code": "RESOURCE_EXHAUSTED"}) == 1


@pytest.mark.e2e
async def test_submitted_recording_is_summarised_and_bad_ones_refused(serve, demo_clip, tmp_path):
    appliance = await serve(import_dir=str(tmp_path))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{appliance.port}") as channel:
        stub = pb_grpc.CallIngestStub(channel)
        response = await stub.SubmitRecording(pb.SubmitRecordingRequest(call_id="rec-1", wav=demo_clip, wait=True))
        assert response.audio_seconds == pytest.approx(14.0)
        assert json.loads(response.summary.summary_json)["call_id"] == "rec-1"
        (tmp_path / "in.wav").write_bytes(demo_clip)
        queued = await stub.SubmitRecording(pb.SubmitRecordingRequest(call_id="rec-2", path="in.wav"))
        assert not queued.HasField("summary")
        bad = {
            "starts like MP3 but FFmpeg cannot read it": pb.SubmitRecordingRequest(call_id="rec-3",
                                                                                   wav=b"ID3" + bytes(100)),
            "truncated": pb.SubmitRecordingRequest(call_id="rec-4", wav=wav_header(7, 2, 8000, 8, 9000) + bytes(9)),
            "must be under ingest.import_dir": pb.SubmitRecordingRequest(call_id="rec-5", path="../../etc/passwd"),
            "channel_roles names 1 channel(s) but the audio has 2": pb.SubmitRecordingRequest(
                call_id="rec-6", wav=demo_clip, channel_roles=[pb.CHANNEL_ROLE_AGENT]),
            "path holds a NUL character": pb.SubmitRecordingRequest(call_id="rec-7", path="in.wav\0../x"),
            # Checked before the recording is even decoded.
            "metadata.tenant is 300 characters, more than ingest.max_metadata_chars = 256": pb.SubmitRecordingRequest(
                call_id="rec-8", wav=b"not audio", metadata=pb.CallMetadata(tenant="t" * 300)),
        }
        for fragment, request in bad.items():
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.SubmitRecording(request)
            assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT and fragment in caught.value.details()
        summaries = spb_grpc.SummariesStub(channel)
        assert (await _wait_for_summary(summaries, "rec-2")).complete


@pytest.mark.e2e
async def test_a_recording_in_any_format_is_accepted_and_a_corrupt_one_refused(serve, tmp_path):
    if shutil.which("sox") is None:
        pytest.skip("sox is installed by `make test`")
    speech = speech_wav(tmp_path / "speech.wav")
    mp3 = encode(speech, "mp3", "libmp3lame", 44100)
    sox(speech, "-r", "44100", tmp_path / "call.flac")
    sox(speech, "-c", "6", tmp_path / "surround.wav")
    seconds = decode_audio(mp3).duration
    appliance = await serve(import_dir=str(tmp_path))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{appliance.port}") as channel:
        stub = pb_grpc.CallIngestStub(channel)
        response = await stub.SubmitRecording(pb.SubmitRecordingRequest(call_id="mp3-1", wav=mp3, wait=True))
        assert response.audio_seconds == pytest.approx(seconds)
        assert set(REQUIRED_KEYS) <= set(json.loads(response.summary.summary_json))
        by_path = await stub.SubmitRecording(pb.SubmitRecordingRequest(call_id="flac-1", path="call.flac"))
        assert by_path.audio_seconds == pytest.approx(seconds, abs=0.05)
        bad = {
            "corrupt: the file starts like MP3": mp3[:4] + bytes(len(mp3) - 4),
            "truncated: the mp3 stream (container: mp3) declares": mp3[: len(mp3) // 2],
            "unsupported: 6 channels (aftercall accepts 1 or 2)": (tmp_path / "surround.wav").read_bytes(),
        }
        for index, (fragment, wav) in enumerate(bad.items()):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.SubmitRecording(pb.SubmitRecordingRequest(call_id=f"bad-{index}", wav=wav))
            assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
            assert fragment in caught.value.details()
        # Refused up front, so the call id was never taken: the same id with a good recording is accepted.
        again = await stub.SubmitRecording(pb.SubmitRecordingRequest(call_id="bad-0", wav=mp3))
        assert again.audio_seconds == pytest.approx(seconds)
        assert (await _wait_for_summary(spb_grpc.SummariesStub(channel), "flac-1")).complete


@pytest.mark.service
async def test_review_edit_approve_and_search(serve):
    appliance = await serve()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{appliance.port}") as channel:
        ingest = pb_grpc.CallIngestStub(channel)
        stub = spb_grpc.SummariesStub(channel)
        # Drafts arrive the normal way: a recording per agent.
        for call_id, agent in (("r-1", "alice"), ("r-2", "bob"), ("r-3", "alice")):
            done = await ingest.SubmitRecording(pb.SubmitRecordingRequest(
                call_id=call_id, wav=_quiet_recording(), wait=True, metadata=pb.CallMetadata(
                    agent_id=agent, started_at=Timestamp(seconds=1_790_000_000))))
            # The recorder's start time and the audio's length are the summary's.
            call = json.loads(done.summary.summary_json)["call"]
            assert call["started_at"] == "2026-09-21T14:13:20+00:00" and call["duration_s"] == 2.0
        page = await stub.List(spb.ListSummariesRequest(agent_id="alice"))
        assert [s.call_id for s in page.summaries] == ["r-3", "r-1"]
        first = await stub.List(spb.ListSummariesRequest(page_size=2))
        rest = await stub.List(spb.ListSummariesRequest(page_size=2, page_token=first.next_page_token))
        assert len(first.summaries) == 2 and [s.call_id for s in rest.summaries] == ["r-1"]
        assert not rest.next_page_token

        user = (("x-aftercall-user", "agent.alice"),)
        edit = {"narrative": "Customer paid with card 4532 0151 1283 0366 and asked for a refund.",
                "resolution": {"status": "resolved", "detail": "Refund issued."}}
        edited = await stub.Edit(spb.EditSummaryRequest(call_id="r-1", expected_version=1,
                                                        fields_json=json.dumps(edit)), metadata=user)
        assert edited.version == 2 and edited.state == spb.REVIEW_STATE_EDITED
        body = json.loads(edited.summary_json)
        assert not digit_leak("4532015112830366", body["narrative"]) and "[CARD ****0366]" in body["narrative"]
        assert body["resolution"] == {"status": "resolved", "detail": "Refund issued."}

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Edit(spb.EditSummaryRequest(call_id="r-1", expected_version=1, fields_json='{"issue": "x"}'),
                            metadata=user)
        assert caught.value.code() is grpc.StatusCode.ABORTED and "version 2" in caught.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Edit(spb.EditSummaryRequest(call_id="r-1", expected_version=2, fields_json='{"issue": "x"}'))
        assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED and "x-aftercall-user" in caught.value.details()
        for fields, fragment in (('{"transcript": []}', "transcript cannot be edited"),
                                 ('{"sentiment": {"start": "angry", "end": "neutral"}}', "sentiment.start"),
                                 ("not json", "not valid JSON"),
                                 ('{"issue": ' + "[" * 5000 + "]" * 5000 + "}", "not valid JSON: nested too deeply"),
                                 ('{"issue": ' + "9" * 5000 + "}", "a number has more than 4300 digits"),
                                 ('{"issue": "Card \\ud800 blocked."}', "a lone UTF-16 surrogate"),
                                 ('{"sentiment": {"start": ' + "[" * 900 + "]" * 900 + ', "end": "neutral"}}',
                                  "sentiment.start must be one of negative, neutral, positive, got an array"),
                                 ('{"narrative": "' + "x" * 70_000 + '"}', "more than 65536")):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Edit(spb.EditSummaryRequest(call_id="r-1", expected_version=2, fields_json=fields),
                                metadata=user)
            assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT and fragment in caught.value.details()
        # Found by the fuzzer: a time stamp whose nanos are out of range made the protobuf library raise (INTERNAL).
        for bad in (spb.ListSummariesRequest(state=9), spb.ListSummariesRequest(page_token="OTk5OTk5OTk5OTk5OTk5"),
                    spb.ListSummariesRequest(created_from=Timestamp(seconds=1, nanos=2**31 - 1))):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.List(bad)
            assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT

        approved = await stub.Approve(spb.ApproveSummaryRequest(call_id="r-1", expected_version=2),
                                      metadata=(("x-aftercall-user", "supervisor.sam"),))
        assert approved.state == spb.REVIEW_STATE_APPROVED and approved.approved_by == "supervisor.sam"
        sample = appliance.metrics.registry.get_sample_value
        assert sample("aftercall_review_edit_distance_ratio_count") == 1  # how much the draft was rewritten
        assert 0 < sample("aftercall_review_edit_distance_ratio_sum") < 0.5
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Edit(spb.EditSummaryRequest(call_id="r-1", expected_version=2, fields_json='{"issue": "x"}'),
                            metadata=user)
        assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        history = await stub.Get(spb.GetSummaryRequest(call_id="r-1", include_history=True))
        assert [(v.version, v.author) for v in history.history] == [(1, "aftercall-embedded-0.1"), (2, "agent.alice")]
        approved_only = await stub.List(spb.ListSummariesRequest(state=spb.REVIEW_STATE_APPROVED))
        assert [s.call_id for s in approved_only.summaries] == ["r-1"]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Get(spb.GetSummaryRequest(call_id="nope"))
        assert caught.value.code() is grpc.StatusCode.NOT_FOUND


def _quiet_recording() -> bytes:
    """Two seconds of silent PCM: a recording with no words in it (the summary must still be valid)."""
    payload = bytes(2 * 8000 * 2 * 2)
    return wav_header(1, 2, 8000, 16, len(payload)) + payload


@pytest.mark.service
async def test_health_and_reflection_name_every_service(serve):
    appliance = await serve()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{appliance.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "aftercall.v1.CallIngest", "aftercall.v1.Summaries"):
            response = await health.Check(health_pb2.HealthCheckRequest(service=name))
            assert response.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        async for response in responses:
            names = {s.name for s in response.list_services_response.service}
            break
    assert {"aftercall.v1.CallIngest", "aftercall.v1.Summaries", "grpc.health.v1.Health"} <= names


@pytest.mark.e2e
async def test_a_call_cut_off_by_a_crash_resumes_as_incomplete(serve, tmp_path, demo_clip):
    from aftercall.core.database import open_database
    from aftercall.ingest.calls import RECEIVING, CallJob, CallStore
    from aftercall.vault.envelope import Vault
    from aftercall.vault.config import VaultConfig
    from aftercall.vault.keys import open_key_ring

    # What a crash mid-stream leaves behind: the call row still receiving, part of the audio spooled.
    wav = read_wav(demo_clip)
    fmt = AudioFormat(wav.encoding, wav.sample_rate, wav.channels)
    db = open_database(tmp_path / "data")
    vault = Vault(open_key_ring(VaultConfig(), create_missing=True))  # the key file the appliance will find
    calls = CallStore(db, vault)
    for call_id in ("cut", "nothing-arrived"):
        calls.create(CallJob(call_id, RECEIVING, "stream", fmt, ("agent", "customer"), {"agent_id": "a1"}))
    partial = Spool(tmp_path / "data" / "spool", vault).open_stream("cut", fmt)
    partial.write_interleaved(wav.payload[: 5 * 16000])
    partial.finish()
    db.close()

    appliance = await serve()
    channel, stub = await _summaries(appliance.port)
    async with channel:
        record = await _wait_for_summary(stub, "cut")
        assert not record.complete and record.agent_id == "a1"
        assert json.loads(record.summary_json)["audio_seconds"] == pytest.approx(5.0)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Get(spb.GetSummaryRequest(call_id="nothing-arrived"))
        assert caught.value.code() is grpc.StatusCode.NOT_FOUND


@pytest.mark.e2e
async def test_interim_segments_while_the_call_is_live_then_final_ones(serve, demo_clip):
    appliance = await serve(interim_interval_s=3.0, max_interim_calls=1)
    payload = read_wav(demo_clip).payload
    chunk = 1600  # 100 ms of stereo mu-law

    def paced():  # three times real time: the 14 s call lasts under 5 s
        yield _start(call_id="live", interim_results=True)
        for message in _chunks(payload, chunk):
            time.sleep(0.1 / 3)
            yield message
        yield _END

    events, error = await asyncio.to_thread(_exchange, appliance.port, paced())
    assert error is None
    assert events[0].accepted.interim_results
    segments = [e.segment for e in events if e.WhichOneof("event") == "segment"]
    interim = [s for s in segments if not s.final]
    assert interim, "at least one interim batch before the final transcript"
    assert segments.index(interim[-1]) < segments.index(next(s for s in segments if s.final))
    assert all(0 <= s.start_s <= s.end_s <= 14.5 for s in interim)
    assert all(not re.search(r"(?<![\d*])\d(?:[\s.-]?\d){3,}", s.text) for s in interim)


class _ScriptedTranscriber:
    """Our Transcriber interface returning a fixed utterance: what the pipeline does with it is under test."""

    def __init__(self, *turns: Turn):
        self._turns = turns or (Turn("customer", "The parcel was 77 12 34, I think it began 4532 0151.", 1.0, 4.0),
                                Turn("customer", "Oh and my card number is 4532 0151 1283 0366 by the way.", 5.0, 7.0))

    def transcribe(self, audio, roles, progress=None, live=False):
        return Transcript(self._turns)


def test_interim_text_masks_every_long_digit_run(summariser, demo_clip):
    from aftercall.core.audio import parse_wav

    scripted = Pipeline(Config(), load_taxonomy(), summariser, transcriber_factory=_ScriptedTranscriber)
    heard, turns = scripted.interim(parse_wav(demo_clip), ("agent", "customer"), offset_s=100.0)
    assert (turns[0].start, turns[1].end) == (101.0, 107.0) and heard[1].text.endswith("0366 by the way.")
    # Digits the conversation-level redactor leaves (no cue, no Luhn yet) go too while the call is live.
    assert "4532" not in turns[0].text and "77 12 34" not in turns[0].text and "[NUMBER]" in turns[0].text
    assert "[CARD ****0366]" in turns[1].text


def test_interim_redaction_remembers_what_was_said_earlier_in_the_call(pipeline):
    # "Blessing" alone reads as a word (the entity recogniser leaves it); introduced, it is a name.
    earlier = [Turn("customer", "Hi, my name is Blessing Okafor.", 1.0, 3.0)]
    later = [Turn("agent", "Thank you Blessing, one moment.", 4.0, 6.0)]
    assert "Blessing" in pipeline.redact_interim(later)[0].text  # on its own, nothing says it is a name
    assert pipeline.redact_interim(later, earlier)[0].text == "Thank you [NAME], one moment."


class _BrokenTranscriber:
    def transcribe(self, audio, roles, progress=None, live=False):
        raise RuntimeError("recogniser crashed")


@pytest.mark.service
async def test_a_call_that_cannot_be_processed_is_aborted_with_a_reason_and_kept(serve, tmp_path, summariser,
                                                                                  demo_clip):
    broken = Pipeline(Config(), load_taxonomy(), summariser, transcriber_factory=_BrokenTranscriber)
    config = dataclasses.replace(Config(), ingest=dataclasses.replace(IngestConfig(), max_attempts=1))
    appliance = await start_appliance(config, SERVICES, tmp_path / "broken", "127.0.0.1:0", "",
                                      CollectorRegistry(), broken)
    try:
        payload = read_wav(demo_clip).payload[:16000]
        events, error = await asyncio.to_thread(_exchange, appliance.port, [_start(), *_chunks(payload), _END], 30)
        assert [e.WhichOneof("event") for e in events] == ["accepted", "received"]
        assert error.code() is grpc.StatusCode.ABORTED and "RuntimeError: recogniser crashed" in error.details()
        assert appliance.metrics.registry.get_sample_value("aftercall_pipeline_calls_failed_total",
                                                           {"stage": "asr"}) == 1
        assert any((tmp_path / "broken" / "spool" / "call-1").iterdir()), "the audio is kept for an operator"
    finally:
        await appliance.stop(1)


@pytest.mark.service
async def test_a_summary_stored_just_before_a_crash_finishes_its_bookkeeping(serve, tmp_path, demo_clip):
    from aftercall.core.database import open_database
    from aftercall.ingest.calls import RECEIVED, CallJob, CallStore
    from aftercall.review.store import SummaryStore
    from aftercall.vault.envelope import Vault
    from aftercall.vault.config import VaultConfig
    from aftercall.vault.keys import open_key_ring

    db = open_database(tmp_path / "data")
    wav = read_wav(demo_clip)
    fmt = AudioFormat(wav.encoding, wav.sample_rate, wav.channels)
    vault = Vault(open_key_ring(VaultConfig(), create_missing=True))
    CallStore(db, vault).create(CallJob("stored", RECEIVED, "stream", fmt, ("agent", "customer"),
                                        {"ani": "07700900123"}))
    spool = Spool(tmp_path / "data" / "spool", vault).open_stream("stored", fmt)
    spool.write_interleaved(wav.payload[:16000])
    spool.finish()
    summary = {"call_id": "stored", "disposition": {"code": "UNKNOWN"}}
    SummaryStore(db, vault).create_draft(summary, {}, True, "test")
    db.close()

    await serve()
    db = open_database(tmp_path / "data")
    job = CallStore(db, vault).get("stored")
    db.close()
    assert job.state == "done" and job.metadata == {}, "done, and the caller's number dropped"
    assert not (tmp_path / "data" / "spool" / "stored").exists()


@pytest.mark.service
async def test_a_stored_record_that_was_tampered_with_is_data_loss_not_garbage(serve, tmp_path):
    from aftercall.core.database import open_database
    from aftercall.review.store import SummaryStore
    from aftercall.vault.envelope import Vault
    from aftercall.vault.config import VaultConfig
    from aftercall.vault.keys import open_key_ring

    appliance = await serve()
    db = open_database(tmp_path / "data")
    store = SummaryStore(db, Vault(open_key_ring(VaultConfig(), create_missing=False)))  # the appliance made it
    store.create_draft({"call_id": "tampered", "disposition": {"code": "UNKNOWN"}}, {}, True, "test")
    record = bytearray(db.execute("SELECT record FROM sealed_summaries").fetchone()["record"])
    record[-5] ^= 0xFF
    db.execute("UPDATE sealed_summaries SET record = ?", (bytes(record),))
    db.close()
    channel, stub = await _summaries(appliance.port)
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Get(spb.GetSummaryRequest(call_id="tampered"))
    assert caught.value.code() is grpc.StatusCode.DATA_LOSS and "altered" in caught.value.details()


@pytest.mark.service
async def test_roles_decide_who_reads_and_changes_which_summary(tmp_path, pipeline):
    from aftercall.core.config import ServerConfig
    from aftercall.vault.config import AccessConfig
    from aftercall.core.database import open_database
    from aftercall.core.errors import ConfigError
    from aftercall.review.store import SummaryStore
    from aftercall.vault.envelope import Vault
    from aftercall.vault.config import VaultConfig
    from aftercall.vault.keys import open_key_ring
    from aftercall.vault.tokens import issue_token

    access = AccessConfig(pbx=("pbx-1",), agent=("agent-a", "agent-b"), supervisor=("sup-s",), auditor=("aud-1",),
                          admin=("adm",), teams=("sup-s: agent-a",), trust_loopback_user=True)
    config = dataclasses.replace(Config(), access=access)
    appliance = await start_appliance(config, SERVICES, tmp_path / "data", "127.0.0.1:0", "", CollectorRegistry(),
                                      pipeline)
    db = open_database(tmp_path / "data")
    store = SummaryStore(db, Vault(open_key_ring(VaultConfig(), create_missing=False)))
    for call_id, agent in (("call-A", "agent-a"), ("call-B", "agent-b")):
        store.create_draft({"call_id": call_id, "disposition": {"code": "UNKNOWN"}}, {"agent_id": agent}, True, "ai")
    db.close()

    def as_user(user):
        return (("x-aftercall-user", user),) if user else ()

    async def code_of(call):
        try:
            await call
        except grpc.aio.AioRpcError as error:
            return error.code().name
        return "OK"

    channel, stub = await _summaries(appliance.port)
    try:
        async with channel:
            get = {(user, call_id): await code_of(stub.Get(spb.GetSummaryRequest(call_id=call_id),
                                                            metadata=as_user(user)))
                   for user in ("agent-a", "agent-b", "sup-s", "aud-1", "adm", "pbx-1", "")
                   for call_id in ("call-A", "call-B")}
            assert {key for key, code in get.items() if code == "OK"} == {
                ("agent-a", "call-A"), ("agent-b", "call-B"), ("sup-s", "call-A"), ("aud-1", "call-A"),
                ("aud-1", "call-B")}
            assert set(get.values()) == {"OK", "PERMISSION_DENIED"}
            for user, visible in (("agent-b", ["call-B"]), ("sup-s", ["call-A"]), ("aud-1", ["call-A", "call-B"])):
                listed = await stub.List(spb.ListSummariesRequest(), metadata=as_user(user))
                assert sorted(s.call_id for s in listed.summaries) == visible, user
            edit = spb.EditSummaryRequest(call_id="call-A", expected_version=1, fields_json='{"issue": "Checked."}')
            assert await code_of(stub.Edit(edit, metadata=as_user("aud-1"))) == "PERMISSION_DENIED"
            assert await code_of(stub.Edit(edit, metadata=as_user("sup-s"))) == "OK"
        events, error = await asyncio.to_thread(_exchange_as, appliance.port, "agent-a", [_start(), _END])
        assert error.code() is grpc.StatusCode.PERMISSION_DENIED and "for pbx" in error.details()
    finally:
        await appliance.stop(1)
    # Without trust_loopback_user only certificates say who is calling: a local process cannot claim a name.
    strict = dataclasses.replace(config, access=dataclasses.replace(access, trust_loopback_user=False))
    appliance = await start_appliance(strict, SERVICES, tmp_path / "data", "127.0.0.1:0", "", CollectorRegistry(),
                                      pipeline)
    try:
        channel, stub = await _summaries(appliance.port)
        async with channel:
            claimed = stub.Get(spb.GetSummaryRequest(call_id="call-A"), metadata=as_user("aud-1"))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await claimed
            assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED and "unidentified" in caught.value.details()
            # Nor does a refusal point the caller at that metadata, which this server does not believe.
            edit = spb.EditSummaryRequest(call_id="call-A", expected_version=2, fields_json='{"issue": "x"}')
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Edit(edit, metadata=as_user("sup-s"))
            assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
            assert "client certificate" in caught.value.details() and "x-aftercall-user" not in caught.value.details()
            # A signed token is believed instead (what a web UI without a client certificate sends).
            keys = open_key_ring(VaultConfig(), create_missing=False)
            for token, code in ((issue_token(keys, "agent-b", 60), "OK"),
                                (issue_token(keys, "agent-b", 60, now=time.time() - 3600), "UNAUTHENTICATED"),
                                (issue_token(keys, "aud-1", 60)[:-2] + "xx", "UNAUTHENTICATED")):
                sent = stub.Get(spb.GetSummaryRequest(call_id="call-B"), metadata=(("x-aftercall-token", token),))
                assert await code_of(sent) == code
    finally:
        await appliance.stop(1)
    remote = dataclasses.replace(Config(), server=ServerConfig(allow_plaintext_remote=True))
    with pytest.raises(ConfigError, match="config access: no roles are set"):
        await start_appliance(remote, SERVICES, tmp_path / "data2", "0.0.0.0:0", "", CollectorRegistry(), pipeline)


def _exchange_as(port: int, user: str, messages):
    from aftercall.core.rpc import client_channel

    with client_channel(f"127.0.0.1:{port}", user=user) as channel:
        try:
            return list(pb_grpc.CallIngestStub(channel).StreamCall(iter(messages))), None
        except grpc.RpcError as error:
            return [], error


@pytest.mark.service
async def test_requests_that_do_not_decode_are_invalid_argument_never_a_python_exception(serve):
    appliance = await serve()
    not_protobuf = b"\xff" * 64  # wire type 7 does not exist
    not_utf8 = b"\x0a\x02\xff\xfe"  # field 1 (call_id), a string that is not UTF-8
    refused = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{appliance.port}") as channel:
        for method in ("/aftercall.v1.CallIngest/SubmitRecording", "/aftercall.v1.Summaries/Get"):
            for body in (not_protobuf, not_utf8):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await channel.unary_unary(method)(body)
                refused.append(caught.value)
        # A stream: as its first message, and as a chunk after a good CallStart (the call is then dropped: no audio).
        for messages in ([not_protobuf], [_start(call_id="garbled").SerializeToString(), not_utf8]):
            _, error = await asyncio.to_thread(_exchange, appliance.port, messages, 30, True)
            refused.append(error)
        for error in refused:
            assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
            assert "could not be decoded" in error.details() and "Decode" not in error.details()
            assert error_reason(error) == "MalformedRequestError"
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert appliance.metrics.registry.get_sample_value(
        "aftercall_errors_total", {"service": "CallIngest", "code": "INVALID_ARGUMENT"}) == 4


@pytest.mark.service
async def test_the_stream_client_reports_the_servers_refusal_mid_write(serve, summariser, tmp_path):
    from aftercall.core.config import AudioConfig
    from conftest import DEMO_WAV, run_cli

    # 100 s of audio sent as fast as flow control allows: the server refuses chunk 2 while the client is writing.
    scripted = Pipeline(Config(), load_taxonomy(), summariser, transcriber_factory=_ScriptedTranscriber)
    appliance = await serve(dataclasses.replace(Config(), audio=AudioConfig(max_duration_s=2)), scripted)
    for attempt in range(3):
        result = await asyncio.to_thread(run_cli, "stream", DEMO_WAV, "--server", f"127.0.0.1:{appliance.port}",
                                         "--chunk-ms", "1000", "--call-id", f"cut-{attempt}", timeout=60)
        assert result.returncode == 2 and result.stderr.splitlines() == [
            "aftercall: server error: INVALID_ARGUMENT: chunk 2 would make the call longer than audio.max_duration_s "
            "= 2 s"], result.stderr


@pytest.mark.service
async def test_info_logs_carry_nothing_the_store_hides_behind_a_blind_index(serve, summariser, caplog):
    taxonomy = "".join(f'[[disposition]]\ncode = "{code}"\nlabel = "{label}"\ndescription = "{description}"\n'
                       for code, label, description in (
                           ("DD_CANCEL_7731", "Direct debit cancelled", "I want to cancel my direct debit"),
                           ("ADDR_CHANGE_7732", "Address change", "I have moved house and need to update my address")))
    turns = (Turn("customer", "Hello, I want to cancel my direct debit please.", 1.0, 4.0),
             Turn("agent", "Of course, I have cancelled the direct debit for you today.", 5.0, 8.0))
    scripted = Pipeline(Config(), load_taxonomy(), summariser, transcriber_factory=lambda: _ScriptedTranscriber(*turns))
    appliance = await serve(using=scripted)
    hidden = {"agent_id": "agent-5521", "queue": "queue-billing-88", "tenant": "tenant-acme-42",
              "customer_ref": "CUST-90817"}
    caplog.set_level(logging.INFO)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{appliance.port}") as channel:
        response = await pb_grpc.CallIngestStub(channel).SubmitRecording(pb.SubmitRecordingRequest(
            call_id="logged", wav=_quiet_recording(), wait=True, metadata=pb.CallMetadata(**hidden),
            taxonomy_toml=taxonomy))
    code = json.loads(response.summary.summary_json)["disposition"]["code"]
    assert code == "DD_CANCEL_7731"
    logged = "\n".join(record.getMessage() for record in caplog.records if record.levelno >= logging.INFO)
    assert "call summarised" in logged
    for value in (code, *hidden.values()):
        assert value not in logged, value


@pytest.mark.service
async def test_the_ingest_lock_file_is_owner_only(serve, tmp_path):
    from aftercall.core.database import lock_data_dir

    await serve()
    assert stat.S_IMODE((tmp_path / "data" / "ingest.lock").stat().st_mode) == 0o600
    older = tmp_path / "older"  # a lock file an earlier release left world-readable is narrowed
    older.mkdir()
    (older / "ingest.lock").touch()
    (older / "ingest.lock").chmod(0o644)
    release = lock_data_dir(older, "ingest")
    try:
        assert stat.S_IMODE((older / "ingest.lock").stat().st_mode) == 0o600
    finally:
        release()

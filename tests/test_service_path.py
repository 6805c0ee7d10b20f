"""The ingest-to-summary path in the service tier: the appliance's real gRPC servers on loopback, on the Riva backend
(the real Riva client) against the real Riva-compatible server, with the fake recogniser in Whisper's place
(tests/fake_recogniser.py). A call is summarised in seconds, and what is checked is the pipeline's own work on known
words: turn order, redaction, the summary's fields, what is stored and how."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import CollectorRegistry

from aftercall.app import SERVICES, start_appliance
from aftercall.config import Config
from aftercall.core.audio import parse_wav, read_wav
from aftercall.evaluation.metrics import digit_leak
from aftercall.ingest.config import IngestConfig
from aftercall.pipeline import Pipeline
from aftercall.summarise.taxonomy import load_taxonomy
from aftercall.transcribe.config import AsrConfig
from aftercall.transcribe.riva import RivaTranscriber
from aftercall.v1 import ingest_pb2 as pb
from aftercall.v1 import ingest_pb2_grpc as pb_grpc
from aftercall.v1 import summaries_pb2 as spb
from aftercall.v1 import summaries_pb2_grpc as spb_grpc
from fake_recogniser import GAP_S

pytestmark = pytest.mark.service

CARD = "4532 0151 1283 0366"
LOST_CARD = [
    ("agent", "Good morning, you're through to Northbank cards, my name is Priya. How can I help?"),
    ("customer", "Hi, my name is Daniel Okafor and I've lost my debit card, I think it was stolen."),
    ("agent", "I'm sorry to hear that. Can you read me the long number on the card, please?"),
    ("customer", f"It's {CARD}."),
    ("agent", "Thank you. I've cancelled that card and ordered a replacement, it will arrive in five working days."),
    ("customer", "Great, thanks for your help."),
]


@pytest.fixture
async def serve(tmp_path, summariser, fake_asr):
    """`await serve(asr_server={...}, **ingest)`: the fake recogniser's server with those [asr_server] settings, and
    the appliance (ingest, summaries) with those [ingest] settings on the Riva backend pointed at it."""
    started = []

    async def start(asr_server: dict | None = None, **ingest):
        asr = await fake_asr(**(asr_server or {}))
        config = dataclasses.replace(
            Config(), asr=dataclasses.replace(AsrConfig(), backend="riva", riva_uri=f"127.0.0.1:{asr.port}"),
            ingest=dataclasses.replace(IngestConfig(), **ingest))
        pipeline = Pipeline(config, load_taxonomy(), summariser,
                            transcriber_factory=lambda: RivaTranscriber(config.asr))
        appliance = await start_appliance(config, SERVICES, tmp_path / "data", "127.0.0.1:0", "", CollectorRegistry(),
                                          pipeline)
        started.append(appliance)
        return appliance, asr

    yield start
    for appliance in started:
        await appliance.stop(2)


def _call(call_id: str, wav: bytes, pace_s: float = 0.0, **start):
    """A stereo mu-law call as a PBX streams it (100 ms chunks, `pace_s` apart): CallStart, chunks, CallEnd."""
    payload = read_wav(wav).payload
    yield pb.CallAudio(start=pb.CallStart(call_id=call_id, encoding=pb.AUDIO_ENCODING_MULAW, sample_rate_hz=8000,
                                          channel_roles=[pb.CHANNEL_ROLE_AGENT, pb.CHANNEL_ROLE_CUSTOMER], **start))
    for sequence, offset in enumerate(range(0, len(payload), 1600)):
        time.sleep(pace_s)
        yield pb.CallAudio(chunk=pb.AudioChunk(sequence=sequence, audio=payload[offset:offset + 1600]))
    yield pb.CallAudio(end=pb.CallEnd(reason="hangup"))


def _exchange(port: int, messages) -> tuple[list[pb.CallEvent], grpc.RpcError | None]:
    events = []
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            for event in pb_grpc.CallIngestStub(channel).StreamCall(messages, timeout=60):
                events.append(event)
        except grpc.RpcError as error:
            return events, error
    return events, None


def _segments(events, final: bool) -> list[tuple[str, str]]:
    return [(e.segment.speaker, e.segment.text) for e in events
            if e.WhichOneof("event") == "segment" and e.segment.final is final]


async def test_a_streamed_call_is_heard_redacted_summarised_and_stored(serve, fake_recogniser):
    appliance, asr = await serve()
    wav = fake_recogniser.say(LOST_CARD)
    events, error = await asyncio.to_thread(_exchange, appliance.port, _call("lost-card", wav))
    assert error is None, error
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[:2] == ["accepted", "received"] and kinds[-1] == "summary"
    turns = _segments(events, final=True)
    assert [speaker for speaker, _ in turns] == [speaker for speaker, _ in LOST_CARD], "each channel is its party"
    assert turns[1] == ("customer", "Hi, my name is [NAME] and I've lost my debit card, I think it was stolen.")
    assert turns[3] == ("customer", "It's [CARD ****0366].")
    summary = json.loads(events[-1].summary.summary_json)
    assert not digit_leak(CARD.replace(" ", ""), events[-1].summary.summary_json)
    assert "Okafor" not in events[-1].summary.summary_json and "Priya" not in events[-1].summary.summary_json
    assert {r["type"]: r["count"] for r in summary["redactions"]} == {"CARD": 1, "NAME": 3}
    assert summary["disposition"]["code"] == "CARD_LOST_STOLEN" and summary["resolution"]["status"] == "resolved"
    assert {"type": "card_last4", "value": "****0366"} in summary["entities"]
    assert summary["complete"] is True and summary["call"]["duration_s"] == pytest.approx(parse_wav(wav).duration)
    assert summary["transcript"][0]["start"] == pytest.approx(GAP_S, abs=0.01), "word times survive the Riva API"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{appliance.port}") as channel:
        stored = await spb_grpc.SummariesStub(channel).Get(spb.GetSummaryRequest(call_id="lost-card",
                                                                                 include_history=True))
    assert json.loads(stored.summary_json) == summary
    assert stored.state == spb.REVIEW_STATE_DRAFT and stored.version == 1 and len(stored.history) == 1
    assert fake_recogniser.unheard == 0, "every turn reached the recogniser as it was said"
    assert asr.metrics.registry.get_sample_value("aftercall_asr_requests_total", {"rpc": "Recognize"}) == 2
    sample = appliance.metrics.registry.get_sample_value
    assert sample("aftercall_pipeline_calls_completed_total") == 1
    assert sample("aftercall_pipeline_stage_duration_seconds_count", {"stage": "asr"}) == 1
    assert sample("aftercall_ingest_calls_active") == 0


async def test_a_submitted_recording_keeps_its_metadata_and_nothing_said_is_stored_in_the_clear(serve, fake_recogniser,
                                                                                                 tmp_path):
    appliance, _ = await serve()
    wav = fake_recogniser.say(LOST_CARD)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{appliance.port}") as channel:
        response = await pb_grpc.CallIngestStub(channel).SubmitRecording(pb.SubmitRecordingRequest(
            call_id="rec-1", wav=wav, wait=True, metadata=pb.CallMetadata(
                agent_id="agent-7", queue="cards", started_at=Timestamp(seconds=1_790_000_000))))
        listed = await spb_grpc.SummariesStub(channel).List(spb.ListSummariesRequest(agent_id="agent-7"))
    summary = json.loads(response.summary.summary_json)
    assert response.audio_seconds == pytest.approx(parse_wav(wav).duration)
    assert summary["call"]["started_at"] == "2026-09-21T14:13:20+00:00"
    assert summary["call"]["duration_s"] == pytest.approx(parse_wav(wav).duration)
    assert [p["turns"] for p in summary["call"]["participants"]] == [3, 3]
    assert summary["disposition"]["code"] == "CARD_LOST_STOLEN"
    assert summary["transcript"][3]["text"] == "It's [CARD ****0366]."
    assert [s.call_id for s in listed.summaries] == ["rec-1"] and listed.summaries[0].agent_id == "agent-7"
    # The spool is gone once the summary is stored, and the store is sealed: what the call said is on disk only
    # encrypted (the summary's own words included, not only what redaction took out).
    assert not (tmp_path / "data" / "spool" / "rec-1").exists()
    for path in (p for p in (tmp_path / "data").rglob("*") if p.is_file()):
        content = path.read_bytes()
        for said in (b"replacement", b"stolen", b"Northbank", b"Okafor", b"0151"):
            assert said not in content, (path, said)


async def test_live_segments_arrive_during_the_call_already_redacted(serve, fake_recogniser):
    # 5 s recognition windows: the first results are final at the server while the call goes on.
    appliance, asr = await serve(asr_server={"max_window_s": 5.0}, max_interim_calls=1)
    short = [("agent", "Can I take the card number?"), ("customer", f"Yes it's {CARD} thanks."),
             ("agent", "Thank you, one moment."), ("customer", "Okay."), ("agent", "That card is now blocked."),
             ("customer", "Great, goodbye.")]
    wav = fake_recogniser.say(short)
    messages = _call("live-1", wav, pace_s=0.1 / 3, interim_results=True)  # three times real time
    events, error = await asyncio.to_thread(_exchange, appliance.port, messages)
    assert error is None and events[0].accepted.interim_results
    kinds = [e.WhichOneof("event") for e in events]
    live = _segments(events, final=False)
    assert ("customer", "Yes it's [CARD ****0366] thanks.") in live, live
    assert "segment" in kinds[:kinds.index("received")], "a live segment before the call ended"
    assert not digit_leak(CARD.replace(" ", ""), " ".join(text for _, text in live))
    assert _segments(events, final=True) == [(speaker, text.replace(CARD, "[CARD ****0366]"))
                                             for speaker, text in short], "the transcript is the whole recording's"
    assert asr.metrics.registry.get_sample_value("aftercall_asr_requests_total", {"rpc": "StreamingRecognize"}) == 2


async def test_a_call_whose_recogniser_is_down_is_aborted_with_the_reason_and_its_audio_kept(serve, fake_recogniser,
                                                                                            tmp_path):
    appliance, asr = await serve(max_attempts=1)
    await asr.stop(0)
    wav = fake_recogniser.say(LOST_CARD[:2])
    events, error = await asyncio.to_thread(_exchange, appliance.port, _call("no-asr", wav))
    assert [e.WhichOneof("event") for e in events] == ["accepted", "received"]
    assert error.code() is grpc.StatusCode.ABORTED, error
    assert "BackendUnavailableError" in error.details() and "UNAVAILABLE after 3 attempt(s)" in error.details()
    assert appliance.metrics.registry.get_sample_value("aftercall_pipeline_calls_failed_total", {"stage": "asr"}) == 1
    assert any((tmp_path / "data" / "spool" / "no-asr").iterdir()), "the audio is kept for an operator"

"""Recognition during the call: the embedded recogniser fed a channel in pieces gives what it gives for the whole
channel; a streamed call is recognised while it lasts, checkpointed (sealed), and ends with the batch path's
transcript; a checkpointed stretch is reused after a restart; a call that falls behind is recognised after it ends."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import re
import sqlite3
import time

import grpc
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from aftercall.app import SERVICES, start_appliance
from aftercall.config import Config
from aftercall.core.audio import Encoding, parse_wav, read_wav
from aftercall.core.transcript import Word
from aftercall.evaluation.bench_tools import demo_call
from aftercall.pipeline import Pipeline
from aftercall.summarise.taxonomy import load_taxonomy
from aftercall.transcribe.vad import SpeechDetector
from aftercall.v1 import ingest_pb2 as pb
from aftercall.v1 import ingest_pb2_grpc as pb_grpc

ROLES = ("agent", "customer")


@pytest.fixture(scope="module")
def long_call() -> bytes:
    """75 s of the demo call: more than one Whisper window of the agent's speech, so stretches close mid-call."""
    return demo_call(75)


@pytest.fixture(scope="module")
def pipeline(summariser, transcriber):
    return Pipeline(Config(), load_taxonomy(), summariser, transcriber_factory=lambda: transcriber)


def _words(turns) -> list[str]:
    """Normalised words: recogniser output differs between CPUs only in spelling details the checks never read."""
    return re.findall(r"[a-z0-9\[\]]+", " ".join(t["text"] for t in turns).lower())


def _pieces(samples: np.ndarray, seed: int):
    chooser, offset = random.Random(seed), 0
    while offset < len(samples):
        size = chooser.randint(80, 12000)
        yield samples[offset:offset + size]
        offset += size


def test_the_vad_fed_in_pieces_finds_the_segments_of_the_whole_channel(long_call):
    audio = parse_wav(long_call)
    detector = SpeechDetector()
    for index in range(len(audio.channels)):
        samples = audio.channel_float(index)
        stream, found = detector.stream(audio.sample_rate), []
        for piece in _pieces(samples, index):
            found += stream.push(piece)
        assert found + stream.finish() == detector.speech(samples, audio.sample_rate) != []


@pytest.mark.e2e
def test_a_channel_recognised_in_pieces_gives_what_the_whole_channel_gives(transcriber, long_call):
    audio = parse_wav(long_call)
    samples = audio.channel_float(0)
    groups = []
    channel = transcriber.channel(audio.sample_rate, on_group=lambda spans, segments: groups.append(len(samples)))
    decoded_before_the_end = 0
    for piece in _pieces(samples, 7):
        channel.push(piece)
        decoded_before_the_end = len(groups)
    pieces = channel.finish()
    whole = transcriber.recognise(samples, audio.sample_rate)
    assert decoded_before_the_end >= 1, "a full stretch is recognised before the channel ends"
    assert [[(w.text, w.start, w.end) for w in s] for s in pieces] == [[(w.text, w.start, w.end) for w in s]
                                                                       for s in whole]


@pytest.mark.e2e
def test_a_channels_last_group_is_decoded_in_the_pause_before_it_ends_and_reused_only_if_it_stays_last(
        transcriber):
    # The last 40 s of the demo call: the customer's last three turns, one group, the last followed by 0.8 s of
    # silence before the hang-up, as calls end.
    audio = parse_wav(demo_call(40, ending=True))
    samples = audio.channel_float(1)

    def fed(keep_as_marker: bool):
        channel, offered = transcriber.channel(audio.sample_rate), []
        for piece in _pieces(samples, 3):
            channel.push(piece)
            speculation = channel.speculation()
            if speculation is not None:
                offered.append(speculation)
                if keep_as_marker:
                    channel.keep(speculation, [[Word(f"Marker{len(offered)}", 0.0, 0.1, 0.9)]])
        return channel, offered

    _channel, offered = fed(keep_as_marker=False)
    assert len(offered) >= 2, "one speculation after each pause"
    whole = transcriber.recognise(samples, audio.sample_rate)
    assert [[(w.text, w.start, w.end) for w in s] for s in offered[-1].decode()] == \
           [[(w.text, w.start, w.end) for w in s] for s in whole], "the spare copy of the model decodes alike"
    channel, offered = fed(keep_as_marker=True)
    assert [[w.text for w in s] for s in channel.finish()] == [[f"Marker{len(offered)}"]], \
        "the last speculation is the group the channel ends with; the earlier ones, overtaken by speech, are not used"


@pytest.mark.e2e
def test_a_checkpointed_stretch_is_reused_not_recognised_again(transcriber, long_call, tmp_path):
    from aftercall.vault.config import VaultConfig
    from aftercall.core.database import open_database
    from aftercall.ingest.calls import RECEIVING, CallJob, CallStore
    from aftercall.ingest.spool import AudioFormat
    from aftercall.vault.envelope import Vault
    from aftercall.vault.keys import open_key_ring

    audio = parse_wav(long_call)
    first = []
    channel = transcriber.channel(audio.sample_rate, on_group=lambda spans, segments: first.append(spans))
    channel.push(audio.channel_float(0))
    channel.finish()
    db = open_database(tmp_path / "data")
    calls = CallStore(db, Vault(open_key_ring(VaultConfig(key_file=str(tmp_path / "keys.json")),
                                              create_missing=True)))
    calls.create(CallJob("c1", RECEIVING, "stream", AudioFormat(Encoding.MULAW, audio.sample_rate, 2), ROLES, {}))
    marker = Word("Checkpointedmarker", 0.5, 0.9, 0.9)
    calls.checkpoint_group("c1", 0, first[0], [[marker]])
    decoded = calls.recognised_groups("c1", 2)
    assert list(decoded[0]) == [first[0]] and decoded[1] == {}
    transcript = transcriber.transcribe(audio, ROLES, decoded=decoded)
    assert "Checkpointedmarker" in " ".join(t.text for t in transcript.turns)
    db.commit()
    assert b"Checkpointedmarker" not in (tmp_path / "data" / "aftercall.db").read_bytes(), "sealed, not plain"
    calls.mark_done("c1")
    assert calls.recognised_groups("c1", 2) == [{}, {}]


def _messages(payload: bytes, call_id: str, before_end=None):
    yield pb.CallAudio(start=pb.CallStart(call_id=call_id, encoding=pb.AUDIO_ENCODING_MULAW, sample_rate_hz=8000,
                                          channel_roles=[1, 2]))
    for index, offset in enumerate(range(0, len(payload), 1600)):  # 100 ms of stereo mu-law a chunk
        yield pb.CallAudio(chunk=pb.AudioChunk(sequence=index, audio=payload[offset:offset + 1600]))
    if before_end is not None:
        before_end()
    yield pb.CallAudio(end=pb.CallEnd(reason="hangup"))


def _stream(port: int, messages) -> dict:
    import json

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        events = list(pb_grpc.CallIngestStub(channel).StreamCall(messages, timeout=300))
    return json.loads(events[-1].summary.summary_json)


async def _streamed(tmp_path, pipeline, wav: bytes, call_id: str, before_end=None, **ingest) -> tuple[dict, dict]:
    """One call streamed to a fresh appliance with these [ingest] settings: its summary, and the live-recognition
    metrics once it is stored (live, fell_behind, after_call, active)."""
    config = Config()
    config = dataclasses.replace(config, ingest=dataclasses.replace(config.ingest, **ingest))
    appliance = await start_appliance(config, SERVICES, tmp_path / "data", "127.0.0.1:0", "", CollectorRegistry(),
                                      pipeline)
    try:
        summary = await asyncio.to_thread(_stream, appliance.port, _messages(read_wav(wav).payload, call_id,
                                                                             before_end))
        sample = appliance.metrics.registry.get_sample_value
        counts = {outcome: sample("aftercall_ingest_live_recognition_total", {"outcome": outcome})
                  for outcome in ("live", "fell_behind", "after_call")}
        return summary, {**counts, "active": sample("aftercall_ingest_live_calls_active")}
    finally:
        await appliance.stop(2)


def _checkpointed_rows(database) -> int:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as reader:
        return reader.execute("SELECT COUNT(*) FROM recognised_groups").fetchone()[0]


@pytest.mark.e2e
async def test_a_streamed_call_is_recognised_during_the_call_with_the_batch_paths_transcript(
        tmp_path, pipeline, long_call):
    database = tmp_path / "data" / "aftercall.db"
    checkpointed = []

    def wait_for_a_stretch() -> None:
        """Before hanging up: a stretch of the call is recognised and checkpointed already."""
        deadline = time.monotonic() + 120
        while not _checkpointed_rows(database) and time.monotonic() < deadline:
            time.sleep(0.1)
        checkpointed.append(_checkpointed_rows(database))

    # Sent far faster than real time: the recogniser must not be judged behind.
    summary, metrics = await _streamed(tmp_path, pipeline, long_call, "live-1", wait_for_a_stretch,
                                       live_max_lag_s=86_400.0)
    assert checkpointed[0] >= 1
    assert metrics == {"live": 1, "fell_behind": None, "after_call": None, "active": 0}
    assert _checkpointed_rows(database) == 0, "gone once the transcript is redacted"
    batch = await asyncio.to_thread(pipeline.run, parse_wav(long_call), ROLES)
    assert _words(summary["transcript"]) == _words(batch["transcript"])


@pytest.mark.e2e
async def test_a_call_that_falls_behind_is_recognised_after_it_ends(tmp_path, pipeline, long_call):
    # 75 s of audio sent as fast as the stream goes: far more than 5 s ahead of the recogniser.
    summary, metrics = await _streamed(tmp_path, pipeline, long_call, "behind", live_max_lag_s=5.0)
    assert metrics == {"live": None, "fell_behind": 1, "after_call": None, "active": 0}
    batch = await asyncio.to_thread(pipeline.run, parse_wav(long_call), ROLES)
    assert _words(summary["transcript"]) == _words(batch["transcript"])


@pytest.mark.e2e
async def test_calls_beyond_the_live_slots_are_recognised_after_they_end(tmp_path, pipeline, demo_clip):
    summary, metrics = await _streamed(tmp_path, pipeline, demo_clip, "off", max_live_calls=0)
    assert metrics == {"live": None, "fell_behind": None, "after_call": 1, "active": 0}
    assert summary["transcript"]


async def test_work_for_a_call_that_has_ended_goes_first_and_early_decodes_newest_first():
    from aftercall.ingest.live import LiveWorkers

    workers, order, release = LiveWorkers(1, spare=True), [], asyncio.Event()
    loop = asyncio.get_running_loop()

    def wait_for_release() -> None:
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result()

    try:
        busy = workers.run(False, wait_for_release)
        queued = [workers.run(urgent, order.append, name)
                  for urgent, name in ((False, "going on 1"), (False, "going on 2"), (True, "ended"))]
        spare_busy = asyncio.wrap_future(workers.speculate(wait_for_release))
        early = [workers.speculate(lambda name=name: order.append(name)) for name in ("pause 1", "pause 2", "pause 3")]
        early[1].cancel()  # overtaken while queued: never run
        release.set()
        await asyncio.gather(busy, spare_busy, *queued, *(asyncio.wrap_future(f) for f in early),
                             return_exceptions=True)
        assert [name for name in order if name.startswith("going") or name == "ended"] == [
            "ended", "going on 1", "going on 2"]
        assert [name for name in order if name.startswith("pause")] == ["pause 3", "pause 1"]
    finally:
        workers.shutdown()


class _Call:
    """What LiveWorkers asks of a live call when the appliance falls behind."""

    def __init__(self, workers, name: str):
        self.name, self.given_up = name, ""
        workers.started(self)
        self._workers = workers

    def give_up(self, why: str) -> None:
        self.given_up = why
        self._workers.ended(self)


def test_when_live_recognition_falls_behind_the_newest_call_is_recognised_after_it_ends():
    from aftercall.ingest.live import LiveWorkers

    workers = LiveWorkers(1, spare=False)
    try:
        oldest, middle, newest = (_Call(workers, name) for name in ("oldest", "middle", "newest"))
        workers.behind(oldest, 61.0, 60.0)
        assert "newest" in newest.given_up and not oldest.given_up and not middle.given_up
        workers.behind(oldest, 70.0, 60.0)
        assert not middle.given_up, "the capacity freed is given time to show before another call is given up"
        workers.behind(oldest, 121.0, 60.0)
        assert "twice" in oldest.given_up and not middle.given_up, "a call too far behind gives itself up"
    finally:
        workers.shutdown()

"""The Riva API both ways: the stock `riva.client` against `aftercall serve asr`, and our Riva backend against it.
The same client suite can be pointed at a real Riva server (docs/speech.md)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import riva.client
from prometheus_client import CollectorRegistry
from riva.client.proto import riva_asr_pb2 as rasr

from aftercall.app import start_appliance
from aftercall.asr.config import AsrServerConfig
from aftercall.config import Config
from aftercall.core.audio import parse_wav, read_wav
from aftercall.core.config import ServerConfig
from aftercall.core.errors import BackendUnavailableError, ConfigError
from aftercall.transcribe.config import AsrConfig
from aftercall.transcribe.riva import RivaTranscriber
from conftest import free_port, run_cli
from heard import assert_heard


# Point the client suite at a real Riva deployment instead: AFTERCALL_TEST_RIVA_URI=host:50051 (docs/speech.md).
EXTERNAL_RIVA = os.environ.get("AFTERCALL_TEST_RIVA_URI", "")


@pytest.fixture
async def asr_server(tmp_path, transcriber):
    started = []

    async def start(api_key: str | None = None, server: ServerConfig | None = None, **settings):
        if EXTERNAL_RIVA:
            if api_key or server or settings:
                pytest.skip("needs a server configured by the test (API key, TLS, window sizes)")
            return EXTERNAL_RIVA
        key_file = ""
        if api_key:
            (tmp_path / "asr.key").write_text(api_key + "\n")
            key_file = str(tmp_path / "asr.key")
        config = dataclasses.replace(Config(), server=server or ServerConfig(), asr_server=dataclasses.replace(
            AsrServerConfig(), api_key_file=key_file, **settings))
        appliance = await start_appliance(config, ("asr",), tmp_path / "data", "127.0.0.1:0", "",
                                          CollectorRegistry(), asr_transcriber=transcriber)
        started.append(appliance)
        return f"127.0.0.1:{appliance.port}"

    yield start
    for appliance in started:
        await appliance.stop(1)


def _service(uri: str, api_key: str | None = None) -> riva.client.ASRService:
    return riva.client.ASRService(riva.client.Auth(uri=uri, metadata_args=[["api-key", api_key]] if api_key else None))


def _per_channel_config(**fields) -> riva.client.RecognitionConfig:
    return riva.client.RecognitionConfig(enable_word_time_offsets=True, enable_separate_recognition_per_channel=True,
                                         language_code="en-US", **fields)


@pytest.mark.e2e
async def test_stock_client_recognises_a_mulaw_wav_per_channel(asr_server, demo_clip):
    uri = await asr_server()
    # As the stock client does: the WAV file's bytes, header included, encoding left to the header.
    response = await asyncio.to_thread(_service(uri).offline_recognize, demo_clip, _per_channel_config())
    assert {r.channel_tag for r in response.results} == {1, 2}
    agent = " ".join(r.alternatives[0].transcript for r in response.results if r.channel_tag == 1).lower()
    assert_heard(agent, "bank", "help")
    words = [w for r in response.results for w in r.alternatives[0].words]
    assert words and all(0 <= w.start_time <= w.end_time <= 14_500 for w in words)
    starts = [r.alternatives[0].words[0].start_time for r in response.results]
    assert starts == sorted(starts), "results come in time order across channels"

    # Headerless G.711 with the layout in the config gives the same words.
    wav = read_wav(demo_clip)
    raw = await asyncio.to_thread(_service(uri).offline_recognize, wav.payload, _per_channel_config(
        encoding=riva.client.AudioEncoding.MULAW, sample_rate_hertz=8000, audio_channel_count=2))
    assert [r.alternatives[0].transcript for r in raw.results] == [r.alternatives[0].transcript
                                                                    for r in response.results]


@pytest.mark.service
@pytest.mark.parametrize("fields, audio, fragment", [
    ({"encoding": riva.client.AudioEncoding.FLAC}, b"fLaC" + bytes(100), "config.encoding: FLAC is not supported"),
    ({"encoding": riva.client.AudioEncoding.OGGOPUS}, b"OggS" + bytes(100), "config.encoding: OGGOPUS"),
    ({"diarization_config": rasr.SpeakerDiarizationConfig(enable_speaker_diarization=True)}, None,
     "config.diarization_config"),
    ({"sample_rate_hertz": 16000}, None, "config.sample_rate_hertz: 16000 but the WAV header says 8000"),
    ({"encoding": riva.client.AudioEncoding.MULAW, "sample_rate_hertz": 44100}, b"\xff" * 100,
     "config.sample_rate_hertz: 8000 or 16000, got 44100"),
    ({}, b"\xff" * 100, "config.encoding: required for audio without a WAV header"),
    ({"language_code": "de-DE"}, None, "config.language_code"),
    ({"audio_channel_count": 3}, None, "config.audio_channel_count: 1 or 2"),
    ({"encoding": riva.client.AudioEncoding.LINEAR_PCM, "sample_rate_hertz": 8000}, b"\x00" * 3,
     "truncated"),
])
@pytest.mark.skipif(bool(EXTERNAL_RIVA), reason="these are the embedded server's documented limits")
async def test_unsupported_requests_are_invalid_argument_naming_the_field(asr_server, demo_clip, fields, audio,
                                                                           fragment):
    uri = await asr_server()
    config = riva.client.RecognitionConfig(**fields)
    with pytest.raises(grpc.RpcError) as caught:
        await asyncio.to_thread(_service(uri).offline_recognize, demo_clip if audio is None else audio, config)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT and fragment in caught.value.details()


@pytest.mark.e2e
async def test_streaming_gives_interim_then_final_results_per_channel(asr_server, demo_clip):
    uri = await asr_server(interim_interval_s=2.0, max_window_s=8.0)
    config = riva.client.StreamingRecognitionConfig(config=_per_channel_config(), interim_results=True)
    chunks = [demo_clip[i : i + 3200] for i in range(0, len(demo_clip), 3200)]  # header in the first chunk

    def run():
        return list(_service(uri).streaming_response_generator(chunks, config))

    responses = await asyncio.to_thread(run)
    results = [r for response in responses for r in response.results]
    assert any(not r.is_final for r in results) and any(r.is_final for r in results)
    finals = [r for r in results if r.is_final]
    assert {r.channel_tag for r in finals} == {1, 2}
    final_text = " ".join(r.alternatives[0].transcript for r in finals if r.channel_tag == 1).lower()
    assert_heard(final_text, "bank")
    # Windows of 8 s over a 14 s call: words keep their place in the call, not in the window.
    assert max(w.start_time for r in finals for w in r.alternatives[0].words) > 8_000


@pytest.mark.e2e
async def test_api_key_is_required_when_configured(asr_server, demo_clip):
    uri = await asr_server(api_key="s3cret-key")
    config = _per_channel_config()
    for key, code in ((None, grpc.StatusCode.UNAUTHENTICATED), ("wrong", grpc.StatusCode.UNAUTHENTICATED)):
        with pytest.raises(grpc.RpcError) as caught:
            await asyncio.to_thread(_service(uri, key).offline_recognize, demo_clip, config)
        assert caught.value.code() is code
    response = await asyncio.to_thread(_service(uri, "s3cret-key").offline_recognize, demo_clip, config)
    assert response.results
    listing = await asyncio.to_thread(_service(uri, "s3cret-key").stub.GetRivaSpeechRecognitionConfig,
                                      rasr.RivaSpeechRecognitionConfigRequest(), metadata=[("api-key", "s3cret-key")])
    assert listing.model_config[0].model_name == "aftercall-whisper-tiny.en"
    bearer = await asyncio.to_thread(_service(uri).stub.Recognize,
                                     rasr.RecognizeRequest(config=config, audio=demo_clip),
                                     metadata=[("authorization", "Bearer s3cret-key")])
    assert bearer.results
    streaming = riva.client.StreamingRecognitionConfig(config=config)
    with pytest.raises(grpc.RpcError) as caught:
        await asyncio.to_thread(lambda: list(_service(uri, "wrong").streaming_response_generator([demo_clip],
                                                                                                 streaming)))
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    streamed = await asyncio.to_thread(lambda: list(_service(uri, "s3cret-key").streaming_response_generator(
        [demo_clip], streaming)))
    assert any(r.is_final for response in streamed for r in response.results)


@pytest.mark.e2e
@pytest.mark.skipif(bool(EXTERNAL_RIVA), reason="Riva's own endpointing would cut the results differently")
async def test_a_stream_whose_chunks_cut_sample_frames_is_heard_the_same(asr_server, demo_clip):
    """Stereo 16-bit PCM (4-byte frames) in 999-byte chunks: every chunk ends mid-frame."""
    uri = await asr_server()
    wav = parse_wav(demo_clip)
    pcm = np.stack(wav.channels, axis=1).astype("<i2").tobytes()
    config = riva.client.StreamingRecognitionConfig(config=_per_channel_config(
        encoding=riva.client.AudioEncoding.LINEAR_PCM, sample_rate_hertz=8000, audio_channel_count=2))

    aligned = await asyncio.to_thread(_finals, uri, _split(pcm, 4000), config)
    cut = await asyncio.to_thread(_finals, uri, _split(pcm, 999), config)
    assert cut == aligned and {tag for tag, _ in cut} == {1, 2}


def _split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def _finals(uri: str, chunks: list[bytes], config) -> list[tuple[int, str]]:
    responses = _service(uri).streaming_response_generator(chunks, config)
    return [(r.channel_tag, r.alternatives[0].transcript) for response in responses for r in response.results
            if r.is_final]


@pytest.mark.e2e
@pytest.mark.skipif(bool(EXTERNAL_RIVA), reason="Riva's own endpointing would cut the results differently")
async def test_a_streamed_wav_ends_where_its_header_says(asr_server, demo_clip):
    """What follows the declared data chunk is not audio, though it arrives in the stream: here a chunk that happens
    to hold 3 s of speech-like bytes, which would be heard as words if it were decoded."""
    uri = await asr_server()
    config = riva.client.StreamingRecognitionConfig(config=_per_channel_config())
    speech = read_wav(demo_clip).payload[:48000]
    trailer = b"junk" + len(speech).to_bytes(4, "little") + speech
    plain = await asyncio.to_thread(_finals, uri, _split(demo_clip, 3200), config)
    tagged = await asyncio.to_thread(_finals, uri, _split(demo_clip + trailer, 3200), config)
    assert tagged == plain


@pytest.mark.e2e
@pytest.mark.skipif(bool(EXTERNAL_RIVA), reason="compares with the embedded recogniser behind our server")
@pytest.mark.parametrize("mixed", [False, True], ids=["stereo", "mono-diarised"])
async def test_riva_backend_matches_the_embedded_recogniser(asr_server, transcriber, demo_clip, mixed):
    """The same VAD segmentation and (mono) the same speaker attribution, whichever side of the Riva API runs
    them."""
    uri = await asr_server()
    audio = parse_wav(demo_clip)
    if mixed:
        summed = np.clip(audio.channels[0].astype(np.int32) + audio.channels[1], -32768, 32767).astype(np.int16)
        audio = dataclasses.replace(audio, channels=(summed,))
    remote = await asyncio.to_thread(RivaTranscriber(AsrConfig(backend="riva", riva_uri=uri)).transcribe, audio,
                                     ("agent", "customer"))
    local = await asyncio.to_thread(transcriber.transcribe, audio, ("agent", "customer"))
    assert [(t.speaker, t.text) for t in remote.turns] == [(t.speaker, t.text) for t in local.turns]
    assert [t.start for t in remote.turns] == pytest.approx([t.start for t in local.turns], abs=0.01)
    if mixed:
        assert {t.speaker for t in local.turns} == {"agent", "customer"}


@pytest.mark.e2e
async def test_riva_backend_over_mutual_tls_with_an_api_key(asr_server, pki, demo_clip):
    uri = await asr_server(api_key="k-123", server=ServerConfig(
        tls_cert_file=pki["server_cert"], tls_key_file=pki["server_key"], tls_client_ca_file=pki["ca"]))
    uri = uri.replace("127.0.0.1", "localhost")  # the name in the server's certificate
    (Path(pki["ca"]).parent / "riva.key").write_text("k-123\n")
    secure = AsrConfig(backend="riva", riva_uri=uri, riva_tls_ca_file=pki["ca"], riva_tls_cert_file=pki["client_cert"],
                       riva_tls_key_file=pki["client_key"], riva_api_key_file=str(Path(pki["ca"]).parent / "riva.key"),
                       retries=0, timeout_s=60)
    transcript = await asyncio.to_thread(RivaTranscriber(secure).transcribe, parse_wav(demo_clip), ("agent", "customer"))
    assert {t.speaker for t in transcript.turns} == {"agent", "customer"}
    without_certificate = dataclasses.replace(secure, riva_tls_cert_file="", riva_tls_key_file="")
    with pytest.raises(BackendUnavailableError, match="UNAVAILABLE"):
        await asyncio.to_thread(RivaTranscriber(without_certificate).transcribe, parse_wav(demo_clip), ("agent",))
    (Path(pki["ca"]).parent / "wrong.key").write_text("k-456\n")
    wrong_key = dataclasses.replace(secure, riva_api_key_file=str(Path(pki["ca"]).parent / "wrong.key"))
    with pytest.raises(ConfigError, match="refused the key"):
        await asyncio.to_thread(RivaTranscriber(wrong_key).transcribe, parse_wav(demo_clip), ("agent", "customer"))
    with pytest.raises(ConfigError, match="does not hold one API key"):
        RivaTranscriber(dataclasses.replace(secure, riva_api_key_file=pki["ca"]))  # a PEM file by mistake


@pytest.mark.e2e
async def test_riva_tls_can_trust_the_system_cas(asr_server, pki, demo_clip, tmp_path):
    """`asr.riva_tls = true` and no CA file: gRPC's default roots, here pointed at the test CA for a fresh process."""
    uri = await asr_server(server=ServerConfig(tls_cert_file=pki["server_cert"], tls_key_file=pki["server_key"]))
    clip, config = tmp_path / "clip.wav", tmp_path / "riva.toml"
    clip.write_bytes(demo_clip)
    named = uri.replace("127.0.0.1", "localhost")  # the name in the server's certificate
    config.write_text(f'[asr]\nbackend = "riva"\nriva_tls = true\nriva_uri = "{named}"\n')
    result = await asyncio.to_thread(run_cli, "summarise", clip, "--config", config, "--quiet",
                                     env={"GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": pki["ca"]})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["disposition"]["code"] == "CARD_LOST_STOLEN"
    config.write_text(f'[asr]\nbackend = "riva"\nriva_tls_cert_file = "{pki["client_cert"]}"\n'
                      f'riva_tls_key_file = "{pki["client_key"]}"\n')
    refused = await asyncio.to_thread(run_cli, "summarise", clip, "--config", config)
    assert refused.returncode == 2 and "asr.riva_tls_cert_file: a client certificate needs TLS" in refused.stderr


def test_riva_down_is_a_clear_error_after_the_retries(demo_clip):
    port = free_port()
    backend = RivaTranscriber(AsrConfig(backend="riva", riva_uri=f"127.0.0.1:{port}", retries=1, timeout_s=5))
    with pytest.raises(BackendUnavailableError, match=rf"Riva ASR at 127.0.0.1:{port}: UNAVAILABLE after 2 attempt"):
        backend.transcribe(parse_wav(demo_clip), ("agent", "customer"))


@pytest.mark.e2e
@pytest.mark.skipif(bool(EXTERNAL_RIVA), reason="compares with the embedded recogniser behind our server")
def test_summarise_over_riva_equals_the_in_process_summary(tmp_path, demo_clip):
    """`aftercall serve asr` as a process, `aftercall summarise --config` with asr.backend = riva."""
    from test_serve_process import Server

    server = Server(tmp_path / "asr-data", "asr")
    try:
        clip = tmp_path / "clip.wav"
        clip.write_bytes(demo_clip)
        config = tmp_path / "riva.toml"
        config.write_text(f'[asr]\nbackend = "riva"\nriva_uri = "{server.address}"\n')
        over_riva = run_cli("summarise", clip, "--config", config, "--call-id", "c1", "--quiet")
        in_process = run_cli("summarise", clip, "--call-id", "c1", "--quiet")
    finally:
        server.stop()
    assert over_riva.returncode == 0 and in_process.returncode == 0, over_riva.stderr + in_process.stderr
    remote, local = json.loads(over_riva.stdout), json.loads(in_process.stdout)
    for field in ("transcript", "reason_for_contact", "issue", "actions_taken", "resolution", "follow_ups",
                  "sentiment", "disposition", "escalation", "entities", "narrative", "redactions"):
        assert remote[field] == local[field], field


@pytest.mark.e2e
@pytest.mark.skipif(bool(EXTERNAL_RIVA), reason="counts requests on the in-process server")
@pytest.mark.parametrize("layout", ["interleaved", "per_channel"])
async def test_a_live_call_on_the_riva_backend_streams_each_channel(tmp_path, transcriber, summariser, demo_clip,
                                                                     layout):
    """StreamCall with interim results and asr = riva: one StreamingRecognize stream per channel fed as the audio
    arrives (each channel on its own, whether chunks carry both or one); what comes back is redacted like every
    interim segment; the summary still comes from Recognize."""
    from aftercall.app import SERVICES
    from aftercall.ingest.config import IngestConfig
    from aftercall.pipeline import Pipeline
    from aftercall.summarise.taxonomy import load_taxonomy
    from test_services import _END, _chunk, _chunks, _exchange, _start

    asr_config = dataclasses.replace(Config(), asr_server=dataclasses.replace(AsrServerConfig(), max_window_s=5.0))
    asr = await start_appliance(asr_config, ("asr",), tmp_path / "asr", "127.0.0.1:0", "", CollectorRegistry(),
                                asr_transcriber=transcriber)
    config = dataclasses.replace(
        Config(), asr=dataclasses.replace(AsrConfig(), backend="riva", riva_uri=f"127.0.0.1:{asr.port}"),
        ingest=dataclasses.replace(IngestConfig(), max_interim_calls=1))
    payload = read_wav(demo_clip).payload
    if layout == "interleaved":
        messages = _chunks(payload, 1600)
    else:  # 100 ms of the agent, then 100 ms of the customer, and so on
        agent, customer = payload[0::2], payload[1::2]
        messages = [_chunk(2 * i + c, side[o : o + 800], channel=c) for i, o in enumerate(range(0, len(agent), 800))
                    for c, side in enumerate((agent, customer))]

    def paced():  # three times real time
        yield _start(call_id="live-riva", interim_results=True)
        for message in messages:
            time.sleep((0.1 if layout == "interleaved" else 0.05) / 3)
            yield message
        yield _END

    try:
        appliance = await start_appliance(config, SERVICES, tmp_path / "data", "127.0.0.1:0", "",
                                          CollectorRegistry(), Pipeline(config, load_taxonomy(), summariser,
                                                                        lambda: RivaTranscriber(config.asr)))
        try:
            events, error = await asyncio.to_thread(_exchange, appliance.port, paced())
        finally:
            await appliance.stop(2)
    finally:
        await asr.stop(1)
    assert error is None and events[0].accepted.interim_results
    segments = [e.segment for e in events if e.WhichOneof("event") == "segment"]
    live = [s for s in segments if not s.final]
    assert {s.speaker for s in live} == {"agent", "customer"}
    assert segments.index(live[-1]) < segments.index(next(s for s in segments if s.final))
    assert all(0 <= s.start_s <= s.end_s <= 14.5 for s in live)
    assert all(not re.search(r"(?<![\d*])\d(?:[\s.-]?\d){3,}", s.text) for s in live)
    assert events[-1].WhichOneof("event") == "summary"
    sample = asr.metrics.registry.get_sample_value
    assert sample("aftercall_asr_requests_total", {"rpc": "StreamingRecognize"}) == 2  # one stream per channel
    assert sample("aftercall_asr_audio_seconds_total", {"rpc": "StreamingRecognize"}) == pytest.approx(28, abs=1)
    assert sample("aftercall_asr_requests_total", {"rpc": "Recognize"}) >= 2  # the post-call transcript

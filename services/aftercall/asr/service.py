"""`aftercall serve asr`: the embedded recogniser (faster-whisper tiny.en) behind the NVIDIA Riva ASR API, built on
the servicer base `nvidia-riva-client` ships, so the stock `riva.client.ASRService` (and our Riva backend) talk to it
exactly as to a Riva server.

Differences from Riva (also in docs/speech.md): English only; one alternative; no speaker diarisation (send one party
per channel); FLAC and OGGOPUS are refused; confidence is Whisper's mean word probability; streaming re-decodes a
window of up to `asr_server.max_window_s` (Whisper has no native streaming), so interim results arrive every
`asr_server.interim_interval_s` of audio and finals when a window fills or the stream ends.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import AsyncIterator

import grpc
import numpy as np
from riva.client.proto import riva_asr_pb2 as rasr
from riva.client.proto import riva_asr_pb2_grpc as rasr_grpc
from riva.client.proto import riva_audio_pb2 as raudio

from aftercall.asr.config import AsrServerConfig
from aftercall.asr.metrics import AsrMetrics
from aftercall.core.audio import SAMPLE_BYTES, SUPPORTED_RATES, Audio, Encoding, decode_samples, parse_raw, read_wav
from aftercall.core.errors import AudioFormatError, AuthenticationError, NotFoundError, UserError
from aftercall.core.rpc import ServiceBinding
from aftercall.core.transcript import Word
from aftercall.transcribe.embedded import EmbeddedTranscriber

logger = logging.getLogger(__name__)

MODEL_NAME = "aftercall-whisper-tiny.en"
_ENCODINGS = {raudio.LINEAR_PCM: Encoding.LINEAR_PCM, raudio.MULAW: Encoding.MULAW, raudio.ALAW: Encoding.ALAW}


def _check_config(config: rasr.RecognitionConfig) -> None:
    """Refuse what this recogniser cannot do, naming the field, instead of quietly doing something else."""
    if config.encoding in (raudio.FLAC, raudio.OGGOPUS):
        raise UserError(f"config.encoding: {raudio.AudioEncoding.Name(config.encoding)} is not supported "
                        "(LINEAR_PCM, MULAW or ALAW)")
    if config.encoding not in _ENCODINGS and config.encoding != raudio.ENCODING_UNSPECIFIED:
        raise UserError(f"config.encoding: unknown value {config.encoding}")
    if config.diarization_config.enable_speaker_diarization:
        raise UserError("config.diarization_config: speaker diarisation is not supported; send each party on its own "
                        "channel with enable_separate_recognition_per_channel")
    if config.language_code and not config.language_code.lower().startswith("en"):
        raise UserError(f"config.language_code: only English (en-US) is supported, got {config.language_code!r}")
    if config.model and config.model != MODEL_NAME:
        raise UserError(f"config.model: unknown model {config.model!r} (this server has {MODEL_NAME})")
    if not 0 <= config.audio_channel_count <= 2:
        raise UserError(f"config.audio_channel_count: 1 or 2, got {config.audio_channel_count}")


def _layout(config: rasr.RecognitionConfig, header: tuple[Encoding, int, int] | None) -> tuple[Encoding, int, int]:
    """Encoding, rate and channels: from the WAV header when the audio has one (the stock client sends it), checked
    against whatever the config also says; from the config otherwise."""
    if header is not None:
        encoding, rate, channels = header
        if config.encoding != raudio.ENCODING_UNSPECIFIED and _ENCODINGS[config.encoding] is not encoding:
            raise UserError(f"config.encoding: {raudio.AudioEncoding.Name(config.encoding)} but the WAV header says "
                            f"{encoding.value}")
        if config.sample_rate_hertz and config.sample_rate_hertz != rate:
            raise UserError(f"config.sample_rate_hertz: {config.sample_rate_hertz} but the WAV header says {rate}")
        if config.audio_channel_count and config.audio_channel_count != channels:
            raise UserError(f"config.audio_channel_count: {config.audio_channel_count} but the WAV header says "
                            f"{channels}")
        return header
    if config.encoding == raudio.ENCODING_UNSPECIFIED:
        raise UserError("config.encoding: required for audio without a WAV header")
    if config.sample_rate_hertz not in SUPPORTED_RATES:
        raise UserError(f"config.sample_rate_hertz: 8000 or 16000, got {config.sample_rate_hertz}")
    return _ENCODINGS[config.encoding], config.sample_rate_hertz, config.audio_channel_count or 1


def _alternative(words: list[Word], with_offsets: bool, offset_s: float = 0.0) -> rasr.SpeechRecognitionAlternative:
    alternative = rasr.SpeechRecognitionAlternative(
        transcript=" ".join(w.text for w in words),
        confidence=float(np.mean([w.probability for w in words])) if words else 0.0)
    if with_offsets:
        alternative.words.extend(rasr.WordInfo(
            word=w.text, start_time=round((w.start + offset_s) * 1000), end_time=round((w.end + offset_s) * 1000),
            confidence=w.probability) for w in words)
    return alternative


def _channels(audio: Audio, separate: bool) -> list[np.ndarray]:
    """Riva's rule: one result stream per channel when asked, else the channels mixed down (float32, the audio's
    own rate: the VAD reads 8 kHz as it came)."""
    channels = [audio.channel_float(i) for i in range(len(audio.channels))]
    if separate or len(channels) == 1:
        return channels
    return [np.mean(channels, axis=0).astype(np.float32)]


class _ChannelWindow:
    """One channel of a stream: the audio not yet finalised, and where it starts in the call."""

    def __init__(self, sample_rate: int, encoding: Encoding):
        self.sample_rate, self.encoding = sample_rate, encoding
        self.start_s = 0.0
        self.samples = np.zeros(0, dtype=np.int16)

    def append(self, samples: np.ndarray) -> None:
        self.samples = np.concatenate([self.samples, samples])

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.sample_rate

    def float(self) -> np.ndarray:
        return Audio(self.sample_rate, (self.samples,), self.encoding).channel_float(0)

    def drop_before(self, window_offset_s: float) -> None:
        cut = int(window_offset_s * self.sample_rate)
        self.samples = self.samples[cut:]
        self.start_s += cut / self.sample_rate


class RivaCompatibleAsr(rasr_grpc.RivaSpeechRecognitionServicer):
    def __init__(self, transcriber: EmbeddedTranscriber, config: AsrServerConfig, metrics: AsrMetrics,
                 api_key: str | None = None):
        self._transcriber = transcriber
        self._config = config
        self._metrics = metrics
        self._api_key = api_key
        self._executor = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="aftercall-asr")

    def binding(self) -> ServiceBinding:
        return ServiceBinding(rasr.DESCRIPTOR.services_by_name["RivaSpeechRecognition"].full_name,
                              lambda server: rasr_grpc.add_RivaSpeechRecognitionServicer_to_server(self, server))

    def _authorise(self, context: grpc.aio.ServicerContext) -> None:
        if self._api_key is None:
            return
        # Over TLS the stock client sends its metadata twice (call credentials and per call): any match will do.
        offered = [str(v).removeprefix("Bearer ").strip() for k, v in context.invocation_metadata() or ()
                   if k in ("api-key", "authorization")]
        if not offered:
            raise AuthenticationError("missing API key (metadata api-key, or authorization: Bearer KEY)")
        if not any(hmac.compare_digest(value.encode(), self._api_key.encode()) for value in offered):
            raise AuthenticationError("invalid API key")

    async def _recognise(self, samples: np.ndarray, sample_rate: int) -> list[list[Word]]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._transcriber.recognise, samples, sample_rate)

    async def Recognize(self, request: rasr.RecognizeRequest, context) -> rasr.RecognizeResponse:
        self._authorise(context)
        config = request.config
        _check_config(config)
        if not request.audio:
            raise AudioFormatError("audio: empty")
        header = None
        if request.audio[:4] == b"RIFF":
            wav = read_wav(request.audio)
            header, payload = (wav.encoding, wav.sample_rate, wav.channels), wav.payload
        else:
            payload = request.audio
        encoding, rate, channels = _layout(config, header)
        audio = parse_raw(payload, encoding, rate, channels)
        self._metrics.asr_requests.labels(rpc="Recognize").inc()
        self._metrics.asr_audio_seconds.labels(rpc="Recognize").inc(audio.duration)
        per_channel = await asyncio.gather(*(self._recognise(s, rate) for s in _channels(
            audio, config.enable_separate_recognition_per_channel)))
        results = [(words[0].start, tag, words) for tag, segments in enumerate(per_channel, start=1)
                   for words in segments if words]
        results.sort(key=lambda item: (item[0], item[1]))
        return rasr.RecognizeResponse(results=[
            rasr.SpeechRecognitionResult(
                alternatives=[_alternative(words, config.enable_word_time_offsets)], channel_tag=tag,
                audio_processed=audio.duration)
            for _, tag, words in results])

    async def StreamingRecognize(self, requests: AsyncIterator[rasr.StreamingRecognizeRequest], context):
        self._authorise(context)
        messages = aiter(requests)
        first = await anext(messages, None)
        if first is None or not first.HasField("streaming_config"):
            raise UserError("streaming_config: the first message must carry it, before any audio")
        config = first.streaming_config.config
        interim = first.streaming_config.interim_results
        _check_config(config)
        self._metrics.asr_requests.labels(rpc="StreamingRecognize").inc()
        separate = config.enable_separate_recognition_per_channel
        layout: tuple[Encoding, int, int] | None = None
        windows: list[_ChannelWindow] = []
        pending = b""  # bytes of a frame cut by a chunk boundary
        audio_left: int | None = None  # a WAV header's declared length still to come; what follows it is not audio
        since_interim = 0.0
        received_s = 0.0
        async for message in messages:
            if message.HasField("streaming_config"):
                raise UserError("streaming_config: sent twice")
            data = message.audio_content
            if not data:
                continue
            if layout is None:
                header = None
                if data[:4] == b"RIFF":
                    wav = read_wav(data, head_only=True)
                    header, data = (wav.encoding, wav.sample_rate, wav.channels), wav.payload
                    if wav.declared_bytes is not None:
                        audio_left = wav.declared_bytes - len(data)
                layout = _layout(config, header)
                encoding, rate, channels = layout
                windows = [_ChannelWindow(rate, encoding) for _ in range(channels if separate else 1)]
            elif audio_left is not None:
                data, audio_left = data[:audio_left], max(0, audio_left - len(data))
            encoding, rate, channels = layout
            data = pending + data
            frame = SAMPLE_BYTES[encoding] * channels
            whole = len(data) - len(data) % frame
            pending = data[whole:]
            if not whole:
                continue
            decoded = decode_samples(data[:whole], encoding, channels)
            if not separate and channels > 1:
                decoded = (np.mean(decoded, axis=0).astype(np.int16),)
            for window, samples in zip(windows, decoded):
                window.append(samples)
            seconds = whole / frame / rate
            self._metrics.asr_audio_seconds.labels(rpc="StreamingRecognize").inc(seconds)
            received_s += seconds
            since_interim += seconds
            for tag, window in enumerate(windows, start=1):  # each channel's window fills on its own
                if window.seconds >= self._config.max_window_s:
                    for response in await self._finalise(window, tag, config, received_s, keep_last=True):
                        yield response
            if interim and since_interim >= self._config.interim_interval_s:
                since_interim = 0.0
                for tag, window in enumerate(windows, start=1):
                    segments = await self._recognise(window.float(), window.sample_rate)
                    words = [w for segment in segments for w in segment]
                    if words:
                        yield rasr.StreamingRecognizeResponse(results=[rasr.StreamingRecognitionResult(
                            alternatives=[_alternative(words, config.enable_word_time_offsets, window.start_s)],
                            is_final=False, stability=0.1, channel_tag=tag, audio_processed=received_s)])
        if layout is None:
            raise AudioFormatError("audio_content: the stream ended without any audio")
        for tag, window in enumerate(windows, start=1):
            for response in await self._finalise(window, tag, config, received_s, keep_last=False):
                yield response

    async def _finalise(self, window: _ChannelWindow, tag: int, config: rasr.RecognitionConfig, received_s: float,
                        keep_last: bool) -> list[rasr.StreamingRecognizeResponse]:
        """Final results for a window's segments. With `keep_last` (the window is full, the call goes on) the last
        segment, perhaps cut mid-word, stays in the window to be recognised again with what follows; a window that
        is one long segment is finalised whole rather than grow without bound."""
        segments = [s for s in await self._recognise(window.float(), window.sample_rate) if s]
        keep = keep_last and len(segments) > 1
        done = segments[:-1] if keep else segments
        responses = [rasr.StreamingRecognizeResponse(results=[rasr.StreamingRecognitionResult(
            alternatives=[_alternative(words, config.enable_word_time_offsets, window.start_s)], is_final=True,
            stability=1.0, channel_tag=tag, audio_processed=received_s)]) for words in done]
        window.drop_before(segments[-1][0].start if keep else window.seconds)
        return responses

    async def GetRivaSpeechRecognitionConfig(self, request, context) -> rasr.RivaSpeechRecognitionConfigResponse:
        self._authorise(context)
        if request.model_name and request.model_name != MODEL_NAME:
            raise NotFoundError(f"model_name: no model {request.model_name!r} (this server has {MODEL_NAME})")
        return rasr.RivaSpeechRecognitionConfigResponse(model_config=[
            rasr.RivaSpeechRecognitionConfigResponse.Config(model_name=MODEL_NAME, parameters={
                "language_code": "en-US", "type": "offline,streaming", "engine": "faster-whisper tiny.en int8 (CPU)",
                "sample_rates": "8000,16000", "encodings": "LINEAR_PCM,MULAW,ALAW", "max_channels": "2"})])

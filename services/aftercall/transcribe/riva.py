"""The Riva backend: NVIDIA Riva ASR (GPU appliances) or `aftercall serve asr` (CPU sites, CI), through the stock
`nvidia-riva-client` (`riva.client.Auth`, `ASRService`).

Encoding, rate and channel count are always set explicitly (the client's `wave`-based helpers cannot read G.711
WAVs). Each channel goes as its own mono LINEAR_PCM requests (Riva recognises single-channel audio), in stretches of
at most five minutes so no request nears a gRPC message limit, several at once; the speaker is the channel's role.
Live calls: one StreamingRecognize stream per channel (`open_live_channel`), fed as the audio arrives.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np

from aftercall.core.audio import Audio
from aftercall.core.config import existing_file, uses_tls
from aftercall.core.errors import BackendUnavailableError, ConfigError, UserError
from aftercall.core.rpc import read_api_key
from aftercall.core.transcript import UNATTRIBUTED, Transcript, Turn, Word
from aftercall.transcribe.base import ProgressCallback
from aftercall.transcribe.config import AsrConfig
from aftercall.transcribe.turns import conversation

logger = logging.getLogger(__name__)
# Only an unreachable server is worth asking again; a timeout would queue the same decode behind itself.
_RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)
_STRETCH_S = 300
_CONCURRENT_REQUESTS = 4
_MAX_MESSAGE = 32 * 1024 * 1024  # five minutes of 16 kHz PCM is under 10 MB
_LIVE_QUEUE_CHUNKS = 3000  # a minute of 20 ms chunks


class RivaTranscriber:
    def __init__(self, config: AsrConfig):
        import riva.client

        self._config = config
        api_key = read_api_key(config.riva_api_key_file, "asr.riva_api_key_file")
        self._auth = riva.client.Auth(
            uri=config.riva_uri, use_ssl=uses_tls(config, "riva_tls_"),
            ssl_root_cert=existing_file(config.riva_tls_ca_file, "asr.riva_tls_ca_file"),
            ssl_client_cert=existing_file(config.riva_tls_cert_file, "asr.riva_tls_cert_file"),
            ssl_client_key=existing_file(config.riva_tls_key_file, "asr.riva_tls_key_file"),
            metadata_args=[["api-key", api_key]] if api_key else None,
            options=[("grpc.max_send_message_length", _MAX_MESSAGE),
                     ("grpc.max_receive_message_length", _MAX_MESSAGE)])
        self._service = riva.client.ASRService(self._auth)

    def recognition_config(self, sample_rate: int):
        import riva.client

        config = riva.client.RecognitionConfig(
            encoding=riva.client.AudioEncoding.LINEAR_PCM, sample_rate_hertz=sample_rate, audio_channel_count=1,
            enable_word_time_offsets=True, enable_automatic_punctuation=True, language_code="en-US",
            max_alternatives=1)
        if self._config.boosted_words:
            riva.client.add_word_boosting_to_config(config, list(self._config.boosted_words), self._config.boost_score)
        return config

    def speakers(self, channel_count: int, roles: tuple[str, ...]) -> tuple[str, ...]:
        """Who each live channel is. A mono call diarised by voice is told apart only after hang-up, from the whole
        recording: its live turns are unattributed until then."""
        if channel_count > 1:
            return roles[:channel_count]
        return (UNATTRIBUTED if self._config.mono == "diarise" else self._config.mono,)

    def open_live_channel(self, sample_rate: int, speaker: str) -> "RivaLiveChannel":
        return RivaLiveChannel(self, sample_rate, speaker, self._config.timeout_s)

    def streaming_call(self, requests):
        return self._service.stub.StreamingRecognize(requests, metadata=self._auth.get_auth_metadata())

    def transcribe(self, audio: Audio, roles: tuple[str, ...], progress: ProgressCallback | None = None,
                   live: bool = False) -> Transcript:
        stretches = [(channel, start) for channel in range(len(audio.channels))
                     for start in range(0, max(1, int(np.ceil(audio.duration))), _STRETCH_S)]
        total = audio.duration * len(audio.channels)
        done = [0.0]
        lock = threading.Lock()

        def recognise(stretch: tuple[int, int]) -> tuple[int, list[list[Word]]]:
            channel, start = stretch
            rate = audio.sample_rate
            samples = audio.channels[channel][start * rate : (start + _STRETCH_S) * rate]
            response = self._recognize(samples.astype("<i2").tobytes(), self.recognition_config(rate))
            segments = [[Word(w.word, start + w.start_time / 1000, start + w.end_time / 1000, w.confidence or 1.0)
                         for w in result.alternatives[0].words] for result in response.results if result.alternatives]
            with lock:
                done[0] += len(samples) / rate
                if progress:
                    progress(min(done[0], total), total)
            return channel, segments

        with ThreadPoolExecutor(max_workers=min(_CONCURRENT_REQUESTS, len(stretches))) as pool:
            recognised = list(pool.map(recognise, stretches))
        per_channel: list[list[list[Word]]] = [[] for _ in audio.channels]
        for channel, segments in recognised:
            per_channel[channel].extend(segments)
        return conversation(audio, per_channel, roles, self._config.mono, self._config.mono_min_confidence, live)

    def _recognize(self, audio_bytes: bytes, config):
        from riva.client.proto import riva_asr_pb2 as rasr

        request = rasr.RecognizeRequest(config=config, audio=audio_bytes)
        uri = self._config.riva_uri
        attempt = 0
        while True:
            try:
                return self._service.stub.Recognize(request, metadata=self._auth.get_auth_metadata(),
                                                    timeout=self._config.timeout_s)
            except grpc.RpcError as error:
                code, details = error.code(), error.details()
                if code is grpc.StatusCode.INVALID_ARGUMENT:
                    raise UserError(f"Riva at {uri} refused the audio: {details}") from error
                if code is grpc.StatusCode.UNAUTHENTICATED:
                    raise ConfigError(f"config asr.riva_api_key_file: Riva at {uri} refused the key: {details}") \
                        from error
                if code not in _RETRYABLE or attempt == self._config.retries:
                    raise BackendUnavailableError(
                        f"Riva ASR at {uri}: {code.name} after {attempt + 1} attempt(s): {details}") from error
                pause = 0.5 * 2 ** attempt
                logger.warning("Riva ASR at %s: %s; retrying in %.1f s", uri, code.name, pause)
                time.sleep(pause)
                attempt += 1


class RivaLiveChannel:
    """One channel of a live call on Riva StreamingRecognize: 16-bit PCM pushed as it arrives, Riva's final result
    per utterance collected as a turn (times from the start of the call). Partial hypotheses are not requested: each
    would be a whole new redacted segment several times a second. Best effort: an error ends this channel's live
    text (logged), never the call, which is transcribed in full after hang-up."""

    def __init__(self, transcriber: RivaTranscriber, sample_rate: int, speaker: str, timeout_s: float):
        self._transcriber = transcriber
        self._speaker = speaker
        self._timeout_s = timeout_s
        self._config = transcriber.recognition_config(sample_rate)
        # Bounded: if Riva stops reading, a live call must not pile its audio up in memory (it is on disk anyway).
        self._audio: queue.Queue[bytes | None] = queue.Queue(maxsize=_LIVE_QUEUE_CHUNKS)
        self._turns: list[Turn] = []
        self._lock = threading.Lock()
        self._call = None
        self._cancelled = False
        self._dropping = False
        self._thread = threading.Thread(target=self._run, name=f"riva-live-{speaker}", daemon=True)
        self._thread.start()

    def push(self, pcm: bytes) -> None:
        if not self._thread.is_alive():
            return  # the stream ended (an error, logged): the rest of the call is heard after hang-up
        try:
            self._audio.put_nowait(pcm)
        except queue.Full:
            if not self._dropping:
                logger.warning("Riva live recognition (%s) is not keeping up; live audio dropped", self._speaker)
            self._dropping = True

    def finish(self) -> None:
        """The call ended: send the rest and wait (up to asr.timeout_s) for the last results. Blocks: call it off
        the event loop."""
        try:
            if self._thread.is_alive():
                self._audio.put(None, timeout=self._timeout_s)
            self._thread.join(self._timeout_s)
        except queue.Full:
            pass
        if self._thread.is_alive():
            logger.warning("Riva live recognition (%s) still busy after %.0f s (asr.timeout_s); its last results "
                           "are dropped", self._speaker, self._timeout_s)
            self.cancel()

    def cancel(self) -> None:
        """Stop now, without waiting (safe on the event loop)."""
        self._cancelled = True
        if self._call is not None:
            self._call.cancel()
        while True:  # unblock the request iterator even when the queue is full
            try:
                self._audio.get_nowait()
            except queue.Empty:
                break
        try:
            self._audio.put_nowait(None)
        except queue.Full:
            pass  # a push raced in; the cancelled call stops the iterator anyway

    def take(self) -> list[Turn]:
        with self._lock:
            turns, self._turns = self._turns, []
        return turns

    def _requests(self):
        from riva.client.proto import riva_asr_pb2 as rasr

        yield rasr.StreamingRecognizeRequest(streaming_config=rasr.StreamingRecognitionConfig(
            config=self._config, interim_results=False))
        while (pcm := self._audio.get()) is not None:
            yield rasr.StreamingRecognizeRequest(audio_content=pcm)

    def _run(self) -> None:
        try:
            self._call = self._transcriber.streaming_call(self._requests())
            for response in self._call:
                for result in response.results:
                    if result.is_final and result.alternatives and result.alternatives[0].transcript.strip():
                        self._add(result.alternatives[0])
        except grpc.RpcError as error:
            if not self._cancelled:
                logger.warning("Riva live recognition (%s) failed: %s", self._speaker, error.code().name)

    def _add(self, alternative) -> None:
        words = alternative.words
        start = words[0].start_time / 1000 if words else None
        end = words[-1].end_time / 1000 if words else None
        with self._lock:
            self._turns.append(Turn(self._speaker, alternative.transcript.strip(), start, end))

"""The Riva backend: NVIDIA Riva ASR (GPU appliances) or `aftercall serve asr` (CPU sites, CI), through the stock
`nvidia-riva-client` (`riva.client.Auth`, `ASRService`).

Encoding, rate and channel count are always set explicitly (the client's `wave`-based helpers cannot read G.711
WAVs): the decoded call goes as interleaved LINEAR_PCM at its own rate, each channel recognised separately.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import grpc
import numpy as np

from aftercall.core.audio import Audio
from aftercall.core.config import AsrConfig
from aftercall.core.errors import BackendUnavailableError, ConfigError, UserError
from aftercall.core.rpc import read_api_key
from aftercall.core.transcript import Transcript, Turn, Word
from aftercall.transcribe.base import ProgressCallback
from aftercall.transcribe.turns import merge_channels, split_on_pauses

logger = logging.getLogger(__name__)
_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED)
_MAX_MESSAGE = 512 * 1024 * 1024


def _file(path: str, key: str) -> str | None:
    if not path:
        return None
    if not Path(path).is_file():
        raise ConfigError(f"config asr.{key}: {path} is not a readable file")
    return path


class RivaTranscriber:
    def __init__(self, config: AsrConfig):
        import riva.client

        self._config = config
        api_key = read_api_key(config.riva_api_key_file, "asr.riva_api_key_file")
        self._auth = riva.client.Auth(
            uri=config.riva_uri, use_ssl=bool(config.riva_tls_ca_file),
            ssl_root_cert=_file(config.riva_tls_ca_file, "riva_tls_ca_file"),
            ssl_client_cert=_file(config.riva_tls_cert_file, "riva_tls_cert_file"),
            ssl_client_key=_file(config.riva_tls_key_file, "riva_tls_key_file"),
            metadata_args=[["api-key", api_key]] if api_key else None,
            options=[("grpc.max_send_message_length", _MAX_MESSAGE),
                     ("grpc.max_receive_message_length", _MAX_MESSAGE)])
        self._service = riva.client.ASRService(self._auth)

    def recognition_config(self, audio: Audio):
        import riva.client

        channels = len(audio.channels)
        config = riva.client.RecognitionConfig(
            encoding=riva.client.AudioEncoding.LINEAR_PCM, sample_rate_hertz=audio.sample_rate,
            audio_channel_count=channels, enable_separate_recognition_per_channel=channels > 1,
            enable_word_time_offsets=True, enable_automatic_punctuation=True, language_code="en-US",
            max_alternatives=1)
        if self._config.boosted_words:
            riva.client.add_word_boosting_to_config(config, list(self._config.boosted_words), self._config.boost_score)
        return config

    def transcribe(self, audio: Audio, roles: tuple[str, ...], progress: ProgressCallback | None = None) -> Transcript:
        speakers = roles[: len(audio.channels)] if len(audio.channels) > 1 else (self._config.mono_speaker,)
        interleaved = np.stack(audio.channels, axis=1).astype("<i2").tobytes()
        response = self._recognize(interleaved, self.recognition_config(audio))
        per_channel: list[list[Turn]] = [[] for _ in speakers]
        for result in response.results:
            if not result.alternatives:
                continue
            channel = max(0, min(len(speakers) - 1, (result.channel_tag or 1) - 1))
            words = [Word(w.word, w.start_time / 1000, w.end_time / 1000, w.confidence or 1.0)
                     for w in result.alternatives[0].words]
            per_channel[channel].extend(split_on_pauses(speakers[channel], words))
        if progress:
            total = audio.duration * len(audio.channels)
            progress(total, total)
        return Transcript(tuple(merge_channels(per_channel)))

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

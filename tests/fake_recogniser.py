"""A fast stand-in for Whisper behind the real Riva-compatible server (aftercall.asr.service), for the service tier:
ingest -> Riva client -> gRPC -> recognition -> redaction -> summary -> store, in seconds and with known words.

`say()` makes a call's audio from a script: each turn is a burst of noise on its speaker's channel, digital silence
between turns, and the burst's samples are registered as that turn's words. `recognise()` is what the server asks of
Whisper: it cuts a channel at its silences and hears each burst it made, with the words spread over the burst. Audio
it did not make (or a burst that arrives cut or altered) is heard as nothing and counted in `unheard`, so a pipeline
that mangles audio loses words instead of passing a check by luck.
"""

from __future__ import annotations

import hashlib
import threading

import numpy as np

from aftercall.core.audio import Encoding, decode_samples, wav_header
from aftercall.core.transcript import Word

RATE = 8000
WORD_S = 0.3  # each word of a turn lasts this long
GAP_S = 0.5  # silence before, between and after the turns
_MULAW = 7  # the WAV format tag
# Every mu-law code but the two that decode to 0, which is where recognise() cuts a channel.
_VOICED_CODES = np.array([code for code in range(256) if code not in (0x7F, 0xFF)], dtype=np.uint8)


def _key(pcm: np.ndarray) -> str:
    return hashlib.sha256(pcm.astype("<i2").tobytes()).hexdigest()


class FakeRecogniser:
    """Thread-safe: the server runs recognitions on a pool."""

    def __init__(self):
        self._words: dict[str, tuple[str, ...]] = {}
        self._lock = threading.Lock()
        self.unheard = 0

    def say(self, turns: list[tuple[str, str]], roles: tuple[str, ...] = ("agent", "customer")) -> bytes:
        """A mu-law 8 kHz WAV of these (speaker, text) turns, one after the other, a channel per speaker in `roles`;
        the recogniser will hear each turn's text."""
        gap = np.full(round(GAP_S * RATE), 0xFF, dtype=np.uint8)
        channels: list[list[np.ndarray]] = [[gap] for _ in roles]
        for speaker, text in turns:
            words = tuple(text.split())
            if not words:
                raise ValueError("a turn needs words")
            # Seeded by the words: the same script makes the same audio on every run.
            rng = np.random.default_rng(int(hashlib.sha256(text.encode()).hexdigest()[:16], 16))
            burst = rng.choice(_VOICED_CODES, round(len(words) * WORD_S * RATE))
            with self._lock:
                self._words[_key(decode_samples(burst.tobytes(), Encoding.MULAW, 1)[0])] = words
            silence = np.full(len(burst), 0xFF, dtype=np.uint8)
            for role, channel in zip(roles, channels):
                channel += [burst if role == speaker else silence, gap]
        payload = np.stack([np.concatenate(channel) for channel in channels], axis=1).tobytes()
        return wav_header(_MULAW, len(roles), RATE, 8, len(payload)) + payload

    def recognise(self, samples: np.ndarray, sample_rate: int) -> list[list[Word]]:
        """One channel (float32, as the server hands it to Whisper) -> a segment of words per burst it knows."""
        pcm = np.round(samples * 32768).astype(np.int16)
        edges = np.flatnonzero(np.diff(np.concatenate(([0], (pcm != 0).astype(np.int8), [0]))))
        segments = []
        for start, end in zip(edges[::2], edges[1::2]):
            with self._lock:
                words = self._words.get(_key(pcm[start:end]))
                if words is None:
                    self.unheard += 1
                    continue
            step = (end - start) / sample_rate / len(words)
            first = start / sample_rate
            segments.append([Word(text, first + i * step, first + (i + 0.8) * step, 0.9)
                             for i, text in enumerate(words)])
        return segments

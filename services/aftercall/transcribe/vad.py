"""Speech segments by Silero VAD, run at the channel's own rate (8 kHz telephone audio is not upsampled first).

faster-whisper's bundled Silero model gives short customer answers ("yes", a postcode) a speech probability of only
0.40-0.45, so they never open a segment and Whisper never hears them. The model of the pinned `silero-vad` package
(its ONNX file, under onnxruntime: the package's own Python imports torch, which the appliance does not ship) scores
them as speech at the native rate; `../shared/brief/measured-2026-12.md` has the figures.

One detector serves every path: batch (`aftercall summarise`, ingest's post-call transcript), the live interim
passes, and the Riva-compatible server, since all of them recognise through `EmbeddedTranscriber.recognise`.
"""

from __future__ import annotations

import copy
import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aftercall.core.errors import ModelIntegrityError
from aftercall.core.modelpkg import PinnedModel

# silero-vad==6.2.3 (MIT), data/silero_vad.onnx. Pinned here and in the Makefile.
SILERO_ONNX_SHA256 = {"silero_vad.onnx": "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3"}
# The model's window and the context it carries over from the previous window, per rate.
_WINDOW = {8000: 256, 16000: 512}
_CONTEXT = {8000: 32, 16000: 64}
# A segment ends only where the probability falls this far below the threshold (hysteresis against flicker).
_HYSTERESIS = 0.15


@dataclass(frozen=True)
class VadSettings:
    """The `[asr] vad_*` settings (validated in config)."""

    threshold: float = 0.5
    min_silence_ms: int = 2000
    speech_pad_ms: int = 400
    min_speech_ms: int = 100


def default_model_dir() -> Path:
    # find_spec locates the package without importing it (its __init__ imports torch).
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise ModelIntegrityError("model silero-vad: the silero-vad package is not installed (make venv installs it)")
    return Path(spec.submodule_search_locations[0]) / "data"


class SpeechDetector:
    """Thread-safe: one onnxruntime session (loaded on first use, sha256-checked) shared by all channels; each call
    keeps its own recurrent state."""

    def __init__(self, settings: VadSettings = VadSettings(), model_dir: Path | None = None):
        self.settings = settings
        self._model_dir = model_dir
        self._session = None
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            if self._session is None:
                import onnxruntime

                directory = PinnedModel("silero-vad", self._model_dir or default_model_dir(),
                                        SILERO_ONNX_SHA256).verify()
                options = onnxruntime.SessionOptions()
                # One thread: channels are already detected in parallel, and the model is tiny.
                options.intra_op_num_threads = options.inter_op_num_threads = 1
                options.log_severity_level = 4
                self._session = onnxruntime.InferenceSession(str(directory / "silero_vad.onnx"), sess_options=options,
                                                             providers=["CPUExecutionProvider"])
            return self._session

    def stream(self, sample_rate: int) -> SpeechStream:
        """One channel's detection as its audio arrives (see SpeechStream)."""
        if sample_rate not in _WINDOW:
            raise ValueError(f"Silero VAD runs at 8000 or 16000 Hz, not {sample_rate}")
        return SpeechStream(self, sample_rate)

    def speech(self, samples: np.ndarray, sample_rate: int) -> list[tuple[int, int]]:
        """Speech segments as (start, end) sample indices at `sample_rate`, padded and joined as configured."""
        stream = self.stream(sample_rate)
        return stream.push(samples) + stream.finish()


class SpeechStream:
    """One channel's speech segments as its audio arrives, exactly those `SpeechDetector.speech` finds in the whole
    channel: the model runs strictly in order (its recurrent state carries the whole history: pieces run side by
    side with a 30 s warm-up still differed by up to 0.8 in places), and a segment is given once nothing later can
    change it."""

    def __init__(self, detector: SpeechDetector, sample_rate: int):
        self._session = detector._load()
        self._rate = np.array(sample_rate, dtype=np.int64)
        self._window, context = _WINDOW[sample_rate], _CONTEXT[sample_rate]
        self._history = np.zeros(context, dtype=np.float32)  # the context the next window carries
        self._waiting = np.zeros(0, dtype=np.float32)  # samples short of a whole window
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._segmenter = Segmenter(self._window, sample_rate, detector.settings)
        self.samples = 0  # pushed so far

    def push(self, samples: np.ndarray) -> list[tuple[int, int]]:
        """Float32 audio following what came before -> the segments now final."""
        self.samples += len(samples)
        audio = np.concatenate([self._waiting, samples.astype(np.float32, copy=False)])
        whole = len(audio) // self._window * self._window
        self._run(audio[:whole])
        self._waiting = audio[whole:]
        return self._segmenter.final()

    def finish(self) -> list[tuple[int, int]]:
        """The channel ended: its last window (zero-padded) and every segment still open."""
        if len(self._waiting):
            self._run(np.concatenate([self._waiting, np.zeros(self._window - len(self._waiting), np.float32)]))
            self._waiting = self._waiting[:0]
        return self._segmenter.finish(self.samples)

    @property
    def speaking(self) -> bool:
        """A segment is open and no silence has begun: if the channel ended now, it would end at the last sample."""
        return self._segmenter.speaking

    def spans_if_ended(self) -> list[tuple[int, int]]:
        """What `finish` would give if the channel ended now; the stream itself goes on unchanged."""
        ended = copy.copy(self)  # `_run` and `finish` rebind the model's state, history and waiting samples
        ended._segmenter = copy.deepcopy(self._segmenter)
        return ended.finish()

    def _run(self, audio: np.ndarray) -> None:
        padded = np.concatenate([self._history, audio])
        context = len(self._history)
        for start in range(0, len(audio), self._window):
            chunk = padded[start:start + context + self._window][np.newaxis]
            probability, self._state = self._session.run(None, {"input": chunk, "state": self._state,
                                                                "sr": self._rate})
            self._segmenter.feed(float(probability[0, 0]))
        self._history = padded[len(padded) - context:]


class Segmenter:
    """Windows' probabilities -> speech segments: a segment opens at a window over the threshold and closes after
    `min_silence_ms` under threshold - 0.15; segments under `min_speech_ms` are dropped; each is padded by
    `speech_pad_ms`, and segments whose padding would overlap share the gap between them. Fed one window at a time;
    a segment is final once the next kept one is known or no later one could come within two paddings of it."""

    def __init__(self, window: int, sample_rate: int, settings: VadSettings):
        per_ms = sample_rate / 1000
        self._window, self._threshold = window, settings.threshold
        self._low = max(settings.threshold - _HYSTERESIS, 0.01)
        self._min_silence, self._min_speech = settings.min_silence_ms * per_ms, settings.min_speech_ms * per_ms
        self._pad = int(settings.speech_pad_ms * per_ms)
        self._position = 0  # of the next window
        self._start: int | None = None
        self._silence_from: int | None = None
        self._closed: list[tuple[int, int]] = []  # kept, not yet given
        self._start_share: int | None = None  # what the first segment still to give takes from the gap before it

    @property
    def speaking(self) -> bool:
        return self._start is not None and self._silence_from is None

    def feed(self, probability: float) -> None:
        position, self._position = self._position, self._position + self._window
        if probability >= self._threshold:
            self._silence_from = None
            if self._start is None:
                self._start = position
        elif self._start is not None and probability < self._low:
            self._silence_from = position if self._silence_from is None else self._silence_from
            if position - self._silence_from >= self._min_silence:
                self._close(self._silence_from)

    def _close(self, end: int) -> None:
        if end - self._start >= self._min_speech:
            self._closed.append((self._start, end))
        self._start = self._silence_from = None

    def final(self) -> list[tuple[int, int]]:
        out = []
        while self._closed:
            start, end = self._closed[0]
            if len(self._closed) > 1:
                share = min(self._pad, (self._closed[1][0] - end) // 2)
            elif self._position >= end + 2 * self._pad and (self._start is None or self._start >= end + 2 * self._pad):
                share = self._pad  # whatever comes next starts at least two paddings later
            else:
                break
            out += self._give(end + share, share)
        return out

    def finish(self, length: int) -> list[tuple[int, int]]:
        if self._start is not None:
            self._close(length if self._silence_from is None else self._silence_from)
        out = self.final()
        if self._closed:  # the last: padded up to the end of the audio
            out += self._give(min(length, self._closed[0][1] + self._pad), 0)
        return out

    def _give(self, end: int, share_after: int) -> list[tuple[int, int]]:
        start = self._closed.pop(0)[0]
        start = max(0, start - self._pad) if self._start_share is None else start - self._start_share
        self._start_share = share_after
        return [(start, end)] if end > start else []


def segments_from(probabilities: np.ndarray, window: int, length: int, sample_rate: int,
                  settings: VadSettings) -> list[tuple[int, int]]:
    """`Segmenter` over a whole channel's probabilities (one per `window` samples)."""
    segmenter = Segmenter(window, sample_rate, settings)
    out = []
    for probability in probabilities:
        segmenter.feed(float(probability))
        out += segmenter.final()
    return out + segmenter.finish(length)

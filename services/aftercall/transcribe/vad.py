"""Speech segments by Silero VAD, run at the channel's own rate (8 kHz telephone audio is not upsampled first).

faster-whisper's bundled Silero model gives short customer answers ("yes", a postcode) a speech probability of only
0.40-0.45, so they never open a segment and Whisper never hears them. The model of the pinned `silero-vad` package
(its ONNX file, under onnxruntime: the package's own Python imports torch, which the appliance does not ship) scores
them as speech at the native rate; `../shared/brief/measured-2026-12.md` has the figures.

One detector serves every path: batch (`aftercall summarise`, ingest's post-call transcript), the live interim
passes, and the Riva-compatible server, since all of them recognise through `EmbeddedTranscriber.recognise`.
"""

from __future__ import annotations

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

    def probabilities(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        """Speech probability of each window (256 samples at 8 kHz, 512 at 16 kHz) of float32 audio. Strictly in
        order from the start: the model's recurrent state carries the whole history (pieces run side by side with
        a 30 s warm-up still differed by up to 0.8 in places), so only this gives the segmentation measured."""
        if sample_rate not in _WINDOW:
            raise ValueError(f"Silero VAD runs at 8000 or 16000 Hz, not {sample_rate}")
        session = self._load()
        window, context = _WINDOW[sample_rate], _CONTEXT[sample_rate]
        count = -(-len(samples) // window)
        padded = np.zeros(context + count * window, dtype=np.float32)
        padded[context:context + len(samples)] = samples
        state = np.zeros((2, 1, 128), dtype=np.float32)
        rate = np.array(sample_rate, dtype=np.int64)
        out = np.empty(count, dtype=np.float32)
        for index in range(count):
            start = index * window  # the window plus the context before it
            chunk = padded[start:start + context + window][np.newaxis]
            probability, state = session.run(None, {"input": chunk, "state": state, "sr": rate})
            out[index] = probability[0, 0]
        return out

    def speech(self, samples: np.ndarray, sample_rate: int) -> list[tuple[int, int]]:
        """Speech segments as (start, end) sample indices at `sample_rate`, padded and joined as configured."""
        return segments_from(self.probabilities(samples, sample_rate), _WINDOW[sample_rate], len(samples),
                             sample_rate, self.settings)


def segments_from(probabilities: np.ndarray, window: int, length: int, sample_rate: int,
                  settings: VadSettings) -> list[tuple[int, int]]:
    """Windows' probabilities -> speech segments: a segment opens at a window over the threshold and closes after
    `min_silence_ms` under threshold - 0.15; segments under `min_speech_ms` are dropped; each is padded by
    `speech_pad_ms`, and segments whose padding would overlap share the gap between them."""
    per_ms = sample_rate / 1000
    low = max(settings.threshold - _HYSTERESIS, 0.01)
    found: list[list[int]] = []
    start: int | None = None
    silence_from: int | None = None
    for index, probability in enumerate(probabilities):
        position = index * window
        if probability >= settings.threshold:
            silence_from = None
            if start is None:
                start = position
        elif start is not None and probability < low:
            silence_from = position if silence_from is None else silence_from
            if position - silence_from >= settings.min_silence_ms * per_ms:
                found.append([start, silence_from])
                start = silence_from = None
    if start is not None:
        found.append([start, length if silence_from is None else silence_from])
    found = [s for s in found if s[1] - s[0] >= settings.min_speech_ms * per_ms]
    pad = int(settings.speech_pad_ms * per_ms)
    for index, segment in enumerate(found):
        if index == 0:
            segment[0] = max(0, segment[0] - pad)
        if index + 1 < len(found):
            following = found[index + 1]
            gap = following[0] - segment[1]
            share = min(pad, gap // 2)
            segment[1] += share
            following[0] -= share
        else:
            segment[1] = min(length, segment[1] + pad)
    return [(s, e) for s, e in found if e > s]

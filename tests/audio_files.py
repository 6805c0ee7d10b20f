"""Real recordings for the decoder tests: festival speech (a sox-made warble without festival), converted by sox and
encoded by FFmpeg's own encoders (PyAV), and the measures that compare a decoded recording with its source."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import av
import numpy as np

from aftercall.core.audio import parse_wav

SPOKEN = ("Thank you for calling the billing team. I would like to ask about my bill from last month, "
          "it was much higher than usual.")


def sox(*args: str) -> None:
    """sox without dither (-R), so that every run writes the same bytes."""
    subprocess.run(["sox", "-R", *map(str, args)], check=True, capture_output=True)


def speech_wav(path: Path, text: str = SPOKEN) -> Path:
    """Mono PCM16 16 kHz speech: festival's default voice, or (no festival) a sox warble with speech-like pauses."""
    if shutil.which("text2wave"):
        spoken = path.with_suffix(".tts.wav")
        subprocess.run(["text2wave", "-o", str(spoken)], input=text.encode(), check=True, capture_output=True)
        sox(spoken, "-r", "16000", "-c", "1", "-b", "16", "-e", "signed-integer", path, "norm", "-3")
    else:
        sox("-n", "-r", "16000", "-c", "1", "-b", "16", path, "synth", "6", "sine", "200-3000", "sine", "3",
            "tremolo", "4", "90", "norm", "-3")
    return path


def stereo_speech_wav(path: Path) -> Path:
    """Two different signals, one per channel (the speech, and the speech backwards): channels must stay apart."""
    forward = speech_wav(path.with_suffix(".left.wav"))
    backward = path.with_suffix(".right.wav")
    sox(forward, backward, "reverse")
    sox("-M", forward, backward, path)
    return path


def pcm(path: Path, rate: int) -> tuple[np.ndarray, ...]:
    """`path` resampled by sox to `rate`, as int16 channels: the reference a decoding is compared with."""
    out = path.with_suffix(f".{rate}.ref.wav")
    sox(path, "-r", str(rate), "-b", "16", "-e", "signed-integer", out)
    return parse_wav(out.read_bytes()).channels


def encode(wav: Path, container: str, codec: str, rate: int, bit_rate: int | None = None) -> bytes:
    """`wav` encoded in memory by FFmpeg's `codec` into `container`, at `rate`."""
    reference = parse_wav(wav.read_bytes())
    layout = "mono" if len(reference.channels) == 1 else "stereo"
    source = av.AudioFrame.from_ndarray(np.stack(reference.channels, axis=1).reshape(1, -1), format="s16",
                                        layout=layout)
    source.sample_rate = reference.sample_rate
    out = io.BytesIO()
    with av.open(out, "w", format=container) as muxer:
        stream = muxer.add_stream(codec, rate=rate)
        stream.layout = layout
        if bit_rate:
            stream.bit_rate = bit_rate
        context = stream.codec_context
        resampler = av.AudioResampler(format=context.codec.audio_formats[0].name, layout=layout, rate=rate,
                                      frame_size=context.frame_size or 1024)
        for frame in resampler.resample(source) + resampler.resample(None):
            frame.pts = None
            muxer.mux(stream.encode(frame))
        muxer.mux(stream.encode(None))
    return out.getvalue()


def _aligned(decoded: np.ndarray, reference: np.ndarray, max_lag: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Both signals shifted to their best alignment within `max_lag` samples (a codec's delay), and the normalised
    cross-correlation there (1.0: the same waveform)."""
    n = min(len(decoded), len(reference))
    x, y = decoded[:n].astype(np.float64), reference[:n].astype(np.float64)
    size = 1 << (2 * n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(x, size) * np.conj(np.fft.rfft(y, size)), size)
    lags = np.r_[0 : max_lag + 1, -max_lag:0]
    lag = int(lags[np.argmax(corr[lags])])
    value = float(corr[lag] / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-9))
    return (x[lag:], y[: n - lag], value) if lag >= 0 else (x[: n + lag], y[-lag:], value)


def similarity(decoded: np.ndarray, reference: np.ndarray, max_lag: int) -> float:
    """The normalised cross-correlation of two signals at their best alignment within `max_lag` samples."""
    return _aligned(decoded, reference, max_lag)[2]


def envelope_similarity(decoded: np.ndarray, reference: np.ndarray, rate: int) -> float:
    """The correlation of two aligned signals' loudness over time (RMS per 20 ms): what a perceptual codec keeps."""
    x, y, _ = _aligned(decoded, reference, rate // 20)
    frame = rate // 50
    n = min(len(x), len(y)) // frame * frame

    def envelope(samples: np.ndarray) -> np.ndarray:
        return np.sqrt((samples[:n].reshape(-1, frame) ** 2).mean(axis=1))

    return float(np.corrcoef(envelope(x), envelope(y))[0, 1])

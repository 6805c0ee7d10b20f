"""Test calls from transcripts: two TTS voices (Debian festival), stereo G.711 8 kHz, so that evaluation in audio
mode measures recognition errors too, and `make sample-audio` makes the demo call.

Agent on the left channel (festival "slt", female), customer on the right (festival "kal", male), band-limited to
300-3400 Hz like a telephone line, 8 kHz mu-law or A-law. SOX_OPTS=-R keeps the output repeatable (no dither).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path
from typing import Sequence

from aftercall.core.errors import UserError

RATE = 8000
GAP_S = 0.45
VOICES = {"agent": "voice_cmu_us_slt_arctic_hts", "customer": "voice_kal_diphone"}
ENCODINGS = ("mu-law", "a-law")


def require_tools() -> None:
    missing = [tool for tool in ("text2wave", "sox") if shutil.which(tool) is None]
    if missing:
        raise UserError(f"making call audio needs {' and '.join(missing)} (Debian: festival festvox-us-slt-hts "
                        "festvox-kallpc16k sox; `make system-deps` installs them)")


def _run(command: list[str], **kwargs) -> None:
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                   env={**os.environ, "SOX_OPTS": "-R"}, **kwargs)


def _speak(text: str, speaker: str, out: Path) -> None:
    raw = out.with_suffix(".tts.wav")
    _run(["text2wave", "-eval", f"({VOICES[speaker]})", "-o", str(raw)], input=text.encode())
    _run(["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", "-e", "signed-integer", str(out),
          "highpass", "300", "lowpass", "3400", "norm", "-3"])


def _frames(path: Path) -> bytes:
    with wave.open(str(path)) as handle:
        return handle.readframes(handle.getnframes())


def synthesise_call(turns: Sequence[dict], out: Path, encoding: str = "mu-law") -> list[dict]:
    """Write the stereo call to `out`; return the timed reference transcript (the turns with start/end)."""
    require_tools()
    if encoding not in ENCODINGS:
        raise UserError(f"encoding must be one of {', '.join(ENCODINGS)}, not {encoding!r}")
    channels = {"agent": bytearray(), "customer": bytearray()}
    timeline = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for index, turn in enumerate(turns):
            clip = workdir / f"{index:03d}.wav"
            _speak(turn["text"], turn["speaker"], clip)
            frames = _frames(clip)
            start = len(channels["agent"]) / 2 / RATE
            for speaker, samples in channels.items():
                samples += frames if speaker == turn["speaker"] else bytes(len(frames))
                samples += bytes(int(GAP_S * RATE) * 2)
            timeline.append({"speaker": turn["speaker"], "text": turn["text"], "start": round(start, 2),
                             "end": round(start + len(frames) / 2 / RATE, 2)})
        for speaker, samples in channels.items():
            with wave.open(str(workdir / f"{speaker}.wav"), "wb") as handle:
                handle.setnchannels(1)
                handle.setsampwidth(2)
                handle.setframerate(RATE)
                handle.writeframes(bytes(samples))
        partial = out.with_name(out.name + ".partial.wav")
        _run(["sox", "-M", str(workdir / "agent.wav"), str(workdir / "customer.wav"),
              "-e", encoding, "-b", "8", "-r", str(RATE), str(partial)])
        os.replace(partial, out)
    return timeline


def mix_to_mono(stereo: Path, out: Path) -> None:
    """The stereo call as a mono recorder would have it: both parties summed into one 16-bit channel."""
    import numpy as np

    from aftercall.core.audio import Audio, Encoding, parse_wav, pcm16_wav

    audio = parse_wav(stereo.read_bytes())
    mixed = np.clip(np.sum([c.astype(np.int32) for c in audio.channels], axis=0), -32768, 32767).astype(np.int16)
    partial = out.with_name(out.name + ".partial.wav")
    partial.write_bytes(pcm16_wav(Audio(audio.sample_rate, (mixed,), Encoding.LINEAR_PCM)))
    os.replace(partial, out)

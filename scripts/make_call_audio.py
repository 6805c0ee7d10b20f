#!/usr/bin/env python3
"""Synthesise a stereo G.711 call from a transcript JSON with two TTS voices (Debian festival, sox).

Agent on the left channel (festival "slt", female), customer on the right (festival "kal", male),
band-limited to 300-3400 Hz like a telephone line, 8 kHz mu-law (or A-law). SOX_OPTS=-R keeps output repeatable.

    scripts/make_call_audio.py samples/demo_call.json samples/demo_call.wav [--encoding mu-law|a-law] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

RATE = 8000
GAP_S = 0.45
# Two clearly different festival voices; espeak-ng stays available for a third, rougher speaker.
VOICES = {"agent": "voice_cmu_us_slt_arctic_hts", "customer": "voice_kal_diphone"}


def _run(command: list[str], **kwargs) -> None:
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kwargs)


def speak(text: str, speaker: str, out: Path) -> None:
    raw = out.with_suffix(".tts.wav")
    voice = VOICES[speaker]
    if voice == "espeak":
        _run(["espeak-ng", "-v", "en-gb", "-s", "160", "-w", str(raw), text])
    else:
        _run(["text2wave", "-eval", f"({voice})", "-o", str(raw)], input=text.encode())
    _run(["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", "-e", "signed-integer", str(out),
          "highpass", "300", "lowpass", "3400", "norm", "-3"])


def pcm_frames(path: Path) -> bytes:
    with wave.open(str(path)) as handle:
        return handle.readframes(handle.getnframes())


def build(turns: list[dict], workdir: Path) -> tuple[bytes, bytes, list[dict]]:
    agent, customer, timeline = bytearray(), bytearray(), []
    for index, turn in enumerate(turns):
        clip = workdir / f"{index:03d}.wav"
        speak(turn["text"], turn["speaker"], clip)
        frames = pcm_frames(clip)
        silence = bytes(len(frames))
        start = len(agent) / 2 / RATE
        agent += frames if turn["speaker"] == "agent" else silence
        customer += frames if turn["speaker"] == "customer" else silence
        gap = bytes(int(GAP_S * RATE) * 2)
        agent += gap
        customer += gap
        timeline.append({"speaker": turn["speaker"], "text": turn["text"], "start": round(start, 2),
                         "end": round(start + len(frames) / 2 / RATE, 2)})
    return bytes(agent), bytes(customer), timeline


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dialogue", nargs="+", type=Path, help="transcript JSON file(s), concatenated in order")
    parser.add_argument("--out", type=Path, required=True, help="the WAV to write")
    parser.add_argument("--encoding", choices=("mu-law", "a-law"), default="mu-law")
    parser.add_argument("--reference", type=Path, help="also write the timed reference transcript JSON here")
    args = parser.parse_args()
    turns = [t for path in args.dialogue for t in json.loads(path.read_text())["turns"]]
    os.environ.setdefault("SOX_OPTS", "-R")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        agent, customer, timeline = build(turns, workdir)
        for name, data in (("agent", agent), ("customer", customer)):
            with wave.open(str(workdir / f"{name}.wav"), "wb") as handle:
                handle.setnchannels(1)
                handle.setsampwidth(2)
                handle.setframerate(RATE)
                handle.writeframes(data)
        _run(["sox", "-M", str(workdir / "agent.wav"), str(workdir / "customer.wav"),
              "-e", args.encoding, "-b", "8", "-r", str(RATE), str(args.out)])
    if args.reference:
        args.reference.write_text(json.dumps({"turns": timeline}, indent=1) + "\n")
    print(f"wrote {args.out} ({len(agent) / 2 / RATE:.1f} s, {len(turns)} turns)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

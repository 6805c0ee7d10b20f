from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
DEMO_WAV = ROOT / "samples" / "demo_call.wav"
DEMO_JSON = ROOT / "samples" / "demo_call.json"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present (a fresh clone has no shared/)")
    return SHARED_DATA


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """The real console entry point in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "aftercall", *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="session")
def summariser():
    from aftercall.summarise.summariser import EmbeddedSummariser

    return EmbeddedSummariser()


@pytest.fixture(scope="session")
def transcriber():
    from aftercall.transcribe.embedded import EmbeddedTranscriber

    return EmbeddedTranscriber()


def wav_header(tag: int, channels: int, rate: int, bits: int, data_size: int) -> bytes:
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    return (b"RIFF" + struct.pack("<I", 36 + data_size) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", data_size))


@pytest.fixture(scope="session")
def demo_clip() -> bytes:
    """The first 14 s of the demo call (stereo mu-law 8 kHz): greeting, reason, a card read out; ASR in ~2 s."""
    from aftercall.core.audio import read_wav

    wav = read_wav(DEMO_WAV.read_bytes())
    payload = wav.payload[: 14 * 8000 * 2]
    return wav_header(7, 2, 8000, 8, len(payload)) + payload

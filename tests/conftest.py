from __future__ import annotations

import os
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

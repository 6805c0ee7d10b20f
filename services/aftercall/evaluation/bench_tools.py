"""What every part of `aftercall bench` measures with: progress lines, test calls of any length, percentiles, and a
process's memory and CPU time read from /proc."""

from __future__ import annotations

import os
import re
import sys
import threading
from pathlib import Path

from aftercall.core.audio import SAMPLE_BYTES, Encoding, read_wav, wav_header

# The benchmarks run from the source tree: the demo call and the regression calls live beside the package.
SOURCE_ROOT = Path(__file__).resolve().parents[3]
DEMO_WAV = SOURCE_ROOT / "samples" / "demo_call.wav"
DEMO_JSON = SOURCE_ROOT / "samples" / "demo_call.json"
ROLES = ("agent", "customer")
_MULAW_TAG = 7


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def demo_call(seconds: float, ending: bool = False) -> bytes:
    """The demo call (101 s of stereo mu-law 8 kHz speech) repeated and cut to `seconds`, as a WAV file: its first
    `seconds`, cut off mid-sentence; with `ending`, its last, so that it ends as the demo call does (the goodbyes,
    then 0.8 s of silence before the hang-up)."""
    wav = read_wav(DEMO_WAV.read_bytes())
    if wav.encoding is not Encoding.MULAW:
        raise ValueError(f"{DEMO_WAV} is {wav.encoding.value}, expected mu-law")
    frame = wav.channels * SAMPLE_BYTES[wav.encoding]
    size = int(seconds * wav.sample_rate) * frame
    repeated = wav.payload * (size // len(wav.payload) + 1)
    payload = repeated[len(repeated) - size:] if ending else repeated[:size]
    return wav_header(_MULAW_TAG, wav.channels, wav.sample_rate, 8, len(payload)) + payload


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (`q` from 0 to 1): always one of the measured values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of a process now (VmRSS) or at its peak so far (VmHWM)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", status).group(1)) / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


class PeakRss:
    """Samples a process's VmRSS in a thread while in use: the peak of one stretch of a long-lived server (VmHWM is
    the peak of its whole life)."""

    def __init__(self, pid: int, interval_s: float = 0.2):
        self._pid = pid
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.peak_mib = 0.0

    def _sample(self) -> None:
        while True:
            self.peak_mib = max(self.peak_mib, rss_mib(self._pid))
            if self._stop.wait(self._interval):
                return

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

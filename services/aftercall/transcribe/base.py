"""The interfaces of the speech backends: every one transcribes a finished call; during a call, the embedded Whisper
is fed the audio as it arrives (incremental) and Riva streams it to its server (streaming)."""

from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

from aftercall.core.audio import Audio
from aftercall.core.transcript import Transcript

# (seconds of audio decoded so far, total seconds to decode) summed over all channels.
ProgressCallback = Callable[[float, float], None]


@runtime_checkable
class Transcriber(Protocol):
    def transcribe(self, audio: Audio, roles: tuple[str, ...], progress: ProgressCallback | None = None,
                   live: bool = False) -> Transcript:
        """Recognise each channel separately, attribute it to its role, merge turns by start time. `live`: a stretch
        of a call in progress, whose mono speakers are not told apart by voice (transcribe.turns.conversation)."""
        ...


@runtime_checkable
class IncrementalTranscriber(Transcriber, Protocol):
    """Recognises a live call in this process as its audio arrives; the stretches recognised are checkpointed, so
    at hang-up only the last one is left (aftercall.ingest.live)."""

    def channel(self, sample_rate: int, on_segment: Callable[[float], None] | None = None,
                decoded: dict | None = None, on_group: Callable[[tuple, list], None] | None = None) -> Any:
        """One channel's recognition, fed with `push(samples)` and ended with `finish()`."""
        ...


@runtime_checkable
class StreamingTranscriber(Transcriber, Protocol):
    """Streams a live call to a recognition server, which returns its own interim results (Riva); the call is
    recognised again from its recording once it ends."""

    def speakers(self, channel_count: int, roles: tuple[str, ...]) -> tuple[str, ...]:
        """Who each live channel is."""
        ...

    def open_live_channel(self, sample_rate: int, speaker: str) -> Any:
        """One channel's stream to the server."""
        ...

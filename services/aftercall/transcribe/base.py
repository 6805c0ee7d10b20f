"""The interface every speech backend implements (embedded faster-whisper now, Riva in a later release)."""

from __future__ import annotations

from typing import Callable, Protocol

from aftercall.core.audio import Audio
from aftercall.core.transcript import Transcript

# (seconds of audio decoded so far, total seconds to decode) summed over all channels.
ProgressCallback = Callable[[float, float], None]


class Transcriber(Protocol):
    def transcribe(self, audio: Audio, roles: tuple[str, ...], progress: ProgressCallback | None = None,
                   live: bool = False) -> Transcript:
        """Recognise each channel separately, attribute it to its role, merge turns by start time. `live`: a stretch
        of a call in progress, whose mono speakers are not told apart by voice (transcribe.turns.conversation)."""
        ...

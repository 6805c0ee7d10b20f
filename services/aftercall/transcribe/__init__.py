"""Speech to speaker-attributed turns. `Transcriber` is the interface; `embedded` runs faster-whisper in-process."""

from aftercall.transcribe.base import ProgressCallback, Transcriber

__all__ = ["ProgressCallback", "Transcriber"]

"""Call audio on disk, written as it arrives, so a crash never loses a call.

Layout: `<data_dir>/spool/<call_id>/ch<N>.raw` (one file per channel, still in the wire encoding) for streams and
`recording.wav` for submitted recordings. A stream's files are fsynced before CallEnd is acknowledged, and the
directory is owner-only; encrypting these files per call is the vault's job (its issue), behind this class.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from aftercall.core.audio import SAMPLE_BYTES, Audio, Encoding, decode_samples, parse_wav

_RECORDING = "recording.wav"


@dataclass(frozen=True)
class AudioFormat:
    encoding: Encoding
    sample_rate: int
    channels: int

    @property
    def frame_bytes(self) -> int:
        return SAMPLE_BYTES[self.encoding] * self.channels

    def seconds(self, channel_bytes: int) -> float:
        return channel_bytes / SAMPLE_BYTES[self.encoding] / self.sample_rate


class StreamSpool:
    """The open files of one streamed call."""

    def __init__(self, directory: Path, audio_format: AudioFormat):
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._directory = directory
        self.format = audio_format
        self._files: list[BinaryIO] = [open(directory / f"ch{c}.raw", "ab") for c in range(audio_format.channels)]
        self.channel_bytes = [0] * audio_format.channels

    def write_interleaved(self, payload: bytes) -> None:
        width = SAMPLE_BYTES[self.format.encoding]
        if self.format.channels == 1:
            self.write_channel(0, payload)
            return
        frames = np.frombuffer(payload, dtype=np.uint8).reshape(-1, self.format.channels, width)
        for channel in range(self.format.channels):
            self.write_channel(channel, frames[:, channel, :].tobytes())

    def write_channel(self, channel: int, payload: bytes) -> None:
        self._files[channel].write(payload)
        self.channel_bytes[channel] += len(payload)

    @property
    def seconds(self) -> float:
        return self.format.seconds(max(self.channel_bytes))

    def window(self, start_s: float, end_s: float) -> Audio:
        """The audio received between two offsets (for interim recognition while the call goes on)."""
        width = SAMPLE_BYTES[self.format.encoding]
        start, end = (int(t * self.format.sample_rate) * width for t in (start_s, end_s))
        channels = [self.channel_samples(channel, start, end) for channel in range(len(self._files))]
        return _same_length(channels, self.format.sample_rate, self.format.encoding)

    def channel_samples(self, channel: int, start: int, end: int) -> np.ndarray:
        """One channel's samples between two byte offsets of its file (what a live recogniser is fed)."""
        self._files[channel].flush()
        with open(self._directory / f"ch{channel}.raw", "rb") as reader:
            reader.seek(start)
            data = reader.read(end - start)
        return _decode_channel(data, self.format.encoding)

    def seconds_after(self, size: int, channel: int | None) -> float:
        """The call's length once `size` more bytes (of one channel, or interleaved) are written."""
        if channel is None:
            return self.format.seconds(max(self.channel_bytes) + size // self.format.channels)
        return max(self.seconds, self.format.seconds(self.channel_bytes[channel] + size))

    def finish(self) -> None:
        """Flush and fsync every channel and the directory: after this returns the audio survives a crash or a
        power cut. The files are closed even when that fails (a full disk)."""
        try:
            for handle in self._files:
                if not handle.closed:
                    handle.flush()
                    os.fsync(handle.fileno())
            fsync_directory(self._directory)
        finally:
            for handle in self._files:
                handle.close()


class Spool:
    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def directory(self, call_id: str) -> Path:
        return self.root / call_id

    def open_stream(self, call_id: str, audio_format: AudioFormat) -> StreamSpool:
        return StreamSpool(self.directory(call_id), audio_format)

    def write_recording(self, call_id: str, wav: bytes) -> None:
        directory = self.directory(call_id)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = directory / (_RECORDING + ".part")
        with open(partial, "wb") as handle:
            handle.write(wav)
            handle.flush()
            os.fsync(handle.fileno())
        partial.rename(directory / _RECORDING)
        fsync_directory(directory)

    def load(self, call_id: str, audio_format: AudioFormat | None) -> Audio:
        """The call's audio: a stored recording, or the channel files (the shorter padded with silence; a sample
        cut in half by a crash is dropped)."""
        directory = self.directory(call_id)
        if (directory / _RECORDING).exists():
            return parse_wav((directory / _RECORDING).read_bytes())
        assert audio_format is not None, "a streamed call always has its format stored"
        channels = []
        for channel in range(audio_format.channels):
            path = directory / f"ch{channel}.raw"
            data = path.read_bytes() if path.exists() else b""
            channels.append(_decode_channel(data, audio_format.encoding))
        return _same_length(channels, audio_format.sample_rate, audio_format.encoding)

    def received_seconds(self, call_id: str, audio_format: AudioFormat | None) -> float:
        """How much audio of a call reached the disk (0 when none did)."""
        directory = self.directory(call_id)
        if (directory / _RECORDING).exists():
            return parse_wav((directory / _RECORDING).read_bytes()).duration
        if audio_format is None:
            return 0.0
        sizes = [(directory / f"ch{c}.raw").stat().st_size for c in range(audio_format.channels)
                 if (directory / f"ch{c}.raw").exists()]
        return audio_format.seconds(max(sizes, default=0))

    def remove(self, call_id: str) -> None:
        shutil.rmtree(self.directory(call_id), ignore_errors=True)

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free


def fsync_directory(path: Path) -> None:
    """A new or renamed file is only durable once its directory entry is (and the directory's, in its parent)."""
    for directory in (path, path.parent):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _decode_channel(data: bytes, encoding: Encoding) -> np.ndarray:
    """One channel file's samples; a sample cut in half (a crash mid-write) is dropped."""
    whole = len(data) - len(data) % SAMPLE_BYTES[encoding]
    return decode_samples(data[:whole], encoding, 1)[0]


def _same_length(channels: list[np.ndarray], sample_rate: int, encoding: Encoding) -> Audio:
    """Channels sent separately may differ in length: the shorter is padded with silence."""
    length = max(len(c) for c in channels)
    return Audio(sample_rate, tuple(np.pad(c, (0, length - len(c))) for c in channels), encoding)

"""Call audio on disk, written as it arrives, so a crash never loses a call, and encrypted as it is written.

Layout: `<data_dir>/spool/<call_id>/ch<N>.sealed` (one file per channel, still in the wire encoding) for streams and
`recording.sealed` for submitted recordings. A stream's files are fsynced before CallEnd is acknowledged, and the
directory is owner-only.

A channel file is a data key sealed by the vault (bound to the call and channel), then one record per write:
4-byte length | 12-byte nonce | AES-256-GCM ciphertext, with the record's index in the associated data, so records
cannot be reordered, dropped from the middle or moved to another call unnoticed. A record cut short by a crash is
dropped, like a half-written sample before. Files from before the vault (`ch<N>.raw`, `recording.wav`) are still
read, so calls spooled by an older release are not lost.
"""

from __future__ import annotations

import os
import secrets
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from aftercall.core.audio import SAMPLE_BYTES, Audio, Encoding, decode_samples, parse_wav
from aftercall.core.errors import RecordUnreadableError
from aftercall.vault.envelope import HEADER_BYTES, Vault, kek_of

_RECORDING, _LEGACY_RECORDING = "recording.sealed", "recording.wav"
_LENGTH = struct.Struct(">I")
_NONCE = 12
_OVERHEAD = _NONCE + 16  # nonce + GCM tag per record


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


class _SealedChannel:
    """One channel file being written: records appended as chunks arrive, with their plaintext offsets kept so a
    live reader can decrypt just the range it wants."""

    def __init__(self, path: Path, vault: Vault, record_id: str):
        self.record_id = record_id
        self._key = AESGCM.generate_key(bit_length=256)
        # Unbuffered: each chunk reaches the OS as it is written, so a killed process (kill -9, a crash) loses none
        # of the audio it received; fsync at hand-over makes it survive a power cut too.
        self.handle: BinaryIO = open(path, "xb", buffering=0)
        sealed_key = vault.seal(self._key, "spool-key", record_id)
        _write_all(self.handle, _LENGTH.pack(len(sealed_key)) + sealed_key)
        # On disk before any audio: a key rotation re-wraps this header in place, and must find it there.
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self._records: list[tuple[int, int, int]] = []  # (plaintext start, plaintext length, file offset)
        self._offset = _LENGTH.size + len(sealed_key)
        self.plaintext_bytes = 0

    def write(self, data: bytes) -> None:
        nonce = secrets.token_bytes(_NONCE)
        body = nonce + AESGCM(self._key).encrypt(nonce, data, _record_aad(self.record_id, len(self._records)))
        _write_all(self.handle, _LENGTH.pack(len(body)) + body)
        self._records.append((self.plaintext_bytes, len(data), self._offset))
        self._offset += _LENGTH.size + len(body)
        self.plaintext_bytes += len(data)

    def read(self, path: Path, start: int, end: int) -> bytes:
        self.handle.flush()
        pieces = []
        with open(path, "rb") as reader:
            for index, (plain_start, length, offset) in enumerate(self._records):
                if plain_start + length <= start or plain_start >= end:
                    continue
                reader.seek(offset)
                body = reader.read(_LENGTH.unpack(reader.read(_LENGTH.size))[0])
                data = AESGCM(self._key).decrypt(body[:_NONCE], body[_NONCE:], _record_aad(self.record_id, index))
                pieces.append(data[max(0, start - plain_start) : end - plain_start])
        return b"".join(pieces)


class StreamSpool:
    """The open files of one streamed call."""

    def __init__(self, directory: Path, audio_format: AudioFormat, vault: Vault, call_id: str):
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._directory = directory
        self.format = audio_format
        self._channels = [_SealedChannel(directory / f"ch{c}.sealed", vault, f"{call_id}/ch{c}")
                          for c in range(audio_format.channels)]
        self.channel_bytes = [0] * audio_format.channels

    def write_interleaved(self, payload: bytes) -> None:
        for channel, data in enumerate(self.deinterleave(payload)):
            self.write_channel(channel, data)

    def deinterleave(self, payload: bytes) -> list[bytes]:
        """Whole frames of interleaved audio -> each channel's bytes."""
        if self.format.channels == 1:
            return [payload]
        frames = np.frombuffer(payload, dtype=np.uint8).reshape(-1, self.format.channels,
                                                                 SAMPLE_BYTES[self.format.encoding])
        return [frames[:, channel, :].tobytes() for channel in range(self.format.channels)]

    def write_channel(self, channel: int, payload: bytes) -> None:
        self._channels[channel].write(payload)
        self.channel_bytes[channel] += len(payload)

    @property
    def seconds(self) -> float:
        return self.format.seconds(max(self.channel_bytes))

    def window(self, start_s: float, end_s: float) -> Audio:
        """The audio received between two offsets (for interim recognition while the call goes on)."""
        width = SAMPLE_BYTES[self.format.encoding]
        start, end = (int(t * self.format.sample_rate) * width for t in (start_s, end_s))
        channels = [self.channel_samples(channel, start, end) for channel in range(len(self._channels))]
        return _same_length(channels, self.format.sample_rate, self.format.encoding)

    def channel_samples(self, channel: int, start: int, end: int) -> np.ndarray:
        """One channel's samples between two byte offsets of its audio (what a live recogniser is fed)."""
        data = self._channels[channel].read(self._directory / f"ch{channel}.sealed", start, end)
        return decode_channel(data, self.format.encoding)

    def seconds_after(self, size: int, channel: int | None) -> float:
        """The call's length once `size` more bytes (of one channel, or interleaved) are written."""
        if channel is None:
            return self.format.seconds(max(self.channel_bytes) + size // self.format.channels)
        return max(self.seconds, self.format.seconds(self.channel_bytes[channel] + size))

    def finish(self) -> None:
        """Flush and fsync every channel and the directory: after this returns the audio survives a crash or a
        power cut. The files are closed even when that fails (a full disk)."""
        handles = [c.handle for c in self._channels]
        try:
            for handle in handles:
                if not handle.closed:
                    handle.flush()
                    os.fsync(handle.fileno())
            fsync_directory(self._directory)
        finally:
            for handle in handles:
                handle.close()


class Spool:
    def __init__(self, root: Path, vault: Vault):
        self.root = root
        self._vault = vault
        root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def directory(self, call_id: str) -> Path:
        return self.root / call_id

    def open_stream(self, call_id: str, audio_format: AudioFormat) -> StreamSpool:
        return StreamSpool(self.directory(call_id), audio_format, self._vault, call_id)

    def write_recording(self, call_id: str, wav: bytes) -> None:
        directory = self.directory(call_id)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = directory / (_RECORDING + ".part")
        with open(partial, "wb") as handle:
            handle.write(self._vault.seal(wav, "recording", call_id))
            handle.flush()
            os.fsync(handle.fileno())
        partial.rename(directory / _RECORDING)
        fsync_directory(directory)

    def _recording(self, call_id: str) -> Audio | None:
        directory = self.directory(call_id)
        if (directory / _RECORDING).exists():
            return parse_wav(self._vault.open((directory / _RECORDING).read_bytes(), "recording", call_id))
        if (directory / _LEGACY_RECORDING).exists():
            return parse_wav((directory / _LEGACY_RECORDING).read_bytes())
        return None

    def _channel_audio(self, call_id: str, channel: int) -> bytes:
        directory = self.directory(call_id)
        sealed, legacy = directory / f"ch{channel}.sealed", directory / f"ch{channel}.raw"
        if sealed.exists():
            return b"".join(_open_records(sealed.read_bytes(), self._vault, f"{call_id}/ch{channel}"))
        return legacy.read_bytes() if legacy.exists() else b""

    def load(self, call_id: str, audio_format: AudioFormat | None) -> Audio:
        """The call's audio: a stored recording, or the channel files (the shorter padded with silence; a sample
        cut in half by a crash is dropped)."""
        recording = self._recording(call_id)
        if recording is not None:
            return recording
        assert audio_format is not None, "a streamed call always has its format stored"
        channels = [decode_channel(self._channel_audio(call_id, c), audio_format.encoding)
                    for c in range(audio_format.channels)]
        return _same_length(channels, audio_format.sample_rate, audio_format.encoding)

    def received_seconds(self, call_id: str, audio_format: AudioFormat | None) -> float:
        """How much audio of a call reached the disk (0 when none did)."""
        recording = self._recording(call_id)
        if recording is not None:
            return recording.duration
        if audio_format is None:
            return 0.0
        sizes = [len(self._channel_audio(call_id, c)) for c in range(audio_format.channels)]
        return audio_format.seconds(max(sizes, default=0))

    def remove(self, call_id: str) -> None:
        shutil.rmtree(self.directory(call_id), ignore_errors=True)

    def sealed_keys(self) -> Iterator[tuple[Path, str, str, bytes]]:
        """(file, kind, record id, sealed blob) of every vault-sealed key or recording still spooled."""
        for directory in sorted(p for p in self.root.iterdir() if p.is_dir()):
            call_id = directory.name
            try:  # the server may finish and remove a call while this looks
                for path in sorted(directory.glob("ch*.sealed")):
                    with open(path, "rb") as handle:
                        header = handle.read(_LENGTH.size)
                        blob = handle.read(_LENGTH.unpack(header)[0]) if len(header) == _LENGTH.size else b""
                    if len(blob) >= HEADER_BYTES:
                        yield path, "spool-key", f"{call_id}/{path.stem}", blob
                if (directory / _RECORDING).exists():
                    yield directory / _RECORDING, "recording", call_id, (directory / _RECORDING).read_bytes()
            except FileNotFoundError:
                continue

    def rewrap(self) -> int:
        """Spooled audio's data keys onto the active KEK: each file's sealed-key header rewritten in place (it keeps
        its length) and fsynced."""
        active, changed = self._vault.keys.active.id, 0
        for path, kind, record_id, blob in self.sealed_keys():
            if kek_of(blob) == active:
                continue
            rewrapped = self._vault.rewrap(blob, kind, record_id)
            with open(path, "r+b") as handle:
                handle.seek(_LENGTH.size if kind == "spool-key" else 0)
                handle.write(rewrapped[:HEADER_BYTES])  # one small write: the ciphertext after it is unchanged
                handle.flush()
                os.fsync(handle.fileno())
            changed += 1
        return changed

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free


def _record_aad(record_id: str, index: int) -> bytes:
    return f"aftercall|spool|{record_id}|{index}".encode("utf-8")


def _open_records(data: bytes, vault: Vault, record_id: str) -> Iterator[bytes]:
    """A channel file's audio, record by record; a record cut short by a crash ends it."""
    if len(data) < _LENGTH.size:
        return
    key_length = _LENGTH.unpack_from(data)[0]
    key = vault.open(data[_LENGTH.size : _LENGTH.size + key_length], "spool-key", record_id)
    offset, index = _LENGTH.size + key_length, 0
    while offset + _LENGTH.size <= len(data):
        length = _LENGTH.unpack_from(data, offset)[0]
        body = data[offset + _LENGTH.size : offset + _LENGTH.size + length]
        if len(body) < length or length < _OVERHEAD:
            return  # the write a crash interrupted
        try:
            yield AESGCM(key).decrypt(body[:_NONCE], body[_NONCE:], _record_aad(record_id, index))
        except InvalidTag:
            raise RecordUnreadableError(f"spool {record_id}: record {index} was altered or moved") from None
        offset += _LENGTH.size + length
        index += 1


def _write_all(handle: BinaryIO, data: bytes) -> None:
    """An unbuffered file's write may take only part of the data (a signal mid-write): the rest follows."""
    view = memoryview(data)
    while view:
        view = view[handle.write(view):]


def fsync_directory(path: Path) -> None:
    """A new or renamed file is only durable once its directory entry is (and the directory's, in its parent)."""
    for directory in (path, path.parent):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def decode_channel(data: bytes, encoding: Encoding) -> np.ndarray:
    """One channel file's samples; a sample cut in half (a crash mid-write) is dropped."""
    whole = len(data) - len(data) % SAMPLE_BYTES[encoding]
    return decode_samples(data[:whole], encoding, 1)[0]


def _same_length(channels: list[np.ndarray], sample_rate: int, encoding: Encoding) -> Audio:
    """Channels sent separately may differ in length: the shorter is padded with silence."""
    length = max(len(c) for c in channels)
    return Audio(sample_rate, tuple(np.pad(c, (0, length - len(c))) for c in channels), encoding)

"""The audio contract: RIFF/WAVE (PCM16, A-law, mu-law) or raw G.711, 8/16 kHz, mono or stereo.

This is what streams carry (StreamCall, the Riva-compatible server) and the fast path for whole files: G.711 is
decoded with the ITU-T expansion tables (bit-identical to sox, tested). A whole recording in any other format is
decoded by aftercall.core.decode (FFmpeg) into the same `Audio`. Everything is validated up front so that a corrupt
or unsupported file fails with one precise sentence instead of a decoder traceback later.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np

from aftercall.core.errors import AudioFormatError

SUPPORTED_RATES = (8000, 16000)
SUPPORTED_CHANNELS = (1, 2)
WHISPER_RATE = 16000


class Encoding(str, Enum):
    LINEAR_PCM = "linear_pcm"
    MULAW = "mulaw"
    ALAW = "alaw"


# WAVE format tags (RFC 2361) and the sample width the contract allows for each.
_FORMAT_TAGS = {1: Encoding.LINEAR_PCM, 6: Encoding.ALAW, 7: Encoding.MULAW}
_BITS = {Encoding.LINEAR_PCM: 16, Encoding.ALAW: 8, Encoding.MULAW: 8}
SAMPLE_BYTES = {encoding: bits // 8 for encoding, bits in _BITS.items()}
_EXTENSIBLE = 0xFFFE


def _mulaw_table() -> np.ndarray:
    table = np.empty(256, dtype=np.int16)
    for code in range(256):
        u = ~code & 0xFF
        magnitude = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
        table[code] = (0x84 - magnitude) if u & 0x80 else (magnitude - 0x84)
    return table


def _alaw_table() -> np.ndarray:
    table = np.empty(256, dtype=np.int16)
    for code in range(256):
        a = code ^ 0x55
        segment = (a & 0x70) >> 4
        magnitude = (a & 0x0F) << 4
        if segment == 0:
            magnitude += 8
        else:
            magnitude = (magnitude + 0x108) << (segment - 1)
        table[code] = magnitude if a & 0x80 else -magnitude
    return table


MULAW_TO_PCM16 = _mulaw_table()
ALAW_TO_PCM16 = _alaw_table()


@dataclass(frozen=True)
class Audio:
    """Decoded audio: one int16 array per channel, all the same length."""

    sample_rate: int
    channels: tuple[np.ndarray, ...]
    source_encoding: Encoding

    @property
    def duration(self) -> float:
        return len(self.channels[0]) / self.sample_rate

    def channel_float(self, index: int) -> np.ndarray:
        """Channel `index` as float32 in [-1, 1) at its own rate (what the VAD reads)."""
        return self.channels[index].astype(np.float32) / 32768.0

    def channel_float16k(self, index: int) -> np.ndarray:
        """Channel `index` as float32 in [-1, 1) at 16 kHz, the input Whisper expects."""
        return to_whisper_rate(self.channel_float(index), self.sample_rate)


def to_whisper_rate(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """float32 audio at 8 or 16 kHz -> 16 kHz."""
    return samples if sample_rate == WHISPER_RATE else upsample_2x(samples)


def _lowpass_kernel(taps: int = 63) -> np.ndarray:
    # Windowed-sinc half-band filter: cut-off at the old Nyquist (4 kHz of the new 16 kHz), gain 2 for zero-stuffing.
    n = np.arange(taps) - (taps - 1) / 2
    kernel = np.sinc(n / 2) * np.blackman(taps)
    return (2 * kernel / kernel.sum()).astype(np.float32)


_HALF_BAND = _lowpass_kernel()


def upsample_2x(samples: np.ndarray) -> np.ndarray:
    stuffed = np.zeros(len(samples) * 2, dtype=np.float32)
    stuffed[::2] = samples
    return np.convolve(stuffed, _HALF_BAND, mode="same").astype(np.float32)


def decode_samples(payload: bytes, encoding: Encoding, channel_count: int) -> tuple[np.ndarray, ...]:
    """Decode interleaved sample bytes into one int16 array per channel."""
    if encoding is Encoding.LINEAR_PCM:
        interleaved = np.frombuffer(payload, dtype="<i2").astype(np.int16)
    else:
        table = MULAW_TO_PCM16 if encoding is Encoding.MULAW else ALAW_TO_PCM16
        interleaved = table[np.frombuffer(payload, dtype=np.uint8)]
    return tuple(np.ascontiguousarray(interleaved[c::channel_count]) for c in range(channel_count))


class UnsupportedWavFormat(AudioFormatError):
    """A well-formed WAV whose format (tag, sample width or rate) the contract's decoder does not read; the FFmpeg
    decoder for whole recordings (aftercall.core.decode) does."""


def check_channels(channel_count: int) -> None:
    if channel_count not in SUPPORTED_CHANNELS:
        raise AudioFormatError(f"unsupported: {channel_count} channels (aftercall accepts 1 or 2)")


def too_long(limit: float, seconds: float | None = None) -> AudioFormatError:
    """The refusal of audio over audio.max_duration_s; `seconds` None when decoding stopped at the limit."""
    if seconds is None:
        return AudioFormatError(f"too long: more than audio.max_duration_s = {limit} s of audio")
    return AudioFormatError(f"too long: {seconds:.0f} s exceeds audio.max_duration_s = {limit}")


def _check_rate(rate: int, error: type[AudioFormatError] = AudioFormatError) -> None:
    if rate not in SUPPORTED_RATES:
        raise error(f"unsupported: sample rate {rate} Hz (aftercall accepts 8000 or 16000)")


def _check_layout(rate: int, channel_count: int) -> None:
    check_channels(channel_count)
    _check_rate(rate)


def looks_like(data: bytes) -> str | None:
    """The format a file's first bytes suggest (for messages about files no decoder could open), or None."""
    if data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        return "MP3"
    if data[:4] == b"OggS":
        return "Ogg"
    if data[:4] == b"fLaC":
        return "FLAC"
    if data[4:8] == b"ftyp":
        return "MP4"  # M4A, 3GP: without its index (moov), which recorders write last, nothing can be read
    return None


def _sniff(data: bytes) -> str:
    guess = looks_like(data)
    return f" (it looks like {guess})" if guess else ""


def is_riff_wave(data: bytes) -> bool:
    return len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WAVE"


@dataclass(frozen=True)
class WavPayload:
    """A validated WAV file's sample bytes, still in their encoding (what a PBX client streams as is)."""

    encoding: Encoding
    sample_rate: int
    channels: int
    payload: bytes
    # head_only: the data chunk's declared length (the whole stream's audio), None when the writer did not know it.
    declared_bytes: int | None = None


def parse_wav(data: bytes) -> Audio:
    """Parse, validate and decode a RIFF/WAVE file held in memory."""
    wav = read_wav(data)
    return Audio(wav.sample_rate, decode_samples(wav.payload, wav.encoding, wav.channels), wav.encoding)


def read_wav(data: bytes, head_only: bool = False) -> WavPayload:
    """Parse and validate a RIFF/WAVE file held in memory, without decoding the samples. `head_only`: the start of a
    stream (header plus whatever audio came with it): the rest of the declared length may follow in later messages
    (`declared_bytes` tells how much), and a cut frame is allowed."""
    if len(data) == 0:
        raise AudioFormatError("empty file")
    if not is_riff_wave(data):
        raise AudioFormatError("not a RIFF/WAVE file" + _sniff(data))
    # The chunks first, the format after: a cut or empty file is refused as such whatever its format.
    fmt: bytes | None = None
    payload: bytes | None = None
    declared: int | None = None
    offset = 12
    while offset + 8 <= len(data):
        chunk_id, size = struct.unpack_from("<4sI", data, offset)
        body_start = offset + 8
        if chunk_id == b"data":
            available = len(data) - body_start
            # 0 and 0xFFFFFFFF are what live recorders write before they know the length.
            declared = None if size in (0, 0xFFFFFFFF) else size
            if (head_only and (declared is None or declared > available)) or (declared is None and available > 0):
                size = available
            if size > available:
                raise AudioFormatError(f"truncated: the data chunk declares {size} bytes but only {available} follow")
            payload = data[body_start : body_start + size]
            if fmt is not None:
                break
        elif chunk_id == b"fmt ":
            if size < 16 or body_start + size > len(data):
                raise AudioFormatError("corrupt: the fmt chunk is too short")
            fmt = data[body_start : body_start + size]
        offset = body_start + size + (size & 1)
    if fmt is None:
        raise AudioFormatError("corrupt: no fmt chunk before the end of the file")
    if payload is None:
        raise AudioFormatError("corrupt: no data chunk")
    if not head_only and len(payload) == 0:
        raise AudioFormatError("empty: the data chunk holds no samples")
    encoding, rate, channel_count, block_align = _parse_fmt(fmt)
    if head_only:
        return WavPayload(encoding, rate, channel_count, payload, declared)
    if len(payload) % block_align:
        raise AudioFormatError(f"truncated: the data chunk ends mid-frame ({len(payload)} bytes, frames of {block_align})")
    return WavPayload(encoding, rate, channel_count, payload)


def _parse_fmt(body: bytes) -> tuple[Encoding, int, int, int]:
    tag, channel_count, rate, _byte_rate, block_align, bits = struct.unpack_from("<HHIIHH", body)
    if tag == _EXTENSIBLE:
        if len(body) < 26:
            raise AudioFormatError("corrupt: WAVE_FORMAT_EXTENSIBLE without a sub-format")
        tag = struct.unpack_from("<H", body, 24)[0]
    check_channels(channel_count)
    encoding = _FORMAT_TAGS.get(tag)
    if encoding is None:
        raise UnsupportedWavFormat(f"unsupported: WAV format tag {tag:#06x} (aftercall accepts PCM, A-law, mu-law)")
    if bits != _BITS[encoding]:
        raise UnsupportedWavFormat(f"unsupported: {bits}-bit {encoding.value} (expected {_BITS[encoding]}-bit)")
    _check_rate(rate, UnsupportedWavFormat)
    if block_align != channel_count * bits // 8:
        raise AudioFormatError(f"corrupt: block align {block_align} does not match {channel_count} x {bits} bits")
    return encoding, rate, channel_count, block_align


def wav_header(tag: int, channels: int, rate: int, bits: int, data_size: int) -> bytes:
    """A 44-byte RIFF/WAVE header (format tag 1 = PCM, 6 = A-law, 7 = mu-law) for `data_size` bytes of samples."""
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    return (b"RIFF" + struct.pack("<I", 36 + data_size) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", data_size))


def pcm16_wav(audio: Audio) -> bytes:
    """`audio` as a PCM16 RIFF/WAVE file (interleaved), written in place: one copy of the samples, not three."""
    frames, channels = len(audio.channels[0]), len(audio.channels)
    size = frames * channels * 2
    if 36 + size > 0xFFFFFFFF:
        raise AudioFormatError(f"too long to store: {audio.duration:.0f} s of {channels}-channel audio at "
                               f"{audio.sample_rate} Hz does not fit one WAV file (4 GiB)")
    header = wav_header(1, channels, audio.sample_rate, 16, size)
    out = bytearray(len(header) + size)
    out[: len(header)] = header
    interleaved = np.frombuffer(out, dtype="<i2", offset=len(header)).reshape(frames, channels)
    for index, samples in enumerate(audio.channels):
        interleaved[:, index] = samples
    return bytes(out)


def parse_raw(data: bytes, encoding: Encoding, sample_rate: int, channel_count: int) -> Audio:
    """Headerless audio: the caller states encoding, rate and channel count."""
    _check_layout(sample_rate, channel_count)
    width = _BITS[encoding] // 8 * channel_count
    if len(data) == 0:
        raise AudioFormatError("empty file")
    if len(data) % width:
        raise AudioFormatError(f"truncated: {len(data)} bytes is not a whole number of {width}-byte frames")
    return Audio(sample_rate, decode_samples(data, encoding, channel_count), encoding)


def load_audio(path: Path, raw_encoding: Encoding | None = None, sample_rate: int = 8000, channels: int = 1,
               max_duration_s: float | None = None) -> Audio:
    """A recording file: headerless G.711/PCM16 with `raw_encoding`, else any format (aftercall.core.decode).
    Longer than `max_duration_s`: refused (a compressed file's decoding stops there)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AudioFormatError(f"cannot read {path}: {exc.strerror}") from exc
    if raw_encoding is None:
        from aftercall.core.decode import decode_audio  # FFmpeg, loaded once a file needs it (not by streams)

        return decode_audio(data, max_duration_s)
    audio = parse_raw(data, raw_encoding, sample_rate, channels)
    if max_duration_s is not None and audio.duration > max_duration_s:
        raise too_long(max_duration_s, audio.duration)
    return audio

"""Whole recordings in whatever format a site has, decoded by FFmpeg (PyAV) into the audio contract's `Audio`.

A WAV inside the contract (PCM16, A-law or mu-law at 8 or 16 kHz) keeps the hand-written, sox-exact decoder of
aftercall.core.audio. Anything else FFmpeg reads (8/24/32-bit and float WAV, GSM 6.10, IMA/MS ADPCM, extensible
WAV, MP3, Ogg Opus/Vorbis, FLAC, M4A, ...) is decoded from memory, never through a file (call audio is sensitive),
and resampled: sources at 8 kHz or below to 8 kHz (telephone audio keeps its rate, the one the VAD runs at), the
rest to 16 kHz (Whisper's). Streams never come here: their chunks are G.711 or PCM16 by contract.

Every failure is an AudioFormatError, one sentence naming what FFmpeg found (container and codec); no av exception
leaves this module.
"""

from __future__ import annotations

import io
import logging

import av
import numpy as np

from aftercall.core.audio import (
    Audio, Encoding, UnsupportedWavFormat, check_channels, is_riff_wave, looks_like, parse_wav, pcm16_wav, too_long,
)
from aftercall.core.errors import AudioFormatError

logger = logging.getLogger(__name__)

TELEPHONE_RATE, WIDEBAND_RATE = 8000, 16000
_LAYOUTS = {1: "mono", 2: "stereo"}
_G711 = {"pcm_mulaw": Encoding.MULAW, "pcm_alaw": Encoding.ALAW}
# No nested opens: a playlist or concat script (hls, ffconcat) would otherwise make FFmpeg read files or URLs it
# names, and the bytes came from a client.
_OPEN_OPTIONS = {"protocol_whitelist": "none"}
# Packets that fail to decode are skipped, as FFmpeg's own tools do, up to this share of the stream: a glitch in a
# long recording costs a few milliseconds, a file mostly garbage is refused.
_DAMAGED_SHARE = 0.01
# Containers whose declared length is exact, so audio missing from the end means the file was cut short. Elsewhere
# FFmpeg may estimate the length from the bit rate, which proves nothing.
_EXACT_LENGTH = frozenset({"wav", "w64", "flac", "aiff", "caf", "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"})
# Decoded audio may end this much before the declared length (encoder padding, priming) without being cut.
_SLACK_S = 0.5
# Source rates the resampler is built for. FFmpeg's resampler takes seconds to set up for a rate far outside what
# recorders write (805 MHz, from one flipped bit in a WAV header: 9 s of CPU for a 67 KB file), and a rate of a few
# Hz makes hours of audio out of seconds of bytes: neither is a recording.
MIN_SOURCE_RATE, MAX_SOURCE_RATE = 1000, 384000


def decode_audio(data: bytes, max_duration_s: float | None = None) -> Audio:
    """A whole recording held in memory, in any format FFmpeg reads, as 8 or 16 kHz `Audio` (1 or 2 channels).
    AudioFormatError when it is empty, corrupt, cut short, has no audio, more than 2 channels, or more than
    `max_duration_s` of audio (decoding stops there)."""
    return _decoded(data, max_duration_s)[0]


def recording_wav(data: bytes, max_duration_s: float | None = None) -> tuple[bytes, float, int]:
    """A submitted recording as the spool keeps it, with its length in seconds and its channel count: a contract WAV
    as sent (G.711 stays 8-bit), anything else decoded and rewritten as PCM16 WAV, so that everything after the
    submission reads one format."""
    audio, in_contract = _decoded(data, max_duration_s)
    return data if in_contract else pcm16_wav(audio), audio.duration, len(audio.channels)


def _decoded(data: bytes, max_duration_s: float | None) -> tuple[Audio, bool]:
    """The recording's audio, and whether it was a contract WAV (decoded by hand, not by FFmpeg)."""
    audio = _contract_wav(data)
    in_contract = audio is not None
    if not in_contract:
        audio = _decode(data, max_duration_s)
    if max_duration_s is not None and audio.duration > max_duration_s:
        raise too_long(max_duration_s, audio.duration)
    return audio, in_contract


def _contract_wav(data: bytes) -> Audio | None:
    """The fast path: a WAV inside the contract, decoded by hand; None for anything else (FFmpeg's job)."""
    if not data:
        raise AudioFormatError("empty file")
    if not is_riff_wave(data):
        return None
    try:
        return parse_wav(data)  # a cut, empty or chunkless WAV is refused here, whatever its format
    except UnsupportedWavFormat:
        return None


def _decode(data: bytes, max_duration_s: float | None) -> Audio:
    try:
        container = av.open(io.BytesIO(data), container_options=_OPEN_OPTIONS, metadata_errors="replace")
    except (av.FFmpegError, ValueError) as exc:
        guess = looks_like(data)
        if guess:
            raise AudioFormatError(f"corrupt: the file starts like {guess} but FFmpeg cannot read it "
                                   f"({_reason(exc)})") from exc
        raise AudioFormatError(f"unsupported: not an audio format aftercall can read ({_reason(exc)})") from exc
    with container:
        name = container.format.name
        if not container.streams.audio:
            raise AudioFormatError(f"unsupported: no audio stream in this file (container: {name})")
        stream = container.streams.audio[0]
        if stream.codec_context is None:
            raise AudioFormatError(f"unsupported: FFmpeg has no decoder for this file's audio codec (container: "
                                   f"{name})")
        codec = stream.codec_context.codec.canonical_name
        try:
            return _Decoding(container, stream, name, codec, max_duration_s, _declares_length(name, data)).run()
        except (av.FFmpegError, ValueError) as exc:
            raise AudioFormatError(f"corrupt: the {codec} stream could not be decoded (container: {name}; "
                                   f"{_reason(exc)})") from exc


class _Decoding:
    """One audio stream decoded packet by packet, resampled to the contract's rate and layout as it goes."""

    def __init__(self, container, stream, name: str, codec: str, max_duration_s: float | None, exact: bool):
        self._container, self._stream = container, stream
        self._what = f"{codec} stream (container: {name})"
        self._codec = codec
        self._limit_s = max_duration_s
        declared = _declared_seconds(container, stream)
        self._declared = declared if exact else None
        if self._declared is not None and max_duration_s is not None and self._declared > max_duration_s + _SLACK_S:
            raise too_long(max_duration_s, self._declared)  # cheaply, before decoding hours of audio
        check_channels(stream.codec_context.channels or 1)  # 0: not known before the first frame
        self._resampler: av.AudioResampler | None = None
        self._input: tuple | None = None
        self._layout, self._rate = "", 0
        self._pieces: list[np.ndarray] = []
        self._samples = 0

    def run(self) -> Audio:
        packets = damaged = 0
        last_damaged, first_error = False, None
        for packet in self._container.demux(self._stream):
            if packet.size:
                packets += 1
            try:
                frames = packet.decode()
            except av.FFmpegError as exc:  # a damaged packet: skipped (counted below)
                if not packet.size:
                    continue  # the decoder's flush after a damaged last packet says it again
                damaged += 1
                first_error = first_error or exc
                last_damaged = True
                continue
            last_damaged = last_damaged and not packet.size  # the flush packet after a damaged last one
            for frame in frames:
                self._add(frame)
        self._flush()
        cut = int(last_damaged)  # a damaged last packet is where the file was cut, not damage inside it
        self._check(packets, damaged - cut, first_error)
        channels = np.concatenate(self._pieces, axis=1) if len(self._pieces) > 1 else self._pieces[0]
        encoding = _G711.get(self._stream.codec_context.name, Encoding.LINEAR_PCM)
        logger.info("decoded a %s: %d channel(s), %.1f s at %d Hz", self._what, len(channels),
                    self._samples / self._rate, self._rate)
        return Audio(self._rate, tuple(np.ascontiguousarray(c) for c in channels), encoding)

    def _check(self, packets: int, damaged_inside: int, first_error: Exception | None) -> None:
        decoded_s = self._samples / self._rate if self._rate else 0.0
        if self._samples == 0:
            if first_error is not None or self._declared:
                reason = f": {_reason(first_error)}" if first_error is not None else ""
                raise AudioFormatError(f"corrupt: no audio could be decoded from the {self._what}{reason}")
            raise AudioFormatError(f"empty: the file holds no audio samples ({self._what})")
        damage = (f"corrupt: {damaged_inside} of {packets} {self._codec} packets could not be decoded "
                  f"({_reason(first_error)})" if damaged_inside else "")
        if damaged_inside > _DAMAGED_SHARE * packets:
            raise AudioFormatError(damage)
        if self._declared is not None and decoded_s < self._declared - _SLACK_S:
            raise AudioFormatError(damage or f"truncated: the {self._what} declares {self._declared:.1f} s but "
                                             f"the file ends after {decoded_s:.1f} s")
        if damaged_inside:
            logger.warning("%s; skipped", damage)

    def _add(self, frame: av.AudioFrame) -> None:
        shape = (frame.format.name, frame.layout.name, frame.sample_rate)
        if self._resampler is None:  # the first frame decides the output: 1 or 2 channels, 8 or 16 kHz
            channels = frame.layout.nb_channels
            check_channels(channels)
            self._layout = _LAYOUTS[channels]
            self._rate = TELEPHONE_RATE if frame.sample_rate <= TELEPHONE_RATE else WIDEBAND_RATE
        if shape != self._input:  # the first frame, or the stream changed rate or layout midway: same output
            if not MIN_SOURCE_RATE <= frame.sample_rate <= MAX_SOURCE_RATE:
                raise AudioFormatError(f"unsupported: sample rate {frame.sample_rate} Hz in the {self._what} "
                                       f"(aftercall reads {MIN_SOURCE_RATE} to {MAX_SOURCE_RATE} Hz)")
            self._flush()
            self._resampler = av.AudioResampler(format="s16p", layout=self._layout, rate=self._rate)
            self._input = shape
        self._take(self._resampler.resample(frame))

    def _flush(self) -> None:
        if self._resampler is not None:
            self._take(self._resampler.resample(None))

    def _take(self, frames: list[av.AudioFrame]) -> None:
        for frame in frames:
            self._pieces.append(frame.to_ndarray())
            self._samples += frame.samples
        if self._limit_s is not None and self._samples > self._limit_s * self._rate:
            raise too_long(self._limit_s)


def _declared_seconds(container, stream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


def _declares_length(name: str, data: bytes) -> bool:
    if name in _EXACT_LENGTH:
        return True
    return name == "mp3" and _mp3_counts_frames(data)


def _mp3_counts_frames(data: bytes) -> bool:
    """LAME and FFmpeg put the frame count in a Xing/Info tag (Fraunhofer: VBRI) in the first frame; without one
    FFmpeg's length is a guess from the bit rate."""
    start = 0
    if data[:3] == b"ID3" and len(data) >= 10:  # an ID3v2 tag first: its size is 4 x 7 bits
        start = 10 + sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(data[6:10]))
    window = data[start : start + 4096]
    return any(tag in window for tag in (b"Xing", b"Info", b"VBRI"))


def _reason(exc: BaseException | None) -> str:
    """FFmpeg's own words for an error, without errno and file name."""
    if isinstance(exc, av.FFmpegError) and exc.strerror:
        return str(exc.strerror)
    return str(exc)

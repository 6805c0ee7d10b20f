"""RTP (RFC 3550) for recording: parse packets, and turn one stream's packets (late, duplicated, reordered, lost,
or restarted under a new SSRC after a transfer) into gapless G.711 audio, one byte per sample at 8 kHz, with
silence where audio never came, so that the two sides of a call stay aligned."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from aftercall.siprec.errors import RtpPacketError

SAMPLE_RATE = 8000
# The byte that decodes to zero in each G.711 law (0xFF and 0x7F both do in mu-law; 0xFF is what encoders emit).
SILENCE = {0: b"\xff", 8: b"\xd5"}
_HEADER = struct.Struct("!BBHII")


@dataclass(frozen=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    marker: bool
    payload: bytes


def parse_rtp(data: bytes) -> RtpPacket:
    if len(data) < _HEADER.size:
        raise RtpPacketError(f"{len(data)} bytes is shorter than an RTP header")
    first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
    if first >> 6 != 2:
        raise RtpPacketError(f"RTP version {first >> 6}, not 2")
    offset = _HEADER.size + 4 * (first & 0x0F)  # CSRC list
    if first & 0x10:  # header extension: 16-bit profile, 16-bit length in 32-bit words
        if len(data) < offset + 4:
            raise RtpPacketError("truncated RTP header extension")
        offset += 4 + 4 * struct.unpack_from("!H", data, offset + 2)[0]
    end = len(data)
    if first & 0x20:  # padding: the last byte says how much
        end -= data[-1]
    if offset > end:
        raise RtpPacketError("RTP header, extension or padding longer than the packet")
    return RtpPacket(second & 0x7F, sequence, timestamp, ssrc, bool(second & 0x80), bytes(data[offset:end]))


@dataclass
class StreamStats:
    packets: int = 0
    duplicates: int = 0
    late: int = 0  # arrived after their place in the audio was given (to silence, or to an earlier copy)
    other_payload: int = 0  # DTMF events, comfort noise, anything but the negotiated codec
    lost_samples: int = 0  # filled with silence
    ssrc_changes: int = 0
    discontinuities: int = 0  # timestamp jumps too large to fill


class StreamReceiver:
    """One recorded stream. Packets are held in a window of `jitter_packets` so that reordering costs nothing;
    what leaves the window is placed by its RTP timestamp, gaps up to `max_fill_s` filled with silence. A larger
    jump (a bad clock, or a hold the SBC sends as a timestamp leap) is a discontinuity: the audio continues
    without a fill, and the call's wall clock (the session's business) keeps the sides aligned."""

    def __init__(self, payload_type: int, jitter_packets: int = 8, max_fill_s: float = 5.0):
        if payload_type not in SILENCE:
            raise ValueError(f"payload type {payload_type} is not G.711")
        self.payload_type = payload_type
        self.stats = StreamStats()
        self._jitter = jitter_packets
        self._max_fill = int(max_fill_s * SAMPLE_RATE)
        self._ssrc: int | None = None
        self._held: dict[int, RtpPacket] = {}  # extended sequence number -> packet
        self._highest: int | None = None  # highest extended sequence number seen from this SSRC
        self._released: int | None = None  # extended sequence number of the last packet released
        self._next_timestamp: int | None = None  # RTP timestamp where the next released audio belongs

    def push(self, packet: RtpPacket) -> bytes:
        """Audio that can be released now (often none: the window is filling)."""
        if packet.payload_type != self.payload_type:
            self.stats.other_payload += 1
            return b""
        out = b""
        if packet.ssrc != self._ssrc:
            if self._ssrc is not None:
                self.stats.ssrc_changes += 1
                out = self.flush()
            self._ssrc, self._highest, self._released = packet.ssrc, None, None
            self._next_timestamp = None  # the new source's clock starts where the audio stands
        extended = self._extend(packet.sequence)
        if extended in self._held:
            self.stats.duplicates += 1
            return out
        if self._released is not None and extended <= self._released:
            self.stats.late += 1
            return out
        self.stats.packets += 1
        self._held[extended] = packet
        return out + self._release_down_to(self._jitter)

    def flush(self) -> bytes:
        """Everything held, in order: at the end of the call, or before a new source takes over."""
        return self._release_down_to(0)

    def resync(self) -> bytes:
        """Everything held; then the next packet continues the audio wherever the session has put it (after the
        silence it filled by wall clock while nothing came), without a fill of its own for the same gap."""
        out = self.flush()
        self._next_timestamp = None
        return out

    def _release_down_to(self, held: int) -> bytes:
        out = b""
        while len(self._held) > held:
            out += self._release(min(self._held))
        return out

    def _extend(self, sequence: int) -> int:
        """The 16-bit sequence number widened so that it keeps counting across wrap-arounds (RFC 3550 A.1)."""
        if self._highest is None:
            self._highest = sequence
            return sequence
        delta = (sequence - self._highest) % 2 ** 16
        extended = self._highest + delta if delta < 2 ** 15 else self._highest + delta - 2 ** 16
        self._highest = max(self._highest, extended)
        return extended

    def _release(self, extended: int) -> bytes:
        packet = self._held.pop(extended)
        self._released = extended
        payload, gap = packet.payload, 0
        if self._next_timestamp is not None:
            gap = (packet.timestamp - self._next_timestamp) % 2 ** 32
            if gap >= 2 ** 31:  # it starts before where the audio stands: keep only what is new
                overlap = 2 ** 32 - gap
                if overlap >= len(payload):
                    return b""
                payload, gap = payload[overlap:], 0
            elif gap > self._max_fill:
                self.stats.discontinuities += 1
                gap = 0
        self._next_timestamp = (packet.timestamp + len(packet.payload)) % 2 ** 32
        self.stats.lost_samples += gap
        return SILENCE[self.payload_type] * gap + payload


class InterarrivalJitter:
    """RFC 3550 A.8: the smoothed variation of packet transit time, in seconds."""

    def __init__(self) -> None:
        self._previous: tuple[int, float] | None = None  # (RTP timestamp, arrival in seconds)
        self._jitter = 0.0  # in timestamp units (samples)

    def update(self, timestamp: int, arrival: float) -> None:
        if self._previous is not None:
            last_timestamp, last_arrival = self._previous
            elapsed = ((timestamp - last_timestamp + 2 ** 31) % 2 ** 32) - 2 ** 31
            transit_change = (arrival - last_arrival) * SAMPLE_RATE - elapsed
            self._jitter += (abs(transit_change) - self._jitter) / 16
        self._previous = (timestamp, arrival)

    @property
    def seconds(self) -> float:
        return self._jitter / SAMPLE_RATE

"""RTP for recording: packet parsing, and one stream's packets, however they arrive, back to gapless G.711 audio
that is bit-exact where packets came and silence where they did not."""

from __future__ import annotations

import asyncio
import random
import struct

import pytest

from aftercall.siprec.errors import RtpPacketError
from aftercall.siprec.recording import RtpPorts
from aftercall.siprec.rtp import InterarrivalJitter, RtpPacket, StreamReceiver, parse_rtp

FRAME = 160  # 20 ms at 8 kHz


def rtp_bytes(sequence: int, timestamp: int, payload: bytes, payload_type: int = 0, ssrc: int = 0x1234,
              csrcs: int = 0, extension: bytes | None = None, padding: int = 0) -> bytes:
    first = 0x80 | csrcs | (0x10 if extension is not None else 0) | (0x20 if padding else 0)
    data = struct.pack("!BBHII", first, payload_type, sequence % 2 ** 16, timestamp % 2 ** 32, ssrc)
    data += b"\x00\x00\x00\x01" * csrcs
    if extension is not None:
        data += struct.pack("!HH", 0xBEDE, len(extension) // 4) + extension
    return data + payload + (b"\x00" * (padding - 1) + bytes([padding]) if padding else b"")


def call_audio(frames: int, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    return [bytes(rng.randrange(256) for _ in range(FRAME)) for _ in range(frames)]


def packets(frames: list[bytes], first_sequence: int = 1000, first_timestamp: int = 50000, ssrc: int = 0x1234,
            payload_type: int = 0) -> list[RtpPacket]:
    return [parse_rtp(rtp_bytes(first_sequence + n, first_timestamp + n * FRAME, frame, payload_type, ssrc))
            for n, frame in enumerate(frames)]


def receive(receiver: StreamReceiver, arriving: list[RtpPacket]) -> bytes:
    return b"".join(receiver.push(packet) for packet in arriving) + receiver.flush()


def test_packets_parse_with_csrcs_extension_and_padding():
    packet = parse_rtp(rtp_bytes(7, 320, b"audio", payload_type=8, csrcs=2, extension=b"\x01\x02\x03\x04",
                                 padding=3))
    assert (packet.payload_type, packet.sequence, packet.timestamp, packet.payload) == (8, 7, 320, b"audio")
    assert parse_rtp(rtp_bytes(1, 1, b"x", payload_type=0x80)).marker and not packet.marker


@pytest.mark.parametrize("data, words", [
    (b"\x80\x00\x00", "shorter than an RTP header"),
    (b"\x40" + b"\x00" * 11, "version 1"),
    (b"\x90" + b"\x00" * 11 + b"\xbe", "truncated RTP header extension"),
    (b"\xa0" + b"\x00" * 11 + b"\x40", "longer than the packet"),
])
def test_datagrams_that_are_not_usable_rtp_are_refused(data, words):
    with pytest.raises(RtpPacketError, match=words):
        parse_rtp(data)


def test_reordered_and_duplicated_packets_give_back_the_exact_audio():
    frames = call_audio(60)
    arriving = packets(frames)
    rng = random.Random(3)
    for start in range(0, len(arriving), 4):  # shuffle within groups of 4: inside the jitter window
        group = arriving[start:start + 4]
        rng.shuffle(group)
        arriving[start:start + 4] = group
    arriving += arriving[10:13]  # repeats long after: their place is taken
    arriving.insert(20, arriving[19])  # a duplicate while the original is still held
    receiver = StreamReceiver(0, jitter_packets=8)
    assert receive(receiver, arriving) == b"".join(frames)
    assert receiver.stats.packets == 60 and receiver.stats.duplicates + receiver.stats.late == 4
    assert receiver.stats.lost_samples == 0


def test_lost_packets_become_silence_of_their_length_and_a_late_one_is_dropped():
    frames = call_audio(30)
    arriving = packets(frames)
    late = arriving.pop(11)
    arriving.pop(19)  # frame 20: lost for good
    arriving.append(late)  # 18 packets after its place: the window has moved on
    receiver = StreamReceiver(0, jitter_packets=4)
    audio = receive(receiver, arriving)
    expected = b"".join(frames[:11]) + b"\xff" * FRAME + b"".join(frames[12:20]) + b"\xff" * FRAME + \
        b"".join(frames[21:])
    assert audio == expected
    assert receiver.stats.lost_samples == 2 * FRAME and receiver.stats.late == 1


def test_a_law_silence_is_the_a_law_zero():
    frames = call_audio(6)
    arriving = packets(frames, payload_type=8)
    del arriving[2]
    audio = receive(StreamReceiver(8, jitter_packets=2), arriving)
    assert audio[2 * FRAME:3 * FRAME] == b"\xd5" * FRAME and len(audio) == 6 * FRAME


def test_sequence_and_timestamp_wrap_around_without_a_seam():
    frames = call_audio(40)
    arriving = packets(frames, first_sequence=2 ** 16 - 20, first_timestamp=2 ** 32 - 10 * FRAME)
    arriving[18], arriving[21] = arriving[21], arriving[18]  # reordered across the sequence wrap
    receiver = StreamReceiver(0, jitter_packets=5)
    assert receive(receiver, arriving) == b"".join(frames)
    assert receiver.stats.lost_samples == 0 and receiver.stats.late == 0


def test_a_new_ssrc_after_a_transfer_continues_the_audio():
    before, after = call_audio(20, seed=1), call_audio(20, seed=2)
    arriving = packets(before) + packets(after, first_sequence=7, first_timestamp=999, ssrc=0x9999)
    receiver = StreamReceiver(0)
    assert receive(receiver, arriving) == b"".join(before + after)
    assert receiver.stats.ssrc_changes == 1 and receiver.stats.lost_samples == 0


def test_dtmf_events_are_counted_not_recorded():
    frames = call_audio(10)
    arriving = packets(frames)
    arriving.insert(5, parse_rtp(rtp_bytes(1005, 50000 + 5 * FRAME, b"\x01\x0a\x00\xa0", payload_type=101)))
    receiver = StreamReceiver(0)
    assert receive(receiver, arriving) == b"".join(frames)
    assert receiver.stats.other_payload == 1


def test_a_timestamp_leap_beyond_the_fill_limit_is_a_discontinuity_not_minutes_of_silence():
    frames = call_audio(10)
    arriving = packets(frames[:5]) + packets(frames[5:], first_sequence=1005, first_timestamp=50000 + 8000 * 600)
    receiver = StreamReceiver(0, max_fill_s=5.0)
    assert receive(receiver, arriving) == b"".join(frames)
    assert receiver.stats.discontinuities == 1 and receiver.stats.lost_samples == 0


def test_only_g711_can_be_received():
    with pytest.raises(ValueError, match="not G.711"):
        StreamReceiver(18)


def test_interarrival_jitter_follows_rfc_3550():
    steady, wobbly = InterarrivalJitter(), InterarrivalJitter()
    for index in range(500):
        timestamp = (2 ** 32 - 1600 + 160 * index) % 2 ** 32  # wraps around on the way
        steady.update(timestamp, 0.02 * index)
        wobbly.update(timestamp, 0.02 * index + (0.005 if index % 2 else 0.0))  # every packet 5 ms early or late
    assert steady.seconds == pytest.approx(0.0, abs=1e-9)
    assert wobbly.seconds == pytest.approx(0.005, rel=0.01)


async def test_calls_that_open_rtp_ports_at_once_each_get_their_own():
    """A burst of INVITEs opens ports concurrently: none may take a port another has chosen (or fail for it)."""
    ports = RtpPorts("127.0.0.1", 43100, 43179)  # 40 even ports; a few may be held by other programs
    opened = await asyncio.gather(*(ports.open(2, lambda _: asyncio.DatagramProtocol()) for _ in range(12)))
    numbers = [port for call in opened for _, port in call]
    try:
        assert len(set(numbers)) == 24 and all(second == first + 2 for (_, first), (_, second) in opened)
    finally:
        for transport, port in [pair for call in opened for pair in call]:
            transport.close()
            ports.release(port)

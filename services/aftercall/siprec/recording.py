"""One recorded call on its way into ingest: its channels (agent and customer, or one mixed), each fed by an RTP
stream, kept aligned by the call's wall clock, and sent as per-channel AudioChunks on a `CallIngest.StreamCall` of
its own, the same durable path (and summary, and metrics) as a PBX connector's call."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
from dataclasses import dataclass, field, replace

import grpc

from aftercall.core.errors import AftercallError, CapacityError
from aftercall.core.rpc import RemoteError
from aftercall.siprec.metrics import SiprecMetrics
from aftercall.siprec.rtp import SAMPLE_RATE, SILENCE, InterarrivalJitter, RtpPacket, StreamReceiver, StreamStats
from aftercall.v1 import ingest_pb2 as pb
from aftercall.v1 import ingest_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

# A channel that has received nothing for this long (hold, a muted or lost stream, the second Cisco leg not yet
# there) is filled with silence by the wall clock while it stays quiet, so that the two sides stay aligned; well
# above network jitter, so that a late packet is never overtaken by silence.
FILL_AFTER_S = 2.0
# Where the fill stops short of the wall clock: what the jitter window may still hold.
FILL_MARGIN_S = 0.2
# Largest chunk sent to ingest (its ingest.max_chunk_ms is at least 20 ms; 160 ms stays under any sane setting).
MAX_CHUNK_BYTES = 1280


class IngestFeed:
    """One call's StreamCall, driven from a thread of its own: the sync client reports the server's status when a
    stream ends early (see `aftercall.core.rpc.client_channel`), and a slow ingest never blocks the SIP loop."""

    def __init__(self, channel: grpc.Channel, start: pb.CallStart):
        self.call_id = start.call_id
        self.accepted: concurrent.futures.Future = concurrent.futures.Future()
        # Set once ingest has every byte on disk (its `received` event): from then on the call cannot be lost.
        self.durable: concurrent.futures.Future = concurrent.futures.Future()
        # The stored summary (a SummaryRecord), or the error.
        self.finished: concurrent.futures.Future = concurrent.futures.Future()
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._sequence = 0
        threading.Thread(target=self._run, args=(channel, start), name=f"ingest {start.call_id}",
                         daemon=True).start()

    def send(self, channel: int, audio: bytes) -> None:
        self._outbox.put(pb.CallAudio(chunk=pb.AudioChunk(sequence=self._sequence, audio=audio, channel=channel)))
        self._sequence += 1

    def end(self, reason: str) -> None:
        self._outbox.put(pb.CallAudio(end=pb.CallEnd(reason=reason)))

    def abandon(self) -> None:
        """Close the stream without CallEnd: ingest summarises what arrived as incomplete (drops a call with none)."""
        self._outbox.put(None)

    def _messages(self, start: pb.CallStart):
        yield pb.CallAudio(start=start)
        while (message := self._outbox.get()) is not None:
            yield message
            if message.HasField("end"):
                return

    def _run(self, channel: grpc.Channel, start: pb.CallStart) -> None:
        summary = None
        try:
            for event in pb_grpc.CallIngestStub(channel).StreamCall(self._messages(start)):
                kind = event.WhichOneof("event")
                if kind == "accepted" and not self.accepted.done():
                    self.accepted.set_result(True)
                elif kind == "received":
                    self.durable.set_result(True)
                elif kind == "summary":
                    summary = event.summary
        except grpc.RpcError as exc:
            error: AftercallError = RemoteError(exc)
        else:
            error = AftercallError("ingest closed the stream without a summary")
        finally:
            self._outbox.put(None)  # a request thread still waiting for audio gives up
        if not self.accepted.done():
            self.accepted.set_exception(error)
        if summary is None:
            self.finished.set_exception(error)
        else:
            self.finished.set_result(summary)


@dataclass
class ChannelTrack:
    """One channel of the recording and the RTP stream that feeds it."""

    receiver: StreamReceiver
    jitter: InterarrivalJitter = field(default_factory=InterarrivalJitter)
    pending: bytearray = field(default_factory=bytearray)
    sent_samples: int = 0
    last_packet: float | None = None
    on_hold: bool = False  # the SDP says inactive: no RTP is expected
    published: StreamStats = field(default_factory=StreamStats)  # what the metrics already count


class Recording:
    """A call being recorded: one SIPREC dialog, or the two Cisco Built-in-Bridge legs of one call."""

    def __init__(self, call_id: str, channels: int, payload_type: int, call_class: str, metrics: SiprecMetrics,
                 feed: IngestFeed):
        self.call_id = call_id
        self.payload_type = payload_type
        self.call_class = call_class
        self.tracks = [ChannelTrack(StreamReceiver(payload_type)) for _ in range(channels)]
        self.started = time.monotonic()
        self.last_activity = self._last_tick = self.started
        self.feed = feed
        self.legs_open = 1  # dialogs feeding it: a Cisco call's second leg adds one
        self.ended = False
        self._metrics = metrics

    def deliver(self, channel: int, packet: RtpPacket, arrival: float) -> None:
        track = self.tracks[channel]
        track.last_packet = self.last_activity = arrival
        if packet.payload_type == self.payload_type:
            track.jitter.update(packet.timestamp, arrival)
        track.pending += track.receiver.push(packet)

    def set_hold(self, channel: int, on_hold: bool) -> None:
        self.tracks[channel].on_hold = on_hold
        self.last_activity = time.monotonic()  # the RTP timeout counts from the change

    def idle_for(self, now: float) -> float | None:
        """Seconds without RTP, or None while every channel is on hold (silence is expected then)."""
        if all(track.on_hold for track in self.tracks):
            return None
        return now - self.last_activity

    def tick(self, now: float) -> None:
        """Fill what fell behind the wall clock, send what is ready, publish the streams' counts."""
        due = int((now - self.started) * SAMPLE_RATE)
        # After a stall of the event loop itself, datagrams that arrived meanwhile are still queued: not a silence.
        loop_stalled, self._last_tick = now - self._last_tick > FILL_AFTER_S / 2, now
        for track in self.tracks:
            if not loop_stalled and now - (track.last_packet or self.started) > FILL_AFTER_S:
                track.pending += track.receiver.resync()
                missing = due - int(FILL_MARGIN_S * SAMPLE_RATE) - track.sent_samples - len(track.pending)
                track.pending += SILENCE[self.payload_type] * max(0, missing)
        self._send()
        self._publish()

    @property
    def received_audio(self) -> bool:
        return any(track.sent_samples for track in self.tracks)

    def finish(self, reason: str) -> None:
        """The last leg has ended: what the jitter windows hold, then CallEnd."""
        if self.ended:
            return
        self.ended = True
        for track in self.tracks:
            track.pending += track.receiver.flush()
        self._send()
        self._publish()
        for track in self.tracks:
            self._metrics.siprec_rtp_jitter.labels(call_class=self.call_class).observe(track.jitter.seconds)
        self.feed.end(reason)

    def _send(self) -> None:
        for channel, track in enumerate(self.tracks):
            while track.pending:
                chunk = bytes(track.pending[:MAX_CHUNK_BYTES])
                del track.pending[:MAX_CHUNK_BYTES]
                track.sent_samples += len(chunk)
                self.feed.send(channel, chunk)

    def _publish(self) -> None:
        packets = self._metrics.siprec_rtp_packets
        for track in self.tracks:
            now, before = track.receiver.stats, track.published
            for result, name in (("recorded", "packets"), ("duplicate", "duplicates"), ("late", "late"),
                                 ("other_payload", "other_payload")):
                packets.labels(call_class=self.call_class, result=result).inc(getattr(now, name) - getattr(before, name))
            self._metrics.siprec_rtp_lost.labels(call_class=self.call_class).inc(
                (now.lost_samples - before.lost_samples) / SAMPLE_RATE)
            track.published = replace(now)


class RtpPorts:
    """The configured RTP port range: a call's streams get consecutive even ports P, P+2, ... (what recorders and
    pcap replays expect); a port another program holds is skipped."""

    def __init__(self, host: str, low: int, high: int):
        self._host = host
        self._low = low + low % 2
        self._high = high
        self._next = self._low
        self._used: set[int] = set()

    async def open(self, count: int, protocol_factory) -> list[tuple[asyncio.DatagramTransport, int]]:
        """`count` UDP endpoints, each with its port; CapacityError when the range has no room."""
        loop = asyncio.get_running_loop()
        span = self._high - self._low + 1
        for _ in range(span // 2):
            first = self._next
            self._next = first + 2 if first + 2 <= self._high else self._low
            ports = [first + 2 * i for i in range(count)]
            if ports[-1] > self._high or self._used.intersection(ports):
                continue
            # Reserved before the first await: INVITEs that arrive together open ports at once, and one must not
            # bind the port another has chosen (each would fail on the other's and move on, to no port at all).
            self._used.update(ports)
            opened = []
            try:
                for index, port in enumerate(ports):
                    transport, _ = await loop.create_datagram_endpoint(
                        lambda index=index: protocol_factory(index), local_addr=(self._host, port))
                    opened.append((transport, port))
            except BaseException as exc:  # a port another program holds, or the INVITE's task cancelled
                for transport, _ in opened:
                    transport.close()
                self._used.difference_update(ports)
                if isinstance(exc, OSError):
                    continue
                raise
            return opened
        raise CapacityError(f"no {count} free RTP port(s) in siprec.rtp_port_min..rtp_port_max")

    def release(self, port: int) -> None:
        self._used.discard(port)

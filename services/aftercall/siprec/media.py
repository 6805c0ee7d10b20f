"""RTP for the recording server: each recorded stream gets a UDP port of its own from siprec.rtp_port_min..max on the
media address, what arrives there goes (parsed) to the stream's recording channel, and our SDP answer names those
ports."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Callable

from aftercall.core.config import parse_address
from aftercall.core.errors import ConfigError
from aftercall.siprec.config import SiprecConfig
from aftercall.siprec.errors import RtpPacketError
from aftercall.siprec.metrics import SiprecMetrics
from aftercall.siprec.recording import RtpPorts
from aftercall.siprec.rtp import parse_rtp
from aftercall.siprec.sdp import AcceptedStream, answer

if TYPE_CHECKING:
    from aftercall.siprec.sessions import Dialog

Endpoint = tuple[asyncio.DatagramTransport, int]  # an open RTP port: (its transport, the port)


class _RtpEndpoint(asyncio.DatagramProtocol):
    """One recorded stream's RTP port; the dialog is attached once the INVITE is answered."""

    def __init__(self, media: Media):
        self.media = media
        self.dialog: Dialog | None = None
        self.channel = 0

    def datagram_received(self, data: bytes, addr) -> None:
        if self.dialog is not None and not self.dialog.ended:
            self.media.received(self.dialog, self.channel, data, addr[0])


class Media:
    """The RTP ports of every recording; `allowed` says whether an address is one of siprec.allowed_sources."""

    def __init__(self, config: SiprecConfig, metrics: SiprecMetrics, allowed: Callable[[str], bool]):
        self._metrics = metrics
        self.host = config.media_address or (parse_address(config.listen or config.tls_listen, "")[0])
        if ipaddress.ip_address(self.host).is_unspecified:
            raise ConfigError("config siprec.media_address: the SIP listener is on a wildcard address, so name the "
                              "address SBCs should send RTP to")
        self._ports = RtpPorts(self.host, config.rtp_port_min, config.rtp_port_max)
        self._allowed = allowed

    async def open(self, count: int) -> list[Endpoint]:
        """`count` RTP ports for a new dialog's streams; CapacityError when the range has no room."""
        return await self._ports.open(count, lambda _: _RtpEndpoint(self))

    def close(self, endpoints: Iterable[Endpoint]) -> None:
        for transport, port in endpoints:
            transport.close()
            self._ports.release(port)

    @staticmethod
    def attach(dialog: Dialog) -> None:
        """From now on, what arrives on the dialog's ports goes to its recording."""
        for index, (transport, _) in dialog.endpoints.items():
            endpoint = transport.get_protocol()
            endpoint.dialog, endpoint.channel = dialog, dialog.channels[index]

    def received(self, dialog: Dialog, channel: int, data: bytes, source: str) -> None:
        recording = dialog.recording
        packets = self._metrics.siprec_rtp_packets
        # Replayed or relayed RTP may come from other ports than the SDP says; the address must still be one we know.
        if not self._allowed(source) and source not in {s.address for s in dialog.offer.streams}:
            packets.labels(call_class=recording.call_class, result="unexpected_source").inc()
            return
        try:
            packet = parse_rtp(data)
        except RtpPacketError:
            packets.labels(call_class=recording.call_class, result="malformed").inc()
            return
        recording.deliver(channel, packet, time.monotonic())

    def answer(self, dialog: Dialog) -> bytes:
        """The SDP answer to the dialog's current offer: recvonly on the ports it has."""
        accepted = [AcceptedStream(index, dialog.offer.streams[index].label, port, dialog.payload_type)
                    for index, (_, port) in dialog.endpoints.items() if index < len(dialog.offer.streams)]
        return answer(dialog.offer, self.host, accepted, dialog.session_id, dialog.sdp_version)

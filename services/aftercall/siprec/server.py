"""`aftercall serve siprec`: a SIPREC recording server (RFC 7866) over UDP, TCP and TLS.

An SBC or PBX forks each call to us: an INVITE with `Require: siprec` whose multipart body holds the SDP offer (one
`sendonly` stream per side, labelled) and the recording metadata (who sends which stream). We answer `recvonly` on
RTP ports from our range, map the streams to agent and customer, and feed the call into ingest as a StreamCall of
its own, opened before we answer so that a call ingest cannot take is refused (503) rather than lost. Cisco UCM
Built-in-Bridge legs (one plain INVITE per direction, paired by `x-refci`) become one call; a plain INVITE (a PBX
dialling the recorder) is recorded as one mixed stream. A recording ends with BYE, with our own BYE when RTP stops
(siprec.rtp_timeout_s) or ingest fails, or at shutdown; what arrived is summarised in every case."""

from __future__ import annotations

import asyncio
from collections import deque

import grpc

from aftercall.core.rpc import client_channel
from aftercall.siprec.config import SiprecConfig
from aftercall.siprec.media import Media
from aftercall.siprec.metrics import SiprecMetrics
from aftercall.siprec.sessions import Sessions
from aftercall.siprec.signalling import Signalling
from aftercall.siprec.transport import SipTransport
from aftercall.v1 import ingest_pb2 as pb


class SiprecServer:
    """The SIP transport (siprec/transport.py), the RTP ports (media.py), the recording sessions (sessions.py) and
    what each request does to them (signalling.py), put together."""

    def __init__(self, config: SiprecConfig, ingest: grpc.Channel, metrics: SiprecMetrics):
        self.metrics = metrics
        self._sip = SipTransport(config, metrics)
        self._media = Media(config, metrics, self._sip.allowed)
        self._sessions = Sessions(config, metrics, ingest, self._sip, self._media)
        self._signalling = Signalling(config, self._sip, self._media, self._sessions)

    @property
    def sip_port(self) -> int | None:
        """The UDP and TCP port (siprec.listen may ask for any), once started; None without siprec.listen."""
        return self._sip.sip_port

    @property
    def tls_port(self) -> int | None:
        return self._sip.tls_port

    @property
    def completed(self) -> deque[tuple[str, pb.SummaryRecord | Exception]]:
        """The latest calls ingest answered for: (call id, the stored SummaryRecord or the error), oldest first."""
        return self._sessions.completed

    async def start(self) -> None:
        await self._sip.start(self._signalling.receive)
        self._sessions.spawn(self._sessions.ticker())

    async def stop(self, grace: float) -> None:
        """No new recordings; the ones in progress end with our BYE, and within `grace` seconds ingest has their
        audio on disk (it summarises them, now or after its own restart)."""
        await self._sessions.drain(grace)
        self._sip.close()
        await asyncio.sleep(0)


async def start_siprec(config: SiprecConfig, metrics: SiprecMetrics, ingest_address: str) -> SiprecServer:
    """The recording server, feeding the ingest service at `ingest_address`."""
    channel = client_channel(ingest_address, config.ingest_ca_file, config.ingest_cert_file, config.ingest_key_file,
                             config.ingest_user)
    server = SiprecServer(config, channel, metrics)
    await server.start()
    return server

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
import ipaddress
import logging
import re
import secrets
import ssl
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable

import grpc

from aftercall.core.config import SiprecConfig, parse_address
from aftercall.core.errors import CapacityError, ConfigError, RtpPacketError, SipMessageError
from aftercall.core.logsetup import logging_call
from aftercall.core.metrics import Metrics
from aftercall.core.rpc import RemoteError, client_channel, read_secret_file
from aftercall.ingest.wire import ROLE_CODES
from aftercall.siprec.metadata import RecordingMetadata, cisco_leg, parse_metadata
from aftercall.siprec.recording import IngestFeed, Recording, RtpPorts
from aftercall.siprec.roles import agent_stream, parse_trunks, trunk_for
from aftercall.siprec.rtp import parse_rtp
from aftercall.siprec.sdp import AcceptedStream, SessionDescription, answer, choose_streams, parse_sdp
from aftercall.siprec.sip import (
    BodyPart, SipMessage, StreamFramer, body_parts, header_params, parse, response)
from aftercall.v1 import ingest_pb2 as pb

logger = logging.getLogger(__name__)

# RFC 3261 timers: retransmit from T1 doubling to T2; a transaction gives up after 64*T1.
T1, T2 = 0.5, 4.0
TRANSACTION_TIMEOUT_S = 64 * T1
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO"
METADATA_TYPES = ("application/rs-metadata+xml", "application/rs-metadata", "application/xml")
# Label values of the requests metric; anything else counts as "other" (the label stays bounded).
_METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "UPDATE", "INFO", "PRACK", "REGISTER", "SUBSCRIBE",
            "NOTIFY", "MESSAGE", "REFER", "PUBLISH")
TICK_S = 0.1
# How long ingest may take to accept a call before the INVITE is refused.
ACCEPT_TIMEOUT_S = 10.0
_UNSAFE_ID = re.compile(r"[^A-Za-z0-9._:-]+")
COMPLETED_KEPT = 100


@dataclass
class Peer:
    """Where a message came from and how to answer it: a UDP address, or the TCP/TLS connection it came on."""

    transport: str  # "udp", "tcp" or "tls"
    address: tuple[str, int]
    local: tuple[str, int]
    write: Callable[[bytes], None]

    def send(self, message: SipMessage) -> None:
        self.write(message.to_bytes())

    @property
    def contact(self) -> str:
        host, port = self.local
        host = f"[{host}]" if ":" in host else host
        return f"<sip:srs@{host}:{port};transport={self.transport}>;+sip.srs"


@dataclass
class Dialog:
    """One recording session's SIP dialog and the RTP endpoints of its streams."""

    sip_call_id: str
    remote_tag: str
    local_tag: str
    peer: Peer
    remote_uri: str  # their From: our requests' To
    local_uri: str  # their To with our tag: our requests' From
    remote_target: str  # their Contact URI: our requests' Request-URI
    route_set: list[str]
    recording: Recording
    channels: dict[int, int]  # m-line index -> recording channel
    endpoints: dict[int, tuple[asyncio.DatagramTransport, int]]  # m-line index -> (transport, local port)
    payload_type: int
    offer: SessionDescription
    metadata: RecordingMetadata | None
    session_id: int
    sdp_version: int = 1
    local_cseq: int = 0
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    ended: bool = False


@dataclass
class _PendingInvite:
    cancelled: bool = False


class _RtpEndpoint(asyncio.DatagramProtocol):
    """One recorded stream's RTP port; the dialog is attached once the INVITE is answered."""

    def __init__(self, server: SiprecServer):
        self.server = server
        self.dialog: Dialog | None = None
        self.channel = 0

    def datagram_received(self, data: bytes, addr) -> None:
        if self.dialog is not None and not self.dialog.ended:
            self.server.rtp_received(self.dialog, self.channel, data, addr[0])


class _SipDatagram(asyncio.DatagramProtocol):
    def __init__(self, server: SiprecServer, local: tuple[str, int]):
        self.server, self.local = server, local
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        if not self.server.allowed(addr[0]):
            logger.info("SIP datagram from %s dropped: not in siprec.allowed_sources", addr[0])
            return
        peer = Peer("udp", addr[:2], self.local, lambda payload, addr=addr: self.transport.sendto(payload, addr))
        try:
            message = parse(data, datagram=True, keep_faults=True)
        except SipMessageError as exc:
            self.server.metrics.siprec_requests.labels(method="malformed").inc()
            _log_fault(f"malformed SIP datagram from {addr[0]} dropped", exc)
            return
        self.server.dispatch(message, peer)


class SiprecServer:
    def __init__(self, config: SiprecConfig, ingest: grpc.Channel, metrics: Metrics):
        self.config = config
        self.metrics = metrics
        self._ingest = ingest
        self._allowed = [ipaddress.ip_network(s, strict=False) for s in config.allowed_sources]
        self._trunks = parse_trunks(config.trunks)
        self._media_host = config.media_address or (parse_address(config.listen or config.tls_listen, "")[0])
        if ipaddress.ip_address(self._media_host).is_unspecified:
            raise ConfigError("config siprec.media_address: the SIP listener is on a wildcard address, so name the "
                              "address SBCs should send RTP to")
        self._ports = RtpPorts(self._media_host, config.rtp_port_min, config.rtp_port_max)
        self._dialogs: dict[tuple[str, str], Dialog] = {}
        self._cisco: dict[tuple[str, str], Recording] = {}  # (SBC address, x-refci) -> the call both legs feed
        self._recordings: list[Recording] = []
        self._pending: dict[str, _PendingInvite] = {}  # INVITE branch -> not yet answered
        self._answered: OrderedDict[tuple[str, str], tuple[bytes, float]] = OrderedDict()
        self._our_requests: dict[str, asyncio.Event] = {}  # branch of a BYE we sent -> its response came
        self._tasks: set[asyncio.Task] = set()
        self._closers: list[Callable[[], None]] = []
        self._connections: set[asyncio.StreamWriter] = set()
        self._stopping = False
        # The latest calls ingest answered for: (call id, the stored SummaryRecord or the error), oldest first;
        # bounded, so a long-running server holds no more than these.
        self.completed: deque[tuple[str, pb.SummaryRecord | Exception]] = deque(maxlen=COMPLETED_KEPT)
        self.sip_port: int | None = None
        self.tls_port: int | None = None

    # --- listeners -------------------------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            if self.config.listen:
                host, port = parse_address(self.config.listen, "config siprec.listen")
                udp, protocol = await loop.create_datagram_endpoint(lambda: _SipDatagram(self, (host, port)),
                                                                    local_addr=(host, port))
                self._closers.append(udp.close)
                self.sip_port = udp.get_extra_info("sockname")[1]
                protocol.local = (host, self.sip_port)  # port 0 asked for any: our Contact names the one we got
                tcp = await asyncio.start_server(lambda r, w: self._connection(r, w, "tcp"), host, self.sip_port)
                self._closers.append(tcp.close)
            if self.config.tls_listen:
                host, port = parse_address(self.config.tls_listen, "config siprec.tls_listen")
                tls = await asyncio.start_server(lambda r, w: self._connection(r, w, "tls"), host, port,
                                                 ssl=self._tls_context())
                self._closers.append(tls.close)
                self.tls_port = tls.sockets[0].getsockname()[1]
        except OSError as exc:
            self._close_listeners()
            raise ConfigError(f"config siprec.listen: cannot bind ({exc.strerror})") from exc
        self._spawn(self._ticker())

    def _tls_context(self) -> ssl.SSLContext:
        read_secret_file(self.config.tls_key_file, "siprec.tls_key_file")  # refuses a key others can read
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.config.tls_cert_file, self.config.tls_key_file)
            if self.config.tls_client_ca_file:
                context.verify_mode = ssl.CERT_REQUIRED
                context.load_verify_locations(self.config.tls_client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"config siprec.tls_cert_file / tls_key_file / tls_client_ca_file: cannot load "
                              f"({exc})") from exc
        return context

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, transport: str) -> None:
        address = writer.get_extra_info("peername")[:2]
        local = writer.get_extra_info("sockname")[:2]
        peer = Peer(transport, address, local, lambda data: None if writer.is_closing() else writer.write(data))
        framer = StreamFramer(keep_faults=True)
        self._connections.add(writer)
        try:
            while data := await reader.read(65536):
                for message in framer.feed(data):
                    if not self.allowed(address[0]):
                        # A stream peer gets told why before we hang up (a datagram is just dropped).
                        logger.info("SIP connection from %s refused: not in siprec.allowed_sources", address[0])
                        if message.is_request and message.method != "ACK":
                            self._respond(message, peer, 403, warning="not an allowed SIPREC source")
                        return
                    self.dispatch(message, peer)
        except SipMessageError as exc:
            self.metrics.siprec_requests.labels(method="malformed").inc()
            _log_fault(f"SIP {transport} connection from {address[0]} closed", exc)
        except (ConnectionError, ssl.SSLError) as exc:
            logger.info("SIP %s connection from %s lost: %s", transport, address[0], exc)
        finally:
            self._connections.discard(writer)
            writer.close()

    def allowed(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self._allowed)

    # --- requests and responses ------------------------------------------------------------------------------

    def dispatch(self, message: SipMessage, peer: Peer) -> None:
        if message.fault is not None:  # e.g. a CSeq over 2**31 - 1: it has all a response needs, so it gets one
            self.metrics.siprec_requests.labels(method="malformed").inc()
            fault = message.fault
            if message.is_request and message.method != "ACK":
                _log_fault(f"{message.method} from {peer.address[0]} refused with {fault.status}", fault)
                self._respond(message, peer, fault.status, warning=str(fault))
            else:
                _log_fault(f"faulty SIP {message.method or 'response'} from {peer.address[0]} dropped", fault)
            return
        if not message.is_request:
            branch = _branch(message)
            if (done := self._our_requests.get(branch)) is not None and message.status >= 200:
                done.set()
            return
        method = message.method
        self.metrics.siprec_requests.labels(method=method if method in _METHODS else "other").inc()
        key = (_branch(message), method)
        if key in self._answered and method != "ACK":  # a retransmission: the same answer again
            peer.write(self._answered[key][0])
            return
        if method == "INVITE" and key[0] in self._pending:
            self._respond(message, peer, 100)
            return
        handler = {"INVITE": self._invite, "ACK": self._ack, "BYE": self._bye, "CANCEL": self._cancel,
                   "OPTIONS": self._options, "UPDATE": self._update, "INFO": self._info}.get(method)
        if handler is None:
            self._respond(message, peer, 405, headers=[("Allow", ALLOW)])
            return
        self._spawn(self._handle(handler, message, peer))

    async def _handle(self, handler, message: SipMessage, peer: Peer) -> None:
        try:
            await handler(message, peer)
        except SipMessageError as exc:
            _log_fault(f"{message.method} from {peer.address[0]} refused with {exc.status}", exc)
            if message.method != "ACK":
                retry = [("Retry-After", "30")] if exc.status == 503 else None
                self._respond(message, peer, exc.status, headers=retry, warning=str(exc))
        except CapacityError as exc:
            logger.warning("%s from %s refused with 503: %s", message.method, peer.address[0], exc)
            self._respond(message, peer, 503, headers=[("Retry-After", "30")], warning=str(exc))
        except Exception:  # one bad request never takes the server (or another call) down
            logger.exception("%s from %s failed", message.method, peer.address[0])
            if message.method != "ACK":
                self._respond(message, peer, 500)

    def _respond(self, request: SipMessage, peer: Peer, status: int, to_tag: str | None = None,
                 headers: list[tuple[str, str]] | None = None, body: bytes = b"", warning: str | None = None) -> None:
        extra = list(headers or [])
        if warning:
            extra.append(("Warning", '399 aftercall "' + warning.replace('"', "'")[:200] + '"'))
        if body:
            extra.append(("Content-Type", "application/sdp"))
        message = response(request, status, to_tag, [("Server", "aftercall"), *extra], body)
        payload = message.to_bytes()
        # Counted before it is sent: a peer that scrapes /metrics as soon as it has the answer must see it counted.
        method = request.method if request.method in _METHODS else "other"  # the label stays bounded
        self.metrics.siprec_responses.labels(method=method, status=str(status)).inc()
        peer.write(payload)
        if status >= 200:
            now = time.monotonic()
            branch = _branch(request)
            self._answered[(branch, request.method)] = (payload, now + TRANSACTION_TIMEOUT_S)
            while self._answered and next(iter(self._answered.values()))[1] < now:
                self._answered.popitem(last=False)

    async def _options(self, request: SipMessage, peer: Peer) -> None:
        self._respond(request, peer, 200, headers=[
            ("Allow", ALLOW), ("Supported", "siprec"),
            ("Accept", "application/sdp, multipart/mixed, " + ", ".join(METADATA_TYPES))])

    async def _info(self, request: SipMessage, peer: Peer) -> None:
        self._respond(request, peer, 200 if self._dialog_of(request) else 481)

    async def _cancel(self, request: SipMessage, peer: Peer) -> None:
        pending = self._pending.get(_branch(request))
        if pending is None:
            self._respond(request, peer, 481)
            return
        pending.cancelled = True
        self._respond(request, peer, 200)

    async def _ack(self, request: SipMessage, peer: Peer) -> None:
        if (dialog := self._dialog_of(request)) is not None:
            dialog.acked.set()

    def _dialog_of(self, request: SipMessage) -> Dialog | None:
        remote_tag = header_params(request.header("From") or "").get("tag", "")
        dialog = self._dialogs.get((request.call_id, remote_tag))
        local_tag = header_params(request.header("To") or "").get("tag")
        return dialog if dialog is not None and local_tag == dialog.local_tag else None

    async def _bye(self, request: SipMessage, peer: Peer) -> None:
        dialog = self._dialog_of(request)
        if dialog is None:
            self._respond(request, peer, 481)
            return
        self._respond(request, peer, 200)
        self._end_dialog(dialog, "bye")

    async def _update(self, request: SipMessage, peer: Peer) -> None:
        dialog = self._dialog_of(request)
        if dialog is None:
            self._respond(request, peer, 481)
            return
        self._respond(request, peer, 200, headers=[("Contact", peer.contact)], body=self._renegotiate(dialog, request))

    # --- INVITE ----------------------------------------------------------------------------------------------

    async def _invite(self, request: SipMessage, peer: Peer) -> None:
        if header_params(request.header("To") or "").get("tag"):
            dialog = self._dialog_of(request)
            if dialog is None:
                self._respond(request, peer, 481)
                return
            body = self._renegotiate(dialog, request)
            dialog.acked.clear()
            self._answer(dialog, request, peer, body)
            return
        # INVITEs still being answered count: they wait on ingest before their recording exists, and a burst of
        # them would otherwise all pass this check together.
        if self._stopping or len(self._recordings) + len(self._pending) >= self.config.max_sessions:
            self._respond(request, peer, 503, headers=[("Retry-After", "30")],
                          warning="shutting down" if self._stopping else "siprec.max_sessions reached")
            return
        required = request.option_tags("Require")
        if unsupported := sorted(required - {"siprec"}):
            self._respond(request, peer, 420, headers=[("Unsupported", ", ".join(unsupported))])
            return
        parts = body_parts(request)
        offer, metadata = self._offer(parts), self._metadata(parts)
        leg = cisco_leg(request.header("From") or "")
        if "siprec" not in required and leg is None and not self.config.accept_plain_calls:
            raise SipMessageError("only SIPREC recording sessions (Require: siprec) are accepted here "
                                  "(siprec.accept_plain_calls is off)", 488)
        branch = _branch(request)
        self._pending[branch] = pending = _PendingInvite()
        self._respond(request, peer, 100)
        try:
            await self._start_recording(request, peer, offer, metadata, leg, pending)
        finally:
            del self._pending[branch]

    def _offer(self, parts: list[BodyPart]) -> SessionDescription:
        sdp = [part for part in parts if part.content_type == "application/sdp"]
        for part in parts:
            if part.content_type != "application/sdp" and part.content_type not in METADATA_TYPES \
                    and "handling=required" in part.headers.get("content-disposition", "").replace(" ", ""):
                raise SipMessageError(f"a required body part of type {part.content_type} is not understood", 415)
        if not sdp:
            raise SipMessageError("the INVITE carries no SDP offer (application/sdp)", 488)
        return parse_sdp(sdp[0].body)

    @staticmethod
    def _metadata(parts: list[BodyPart]) -> RecordingMetadata | None:
        found = [part for part in parts if part.content_type in METADATA_TYPES]
        return parse_metadata(found[0].body) if found else None

    async def _start_recording(self, request: SipMessage, peer: Peer, offer: SessionDescription,
                               metadata: RecordingMetadata | None, leg, pending: _PendingInvite) -> None:
        chosen = choose_streams(offer, self.config.codecs)
        if not chosen:
            raise SipMessageError("no audio stream offers PCMU or PCMA at 8 kHz over RTP/AVP "
                                  f"(accepted: {', '.join(self.config.codecs)})", 488)
        rule = trunk_for(self._trunks, peer.address[0])
        call_class = rule.name if rule is not None else "default"
        local_tag = secrets.token_hex(6)
        recording, feed_is_new = None, True
        if leg is not None:  # Cisco Built-in-Bridge: one direction per INVITE; the near end is the agent
            index, payload_type = chosen[0]
            channels = {index: 0 if leg.near_end else 1}
            recording = self._cisco.get((peer.address[0], leg.refci))
            if recording is not None:
                if recording.ended:
                    raise SipMessageError(f"the recording of Cisco call {leg.refci} has already ended", 481)
                if recording.payload_type != payload_type:
                    raise SipMessageError("the other leg of this call is recorded with another codec", 488)
                feed_is_new = False
            roles, call_id = ("agent", "customer"), f"cisco-{_safe_id(leg.refci)}"
            call_metadata = pb.CallMetadata(ani=(leg.far_end_address or "")[:_MAX_METADATA_CHARS])
        elif len(chosen) == 1:  # one mixed stream: the recogniser tells the speakers apart
            index, payload_type = chosen[0]
            channels, roles = {index: 0}, ("agent",)
            call_id = f"sip-{_safe_id(request.call_id)}-{local_tag[:6]}"
            call_metadata = pb.CallMetadata()
        else:
            labels = [offer.streams[index].label for index, _ in chosen]
            agent = agent_stream(labels, metadata, rule)
            customer = next(i for i in range(len(chosen)) if i != agent)
            payload_type = chosen[agent][1]
            if chosen[customer][1] != payload_type:
                raise SipMessageError("the two recorded streams must use the same G.711 law", 488)
            channels, roles = {chosen[agent][0]: 0, chosen[customer][0]: 1}, ("agent", "customer")
            call_id = f"siprec-{_safe_id(request.call_id)}-{local_tag[:6]}"
            call_metadata = _call_metadata(metadata, labels[agent], labels[customer])
        endpoints = await self._ports.open(len(channels), lambda _: _RtpEndpoint(self))
        ports = dict(zip(sorted(channels), endpoints))
        try:
            if recording is None:
                recording = await self._open_recording(call_id, roles, payload_type, call_class, call_metadata)
                if leg is not None:
                    self._cisco[(peer.address[0], leg.refci)] = recording
            if pending.cancelled:
                raise SipMessageError("cancelled", 487)
        except BaseException:
            for transport, port in endpoints:
                transport.close()
                self._ports.release(port)
            if recording is not None and feed_is_new:
                self._discard(recording)
            raise
        if not feed_is_new:  # the second leg of a Cisco call
            recording.legs_open += 1
        dialog = Dialog(
            request.call_id, header_params(request.header("From") or "").get("tag", ""), local_tag, peer,
            request.header("From") or "", f"{request.header('To')};tag={local_tag}",
            _contact_uri(request.header("Contact")) or request.uri or "", request.header_values("Record-Route"),
            recording, channels, ports, payload_type, offer, metadata, secrets.randbelow(2 ** 31))
        for index, (transport, _) in ports.items():
            endpoint = transport.get_protocol()
            endpoint.dialog, endpoint.channel = dialog, channels[index]
            self._apply_direction(dialog, index, offer.streams[index].direction)
        self._dialogs[(dialog.sip_call_id, dialog.remote_tag)] = dialog
        with logging_call(recording.call_id):
            logger.info("recording from %s (%s, %s): %d stream(s)", peer.address[0], call_class, peer.transport,
                        len(channels))
        self._answer(dialog, request, peer, self._answer_sdp(dialog))

    async def _open_recording(self, call_id: str, roles: tuple[str, ...], payload_type: int, call_class: str,
                              call_metadata: pb.CallMetadata) -> Recording:
        """Open the call in ingest first: an INVITE that ingest cannot take is refused, never silently lost."""
        start = pb.CallStart(call_id=call_id, encoding=pb.AUDIO_ENCODING_MULAW if payload_type == 0
                             else pb.AUDIO_ENCODING_ALAW, sample_rate_hz=8000,
                             channel_roles=[ROLE_CODES[role] for role in roles], metadata=call_metadata)
        feed = IngestFeed(self._ingest, start)
        try:
            await asyncio.wait_for(asyncio.wrap_future(feed.accepted), ACCEPT_TIMEOUT_S)
        except (RemoteError, asyncio.TimeoutError) as exc:
            feed.abandon()
            code = getattr(exc, "code", None)
            with logging_call(call_id):
                logger.error("ingest did not take the call: %s", exc or "no answer in time")
            raise SipMessageError(f"ingest cannot take the call now ({code.name if code else 'timeout'})",
                                  503 if code in (None, grpc.StatusCode.UNAVAILABLE,
                                                  grpc.StatusCode.RESOURCE_EXHAUSTED) else 500) from None
        recording = Recording(call_id, len(roles), payload_type, call_class, self.metrics, feed)
        self._recordings.append(recording)
        self.metrics.siprec_recordings_active.set(len(self._recordings))
        return recording

    def _answer(self, dialog: Dialog, request: SipMessage, peer: Peer, body: bytes) -> None:
        headers = [("Contact", peer.contact), ("Allow", ALLOW), ("Supported", "siprec")]
        if "siprec" in request.option_tags("Require"):
            headers.append(("Require", "siprec"))
        self._respond(request, peer, 200, dialog.local_tag, headers, body)
        if peer.transport == "udp":  # a 2xx is ours to retransmit until the ACK (RFC 3261 13.3.1.4)
            branch = _branch(request)
            self._spawn(self._retransmit_until_ack(dialog, self._answered[(branch, "INVITE")][0]))

    async def _retransmit_until_ack(self, dialog: Dialog, payload: bytes) -> None:
        interval, deadline = T1, time.monotonic() + TRANSACTION_TIMEOUT_S
        while not dialog.ended and time.monotonic() < deadline:
            try:
                await asyncio.wait_for(dialog.acked.wait(), interval)
                return
            except asyncio.TimeoutError:
                dialog.peer.write(payload)
                interval = min(interval * 2, T2)
        if not dialog.acked.is_set() and not dialog.ended:
            with logging_call(dialog.recording.call_id):
                logger.warning("no ACK for our 200 OK in %.0f s: ending the session", TRANSACTION_TIMEOUT_S)
            self._end_dialog(dialog, "no_ack", send_bye=True)

    # --- re-INVITE / UPDATE: metadata changes and hold ------------------------------------------------------

    def _renegotiate(self, dialog: Dialog, request: SipMessage) -> bytes:
        """Apply a new offer (hold, resume, a stream moved) and metadata; the answer keeps our ports."""
        parts = body_parts(request)
        # Both read before either is applied: a refused offer (a port out of range) leaves the session as it was.
        offer = self._offer(parts) if any(part.content_type == "application/sdp" for part in parts) else None
        if (metadata := self._metadata(parts)) is not None:
            dialog.metadata = _merge(dialog.metadata, metadata)
            with logging_call(dialog.recording.call_id):
                logger.info("recording metadata updated (%d participants)", len(dialog.metadata.participants))
        if offer is None:
            return self._answer_sdp(dialog) if request.method == "INVITE" else b""
        for index, stream in enumerate(offer.streams):
            if index in dialog.channels:
                if stream.port == 0 or stream.codec(self.config.codecs) != dialog.payload_type:
                    self._apply_direction(dialog, index, "inactive")
                else:
                    self._apply_direction(dialog, index, stream.direction)
        dialog.offer = offer
        dialog.sdp_version += 1
        return self._answer_sdp(dialog)

    def _apply_direction(self, dialog: Dialog, index: int, direction: str) -> None:
        dialog.recording.set_hold(dialog.channels[index], direction in ("inactive", "recvonly"))

    def _answer_sdp(self, dialog: Dialog) -> bytes:
        accepted = [AcceptedStream(index, dialog.offer.streams[index].label, port, dialog.payload_type)
                    for index, (_, port) in dialog.endpoints.items() if index < len(dialog.offer.streams)]
        return answer(dialog.offer, self._media_host, accepted, dialog.session_id, dialog.sdp_version)

    # --- RTP and the recording's life ------------------------------------------------------------------------

    def rtp_received(self, dialog: Dialog, channel: int, data: bytes, source: str) -> None:
        recording = dialog.recording
        packets = self.metrics.siprec_rtp_packets
        # Replayed or relayed RTP may come from other ports than the SDP says; the address must still be one we know.
        if not self.allowed(source) and source not in {s.address for s in dialog.offer.streams}:
            packets.labels(call_class=recording.call_class, result="unexpected_source").inc()
            return
        try:
            packet = parse_rtp(data)
        except RtpPacketError:
            packets.labels(call_class=recording.call_class, result="malformed").inc()
            return
        recording.deliver(channel, packet, time.monotonic())

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            for recording in list(self._recordings):
                with logging_call(recording.call_id):
                    try:
                        self._tick(recording, now)
                    except Exception:  # one call's fault must not stall the others' audio
                        logger.exception("recording tick failed; ending the recording")
                        self._end_recording(recording, "error")

    def _tick(self, recording: Recording, now: float) -> None:
        if recording.ended:
            if recording.feed.finished.done():
                self._discard(recording)
            return
        if recording.feed.finished.done():  # ingest failed under a live call: tell the SBC
            logger.error("ingest ended the call early: %s", recording.feed.finished.exception())
            self._end_recording(recording, "ingest_error")
            return
        idle = recording.idle_for(now)
        if idle is not None and idle > self.config.rtp_timeout_s:
            logger.warning("no RTP for %.0f s: ending the recording (siprec.rtp_timeout_s)", idle)
            self._end_recording(recording, "rtp_timeout")
            return
        recording.tick(now)

    def _end_recording(self, recording: Recording, reason: str) -> None:
        for dialog in [d for d in self._dialogs.values() if d.recording is recording]:
            self._end_dialog(dialog, reason, send_bye=True)
        if not recording.ended:  # e.g. a Cisco call whose second leg never came
            recording.legs_open = 0
            self._finish(recording, reason)

    def _end_dialog(self, dialog: Dialog, reason: str, send_bye: bool = False) -> None:
        if dialog.ended:
            return
        dialog.ended = True
        if send_bye:
            self._spawn(self._send_bye(dialog, reason))
        del self._dialogs[(dialog.sip_call_id, dialog.remote_tag)]
        for transport, port in dialog.endpoints.values():
            transport.close()
            self._ports.release(port)
        recording = dialog.recording
        recording.legs_open -= 1
        if recording.legs_open <= 0:
            self._finish(recording, reason)

    def _finish(self, recording: Recording, reason: str) -> None:
        if recording.ended:
            return
        with logging_call(recording.call_id):
            logger.info("recording ended (%s) after %.0f s", reason, time.monotonic() - recording.started)
        recording.finish(reason)
        self.metrics.siprec_recordings.labels(call_class=recording.call_class, end=reason).inc()

    def _discard(self, recording: Recording) -> None:
        """Ingest has answered for the call (or it never started): forget it."""
        self._cisco = {key: value for key, value in self._cisco.items() if value is not recording}
        if recording in self._recordings:
            self._recordings.remove(recording)
            self.metrics.siprec_recordings_active.set(len(self._recordings))
        if not recording.feed.finished.done():
            recording.feed.abandon()
            return
        error = recording.feed.finished.exception()
        self.completed.append((recording.call_id, error or recording.feed.finished.result()))
        with logging_call(recording.call_id):
            if error is None:
                logger.info("summary stored")
            elif not recording.received_audio:
                logger.warning("the recording ended before any audio came: nothing to summarise")
            else:
                logger.error("ingest did not summarise the call: %s", error)

    async def _send_bye(self, dialog: Dialog, reason: str) -> None:
        dialog.local_cseq += 1
        branch = "z9hG4bK" + secrets.token_hex(8)
        host, port = dialog.peer.local
        headers = [("Via", f"SIP/2.0/{dialog.peer.transport.upper()} {host}:{port};branch={branch};rport")]
        headers += [("Route", route) for route in dialog.route_set]
        headers += [("Max-Forwards", "70"), ("From", dialog.local_uri), ("To", dialog.remote_uri),
                    ("Call-ID", dialog.sip_call_id), ("CSeq", f"{dialog.local_cseq} BYE"),
                    ("Reason", f'SIP;cause=200;text="{reason}"'), ("User-Agent", "aftercall")]
        payload = SipMessage(method="BYE", uri=dialog.remote_target, headers=headers).to_bytes()
        done = self._our_requests[branch] = asyncio.Event()
        interval, deadline = T1, time.monotonic() + TRANSACTION_TIMEOUT_S
        try:
            dialog.peer.write(payload)
            while dialog.peer.transport == "udp" and time.monotonic() < deadline:
                try:
                    await asyncio.wait_for(done.wait(), interval)
                    return
                except asyncio.TimeoutError:
                    dialog.peer.write(payload)
                    interval = min(interval * 2, T2)
        finally:
            del self._our_requests[branch]

    def _spawn(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- shutdown --------------------------------------------------------------------------------------------

    async def stop(self, grace: float) -> None:
        """No new recordings; the ones in progress end with our BYE, and within `grace` seconds ingest has their
        audio on disk (it summarises them, now or after its own restart)."""
        self._stopping = True
        for recording in list(self._recordings):
            self._end_recording(recording, "shutdown")
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(not (r.feed.durable.done() or r.feed.finished.done())
                                                  for r in self._recordings):
            await asyncio.sleep(TICK_S)
        await asyncio.sleep(0)  # let the BYEs go out
        for task in list(self._tasks):
            task.cancel()
        self._close_listeners()
        for writer in list(self._connections):  # their handlers see the end of the stream and return
            writer.close()
        await asyncio.sleep(0)

    def _close_listeners(self) -> None:
        for close in self._closers:
            close()
        self._closers.clear()


def _log_fault(what: str, exc: Exception) -> None:
    """What was refused at INFO; why only at DEBUG, because the reason may quote a header (a caller's number)."""
    logger.info("%s (the reason is logged at DEBUG)", what)
    logger.debug("%s: %s", what, exc)


def _branch(message: SipMessage) -> str:
    """The transaction id (RFC 3261 17.2.3): the branch of the top Via."""
    return header_params(message.header("Via") or "").get("branch", "")


def _safe_id(text: str) -> str:
    return _UNSAFE_ID.sub("-", text).strip("-.:_")[:80] or "call"


def _contact_uri(contact: str | None) -> str | None:
    if not contact:
        return None
    inside = re.search(r"<([^>]*)>", contact)
    return inside.group(1) if inside else contact.split(";", 1)[0].strip()


def _user(aor: str) -> str:
    """`sip:+441632960001@sbc.example;user=phone` -> `+441632960001`."""
    return aor.split(":", 1)[-1].split("@", 1)[0].split(";", 1)[0]


# What the SRS takes from the recording metadata is cut to this length, the least `ingest.max_metadata_chars` can be:
# an SBC's long display name must not cost the recording.
_MAX_METADATA_CHARS = 64


def _call_metadata(metadata: RecordingMetadata | None, agent_label: str | None,
                   customer_label: str | None) -> pb.CallMetadata:
    if metadata is None:
        return pb.CallMetadata()
    agent = metadata.sender_of(agent_label) if agent_label else None
    customer = metadata.sender_of(customer_label) if customer_label else None
    agent_id = (agent.name or (_user(agent.aors[0]) if agent.aors else "")) if agent else ""
    ani = _user(customer.aors[0]) if customer and customer.aors else ""
    return pb.CallMetadata(agent_id=agent_id[:_MAX_METADATA_CHARS], ani=ani[:_MAX_METADATA_CHARS])


def _merge(current: RecordingMetadata | None, update: RecordingMetadata) -> RecordingMetadata:
    """A `partial` update adds to what the session has; anything else replaces it."""
    if current is None or (update.datamode or "complete").lower() != "partial":
        return update
    return RecordingMetadata(current.datamode, {**current.participants, **update.participants},
                             {**current.stream_labels, **update.stream_labels})


async def start_siprec(config: SiprecConfig, metrics: Metrics, ingest_address: str) -> SiprecServer:
    """The recording server, feeding the ingest service at `ingest_address`."""
    channel = client_channel(ingest_address, config.ingest_ca_file, config.ingest_cert_file, config.ingest_key_file,
                             config.ingest_user)
    server = SiprecServer(config, channel, metrics)
    await server.start()
    return server


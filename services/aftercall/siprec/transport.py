"""SIP transport for the recording server: listeners on UDP, TCP and TLS (siprec.listen, siprec.tls_listen), only for
siprec.allowed_sources, and the transaction layer above them (RFC 3261 17): a retransmitted request gets the answer it
already had, a request of ours is resent over UDP until its final response, and each new request goes up to
signalling (aftercall.siprec.signalling)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from aftercall.core.config import parse_address
from aftercall.core.errors import ConfigError
from aftercall.core.rpc import read_secret_file
from aftercall.siprec.config import SiprecConfig
from aftercall.siprec.errors import SipMessageError
from aftercall.siprec.metrics import SiprecMetrics
from aftercall.siprec.sip import SipMessage, StreamFramer, header_params, parse, response

logger = logging.getLogger(__name__)

# RFC 3261 timers: retransmit from T1 doubling to T2; a transaction gives up after 64*T1.
T1, T2 = 0.5, 4.0
TRANSACTION_TIMEOUT_S = 64 * T1
# Label values of the requests metric; anything else counts as "other" (the label stays bounded).
_METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "UPDATE", "INFO", "PRACK", "REGISTER", "SUBSCRIBE",
            "NOTIFY", "MESSAGE", "REFER", "PUBLISH")


@dataclass
class Peer:
    """Where a message came from and how to answer it: a UDP address, or the TCP/TLS connection it came on."""

    transport: str  # "udp", "tcp" or "tls"
    address: tuple[str, int]
    local: tuple[str, int]
    write: Callable[[bytes], None]

    @property
    def contact(self) -> str:
        host, port = self.local
        host = f"[{host}]" if ":" in host else host
        return f"<sip:srs@{host}:{port};transport={self.transport}>;+sip.srs"


RequestHandler = Callable[[SipMessage, Peer], None]


class _SipDatagram(asyncio.DatagramProtocol):
    def __init__(self, sip: SipTransport, local: tuple[str, int]):
        self.sip, self.local = sip, local
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        if not self.sip.allowed(addr[0]):
            logger.info("SIP datagram from %s dropped: not in siprec.allowed_sources", addr[0])
            return
        peer = Peer("udp", addr[:2], self.local, lambda payload, addr=addr: self.transport.sendto(payload, addr))
        try:
            message = parse(data, datagram=True, keep_faults=True)
        except SipMessageError as exc:
            self.sip.metrics.siprec_requests.labels(method="malformed").inc()
            log_fault(f"malformed SIP datagram from {addr[0]} dropped", exc)
            return
        self.sip.dispatch(message, peer)


class SipTransport:
    """The SIP listeners and transactions; `start(on_request)` hands each new request to `on_request`."""

    def __init__(self, config: SiprecConfig, metrics: SiprecMetrics):
        self._config = config
        self.metrics = metrics
        self._allowed = [ipaddress.ip_network(s, strict=False) for s in config.allowed_sources]
        self._on_request: RequestHandler | None = None
        self._answered: OrderedDict[tuple[str, str], tuple[bytes, float]] = OrderedDict()
        self._our_requests: dict[str, asyncio.Event] = {}  # branch of a request we sent -> its response came
        self._closers: list[Callable[[], None]] = []
        self._connections: set[asyncio.StreamWriter] = set()
        self.sip_port: int | None = None
        self.tls_port: int | None = None

    # --- listeners -------------------------------------------------------------------------------------------

    async def start(self, on_request: RequestHandler) -> None:
        self._on_request = on_request
        loop = asyncio.get_running_loop()
        try:
            if self._config.listen:
                host, port = parse_address(self._config.listen, "config siprec.listen")
                udp, protocol = await loop.create_datagram_endpoint(lambda: _SipDatagram(self, (host, port)),
                                                                    local_addr=(host, port))
                self._closers.append(udp.close)
                self.sip_port = udp.get_extra_info("sockname")[1]
                protocol.local = (host, self.sip_port)  # port 0 asked for any: our Contact names the one we got
                tcp = await asyncio.start_server(lambda r, w: self._connection(r, w, "tcp"), host, self.sip_port)
                self._closers.append(tcp.close)
            if self._config.tls_listen:
                host, port = parse_address(self._config.tls_listen, "config siprec.tls_listen")
                tls = await asyncio.start_server(lambda r, w: self._connection(r, w, "tls"), host, port,
                                                 ssl=self._tls_context())
                self._closers.append(tls.close)
                self.tls_port = tls.sockets[0].getsockname()[1]
        except OSError as exc:
            self._close_listeners()
            raise ConfigError(f"config siprec.listen: cannot bind ({exc.strerror})") from exc

    def _tls_context(self) -> ssl.SSLContext:
        read_secret_file(self._config.tls_key_file, "siprec.tls_key_file")  # refuses a key others can read
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self._config.tls_cert_file, self._config.tls_key_file)
            if self._config.tls_client_ca_file:
                context.verify_mode = ssl.CERT_REQUIRED
                context.load_verify_locations(self._config.tls_client_ca_file)
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
                            self.respond(message, peer, 403, warning="not an allowed SIPREC source")
                        return
                    self.dispatch(message, peer)
        except SipMessageError as exc:
            self.metrics.siprec_requests.labels(method="malformed").inc()
            log_fault(f"SIP {transport} connection from {address[0]} closed", exc)
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

    def close(self) -> None:
        """No more messages: the listeners close, and open connections' handlers see the end of the stream."""
        self._close_listeners()
        for writer in list(self._connections):
            writer.close()

    def _close_listeners(self) -> None:
        for close in self._closers:
            close()
        self._closers.clear()

    # --- transactions ----------------------------------------------------------------------------------------

    def dispatch(self, message: SipMessage, peer: Peer) -> None:
        if message.fault is not None:  # e.g. a CSeq over 2**31 - 1: it has all a response needs, so it gets one
            self.metrics.siprec_requests.labels(method="malformed").inc()
            fault = message.fault
            if message.is_request and message.method != "ACK":
                log_fault(f"{message.method} from {peer.address[0]} refused with {fault.status}", fault)
                self.respond(message, peer, fault.status, warning=str(fault))
            else:
                log_fault(f"faulty SIP {message.method or 'response'} from {peer.address[0]} dropped", fault)
            return
        if not message.is_request:
            if (done := self._our_requests.get(branch_of(message))) is not None and message.status >= 200:
                done.set()
            return
        method = message.method
        self.metrics.siprec_requests.labels(method=method if method in _METHODS else "other").inc()
        key = (branch_of(message), method)
        if key in self._answered and method != "ACK":  # a retransmission: the same answer again
            peer.write(self._answered[key][0])
            return
        self._on_request(message, peer)

    def respond(self, request: SipMessage, peer: Peer, status: int, to_tag: str | None = None,
                headers: list[tuple[str, str]] | None = None, body: bytes = b"", warning: str | None = None) -> bytes:
        """Send a response; a final one is kept for the transaction's retransmissions. Returns what was sent."""
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
            self._answered[(branch_of(request), request.method)] = (payload, now + TRANSACTION_TIMEOUT_S)
            while self._answered and next(iter(self._answered.values()))[1] < now:
                self._answered.popitem(last=False)
        return payload

    async def request(self, peer: Peer, message: SipMessage) -> None:
        """Send a request of ours; over UDP, again until its final response comes (or the transaction times out)."""
        payload = message.to_bytes()
        branch = branch_of(message)
        done = self._our_requests[branch] = asyncio.Event()
        try:
            peer.write(payload)
            if peer.transport == "udp":
                await resend_until(done, peer.write, payload)
        finally:
            del self._our_requests[branch]


async def resend_until(done: asyncio.Event, write: Callable[[bytes], None], payload: bytes,
                       going: Callable[[], bool] = lambda: True) -> None:
    """Resend `payload` at T1, doubling to T2, while `going()`, until `done` is set or the transaction times out."""
    interval, deadline = T1, time.monotonic() + TRANSACTION_TIMEOUT_S
    while going() and time.monotonic() < deadline:
        try:
            await asyncio.wait_for(done.wait(), interval)
            return
        except asyncio.TimeoutError:
            write(payload)
            interval = min(interval * 2, T2)


def log_fault(what: str, exc: Exception) -> None:
    """What was refused at INFO; why only at DEBUG, because the reason may quote a header (a caller's number)."""
    logger.info("%s (the reason is logged at DEBUG)", what)
    logger.debug("%s: %s", what, exc)


def branch_of(message: SipMessage) -> str:
    """The transaction id (RFC 3261 17.2.3): the branch of the top Via."""
    return header_params(message.header("Via") or "").get("branch", "")

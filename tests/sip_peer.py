"""A SIPREC recording client for the tests, speaking the real protocol over real sockets: SIP over UDP, TCP or TLS
(the INVITE an SBC sends, ACK, re-INVITE, UPDATE, BYE) and RTP streams made from G.711 audio (packets from
`aftercall.evaluation.bench_siprec`, which also writes the pcap sipp replays). The recording server under test is
the real one."""

from __future__ import annotations

import secrets
import socket
import ssl
import time
from dataclasses import dataclass, field

from aftercall.siprec import sip

METADATA = """<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns="urn:ietf:params:xml:ns:recording:1">
  <datamode>complete</datamode>
  <session session_id="hVpd7YQgRW2nD22h7q60JQ=="/>
  <participant participant_id="agent-p"><nameID aor="sip:2001@pbx.example.org"><name>Agent Smith</name></nameID>
  </participant>
  <participant participant_id="caller-p"><nameID aor="sip:+441632960123@sbc.example.org"/></participant>
  <stream stream_id="s-agent" session_id="hVpd7YQgRW2nD22h7q60JQ=="><label>{agent}</label></stream>
  <stream stream_id="s-caller" session_id="hVpd7YQgRW2nD22h7q60JQ=="><label>{caller}</label></stream>
  <participantstreamassoc participant_id="agent-p"><send>s-agent</send><recv>s-caller</recv></participantstreamassoc>
  <participantstreamassoc participant_id="caller-p"><send>s-caller</send><recv>s-agent</recv></participantstreamassoc>
</recording>
"""


def sdp(ports: list[int], payload_type: int = 0, labels: list[str] | None = None, direction: str = "sendonly",
        version: int = 1, address: str = "127.0.0.1") -> str:
    name = {0: "PCMU", 8: "PCMA", 9: "G722"}[payload_type]
    family = "IP6" if ":" in address else "IP4"
    lines = ["v=0", f"o=SRC 2890844526 {version} IN {family} {address}", "s=-", f"c=IN {family} {address}", "t=0 0"]
    for index, port in enumerate(ports):
        lines += [f"m=audio {port} RTP/AVP {payload_type} 101", f"a=rtpmap:{payload_type} {name}/8000",
                  "a=rtpmap:101 telephone-event/8000", f"a={direction}"]
        if labels:
            lines.append(f"a=label:{labels[index]}")
    return "\r\n".join(lines) + "\r\n"


def multipart(offer: str, metadata: str | None) -> tuple[str, bytes]:
    if metadata is None:
        return "application/sdp", offer.encode()
    body = "\r\n".join(["--b0undary", "Content-Type: application/sdp", "", offer.rstrip("\r\n"), "--b0undary",
                        "Content-Type: application/rs-metadata+xml", "Content-Disposition: recording-session", "",
                        metadata.rstrip("\n"), "--b0undary--", ""])
    return "multipart/mixed;boundary=b0undary", body.encode()


@dataclass
class SipClient:
    """One SIP client socket (udp, tcp or tls) talking to the server at `port` on loopback (`server` "::1": IPv6)."""

    port: int
    transport: str = "udp"
    tls_context: ssl.SSLContext | None = None
    source: str = "127.0.0.1"
    server: str = "127.0.0.1"
    sock: socket.socket = field(init=False)
    # Faults kept: the answer to a request with a bad CSeq copies that CSeq.
    _stream_buffer: sip.StreamFramer = field(init=False, default_factory=lambda: sip.StreamFramer(keep_faults=True))
    _queued: list[sip.SipMessage] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        if ":" in self.server:
            self.source = self.server
        if self.transport == "udp":
            self.sock = socket.socket(socket.AF_INET6 if ":" in self.server else socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind((self.source, 0))
        else:
            raw = socket.create_connection((self.server, self.port), timeout=10, source_address=(self.source, 0))
            self.sock = self.tls_context.wrap_socket(raw, server_hostname="localhost") if self.transport == "tls" \
                else raw
        self.sock.settimeout(10)

    @property
    def local(self) -> tuple[str, int]:
        return self.sock.getsockname()[:2]

    @property
    def host(self) -> str:
        """The server's address as a SIP URI writes it."""
        return f"[{self.server}]" if ":" in self.server else self.server

    def send(self, message: sip.SipMessage | bytes) -> None:
        data = message if isinstance(message, bytes) else message.to_bytes()
        if self.transport == "udp":
            self.sock.sendto(data, (self.server, self.port))
        else:
            self.sock.sendall(data)

    def receive(self, timeout: float = 10) -> sip.SipMessage:
        deadline = time.monotonic() + timeout
        while not self._queued:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            if self.transport == "udp":
                self._queued.append(sip.parse(self.sock.recvfrom(65536)[0], keep_faults=True))
            else:
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError("the server closed the connection")
                self._queued += self._stream_buffer.feed(data)
        return self._queued.pop(0)

    def final(self, timeout: float = 15) -> sip.SipMessage:
        """The next final response (provisional ones skipped)."""
        while True:
            message = self.receive(timeout)
            if not message.is_request and message.status >= 200:
                return message

    def close(self) -> None:
        self.sock.close()


@dataclass
class Dialog:
    """The client's side of one recording session."""

    client: SipClient
    call_id: str = field(default_factory=lambda: f"{secrets.token_hex(8)}@127.0.0.1")
    from_tag: str = field(default_factory=lambda: secrets.token_hex(4))
    from_uri: str = "<sip:src@127.0.0.1>"
    to_tag: str | None = None
    cseq: int = 100

    def request(self, method: str, content_type: str | None = None, body: bytes = b"",
                headers: list[tuple[str, str]] = (), cseq: int | None = None, branch: str | None = None
                ) -> sip.SipMessage:
        if cseq is None:
            self.cseq += 1
        host, port = self.client.local
        host = f"[{host}]" if ":" in host else host
        to = f"<sip:srs@{self.client.host}>" + (f";tag={self.to_tag}" if self.to_tag else "")
        fields = [("Via", f"SIP/2.0/{self.client.transport.upper()} {host}:{port};branch="
                          f"{branch or 'z9hG4bK' + secrets.token_hex(6)};rport"),
                  ("Max-Forwards", "70"), ("From", f"{self.from_uri};tag={self.from_tag}"), ("To", to),
                  ("Call-ID", self.call_id), ("CSeq", f"{cseq or self.cseq} {method}"),
                  ("Contact", f"<sip:src@{host}:{port};transport={self.client.transport}>;+sip.src"),
                  *headers]
        if content_type:
            fields.append(("Content-Type", content_type))
        message = sip.SipMessage(method=method, uri=f"sip:srs@{self.client.host}:{self.client.port}", headers=fields,
                                 body=body)
        self.client.send(message)
        return message

    def invite(self, offer: str, metadata: str | None = METADATA.format(agent=1, caller=2), siprec: bool = True,
               headers: list[tuple[str, str]] = ()) -> sip.SipMessage:
        """INVITE (or re-INVITE in the dialog), ACK on 2xx; the final response."""
        self.send_invite(offer, metadata, siprec, headers)
        return self.answered()

    def send_invite(self, offer: str, metadata: str | None = METADATA.format(agent=1, caller=2), siprec: bool = True,
                    headers: list[tuple[str, str]] = ()) -> sip.SipMessage:
        """The INVITE alone, not waiting for its answer (`answered` reads it): a flood sends many first."""
        content_type, body = multipart(offer, metadata)
        extra = [("Require", "siprec")] if siprec else []
        return self.request("INVITE", content_type, body, [*extra, *headers])

    def answered(self) -> sip.SipMessage:
        """The final response to our INVITE, ACKed (the dialog's tag kept on 2xx)."""
        final = self.client.final()
        if final.status < 300:
            self.to_tag = sip.header_params(final.header("To")).get("tag")
        self.request("ACK", cseq=self.cseq)
        return final

    def bye(self) -> sip.SipMessage:
        self.request("BYE")
        return self.client.final()


def answered_ports(response: sip.SipMessage) -> list[int]:
    """Our server's RTP port for each m-line of its answer (0 = declined)."""
    return [int(line.split()[1]) for line in response.body.decode().splitlines() if line.startswith("m=")]


def send_paced(streams: list[tuple[int, list[bytes]]], interval: float = 0.02, speed: float = 1.0,
               host: str = "127.0.0.1") -> None:
    """Send each stream's packets to its port on `host`, one packet per stream every 20 ms (real time)."""
    sender = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    started = time.monotonic()
    for index in range(max(len(packets) for _, packets in streams)):
        for port, packets in streams:
            if index < len(packets):
                sender.sendto(packets[index], (host, port))
        time.sleep(max(0.0, started + (index + 1) * interval / speed - time.monotonic()))
    sender.close()

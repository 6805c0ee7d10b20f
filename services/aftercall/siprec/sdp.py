"""SDP (RFC 4566) for a recording server: read the recording client's offer (one `m=audio` per recorded stream,
each with its `a=label`), and answer with `recvonly` on our own ports for the streams we take, G.711 only."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from aftercall.siprec.errors import SipMessageError

# Static payload types (RFC 3551) and the encodings aftercall stores as they come off the wire.
G711 = {0: "PCMU", 8: "PCMA"}
_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
MAX_STREAMS = 8
MAX_PORT = 65535
_DIGITS = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() also takes '²', which int() refuses


@dataclass
class MediaOffer:
    """One `m=` line of the offer."""

    media: str
    port: int
    protocol: str
    payload_types: list[int]
    rtpmap: dict[int, str] = field(default_factory=dict)
    label: str | None = None
    direction: str = "sendrecv"
    address: str | None = None  # the stream's own c= line, else the session's

    def codec(self, accepted: tuple[str, ...] = ("PCMU", "PCMA")) -> int | None:
        """The first offered payload type that is G.711 in an accepted flavour, at 8 kHz."""
        for payload_type in self.payload_types:
            name = self.rtpmap.get(payload_type)
            encoding = name.split("/")[0].upper() if name else G711.get(payload_type)
            rate = name.split("/")[1] if name and "/" in name else "8000"
            if encoding in accepted and rate == "8000":
                return payload_type
        return None


@dataclass
class SessionDescription:
    address: str | None
    streams: list[MediaOffer]


def parse_sdp(body: bytes) -> SessionDescription:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SipMessageError("the SDP is not UTF-8", 400) from None
    session_address: str | None = None
    session_direction = "sendrecv"
    streams: list[MediaOffer] = []
    seen_version = False
    for raw in text.replace("\r\n", "\n").split("\n"):
        line = raw.strip()
        if not line:
            continue
        kind, equals, value = line.partition("=")
        if not equals or len(kind) != 1:
            raise SipMessageError(f"malformed SDP line {line[:60]!r}", 400)
        current = streams[-1] if streams else None
        if kind == "v":
            seen_version = value == "0"
        elif kind == "c":
            address = _connection_address(value)
            if current is None:
                session_address = address
            else:
                current.address = address
        elif kind == "m":
            streams.append(_media_line(value, session_direction))
            if len(streams) > MAX_STREAMS:
                raise SipMessageError(f"more than {MAX_STREAMS} media streams in the offer", 488)
        elif kind == "a":
            name, _, attribute = value.partition(":")
            if name in _DIRECTIONS:
                if current is None:
                    session_direction = name
                else:
                    current.direction = name
            elif current is not None and name == "label":
                current.label = attribute.strip()
            elif current is not None and name == "rtpmap":
                number, _, encoding = attribute.partition(" ")
                if (payload_type := _small_number(number)) is not None:
                    current.rtpmap[payload_type] = encoding.strip()
    if not seen_version:
        raise SipMessageError("the SDP has no v=0 line", 400)
    for stream in streams:
        if stream.address is None:
            stream.address = session_address
    return SessionDescription(session_address, streams)


def _connection_address(value: str) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SipMessageError(f"malformed SDP connection line c={value[:60]!r}", 400)
    return parts[2].split("/")[0]


def _small_number(text: str) -> int | None:
    """A non-negative decimal of at most 6 significant digits (ports, payload types), else None."""
    if not _DIGITS.fullmatch(text) or len(text.lstrip("0")) > 6:
        return None
    return int(text)


def _media_line(value: str, direction: str) -> MediaOffer:
    """`m=<media> <port>[/<count>] <proto> <fmt> ...`. The port is 1-65535 for a stream offered, 0 for one declined
    (RFC 4566 5.14, RFC 3264 5.1); with a count, RTP takes every second port from it (RTCP the odd ones between)."""
    parts = value.split()
    port_text, slash, count_text = parts[1].partition("/") if len(parts) >= 4 else ("", "", "")
    if not _DIGITS.fullmatch(port_text) or (slash and not _DIGITS.fullmatch(count_text)):
        raise SipMessageError(f"malformed SDP media line m={value[:60]!r}", 400)
    port, count = _small_number(port_text), _small_number(count_text) if slash else 1
    if port is None or port > MAX_PORT:
        raise SipMessageError(f"SDP media port {port_text[:20]} is outside 1-{MAX_PORT} (0 declines a stream): "
                              f"m={value[:60]!r}", 400)
    last = port + (2 if parts[2].upper().startswith("RTP/") else 1) * ((count or 1) - 1)
    if count is None or count < 1 or (port and last > MAX_PORT):
        raise SipMessageError(f"SDP media ports {parts[1][:20]} are not a count of 1 or more ending by {MAX_PORT}: "
                              f"m={value[:60]!r}", 400)
    formats = [number for f in parts[3:] if (number := _small_number(f)) is not None and number < 128]
    return MediaOffer(parts[0], port, parts[2], formats, direction=direction)


@dataclass(frozen=True)
class AcceptedStream:
    """A stream we record: which `m=` line, its label, the local RTP port and the G.711 payload type chosen."""

    index: int
    label: str | None
    port: int
    payload_type: int

    @property
    def encoding(self) -> str:
        return G711[self.payload_type]


def choose_streams(offer: SessionDescription, accepted: tuple[str, ...] = ("PCMU", "PCMA")) -> list[tuple[int, int]]:
    """(m-line index, payload type) of each audio stream we can record; the rest are declined in the answer."""
    chosen = []
    for index, stream in enumerate(offer.streams):
        payload_type = stream.codec(accepted) if stream.media == "audio" and stream.port else None
        if payload_type is not None and stream.protocol.upper().startswith("RTP/AVP"):
            chosen.append((index, payload_type))
    return chosen


def answer(offer: SessionDescription, local_address: str, accepted: list[AcceptedStream], session_id: int,
           version: int = 1) -> bytes:
    """Our answer: every offered `m=` line in order (RFC 3264 6), ours `recvonly` on our port with the chosen
    payload type and the same label, the others declined with port 0. `version` moves with each new answer in the
    session (RFC 3264 8)."""
    family = "IP6" if ":" in local_address else "IP4"
    lines = ["v=0", f"o=aftercall {session_id} {version} IN {family} {local_address}", "s=aftercall",
             f"c=IN {family} {local_address}", "t=0 0"]
    by_index = {stream.index: stream for stream in accepted}
    for index, stream in enumerate(offer.streams):
        taken = by_index.get(index)
        if taken is None:
            formats = " ".join(str(p) for p in stream.payload_types[:1]) or "0"
            lines += [f"m={stream.media} 0 {stream.protocol} {formats}"]
            continue
        lines += [f"m=audio {taken.port} RTP/AVP {taken.payload_type}",
                  f"a=rtpmap:{taken.payload_type} {taken.encoding}/8000", "a=recvonly"]
        if taken.label is not None:
            lines.append(f"a=label:{taken.label}")
    return ("\r\n".join(lines) + "\r\n").encode()

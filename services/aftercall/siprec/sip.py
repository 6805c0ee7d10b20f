"""SIP messages (RFC 3261) as a recording server meets them: parsed from a UDP datagram or cut from a TCP/TLS byte
stream, tolerant of what real SBCs send (bare LF line ends, compact header names, folded headers), strict about size
and framing; responses built from the request they answer; multipart bodies split into their parts."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from aftercall.siprec.errors import SipMessageError

# A SIPREC INVITE is about 2 KB; 64 KiB leaves room for large metadata while bounding what one peer can make us hold.
MAX_MESSAGE_BYTES = 65536
MAX_HEADERS = 128
# RFC 3261 8.1.1.5: a CSeq number is a 32-bit unsigned integer less than 2**31.
MAX_CSEQ = 2 ** 31 - 1

# RFC 3261 7.3.3 and the IANA registry: compact forms a recording client may use.
_COMPACT = {"i": "Call-ID", "m": "Contact", "e": "Content-Encoding", "l": "Content-Length", "c": "Content-Type",
            "f": "From", "s": "Subject", "k": "Supported", "t": "To", "v": "Via", "o": "Event", "u": "Allow-Events",
            "r": "Refer-To", "b": "Referred-By", "x": "Session-Expires", "a": "Accept-Contact"}
# Headers whose value may be a comma-separated list; From and To never are.
_LISTS = {"via", "route", "record-route", "require", "supported", "unsupported", "allow", "contact"}
_CANONICAL = {name.lower(): name for name in (
    "Call-ID", "CSeq", "Contact", "Content-Disposition", "Content-Encoding", "Content-Length", "Content-Type", "From",
    "To", "Via", "Max-Forwards", "Record-Route", "Route", "Require", "Supported", "Unsupported", "Allow", "Accept",
    "User-Agent", "Server", "Session-Expires", "Min-SE", "Event", "Subject", "Reason", "Retry-After",
    "WWW-Authenticate", "Warning", "MIME-Version")}
_REQUEST_LINE = re.compile(r"^(?P<method>[A-Za-z]+) (?P<uri>\S+) SIP/2\.0$")
_STATUS_LINE = re.compile(r"^SIP/2\.0 (?P<status>[1-6]\d\d)(?: (?P<reason>.*))?$")
_TOKEN = re.compile(r"^[!%'*+\-.0-9A-Z_`a-z~]+$")
_CSEQ = re.compile(r"^([0-9]+)[ \t]+([!%'*+\-.0-9A-Z_`a-z~]+)$")
_DIGITS = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() also takes '²', which int() refuses
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_PARAM = re.compile(r';\s*([^;=\s]+)(?:\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s]*))?')
REASONS = {100: "Trying", 180: "Ringing", 200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 408: "Request Timeout", 413: "Request Entity Too Large",
           415: "Unsupported Media Type", 420: "Bad Extension", 481: "Call/Transaction Does Not Exist",
           486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here", 500: "Server Internal Error",
           503: "Service Unavailable"}


def canonical_name(name: str) -> str:
    lower = name.lower()
    if lower in _COMPACT:
        return _COMPACT[lower]
    return _CANONICAL.get(lower, name)


@dataclass
class SipMessage:
    """A request (`method` and `uri` set) or a response (`status` and `reason` set)."""

    method: str | None = None
    uri: str | None = None
    status: int | None = None
    reason: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    # Set by parse(keep_faults=True) on a message framed well enough to answer but with a bad value (its CSeq):
    # the request gets this error's status instead of being dropped.
    fault: SipMessageError | None = None

    @property
    def is_request(self) -> bool:
        return self.method is not None

    def header(self, name: str) -> str | None:
        """The first value of a header (any spelling or compact form of its name)."""
        values = self.header_values(name)
        return values[0] if values else None

    def header_values(self, name: str) -> list[str]:
        """Every value of a header, comma-separated lists split (Via, Route, Record-Route, Require ...)."""
        wanted = canonical_name(name).lower()
        values = []
        for key, value in self.headers:
            if key.lower() != wanted:
                continue
            values += [part.strip() for part in _split_commas(value) if part.strip()] if wanted in _LISTS else [value]
        return values

    def option_tags(self, name: str) -> set[str]:
        """Require / Supported / Unsupported as a set of lower-case option tags."""
        return {tag.lower() for tag in self.header_values(name)}

    @property
    def call_id(self) -> str:
        return self.header("Call-ID") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        """(number, method); SipMessageError (400) when the header is malformed or its number out of range."""
        value = self.header("CSeq") or ""
        match = _CSEQ.match(value.strip())
        if match is None:
            raise SipMessageError(f"malformed CSeq {value[:40]!r}")
        digits = match.group(1).lstrip("0") or "0"
        if len(digits) > len(str(MAX_CSEQ)) or int(digits) > MAX_CSEQ:
            shown = digits if len(digits) <= 20 else f"{digits[:20]}... ({len(digits)} digits)"
            raise SipMessageError(f"CSeq number {shown} is over {MAX_CSEQ} (RFC 3261 8.1.1.5: less than 2**31)")
        return int(digits), match.group(2).upper()

    def to_bytes(self) -> bytes:
        start = f"{self.method} {self.uri} SIP/2.0" if self.is_request else f"SIP/2.0 {self.status} {self.reason}"
        lines = [start] + [f"{key}: {value}" for key, value in self.headers if key.lower() != "content-length"]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


def _split_commas(value: str) -> list[str]:
    """Split on commas outside quotes and <...>."""
    parts, current, quoted, angle = [], [], False, False
    for char in value:
        if char == '"':
            quoted = not quoted
        elif char == "<" and not quoted:
            angle = True
        elif char == ">" and not quoted:
            angle = False
        if char == "," and not quoted and not angle:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def parse(data: bytes, datagram: bool = True, keep_faults: bool = False) -> SipMessage:
    """One message. On a datagram a missing Content-Length means "the rest of the packet"; a body shorter than the
    declared length is an error either way. A message that cannot be framed, or lacks a header that a response
    copies, raises SipMessageError; with `keep_faults` one that has them all but a bad CSeq comes back with `fault`
    set, so that a server can answer it (400) instead of dropping it."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise SipMessageError(f"message of {len(data)} bytes is over the limit of {MAX_MESSAGE_BYTES}", 413)
    end = _HEADER_END.search(data)
    if end is None:
        raise SipMessageError("no blank line after the headers")
    try:
        head = data[: end.start()].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipMessageError(f"headers are not UTF-8 (byte {exc.start})") from None
    lines = head.replace("\r\n", "\n").split("\n")
    message = _start_line(lines[0].strip())
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):  # an obsolete folded continuation of the previous header
            if not message.headers:
                raise SipMessageError("a continuation line before any header")
            key, value = message.headers[-1]
            message.headers[-1] = (key, f"{value} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.match(name.strip()):
            raise SipMessageError(f"malformed header line {line[:60]!r}")
        message.headers.append((canonical_name(name.strip()), value.strip()))
        if len(message.headers) > MAX_HEADERS:
            raise SipMessageError(f"more than {MAX_HEADERS} headers")
    body = data[end.end():]
    length = _content_length(message)
    if length is None:
        if not datagram:
            raise SipMessageError("Content-Length is required on a stream transport")
    elif length > len(body):
        raise SipMessageError(f"Content-Length {length} but {len(body)} bytes follow")
    else:
        body = body[:length]
    message.body = body
    for required in ("Call-ID", "CSeq", "From", "To", "Via"):
        if message.header(required) is None:
            raise SipMessageError(f"missing {required} header")
    try:
        message.cseq
    except SipMessageError as exc:
        if not keep_faults:
            raise
        message.fault = exc
    return message


def _start_line(line: str) -> SipMessage:
    if match := _REQUEST_LINE.match(line):
        return SipMessage(method=match["method"].upper(), uri=match["uri"])
    if match := _STATUS_LINE.match(line):
        return SipMessage(status=int(match["status"]), reason=match["reason"] or "")
    raise SipMessageError(f"not a SIP/2.0 request or status line: {line[:80]!r}")


def _content_length(message: SipMessage) -> int | None:
    value = message.header("Content-Length")
    if value is None:
        return None
    if not _DIGITS.fullmatch(value):
        raise SipMessageError(f"malformed Content-Length {value[:40]!r}")
    return _length(value.encode())


class StreamFramer:
    """Cuts messages out of a TCP/TLS byte stream by their Content-Length; CRLF keep-alives (RFC 5626) are
    skipped. A peer that sends more than MAX_MESSAGE_BYTES without completing a message is cut off; a message
    that is framed well but faulty inside raises, or with `keep_faults` comes back with `fault` set (see parse)."""

    def __init__(self, keep_faults: bool = False) -> None:
        self._buffer = bytearray()
        self._keep_faults = keep_faults

    def feed(self, data: bytes) -> list[SipMessage]:
        self._buffer += data
        messages = []
        while True:
            while self._buffer[:2] == b"\r\n" or self._buffer[:1] == b"\n":
                del self._buffer[: 2 if self._buffer[:2] == b"\r\n" else 1]
            end = _HEADER_END.search(self._buffer)
            if end is None:
                if len(self._buffer) > MAX_MESSAGE_BYTES:
                    raise SipMessageError(f"no complete header within {MAX_MESSAGE_BYTES} bytes", 413)
                return messages
            length = _declared_length(bytes(self._buffer[: end.start()]))
            total = end.end() + length
            if total > MAX_MESSAGE_BYTES:
                raise SipMessageError(f"message of {total} bytes is over the limit of {MAX_MESSAGE_BYTES}", 413)
            if len(self._buffer) < total:
                return messages
            messages.append(parse(bytes(self._buffer[:total]), datagram=False, keep_faults=self._keep_faults))
            del self._buffer[:total]


def _declared_length(head: bytes) -> int:
    match = re.search(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*(\d+)[ \t]*\r?$", head)
    if match is None:
        raise SipMessageError("Content-Length is required on a stream transport")
    return _length(match.group(1))


def _length(digits: bytes) -> int:
    """A Content-Length; one with more digits than any length we take is refused before int() (which stops at
    4,300 digits)."""
    if len(digits.lstrip(b"0")) > len(str(MAX_MESSAGE_BYTES)):
        raise SipMessageError(f"Content-Length of {len(digits)} digits is over the limit of {MAX_MESSAGE_BYTES} bytes",
                              413)
    return int(digits)


def uri_params(value: str) -> dict[str, str]:
    """The parameters of a name-addr's URI (inside <...>), e.g. Cisco's `x-refci`; names lower-cased."""
    inside = re.search(r"<([^>]*)>", value)
    if inside is None:  # without <...> every parameter belongs to the header (RFC 3261 20.10)
        return {}
    return _params(inside.group(1).split("?", 1)[0])


def header_params(value: str) -> dict[str, str]:
    """The parameters after a name-addr or value (`;tag=...`, `;boundary=...`), outside any <...>."""
    return _params(re.sub(r"<[^>]*>", "", value))


def _params(text: str) -> dict[str, str]:
    return {name.lower(): (raw or "").strip('"') for name, raw in _PARAM.findall(text)}


def _media_type(content_type: str) -> str:
    """`multipart/mixed;boundary=x` -> `multipart/mixed`."""
    return content_type.split(";", 1)[0].strip().lower()


def response(request: SipMessage, status: int, to_tag: str | None = None, headers: Sequence[tuple[str, str]] = (),
             body: bytes = b"", reason: str | None = None) -> SipMessage:
    """The response to `request` (RFC 3261 8.2.6): Via, From, Call-ID, CSeq copied, To with our tag, and the
    Record-Route of a dialog-creating request so that in-dialog requests follow a proxy in the path."""
    copied: list[tuple[str, str]] = [("Via", value) for value in request.header_values("Via")]
    to = request.header("To") or ""
    if to_tag and status > 100 and "tag" not in header_params(to):
        to = f"{to};tag={to_tag}"
    copied += [("From", request.header("From") or ""), ("To", to), ("Call-ID", request.call_id),
               ("CSeq", request.header("CSeq") or "")]
    if request.method == "INVITE" and 100 < status < 300:
        copied += [("Record-Route", value) for value in request.header_values("Record-Route")]
    return SipMessage(status=status, reason=reason or REASONS.get(status, ""), headers=copied + list(headers),
                      body=body)


@dataclass(frozen=True)
class BodyPart:
    content_type: str
    headers: dict[str, str]
    body: bytes


def body_parts(message: SipMessage) -> list[BodyPart]:
    """The parts of a multipart body (RFC 2046), or the whole body as one part. Part header names are lower-case."""
    content_type = message.header("Content-Type") or ""
    if not message.body:
        return []
    main = _media_type(content_type)
    if not main.startswith("multipart/"):
        return [BodyPart(main, {}, message.body)]
    boundary = header_params(content_type).get("boundary")
    if not boundary:
        raise SipMessageError("multipart body without a boundary parameter", 400)
    delimiter = re.compile(rb"(?:^|\r?\n)--" + re.escape(boundary.encode()) + rb"(--)?[ \t]*(?:\r?\n|$)")
    pieces = []
    positions = list(delimiter.finditer(message.body))
    if not positions or positions[-1].group(1) is None:
        raise SipMessageError("multipart body without its closing boundary", 400)
    for this, following in zip(positions, positions[1:]):
        pieces.append(message.body[this.end(): following.start()])
    parts = []
    for piece in pieces:
        if piece[:1] in (b"\r", b"\n"):  # no part headers: the blank line comes first
            head, body = b"", piece[2 if piece[:2] == b"\r\n" else 1:]
        else:
            end = _HEADER_END.search(piece)
            if end is None:
                raise SipMessageError("a multipart part without a blank line after its headers", 400)
            head, body = piece[: end.start()], piece[end.end():]
        headers = {}
        for line in head.decode("utf-8", "replace").replace("\r\n", "\n").split("\n"):
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()
        parts.append(BodyPart(_media_type(headers.get("content-type", "text/plain")), headers, body))
    return parts

"""A seeded mutational fuzzer over what strangers send us: WAV files, transcript JSON, gRPC request messages and SIP
messages. Each target starts from valid inputs taken from the repository (the demo recording, the demo transcript,
real protobuf requests, the SIPREC INVITE the SIP peer sends) and mutates them with bit flips, inserted and deleted
bytes, truncation, swapped fields, huge lengths and boundary integers. The contract is the same everywhere: an input
is accepted or refused with the project's own error (a domain exception, a gRPC status other than UNKNOWN/INTERNAL, a
SIP 4xx/5xx), never another exception, and every case ends in bounded time.

Deterministic: one `random.Random` per target, seeded with the target's name, so a failure names its case number and
reproduces on every machine; the counts bound the suite to well under a minute.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import struct
import threading
import time
import zlib
from pathlib import Path
from random import Random
from typing import Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from aftercall.config import Config
from aftercall.core.decode import recording_wav
from aftercall.core.errors import AudioFormatError, TranscriptFormatError
from aftercall.core.rpc import error_reason
from aftercall.core.transcript import Transcript, Turn, parse_transcript
from aftercall.evaluation.bench_tools import demo_call
from aftercall.siprec import metadata as sip_metadata
from aftercall.siprec import sdp, sip
from aftercall.siprec.errors import SipMessageError
from aftercall.v1 import ingest_pb2 as pb
from aftercall.v1 import summaries_pb2 as spb
from aftercall.v1 import summaries_pb2_grpc as spb_grpc

ROOT = Path(__file__).resolve().parent.parent
# Boundary integers, written as 1, 2, 4 or 8 little-endian bytes (WAV) or as varints and decimal text.
BOUNDARIES = (0, 1, 2, 7, 8, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 65535, 65536, 8000, 16000,
              0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x100000000, 2**63 - 1, 2**64 - 1)
# What one case may take before it counts as a hang (an FFmpeg decode of a short clip takes milliseconds).
CASE_SECONDS = 10.0


class Mutator:
    """Byte-level mutations of a valid input, one to three per case. Every choice comes from `random`."""

    def __init__(self, random: Random):
        self.random = random

    def __call__(self, data: bytes) -> bytes:
        out = bytearray(data)
        for _ in range(self.random.randint(1, 3)):
            out = getattr(self, self.random.choice(self.MUTATIONS))(out)
        return bytes(out)

    MUTATIONS = ("flip", "flip", "insert", "delete", "truncate", "swap", "huge", "boundary", "repeat", "splice_text")

    def _at(self, out: bytearray, head: int = 128) -> int:
        # Half the mutations land in the first bytes, where the headers and lengths are.
        limit = len(out) if self.random.random() < 0.5 or len(out) <= head else head
        return self.random.randrange(max(limit, 1))

    def flip(self, out: bytearray) -> bytearray:
        if out:
            out[self._at(out) % len(out)] ^= 1 << self.random.randrange(8)
        return out

    def insert(self, out: bytearray) -> bytearray:
        junk = bytes(self.random.randrange(256) for _ in range(self.random.choice((1, 2, 4, 16, 100))))
        position = self._at(out) if out else 0
        return out[:position] + junk + out[position:]

    def delete(self, out: bytearray) -> bytearray:
        if out:
            start = self._at(out) % len(out)
            del out[start : start + self.random.choice((1, 2, 4, 8, 64))]
        return out

    def truncate(self, out: bytearray) -> bytearray:
        return out[: self.random.randrange(len(out) + 1)]

    def swap(self, out: bytearray) -> bytearray:
        """Two fields of the same width trade places (a length and a rate, a tag and a count)."""
        width = self.random.choice((1, 2, 4, 8))
        if len(out) < 2 * width:
            return out
        a, b = (self._at(out) % (len(out) - width + 1) for _ in range(2))
        first, second = bytes(out[a : a + width]), bytes(out[b : b + width])
        out[a : a + width], out[b : b + width] = second, first
        return out

    def huge(self, out: bytearray) -> bytearray:
        """A length field that claims far more than follows."""
        value = self.random.choice((0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFFFF0))
        return self._write(out, struct.pack("<I", value))

    def boundary(self, out: bytearray) -> bytearray:
        value = self.random.choice(BOUNDARIES)
        width = self.random.choice((1, 2, 4, 8))
        return self._write(out, (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little"))

    def repeat(self, out: bytearray) -> bytearray:
        if not out:
            return out
        start = self._at(out) % len(out)
        piece = out[start : start + self.random.choice((1, 4, 32, 256))]
        return out[:start] + piece * self.random.choice((2, 16, 200)) + out[start:]

    def splice_text(self, out: bytearray) -> bytearray:
        """Text-shaped trouble: a boundary number, a huge one, NUL, a lone surrogate's bytes, bare CR/LF."""
        piece = self.random.choice((str(self.random.choice(BOUNDARIES)).encode(), b"-1", b"9" * 5000, b"1e999",
                                    b"\x00", b"\xed\xa0\x80", b"\xff\xfe", b"\r", b"\n", b"\r\n\r\n", b"%s%n", b'"',
                                    b"\xc2\xb2", b"\xd9\xa3", b"[" * 2000, b"{" * 50))
        position = self._at(out) if out else 0
        if self.random.random() < 0.5:  # replace what is there
            return out[:position] + piece + out[position + len(piece):]
        return out[:position] + piece + out[position:]

    def _write(self, out: bytearray, value: bytes) -> bytearray:
        if len(out) < len(value):
            return out + value
        position = self._at(out) % (len(out) - len(value) + 1)
        if self.random.random() < 0.7:  # aligned, as header fields are
            position -= position % len(value)
        out[position : position + len(value)] = value
        return out


def run_cases(name: str, seeds: list[bytes], count: int, target: Callable[[bytes], None],
              expected: tuple[type[Exception], ...], check: Callable[[Exception], str | None] = lambda exc: None,
              mutator: Callable[[Random, bytes], bytes] | None = None) -> list[str]:
    """`count` mutated inputs through `target`: each either returns or raises one of `expected` (and then `check`
    finds nothing wrong with the error) within CASE_SECONDS. Returns one line per failure, naming the case and its
    input (a short prefix of its bytes) so that it can be replayed."""
    random = Random(zlib.crc32(name.encode()))
    mutate = Mutator(random)
    failures = []
    for case in range(count):
        seed = seeds[case % len(seeds)]
        data = mutator(random, seed) if mutator else mutate(seed)
        started = time.monotonic()
        outcome = _bounded(target, data)
        took = time.monotonic() - started
        where = f"{name} case {case} ({len(data)} bytes, {data[:80]!r}...)"
        if isinstance(outcome, TimeoutError):
            failures.append(f"{where}: no result after {CASE_SECONDS} s")
            break  # the hung case still holds its thread
        if took > CASE_SECONDS:
            failures.append(f"{where}: took {took:.1f} s")
        if outcome is None:
            continue
        if not isinstance(outcome, expected):
            failures.append(f"{where}: {type(outcome).__name__}: {str(outcome)[:200]}")
        elif problem := check(outcome):
            failures.append(f"{where}: {problem}")
    return failures


def _bounded(target: Callable[[bytes], None], data: bytes) -> BaseException | None:
    """`target(data)` in a worker thread: what it raised, None, or TimeoutError when it did not end in time (a hang
    is then reported instead of hanging the suite)."""
    outcome: list[BaseException | None] = []

    def work() -> None:
        try:
            target(data)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - whatever it raised is the verdict
            outcome.append(exc)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(CASE_SECONDS * 3)
    return outcome[0] if outcome else TimeoutError()


# -- WAV: the bytes of a submitted recording, through what SubmitRecording and `aftercall summarise` use ----------
def _wav_seeds() -> list[bytes]:
    """The demo recording (stereo mu-law 8 kHz), cut to half a second, and the same audio as PCM16 with an extra
    chunk before `data` (a LIST chunk, as many recorders write)."""
    from aftercall.core.audio import parse_wav, pcm16_wav

    mulaw = demo_call(0.5)
    pcm = pcm16_wav(parse_wav(mulaw))
    listed = pcm[:36] + b"LIST" + struct.pack("<I", 10) + b"INFOISFT\x00\x00" + pcm[36:]
    listed = listed[:4] + struct.pack("<I", len(listed) - 8) + listed[8:]
    return [mulaw, listed]


def test_fuzzed_wav_files_decode_or_are_refused_as_audio_format_errors():
    limit = Config().audio.max_duration_s
    failures = run_cases("wav", _wav_seeds(), 600, lambda data: recording_wav(data, limit), (AudioFormatError,))
    assert not failures, "\n".join(failures)


# -- transcript JSON --------------------------------------------------------------------------------------------------
def _transcript_seeds() -> list[bytes]:
    demo = (ROOT / "samples" / "demo_call.json").read_bytes()
    timed = {"turns": [{"speaker": "agent", "text": "Hello, how can I help?", "start": 0.0, "end": 1.5},
                       {"speaker": "customer", "text": "My card 4532 0151 1283 0366 was lost.", "start": 2, "end": 5},
                       {"speaker": "unattributed", "text": "Right.", "start": None, "end": None}],
             "call_id": "fuzz"}
    return [demo, json.dumps(timed).encode()]


_JSON_VALUES = (None, True, False, 0, -1, 1.5, -0.0, 2**64, 10**400, 1e308, "", "agent", "\ud800", "x" * 30000,
                [], {}, [[[]]], {"turns": []}, "NaN")


def _mutate_json(random: Random, seed: bytes) -> bytes:
    """Half the cases mutate the parsed document (a value replaced by a boundary value, keys swapped, a turn
    repeated or nested) and re-serialise it, so that cases get past the JSON parser into the schema checks; the
    other half mutate the bytes."""
    if random.random() < 0.5:
        return Mutator(random)(seed)
    document = json.loads(seed)
    for _ in range(random.randint(1, 3)):
        turns = document.get("turns") if isinstance(document, dict) else None
        choice = random.randrange(5)
        if choice == 0 and isinstance(turns, list) and turns:
            turn = random.choice(turns)
            if isinstance(turn, dict):
                turn[random.choice(("speaker", "text", "start", "end", "extra"))] = random.choice(_JSON_VALUES)
        elif choice == 1 and isinstance(turns, list) and turns:
            index = random.randrange(len(turns))
            turns[index] = random.choice(_JSON_VALUES)
        elif choice == 2 and isinstance(turns, list) and turns:
            turns.extend([random.choice(turns)] * random.choice((1, 100, 6000)))
        elif choice == 3 and isinstance(document, dict):
            keys = list(document)
            document = {random.choice(keys + ["turns", "call_id"]): value for value in document.values()}
        else:
            document = random.choice(({"turns": document}, [document], {"call_id": document, "turns": turns}))
    try:
        return json.dumps(document, allow_nan=True).encode("utf-8", "surrogatepass")
    except (ValueError, RecursionError):
        return Mutator(random)(seed)


def test_fuzzed_transcripts_parse_or_are_refused_as_transcript_format_errors():
    def parse(data: bytes) -> None:
        transcript = parse_transcript(data)
        assert isinstance(transcript, Transcript) and transcript.turns
        json.dumps(transcript.to_json()).encode("utf-8")  # what parsed is text: it goes on to the models

    failures = run_cases("transcript", _transcript_seeds(), 1000, parse, (TranscriptFormatError,), mutator=_mutate_json)
    assert not failures, "\n".join(failures)


# -- SIP: the SIPREC INVITE an SBC sends, and the SDP and metadata it carries ------------------------------------
class _Capture:
    """Stands in for tests/sip_peer.SipClient: the INVITE the peer builds, kept instead of sent."""

    port, transport, host, local = 5060, "udp", "127.0.0.1", ("127.0.0.1", 5070)

    def __init__(self) -> None:
        self.sent: list[sip.SipMessage] = []

    def send(self, message: sip.SipMessage) -> None:
        self.sent.append(message)


def _sip_seeds() -> list[bytes]:
    from sip_peer import METADATA, Dialog, multipart, sdp as offer

    client = _Capture()
    dialog = Dialog(client, call_id="fuzz@127.0.0.1", from_tag="f00d")
    content_type, body = multipart(offer([40000, 40002], labels=["1", "2"]), METADATA.format(agent=1, caller=2))
    dialog.request("INVITE", content_type, body, [("Require", "siprec")], branch="z9hG4bKfuzz")
    plain_type, plain = multipart(offer([40004], payload_type=8, address="::1"), None)
    dialog.request("INVITE", plain_type, plain, branch="z9hG4bKfuzz2")
    dialog.request("BYE", branch="z9hG4bKfuzz3")
    return [message.to_bytes() for message in client.sent]


def _sip_check(exc: Exception) -> str | None:
    if isinstance(exc, SipMessageError) and not 400 <= exc.status < 600:
        return f"SipMessageError with status {exc.status}, not a 4xx/5xx response"
    return None


def _sip_target(datagram: bool) -> Callable[[bytes], None]:
    def handle(data: bytes) -> None:
        """What the recording server does with a message: parse it (from a datagram or cut from a stream), read its
        CSeq and dialog parameters, split its body and parse the SDP and the recording metadata."""
        if datagram:
            message = sip.parse(data)
        else:
            messages = sip.StreamFramer().feed(data)
            if not messages:
                return
            message = messages[0]
        message.cseq
        sip.header_params(message.header("To") or "")
        sip.uri_params(message.header("From") or "")
        sip_metadata.cisco_leg(message.header("From") or "")
        message.option_tags("Require")
        for part in sip.body_parts(message):
            if part.content_type == "application/sdp":
                offer = sdp.parse_sdp(part.body)
                sdp.choose_streams(offer)
            elif part.content_type == "application/rs-metadata+xml":
                sip_metadata.parse_metadata(part.body)
        sip.response(message, 200, to_tag="t0").to_bytes()
    return handle


_SIP_TOKENS = (b"0", b"-1", b"65536", b"99999", b"2147483648", b"4294967296", b"9" * 40, b"\xc2\xb2", b"\xd9\xa3",
               b"", b" ", b"\x00", b"1.5", b"0x10", b"1_0", b'"', b"<", b";", b"=", b"x" * 70000)


def _mutate_sip(random: Random, seed: bytes) -> bytes:
    """Half the cases replace one token of one line (a header value, a CSeq number, an SDP port or payload type, a
    metadata attribute) with a boundary number or a hostile string, and fix Content-Length so the message still
    frames; the other half mutate the bytes."""
    if random.random() < 0.5:
        return Mutator(random)(seed)
    head, _, body = seed.partition(b"\r\n\r\n")
    in_body = random.random() < 0.6
    lines = (body if in_body else head).split(b"\n")
    index = random.randrange(len(lines))
    tokens = re.split(rb"([ :=/;<>]+)", lines[index])
    position = random.randrange(0, len(tokens), 2)
    tokens[position] = random.choice(_SIP_TOKENS)
    lines[index] = b"".join(tokens)
    if in_body:
        body = b"\n".join(lines)
        head = re.sub(rb"Content-Length: \d+", b"Content-Length: %d" % len(body), head)
    else:
        head = b"\n".join(lines)
    return head + b"\r\n\r\n" + body


@pytest.mark.parametrize("transport", ["datagram", "stream"])
def test_fuzzed_sip_messages_parse_or_get_a_4xx_5xx(transport):
    failures = run_cases(f"sip-{transport}", _sip_seeds(), 1000, _sip_target(transport == "datagram"),
                         (SipMessageError,), _sip_check, mutator=_mutate_sip)
    assert not failures, "\n".join(failures)


# -- gRPC: request messages of both services, sent as bytes to a real server on port 0 -------------------------------
_PLACEHOLDER = b"fuzz-000000"  # each case's call id, so that a mutated request is not just ALREADY_EXISTS
_FORBIDDEN = (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)
_USER = (("x-aftercall-user", "fuzzer"),)


class _ScriptedTranscriber:
    """Recognition is not under test here: every call 'says' the same two turns."""

    def transcribe(self, audio, roles, progress=None, live=False):
        return Transcript((Turn("customer", "I lost my card, the number is 4532 0151 1283 0366.", 0.0, 2.0),
                           Turn("agent", "I have cancelled it and ordered a new one.", 2.0, 4.0)))


def _grpc_seeds(clip: bytes) -> list[tuple[str, list[bytes]]]:
    """(method, the request messages) of a valid call to every method."""
    call_id = _PLACEHOLDER.decode()
    meta = pb.CallMetadata(agent_id="agent-1", queue="billing", direction=pb.CALL_DIRECTION_INBOUND, ani="+441632960",
                           dnis="100", tenant="acme", customer_ref="C-1")
    roles = [pb.CHANNEL_ROLE_AGENT, pb.CHANNEL_ROLE_CUSTOMER]
    start = pb.CallAudio(start=pb.CallStart(call_id=call_id, encoding=pb.AUDIO_ENCODING_MULAW, sample_rate_hz=8000,
                                            channel_roles=roles, metadata=meta))
    payload = clip[44:]  # demo_call writes a 44-byte header
    chunks = [pb.CallAudio(chunk=pb.AudioChunk(sequence=i, audio=payload[o : o + 1600]))
              for i, o in enumerate(range(0, len(payload), 1600))]
    stream = [start, *chunks, pb.CallAudio(end=pb.CallEnd(reason="hangup"))]
    ingest, summaries = "/aftercall.v1.CallIngest/", "/aftercall.v1.Summaries/"
    seeds = [
        (ingest + "StreamCall", stream),
        (ingest + "SubmitRecording", [pb.SubmitRecordingRequest(call_id=call_id, wav=clip, channel_roles=roles,
                                                                metadata=meta, wait=False)]),
        (ingest + "SubmitRecording", [pb.SubmitRecordingRequest(call_id=call_id, path="clip.wav", channel_roles=roles,
                                                                wait=True)]),
        (summaries + "Get", [spb.GetSummaryRequest(call_id="seeded", include_history=True)]),
        (summaries + "List", [spb.ListSummariesRequest(agent_id="agent-1", disposition_code="CARD_LOST",
                                                       tenant="acme", page_size=10, customer_ref="C-1")]),
        (summaries + "Edit", [spb.EditSummaryRequest(call_id="seeded", expected_version=1,
                                                     fields_json='{"summary": "Card cancelled."}')]),
        (summaries + "Approve", [spb.ApproveSummaryRequest(call_id="seeded", expected_version=2)]),
    ]
    return [(method, [m.SerializeToString() for m in messages]) for method, messages in seeds]


_STRINGS = ("", "seeded", "x" * 300, "x" * 70000, "\x00", "a\x00b", "../../etc/passwd", "/etc/passwd", "\r\n",
            "٣٣", "²", "-1", "18446744073709551616", "{}", "[", '{"summary": ' * 2000, "null", "%s%n", "\U0010ffff")
_INT_RANGES = {"TYPE_UINT32": (0, 2**32 - 1), "TYPE_UINT64": (0, 2**64 - 1), "TYPE_INT32": (-(2**31), 2**31 - 1),
               "TYPE_INT64": (-(2**63), 2**63 - 1), "TYPE_ENUM": (-(2**31), 2**31 - 1)}


def _mutate_fields(random: Random, data: bytes, message_type) -> bytes:
    """A structure-aware mutation: one field (at any depth) set to a boundary value, a hostile string, mutated
    bytes, or cleared; the message still decodes, so the case reaches the servicer."""
    message = message_type.FromString(data)
    target = message
    while True:  # walk down into a message field now and then (metadata, the oneof's CallStart, a Timestamp)
        fields = target.DESCRIPTOR.fields
        field = random.choice(fields)
        if field.message_type is None or field.is_repeated or random.random() < 0.3:
            break
        target = getattr(target, field.name)
    if field.is_repeated:
        values = getattr(target, field.name)
        if field.message_type is not None or random.random() < 0.3:
            del values[:]
        else:
            low, high = _INT_RANGES["TYPE_ENUM"]
            values.extend(max(low, min(high, random.choice(BOUNDARIES))) for _ in range(random.choice((1, 3, 1000))))
    elif field.message_type is not None:
        target.ClearField(field.name)
    elif field.type == field.TYPE_STRING:
        setattr(target, field.name, random.choice(_STRINGS))
    elif field.type == field.TYPE_BYTES:
        value = getattr(target, field.name)
        setattr(target, field.name, Mutator(random)(value) if value and random.random() < 0.8 else
                random.choice((b"", b"\x00" * 9, bytes(70000))))
    elif field.type == field.TYPE_BOOL:
        setattr(target, field.name, not getattr(target, field.name))
    elif field.type in (field.TYPE_DOUBLE, field.TYPE_FLOAT):
        setattr(target, field.name, random.choice((0.0, -1.0, 1e308, float("inf"), float("nan"))))
    else:
        name = {field.TYPE_UINT32: "TYPE_UINT32", field.TYPE_UINT64: "TYPE_UINT64", field.TYPE_INT64: "TYPE_INT64",
                field.TYPE_ENUM: "TYPE_ENUM"}.get(field.type, "TYPE_INT32")
        low, high = _INT_RANGES[name]
        value = random.choice(BOUNDARIES) * random.choice((1, -1))
        setattr(target, field.name, max(low, min(high, value)))
    return message.SerializeToString()


_REQUEST_TYPES = {"StreamCall": pb.CallAudio, "SubmitRecording": pb.SubmitRecordingRequest,
                  "Get": spb.GetSummaryRequest, "List": spb.ListSummariesRequest, "Edit": spb.EditSummaryRequest,
                  "Approve": spb.ApproveSummaryRequest}


def _mutate_requests(random: Random, method: str, messages: list[bytes], case: int) -> list[bytes]:
    """One message mutated (its fields, or its bytes), or the stream's messages dropped, repeated or reordered."""
    out = [m.replace(_PLACEHOLDER, f"fuzz-{case:06d}".encode()) for m in messages]
    if len(out) > 1 and random.random() < 0.3:
        index, other = random.randrange(len(out)), random.randrange(len(out))
        choice = random.randrange(3)
        if choice == 0:
            del out[index]
        elif choice == 1:
            out.insert(index, out[other])
        else:
            out[index], out[other] = out[other], out[index]
    if random.random() < 0.9 or len(out) == 1:
        index = 0 if random.random() < 0.4 else random.randrange(len(out))
        if random.random() < 0.6:
            out[index] = _mutate_fields(random, out[index], _REQUEST_TYPES[method.rsplit("/", 1)[1]])
        else:
            out[index] = Mutator(random)(out[index])
    return out


def _call(channel: grpc.Channel, method: str, messages: list[bytes]) -> grpc.StatusCode:
    """One call with raw bytes (requests and responses left undecoded); the status it ended with. A refusal that
    is not the server's own (no `ErrorInfo` from aftercall: the client's limits, a transport failure) is UNKNOWN."""
    try:
        if method.endswith("StreamCall"):
            for _ in channel.stream_stream(method)(iter(messages), timeout=CASE_SECONDS * 2, metadata=_USER):
                pass
        else:
            channel.unary_unary(method)(messages[0], timeout=CASE_SECONDS * 2, metadata=_USER)
    except grpc.RpcError as error:
        return error.code() if error_reason(error) else grpc.StatusCode.UNKNOWN
    return grpc.StatusCode.OK


def _fuzz_grpc(port: int, seeds: list[tuple[str, list[bytes]]], count: int) -> tuple[list[str], dict[str, int]]:
    random = Random(zlib.crc32(b"grpc"))
    failures, codes = [], {}
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        valid_get = seeds[3]
        for case in range(count):
            method, messages = seeds[case % len(seeds)]
            sent = _mutate_requests(random, method, messages, case)
            started = time.monotonic()
            code = _call(channel, method, sent)
            took = time.monotonic() - started
            codes[code.name] = codes.get(code.name, 0) + 1
            where = f"grpc case {case} {method} ({[m[:60] for m in sent][:4]!r})"
            if code in _FORBIDDEN or took > CASE_SECONDS:
                failures.append(f"{where}: {code.name} after {took:.1f} s")
            if case % 50 == 49 or failures:
                # The server keeps serving: health, and a valid call to a record made before the fuzzing.
                serving = health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
                after = _call(channel, *valid_get)
                if serving != health_pb2.HealthCheckResponse.SERVING or after is not grpc.StatusCode.OK:
                    failures.append(f"after {where}: health {serving}, a valid Get {after.name}")
            if failures:
                break
    return failures, codes


@pytest.mark.service
async def test_fuzzed_grpc_requests_get_a_precise_status_and_the_server_carries_on(tmp_path, summariser):
    from aftercall.app import SERVICES, start_appliance
    from aftercall.pipeline import Pipeline
    from aftercall.summarise.taxonomy import load_taxonomy

    clip = demo_call(0.5)
    imports = tmp_path / "import"
    imports.mkdir()
    (imports / "clip.wav").write_bytes(clip)
    config = Config()
    config = dataclasses.replace(config, ingest=dataclasses.replace(config.ingest, import_dir=str(imports)))
    pipeline = Pipeline(config, load_taxonomy(), summariser, transcriber_factory=_ScriptedTranscriber)
    appliance = await start_appliance(config, SERVICES, tmp_path / "data", "127.0.0.1:0", "", CollectorRegistry(),
                                      pipeline)
    try:
        seeded = pb.SubmitRecordingRequest(call_id="seeded", wav=clip, wait=True,
                                           channel_roles=[pb.CHANNEL_ROLE_AGENT, pb.CHANNEL_ROLE_CUSTOMER],
                                           metadata=pb.CallMetadata(agent_id="agent-1", tenant="acme"))
        with grpc.insecure_channel(f"127.0.0.1:{appliance.port}") as channel:
            assert await asyncio.to_thread(_call, channel, "/aftercall.v1.CallIngest/SubmitRecording",
                                           [seeded.SerializeToString()]) is grpc.StatusCode.OK
            # Found by the fuzzer: an error quoting a 70,000-character call id overflowed the client's limit on
            # trailing metadata, which then reported RESOURCE_EXHAUSTED "Stream removed" instead of NOT_FOUND.
            with pytest.raises(grpc.RpcError) as refused:
                await asyncio.to_thread(spb_grpc.SummariesStub(channel).Get,
                                        spb.GetSummaryRequest(call_id="x" * 70000), timeout=10)
            assert refused.value.code() is grpc.StatusCode.NOT_FOUND and error_reason(refused.value) == "NotFoundError"
            assert len(refused.value.details()) < 1100 and refused.value.details().endswith("... (cut)")
        failures, codes = await asyncio.to_thread(_fuzz_grpc, appliance.port, _grpc_seeds(clip), 420)
    finally:
        await appliance.stop(2)
    assert not failures, "\n".join(failures)
    assert codes.get("OK", 0) > 20 and codes.get("INVALID_ARGUMENT", 0) > 20, codes  # the fuzzing got past decoding

"""SIPREC parsing: SIP messages from datagrams and byte streams, multipart bodies, the SDP offer and our answer, and
RFC 7865 metadata in the variants SBCs send (telephony brief), plus Cisco Built-in-Bridge legs."""

from __future__ import annotations

import re

import pytest

from aftercall.config import load_config
from aftercall.core.errors import ConfigError
from aftercall.siprec import sip
from aftercall.siprec.errors import SipMessageError
from aftercall.siprec.metadata import cisco_leg, parse_metadata
from aftercall.siprec.roles import agent_stream, parse_trunks, trunk_for
from aftercall.siprec.sdp import AcceptedStream, answer, choose_streams, parse_sdp
from sip_peer import METADATA as SIPREC_METADATA

SDP = """v=0
o=SRC 2890844526 2890844526 IN IP4 198.51.100.1
s=-
c=IN IP4 198.51.100.1
t=0 0
m=audio 12240 RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=label:1
a=sendonly
m=audio 12242 RTP/AVP 8
a=label:2
a=sendonly
"""

METADATA = SIPREC_METADATA.format(agent=1, caller=2)

# The same facts the way other SBCs write them: no ":1", dataMode, send/recv inside the participant (the drafts).
METADATA_VARIANT = """<recording xmlns='urn:ietf:params:xml:ns:recording'>
  <dataMode>complete</dataMode>
  <participant id="agent-p"><aor>sip:2001@pbx.example.org</aor><send>s-agent</send></participant>
  <participant id="caller-p"><aor>sip:+441632960123@sbc.example.org</aor><send>s-caller</send></participant>
  <stream id="s-agent"><label>1</label></stream>
  <stream id="s-caller"><label>2</label></stream>
</recording>"""


def siprec_invite(metadata: str = METADATA, metadata_type: str = "application/rs-metadata+xml",
                  newline: str = "\r\n", compact: bool = False) -> bytes:
    body = newline.join([
        "--uniqueBoundary", "Content-Type: application/sdp", "", SDP.replace("\n", newline).rstrip(newline),
        "--uniqueBoundary", f"Content-Type: {metadata_type}", "Content-Disposition: recording-session", "",
        metadata.replace("\n", newline).rstrip(newline), "--uniqueBoundary--", ""]).encode()
    names = ({"Via": "v", "From": "f", "To": "t", "Call-ID": "i", "Content-Type": "c", "Content-Length": "l"}
             if compact else {})
    head = [
        "INVITE sip:srs@192.0.2.10:5060 SIP/2.0",
        f"{names.get('Via', 'Via')}: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-proxy",
        f"{names.get('Via', 'Via')}: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bK-src",
        "Record-Route: <sip:192.0.2.1;lr>",
        f"{names.get('From', 'From')}: <sip:src@198.51.100.1>;tag=35e195d2",
        f"{names.get('To', 'To')}: <sip:srs@192.0.2.10>",
        f"{names.get('Call-ID', 'Call-ID')}: d253c800-b0d1ea39-4a7dd-3f0e0@198.51.100.1",
        "CSeq: 101 INVITE",
        "Max-Forwards: 69",
        "Require: siprec",
        "Accept: application/sdp, application/rs-metadata",
        "Contact: <sip:src@198.51.100.1>;+sip.src",
        f"{names.get('Content-Type', 'Content-Type')}: multipart/mixed;boundary=uniqueBoundary",
        "Mime-Version: 1.0",
        f"{names.get('Content-Length', 'Content-Length')}: {len(body)}",
    ]
    return (newline.join(head) + newline + newline).encode() + body


def recorded_sides(message: sip.SipMessage) -> dict[str, list[str]]:
    parts = {part.content_type: part for part in sip.body_parts(message)}
    offer = parse_sdp(parts["application/sdp"].body)
    metadata_part = next(p for t, p in parts.items() if t != "application/sdp")
    metadata = parse_metadata(metadata_part.body)
    return {stream.label: metadata.sender_of(stream.label).aors for stream in offer.streams}


def test_a_siprec_invite_gives_each_labelled_stream_its_sender():
    message = sip.parse(siprec_invite())
    assert message.method == "INVITE" and message.call_id.startswith("d253c800")
    assert "siprec" in message.option_tags("Require") and message.cseq == (101, "INVITE")
    assert recorded_sides(message) == {"1": ["sip:2001@pbx.example.org"], "2": ["sip:+441632960123@sbc.example.org"]}
    parts = sip.body_parts(message)
    assert parts[1].headers["content-disposition"] == "recording-session"


@pytest.mark.parametrize("variant", [
    {"newline": "\n"},
    {"compact": True},
    {"metadata": METADATA_VARIANT, "metadata_type": "application/rs-metadata"},
    {"metadata": METADATA_VARIANT, "metadata_type": "application/xml", "newline": "\n", "compact": True},
])
def test_field_variants_read_the_same(variant):
    message = sip.parse(siprec_invite(**variant))
    assert message.header("Call-ID") == message.call_id != ""
    assert len(message.header_values("Via")) == 2
    assert recorded_sides(message) == {"1": ["sip:2001@pbx.example.org"], "2": ["sip:+441632960123@sbc.example.org"]}


def test_metadata_datamode_in_either_spelling():
    assert parse_metadata(METADATA.encode()).datamode == "complete"
    assert parse_metadata(METADATA_VARIANT.encode()).datamode == "complete"


@pytest.mark.parametrize("data, status, words", [
    (b"INVITE sip:srs@x SIP/2.0\r\nVia: SIP/2.0/UDP a\r\n", 400, "no blank line"),
    (b"HELLO\r\n\r\n", 400, "not a SIP/2.0"),
    (b"INVITE sip:srs@x SIP/2.0\r\nthis is not a header\r\n\r\n", 400, "malformed header"),
    (siprec_invite().replace(b"Call-ID: ", b"X-Call: "), 400, "missing Call-ID"),
    (siprec_invite().replace(b"CSeq: 101 INVITE", b"CSeq: one INVITE"), 400, "malformed CSeq"),
    (siprec_invite()[:-40], 400, "bytes follow"),
    (siprec_invite() + b"x" * sip.MAX_MESSAGE_BYTES, 413, "over the limit"),
    (b"INVITE sip:srs@x SIP/2.0\r\nVia: a\r\n\xff\xfe: b\r\n\r\n", 400, "not UTF-8"),
    (re.sub(rb"Content-Length: \d+", "Content-Length: \u00b2".encode(), siprec_invite()), 400,
     "malformed Content-Length"),  # str.isdigit() takes it, int() does not
    (re.sub(rb"Content-Length: \d+", b"Content-Length: " + b"9" * 5000, siprec_invite()), 413, "5000 digits"),
])
def test_malformed_messages_name_the_fault_and_the_status_to_answer(data, status, words):
    with pytest.raises(SipMessageError, match=words) as caught:
        sip.parse(data)
    assert caught.value.status == status


@pytest.mark.parametrize("cseq, words", [
    (b"2147483648 INVITE", "CSeq number 2147483648 is over 2147483647"),  # RFC 3261 8.1.1.5: less than 2**31
    (b"4294967296 INVITE", "CSeq number 4294967296 is over"),
    (b"9" * 5000 + b" INVITE", r"CSeq number 9{20}\.\.\. \(5000 digits\) is over"),  # no int() of 5000 digits
    (b"+101 INVITE", "malformed CSeq"),
    ("\u0661\u0660\u0661 INVITE".encode(), "malformed CSeq"),  # Arabic-Indic digits: int() would take them
    (b"101", "malformed CSeq"),
])
def test_a_cseq_out_of_range_is_a_fault_that_can_still_be_answered(cseq, words):
    data = siprec_invite().replace(b"CSeq: 101 INVITE", b"CSeq: " + cseq)
    with pytest.raises(SipMessageError, match=words) as caught:
        sip.parse(data)
    assert caught.value.status == 400
    kept = sip.parse(data, keep_faults=True)  # what the server does: it has all a 400 needs
    assert kept.method == "INVITE" and kept.fault.status == 400 and re.search(words, str(kept.fault))
    assert sip.response(kept, 400).header("CSeq") == cseq.decode()


def test_the_largest_cseq_and_leading_zeros_are_fine():
    for cseq, number in ((b"2147483647 INVITE", 2 ** 31 - 1), (b"000000000000101  INVITE", 101), (b"0 INVITE", 0)):
        assert sip.parse(siprec_invite().replace(b"CSeq: 101 INVITE", b"CSeq: " + cseq)).cseq == (number, "INVITE")


def test_a_faulty_message_on_a_stream_is_kept_in_its_place_and_the_next_still_read():
    bad = siprec_invite().replace(b"CSeq: 101", b"CSeq: 4294967296")
    stream = siprec_invite() + bad + siprec_invite().replace(b"CSeq: 101", b"CSeq: 102")
    with pytest.raises(SipMessageError, match="CSeq number"):
        sip.StreamFramer().feed(stream)
    messages = sip.StreamFramer(keep_faults=True).feed(stream)
    assert [m.fault is None for m in messages] == [True, False, True] and messages[2].cseq == (102, "INVITE")


def test_a_byte_stream_is_cut_into_messages_whatever_the_reads():
    one, two = siprec_invite(), siprec_invite().replace(b"CSeq: 101", b"CSeq: 102")
    stream = b"\r\n\r\n" + one + b"\r\n" + two  # keep-alives before and between (RFC 5626)
    for size in (1, 7, 100, len(stream)):
        framer = sip.StreamFramer()
        messages = [m for start in range(0, len(stream), size) for m in framer.feed(stream[start:start + size])]
        assert [m.cseq[0] for m in messages] == [101, 102]
        assert all(len(sip.body_parts(m)) == 2 for m in messages)


def test_a_stream_whose_content_length_has_thousands_of_digits_is_refused_without_int():
    with pytest.raises(SipMessageError, match="5000 digits") as caught:
        sip.StreamFramer().feed(re.sub(rb"Content-Length: \d+", b"Content-Length: " + b"9" * 5000, siprec_invite()))
    assert caught.value.status == 413


def test_a_stream_without_content_length_or_over_the_limit_is_refused():
    without = siprec_invite().replace(b"Content-Length:", b"X-Length:")
    with pytest.raises(SipMessageError, match="Content-Length is required"):
        sip.StreamFramer().feed(without)
    with pytest.raises(SipMessageError) as caught:
        sip.StreamFramer().feed(b"INVITE sip:x SIP/2.0\r\n" + b"X: y\r\n" * 20000)
    assert caught.value.status == 413


def test_a_response_copies_the_routing_of_its_request_and_adds_our_tag():
    request = sip.parse(siprec_invite())
    reply = sip.response(request, 200, to_tag="srs-1", headers=[("Contact", "<sip:srs@192.0.2.10>;+sip.srs")],
                         body=b"v=0\r\n")
    parsed = sip.parse(reply.to_bytes())
    assert parsed.status == 200 and parsed.reason == "OK"
    assert parsed.header_values("Via") == request.header_values("Via")
    assert parsed.header_values("Record-Route") == ["<sip:192.0.2.1;lr>"]
    assert sip.header_params(parsed.header("To"))["tag"] == "srs-1"
    assert parsed.header("From") == request.header("From") and parsed.cseq == (101, "INVITE")
    assert parsed.body == b"v=0\r\n" and parsed.header("Content-Length") == "5"
    trying = sip.parse(sip.response(request, 100, to_tag="srs-1").to_bytes())
    assert "tag" not in sip.header_params(trying.header("To")) and not trying.header_values("Record-Route")


def test_the_answer_records_g711_streams_recvonly_and_declines_the_rest():
    offer = parse_sdp((SDP + "m=video 12250 RTP/AVP 96\na=rtpmap:96 H264/90000\n"
                       "m=audio 12260 RTP/AVP 18\na=rtpmap:18 G729/8000\n").encode())
    chosen = choose_streams(offer)
    assert chosen == [(0, 0), (1, 8)]
    accepted = [AcceptedStream(index, offer.streams[index].label, 40000 + 2 * n, payload_type)
                for n, (index, payload_type) in enumerate(chosen)]
    reply = parse_sdp(answer(offer, "192.0.2.10", accepted, 7))
    assert [(s.media, s.port, s.payload_types, s.direction, s.label) for s in reply.streams] == [
        ("audio", 40000, [0], "recvonly", "1"), ("audio", 40002, [8], "recvonly", "2"),
        ("video", 0, [96], "sendrecv", None), ("audio", 0, [18], "sendrecv", None)]
    assert reply.address == "192.0.2.10"
    assert offer.streams[0].address == "198.51.100.1" and offer.streams[0].direction == "sendonly"


def test_a_dynamic_payload_type_named_pcmu_is_taken_and_a_16k_one_is_not():
    offer = parse_sdp(b"v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 5004 RTP/AVP 96 97\r\na=rtpmap:96 PCMU/16000\r\n"
                      b"a=rtpmap:97 PCMA/8000\r\n")
    assert choose_streams(offer) == [(0, 97)]


@pytest.mark.parametrize("parser, body, words", [
    (parse_sdp, b"m=audio 5004 RTP/AVP 0\r\n", "no v=0"),
    (parse_sdp, b"v=0\r\nc=IN IP4\r\n", "connection line"),
    (parse_sdp, b"v=0\r\nm=audio port RTP/AVP 0\r\n", "media line"),
    (parse_sdp, b"v=0\r\nthis is not sdp\r\n", "malformed SDP line"),
    (parse_metadata, b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa">]><recording>&a;</recording>', "DOCTYPE"),
    (parse_metadata, b"<recording><participant></recording>", "not well-formed"),
    (parse_metadata, b"<session/>", "not <recording>"),
    (parse_metadata, b"<recording><participant/></recording>", "participant_id"),
])
def test_malformed_sdp_and_metadata_are_refused(parser, body, words):
    with pytest.raises(SipMessageError, match=words):
        parser(body)


@pytest.mark.parametrize("media, words", [
    ("audio 99999 RTP/AVP 0", "SDP media port 99999 is outside 1-65535"),
    ("audio 65536 RTP/AVP 0", "SDP media port 65536 is outside 1-65535"),
    ("audio " + "9" * 5000 + " RTP/AVP 0", "SDP media port 9{20} is outside"),
    ("audio 65534/2 RTP/AVP 0", "SDP media ports 65534/2 are not a count"),  # RTP on 65534 and 65536
    ("audio 6000/0 RTP/AVP 0", "SDP media ports 6000/0 are not a count"),
    ("audio -1 RTP/AVP 0", "malformed SDP media line"),
    ("audio \u0661\u0662 RTP/AVP 0", "malformed SDP media line"),
])
def test_an_sdp_port_outside_1_to_65535_is_refused_with_400(media, words):
    with pytest.raises(SipMessageError, match=words) as caught:
        parse_sdp(f"v=0\r\nc=IN IP4 10.0.0.1\r\nm={media}\r\n".encode())
    assert caught.value.status == 400


def test_port_0_still_declines_a_stream_and_the_edges_of_the_range_are_taken():
    offer = parse_sdp(b"v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 0 RTP/AVP 0\r\nm=audio 65535 RTP/AVP 0\r\n"
                      b"m=audio 1 RTP/AVP 8\r\nm=audio 65532/2 RTP/AVP 0\r\n")
    assert [stream.port for stream in offer.streams] == [0, 65535, 1, 65532]
    assert choose_streams(offer) == [(1, 0), (2, 8), (3, 0)]  # the declined stream is not recorded


def test_numbers_that_are_not_ascii_or_too_long_are_ignored_not_a_crash():
    """str.isdigit() takes '\u00b2', which int() refuses; int() refuses 5,000 digits: neither may be a 500."""
    offer = parse_sdp(("v=0\r\nm=audio 5004 RTP/AVP \u00b2 " + "9" * 5000 + " 0\r\na=rtpmap:\u00b2 PCMU/8000\r\n"
                       "a=rtpmap:" + "9" * 5000 + " PCMA/8000\r\n").encode())
    assert offer.streams[0].payload_types == [0] and offer.streams[0].rtpmap == {}


def test_cisco_built_in_bridge_legs_are_recognised_from_the_from_uri():
    near = cisco_leg("<sip:2000@ucm1;x-nearend;x-refci=ci2;x-nearenddevice=SEPB;x-farendrefci=ci1;"
                     "x-farenddevice=SEPA;x-farendaddr=1000>;tag=1")
    far = cisco_leg("<sip:2000@ucm1;x-farend;x-refci=ci2;x-nearenddevice=SEPB;x-farendrefci=ci1;"
                    "x-farendaddr=1000>;tag=2")
    assert near.refci == far.refci == "ci2" and near.near_end and not far.near_end
    assert near.far_end_address == "1000" and near.far_end_refci == "ci1"
    assert cisco_leg("<sip:src@198.51.100.1>;tag=35e195d2") is None
    assert cisco_leg("sip:2000@ucm1;x-nearend;x-refci=ci2") is None  # without <...> these are header parameters


TRUNKS = ["cube: source=10.0.0.5 agent=label:2", "sbc: source=10.0.1.0/24,2001:db8::/32 agent=aor:^sip:[0-9]{4}@",
          "avaya: source=10.0.2.7 agent=second"]


@pytest.mark.parametrize("source, metadata, agent", [
    ("10.0.0.5", METADATA, 1),          # by label: the stream labelled 2
    ("10.0.1.44", METADATA, 0),         # by address: sip:2001@ sends stream 1
    ("2001:db8::9", METADATA_VARIANT, 0),
    ("10.0.2.7", METADATA, 1),          # by m-line order
    ("192.0.2.99", METADATA, 0),        # no trunk: the first stream is the agent's
])
def test_trunk_rules_say_which_stream_is_the_agent(source, metadata, agent):
    rules = parse_trunks(TRUNKS)
    assert agent_stream(["1", "2"], parse_metadata(metadata.encode()), trunk_for(rules, source)) == agent


def test_an_address_rule_follows_the_sender_whatever_the_stream_order():
    metadata = parse_metadata(METADATA.encode())
    by_address, nobody = parse_trunks(["sbc: source=10.0.1.0/24 agent=aor:^sip:[0-9]{4}@",
                                       "other: source=10.0.3.1 agent=aor:^sip:agent-"])
    assert agent_stream(["2", "1"], metadata, by_address) == 1  # sip:2001@ sends the stream labelled 1
    assert agent_stream(["2", "1"], metadata, nobody) == 0  # matches nobody: the first stream


@pytest.mark.parametrize("entry, words", [
    ("no colon here", "must start with 'NAME:'"),
    ("cube: agent=label:1", "needs source="),
    ("cube: source=10.0.0.300", "does not appear to be an IPv4 or IPv6 network"),
    ("cube: source=10.0.0.5 agent=loudest", "must be label:LABEL, aor:REGEX, first or second"),
    ("cube: source=10.0.0.5 agent=aor:([", "not a valid pattern"),
    ("cube: source=10.0.0.5 colour=blue", "is not source=... or agent=..."),
])
def test_malformed_trunk_rules_name_the_key_and_the_trunk(entry, words):
    with pytest.raises(ConfigError, match="siprec.trunks") as caught:
        parse_trunks([entry])
    assert words in str(caught.value)


def test_a_trunk_named_twice_is_refused():
    with pytest.raises(ConfigError, match="named twice"):
        parse_trunks(["cube: source=10.0.0.5", "cube: source=10.0.0.6"])


@pytest.mark.parametrize("settings, message", [
    ({"tls_listen": "127.0.0.1:5061"}, "siprec.tls_listen: needs siprec.tls_cert_file"),
    ({"allowed_sources": "10.0.0.0/33"}, "siprec.allowed_sources: '10.0.0.0/33'"),
    ({"codecs": "G729"}, "siprec.codecs: PCMU and/or PCMA"),
    ({"trunks": "cube source=192.0.2.1"}, "siprec.trunks: 'cube source=192.0.2.1' must start with 'NAME:'"),
    ({"rtp_port_min": "40000", "rtp_port_max": "40001"}, "siprec.rtp_port_max: the range 40000-40001"),
    ({"listen": "nowhere"}, "siprec.listen: must be HOST:PORT"),
    ({"listen": ""}, "siprec.listen: set listen or tls_listen"),
    ({"rtp_timeout_s": "0"}, "siprec.rtp_timeout_s: must be between"),
])
def test_siprec_config_is_validated_naming_the_key(settings, message):
    environ = {f"AFTERCALL_SIPREC__{key.upper()}": value for key, value in settings.items()}
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, environ)


def test_an_sbcs_long_names_are_cut_to_what_ingest_always_takes():
    """ingest refuses a metadata field over ingest.max_metadata_chars (64 at least): a recording must not be lost to
    an SBC's 300-character display name."""
    from aftercall.siprec.signalling import _MAX_METADATA_CHARS, _call_metadata

    long = METADATA.replace("<name>Agent Smith</name>", f"<name>{'A' * 300}</name>")
    call_metadata = _call_metadata(parse_metadata(long.encode()), "1", "2")
    assert call_metadata.agent_id == "A" * _MAX_METADATA_CHARS == "A" * 64
    assert call_metadata.ani == "+441632960123"

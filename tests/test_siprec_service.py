"""`aftercall serve siprec` in process: the real SIPREC server in front of the real ingest and pipeline, driven by
a test client that speaks SIP and RTP over real loopback sockets (tests/sip_peer.py). The audio ingest stores is
compared with what was sent, byte for byte (G.711 passes through untouched)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import socket
import ssl
import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from aftercall.app import SERVICES, start_appliance, start_recorder
from aftercall.config import Config
from aftercall.core.audio import read_wav
from aftercall.evaluation.bench_siprec import rtp_packets
from aftercall.ingest.config import IngestConfig
from aftercall.ingest.spool import StreamSpool
from aftercall.pipeline import Pipeline
from aftercall.siprec import sip
from aftercall.siprec.config import SiprecConfig
from aftercall.summarise.taxonomy import load_taxonomy
from sip_peer import METADATA, Dialog, SipClient, answered_ports, multipart, sdp, send_paced


@pytest.fixture(scope="module")
def pipeline(summariser, transcriber):
    return Pipeline(Config(), load_taxonomy(), summariser, transcriber_factory=lambda: transcriber)


@pytest.fixture
def stored_audio(monkeypatch) -> dict[tuple[str, int], bytes]:
    """What ingest has on disk for each (call id, channel) once the call is handed over: the wire bytes, read back
    from its sealed spool (a call recognised live is never read back whole)."""
    stored: dict[tuple[str, int], bytes] = {}
    finish = StreamSpool.finish

    def keep(spool):
        for channel, size in enumerate(spool.channel_bytes):
            path = spool._directory / f"ch{channel}.sealed"
            stored[(spool._directory.name, channel)] = spool._channels[channel].read(path, 0, size)
        finish(spool)

    monkeypatch.setattr(StreamSpool, "finish", keep)
    return stored


@pytest.fixture
async def recorder(tmp_path, pipeline):
    """`await recorder(**siprec_settings)`: ingest + summaries + the SIPREC server; stopped after the test."""
    started = []

    async def start(ingest: dict | None = None, **siprec):
        settings = {"listen": "127.0.0.1:0", "rtp_port_min": 42000, "rtp_port_max": 42999, **siprec}
        config = dataclasses.replace(Config(), siprec=SiprecConfig(**settings),
                                     ingest=dataclasses.replace(IngestConfig(), **(ingest or {})))
        appliance = await start_appliance(config, SERVICES, tmp_path / "data", "127.0.0.1:0", "",
                                          CollectorRegistry(), pipeline)
        server, _ = await start_recorder(config, appliance)
        started.append((appliance, server))
        return server

    yield start
    for appliance, server in started:
        await server.stop(5)
        await appliance.stop(5)


async def summarised(server, count: int = 1, timeout: float = 180) -> list[tuple[str, object]]:
    """The first `count` calls ingest has answered for: (call id, SummaryRecord or the error)."""
    deadline = time.monotonic() + timeout
    while len(server.completed) < count:
        assert time.monotonic() < deadline, f"{len(server.completed)} of {count} calls summarised"
        await asyncio.sleep(0.2)
    return server.completed


def sides(wav: bytes, seconds: float | None = None) -> tuple[bytes, bytes]:
    audio = read_wav(wav)
    end = len(audio.payload) if seconds is None else int(seconds * 8000) * 2
    return audio.payload[0:end:2], audio.payload[1:end:2]


async def in_thread(function, *args):
    return await asyncio.to_thread(function, *args)


@pytest.mark.e2e
async def test_a_siprec_call_is_recorded_bit_exact_and_summarised(recorder, stored_audio, demo_clip):
    # The site's rule: the agent is the participant with a 4-digit extension starting with 2.
    server = await recorder(trunks=("pbx: source=127.0.0.0/8 agent=aor:^sip:2[0-9]{3}@",))
    agent, customer = sides(demo_clip)
    client = SipClient(server.sip_port)
    dialog = Dialog(client)
    # The customer's stream comes first in the offer; the metadata says label 7 is sent by 2001, the agent.
    answer = await in_thread(dialog.invite, sdp([6000, 6002], labels=["9", "7"]), METADATA.format(agent=7, caller=9))
    assert answer.status == 200, answer
    assert "+sip.srs" in answer.header("Contact") and answer.header("Content-Type") == "application/sdp"
    customer_port, agent_port = answered_ports(answer)
    assert agent_port == customer_port + 2 and "a=recvonly" in answer.body.decode()
    await in_thread(send_paced, [(agent_port, rtp_packets(agent)), (customer_port, rtp_packets(customer, ssrc=9))])
    assert (await in_thread(dialog.bye)).status == 200
    (call_id, record), = await summarised(server)
    assert call_id.startswith("siprec-") and record.agent_id == "Agent Smith", record
    assert stored_audio[(call_id, 0)] == agent and stored_audio[(call_id, 1)] == customer
    summary = json.loads(record.summary_json)
    assert summary["transcript"] and {turn["speaker"] for turn in summary["transcript"]} == {"agent", "customer"}
    client.close()


def metric(server, name: str, **labels) -> float:
    """A sample's value from the metrics the server exports (0 when the series does not exist yet)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in generate_latest(server.metrics.registry).decode().splitlines():
        series, _, value = line.rpartition(" ")
        if series == (f"{name}{{{wanted}}}" if labels else name):
            return float(value)
    return 0.0


def warning(response: sip.SipMessage) -> str:
    return response.header("Warning") or ""


def with_extra_part(offer: str, disposition: str) -> tuple[str, bytes]:
    """A multipart body with the SDP and a part of a type we do not know (an SBC's vendor extension)."""
    body = "\r\n".join(["--b0undary", "Content-Type: application/sdp", "", offer.rstrip("\r\n"), "--b0undary",
                        "Content-Type: application/vnd.example.call-tags+json", f"Content-Disposition: {disposition}",
                        "", '{"tag": 1}', "--b0undary--", ""])
    return "multipart/mixed;boundary=b0undary", body.encode()


@pytest.mark.e2e
async def test_bad_requests_get_precise_responses_and_harm_no_other_call(recorder, stored_audio, demo_clip):
    server = await recorder()
    client = SipClient(server.sip_port)
    live = Dialog(client)  # a call being recorded while everything below goes wrong around it
    ports = answered_ports(await in_thread(live.invite, sdp([6000, 6002], labels=["1", "2"])))
    client.send(b"\x16\x03\x01 not SIP at all\r\n\r\n")  # dropped, counted, no crash
    await in_thread(Dialog(client).request, "OPTIONS")
    options = await in_thread(client.final)
    assert options.status == 200 and "siprec" in options.option_tags("Supported")
    assert metric(server, "aftercall_siprec_sip_requests_total", method="malformed") == 1
    await in_thread(Dialog(client).request, "REGISTER")
    refused = await in_thread(client.final)
    assert refused.status == 405 and "INVITE" in refused.header("Allow")
    assert (await in_thread(Dialog(client).bye)).status == 481  # no such dialog
    await in_thread(Dialog(client).request, "CANCEL")
    assert (await in_thread(client.final)).status == 481  # no such INVITE in progress
    unsupported = await in_thread(Dialog(client).invite, sdp([6000, 6002], labels=["1", "2"]), METADATA, True,
                                  [("Require", "100rel")])
    assert unsupported.status == 420 and unsupported.header("Unsupported") == "100rel"
    g722 = await in_thread(Dialog(client).invite, sdp([6000, 6002], 9, ["1", "2"]))
    assert g722.status == 488 and "PCMU or PCMA" in warning(g722)
    garbled = await in_thread(Dialog(client).invite, "v=0\r\nm=audio\r\n")
    assert garbled.status == 400 and "malformed SDP media line" in warning(garbled)
    no_offer = Dialog(client)
    await in_thread(no_offer.request, "INVITE", None, b"", [("Require", "siprec")])
    assert (await in_thread(client.final)).status == 488
    bad_xml = await in_thread(Dialog(client).invite, sdp([6000, 6002], labels=["1", "2"]),
                              '<!DOCTYPE r [<!ENTITY x "y">]><recording/>')
    assert bad_xml.status == 400
    required = Dialog(client)
    await in_thread(required.request, "INVITE", *with_extra_part(sdp([6000, 6002]), "session;handling=required"),
                    [("Require", "siprec")])
    assert (await in_thread(client.final)).status == 415
    assert metric(server, "aftercall_siprec_sip_responses_total", method="INVITE", status="488") == 2
    assert metric(server, "aftercall_siprec_recordings_active") == 1  # only the live call
    agent, customer = sides(demo_clip, 2)
    await in_thread(send_paced, [(ports[0], rtp_packets(agent)), (ports[1], rtp_packets(customer))])
    assert (await in_thread(live.bye)).status == 200
    (call_id, record), = await summarised(server)
    assert stored_audio[(call_id, 0)] == agent and stored_audio[(call_id, 1)] == customer
    client.close()


@pytest.mark.e2e
async def test_a_cseq_or_an_sdp_port_out_of_range_gets_400_and_the_call_goes_on(recorder, stored_audio, demo_clip):
    server = await recorder()
    offer = multipart(sdp([6000, 6002], labels=["1", "2"]), METADATA.format(agent=1, caller=2))
    for transport in ("udp", "tcp"):  # answered, not dropped; the TCP connection stays up for the next request
        client = await in_thread(SipClient, server.sip_port, transport)
        for number in (2 ** 31, 2 ** 32):  # RFC 3261 8.1.1.5: below 2**31
            await in_thread(Dialog(client).request, "INVITE", *offer, [("Require", "siprec")], number)
            refused = await in_thread(client.final)
            assert refused.status == 400 and f"CSeq number {number} is over 2147483647" in warning(refused)
            assert refused.header("CSeq") == f"{number} INVITE"
        await in_thread(Dialog(client).request, "OPTIONS", None, b"", (), 2 ** 31 - 1)
        assert (await in_thread(client.final)).status == 200
        client.close()
    assert metric(server, "aftercall_siprec_sip_requests_total", method="malformed") == 4
    assert metric(server, "aftercall_siprec_sip_responses_total", method="INVITE", status="400") == 4
    client = SipClient(server.sip_port)
    for ports in ([99999, 6002], [6000, 65536]):
        refused = await in_thread(Dialog(client).invite, sdp(ports, labels=["1", "2"]))
        assert refused.status == 400 and f"SDP media port {max(ports)} is outside 1-65535" in warning(refused)
    declined = Dialog(client)  # port 0 declines a stream, as before: the other one is recorded
    answer = await in_thread(declined.invite, sdp([0, 6002], labels=["1", "2"]))
    assert answer.status == 200 and answered_ports(answer)[0] == 0 < answered_ports(answer)[1]
    assert (await in_thread(declined.bye)).status == 200
    live = Dialog(client)
    ports = answered_ports(await in_thread(live.invite, sdp([6000, 6002], labels=["1", "2"])))
    moved = await in_thread(live.invite, sdp([6000, 70000], labels=["1", "2"], version=2))  # a re-INVITE
    assert moved.status == 400 and "SDP media port 70000" in warning(moved)
    await in_thread(live.request, "UPDATE", *multipart(sdp([99999, 6002], labels=["1", "2"], version=2), None))
    assert (await in_thread(client.final)).status == 400
    agent, customer = sides(demo_clip, 2)  # the refused offers changed nothing: same ports, both sides recorded
    await in_thread(send_paced, [(ports[0], rtp_packets(agent)), (ports[1], rtp_packets(customer))])
    assert (await in_thread(live.bye)).status == 200
    completed = await summarised(server, 2)  # the declined call's (no audio came) and the live one's
    (call_id, record), = [entry for entry in completed if live.call_id.split("@")[0] in entry[0]]
    assert not isinstance(record, Exception), record
    assert stored_audio[(call_id, 0)] == agent and stored_audio[(call_id, 1)] == customer
    client.close()


@pytest.mark.service
async def test_an_optional_body_part_we_do_not_know_is_ignored(recorder):
    server = await recorder()
    client = SipClient(server.sip_port)
    dialog = Dialog(client)
    await in_thread(dialog.request, "INVITE", *with_extra_part(sdp([6000, 6002], labels=["1", "2"]), "session"),
                    [("Require", "siprec")])
    answer = await in_thread(client.final)
    assert answer.status == 200 and len(answered_ports(answer)) == 2
    client.close()


@pytest.mark.e2e
async def test_rtp_faults_are_repaired_and_counted(recorder, stored_audio, demo_clip):
    server = await recorder()
    agent, customer = sides(demo_clip, 3)
    client = SipClient(server.sip_port)
    dialog = Dialog(client)
    content_type, body = multipart(sdp([6000, 6002], labels=["1", "2"]),
                                                            METADATA.format(agent=1, caller=2))
    await in_thread(dialog.request, "INVITE", content_type, body, [("Require", "siprec")])
    answer = await in_thread(client.final)
    again = await in_thread(client.final, 3)  # no ACK yet: the 200 OK is sent again
    assert answer.status == again.status == 200 and again.to_bytes() == answer.to_bytes()
    dialog.to_tag = sip.header_params(answer.header("To"))["tag"]
    await in_thread(dialog.request, "ACK", None, b"", (), dialog.cseq)
    agent_port, customer_port = answered_ports(answer)
    # The agent's stream: reordered pairs, every 10th packet twice, packet 40 lost, a new SSRC from packet 75 on
    # (a transfer), DTMF events, two malformed packets, and a stranger's packets from 127.0.0.2.
    packets = rtp_packets(agent[:1200 * 8])[:75] + rtp_packets(agent[1200 * 8:], ssrc=0x9999, first_sequence=5000,
                                                               first_timestamp=777)
    faulty, twice = [], 0
    for index, packet in enumerate(packets):
        if index == 40:
            continue
        faulty.append(packet)
        if index % 10 == 0:
            faulty.append(packet)
            twice += 1
        if index % 7 == 3:
            faulty[-1], faulty[-2] = faulty[-2], faulty[-1]
        if index == 20:
            faulty += [b"\x80\x65\x00\x01" + b"\x00" * 12, b"\x00\x01", b"\x40" + b"\x00" * 20]  # DTMF, short, v1
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind(("127.0.0.2", 0))
    stranger.sendto(rtp_packets(b"\x00" * 160)[0], ("127.0.0.1", agent_port))
    await in_thread(send_paced, [(agent_port, faulty), (customer_port, rtp_packets(customer, ssrc=2))])
    stranger.close()
    assert (await in_thread(dialog.bye)).status == 200
    (call_id, record), = await summarised(server)
    expected = bytearray(agent)
    expected[40 * 160: 41 * 160] = b"\xff" * 160  # the lost packet: silence of its length
    assert stored_audio[(call_id, 0)] == bytes(expected) and stored_audio[(call_id, 1)] == customer
    counts = {result: metric(server, "aftercall_siprec_rtp_packets_total", call_class="default", result=result)
              for result in ("recorded", "duplicate", "other_payload", "malformed", "unexpected_source")}
    assert counts == {"recorded": 2 * 150 - 1, "duplicate": twice, "other_payload": 1, "malformed": 2,
                      "unexpected_source": 1}
    assert metric(server, "aftercall_siprec_rtp_lost_seconds_total", call_class="default") == pytest.approx(0.02)
    assert metric(server, "aftercall_siprec_recordings_total", call_class="default", end="bye") == 1
    client.close()


@pytest.mark.e2e
async def test_a_call_that_never_sends_bye_ends_on_rtp_timeout(recorder, stored_audio, demo_clip):
    server = await recorder(rtp_timeout_s=1.5)
    agent, customer = sides(demo_clip, 2)
    client = SipClient(server.sip_port)
    dialog = Dialog(client)
    answer = await in_thread(dialog.invite, sdp([6000, 6002], labels=["1", "2"]))
    ports = answered_ports(answer)
    await in_thread(send_paced, [(ports[0], rtp_packets(agent)), (ports[1], rtp_packets(customer))])
    bye = await in_thread(client.receive, 10)  # the SRC went silent: we hang up
    assert bye.method == "BYE" and bye.call_id == dialog.call_id and "rtp_timeout" in bye.header("Reason")
    assert sip.header_params(bye.header("From"))["tag"] == dialog.to_tag
    client.send(sip.response(bye, 200))
    (call_id, record), = await summarised(server)
    assert stored_audio[(call_id, 0)] == agent and stored_audio[(call_id, 1)] == customer
    assert metric(server, "aftercall_siprec_recordings_total", call_class="default", end="rtp_timeout") == 1
    client.close()


@pytest.mark.e2e
async def test_hold_and_metadata_updates_keep_the_call_and_its_alignment(recorder, stored_audio, demo_clip):
    server = await recorder(rtp_timeout_s=2)
    agent, customer = sides(demo_clip, 2)
    client = await in_thread(SipClient, server.sip_port, "tcp")
    dialog = Dialog(client)
    answer = await in_thread(dialog.invite, sdp([6000, 6002], labels=["1", "2"]))
    ports = answered_ports(answer)
    await in_thread(send_paced, [(ports[0], rtp_packets(agent[:8000])), (ports[1], rtp_packets(customer[:8000]))])
    hold = await in_thread(dialog.invite, sdp([6000, 6002], labels=["1", "2"], direction="inactive", version=2))
    assert hold.status == 200 and answered_ports(hold) == ports  # same ports, same dialog
    partial = METADATA.format(agent=1, caller=2).replace("complete", "partial")
    await in_thread(dialog.request, "UPDATE", *multipart(
        sdp([6000, 6002], labels=["1", "2"], direction="inactive", version=3), partial))
    assert (await in_thread(client.final)).status == 200
    await asyncio.sleep(3.5)  # on hold longer than the RTP timeout: no BYE, silence on both sides
    resume = await in_thread(dialog.invite, sdp([6000, 6002], labels=["1", "2"], version=4))
    assert resume.status == 200
    await in_thread(send_paced, [(ports[0], rtp_packets(agent[8000:], first_sequence=50, first_timestamp=8000)),
                                 (ports[1], rtp_packets(customer[8000:], first_sequence=50, first_timestamp=8000))])
    assert (await in_thread(dialog.bye)).status == 200
    (call_id, _), = await summarised(server)
    stored = [stored_audio[(call_id, 0)], stored_audio[(call_id, 1)]]
    for channel, sent in zip(stored, (agent, customer)):
        assert channel.startswith(sent[:8000]) and channel.endswith(sent[8000:])
        gap = len(channel) - len(sent)
        assert 2.5 * 8000 < gap < 5 * 8000 and channel[8000: 8000 + gap] == b"\xff" * gap
    assert abs(len(stored[0]) - len(stored[1])) < 0.1 * 8000
    client.close()


@pytest.mark.e2e
async def test_cisco_built_in_bridge_legs_are_one_call(recorder, stored_audio, demo_clip):
    server = await recorder()
    agent, customer = sides(demo_clip, 3)
    client = SipClient(server.sip_port)
    legs = {}
    for end, audio in (("x-farend", customer), ("x-nearend", agent)):
        leg = Dialog(client, from_uri=f"<sip:2000@127.0.0.1;{end};x-refci=25123;x-farendrefci=25124;"
                                      "x-farendaddr=+441632960123>")
        answer = await in_thread(leg.invite, sdp([7000]), None, False)  # plain SIP: UCM sends no metadata
        assert answer.status == 200
        legs[end] = (leg, answered_ports(answer)[0], audio)
    await in_thread(send_paced, [(port, rtp_packets(audio)) for _, port, audio in legs.values()])
    for leg, _, _ in legs.values():
        assert (await in_thread(leg.bye)).status == 200
    (call_id, record), = await summarised(server)
    assert call_id == "cisco-25123"
    assert stored_audio[(call_id, 0)] == agent and stored_audio[(call_id, 1)] == customer
    client.close()


@pytest.mark.service
async def test_only_configured_sources_may_record(recorder):
    server = await recorder(allowed_sources=("127.0.0.2",))
    allowed = SipClient(server.sip_port, source="127.0.0.2")
    await in_thread(Dialog(allowed).request, "OPTIONS")
    assert (await in_thread(allowed.final)).status == 200
    stranger = SipClient(server.sip_port)
    await in_thread(Dialog(stranger).request, "OPTIONS")
    with pytest.raises(socket.timeout):  # UDP: dropped without a word
        await in_thread(stranger.final, 1)
    over_tcp = await in_thread(SipClient, server.sip_port, "tcp")
    await in_thread(Dialog(over_tcp).request, "OPTIONS")
    assert (await in_thread(over_tcp.final)).status == 403
    for client in (allowed, stranger, over_tcp):
        client.close()


@pytest.mark.e2e
async def test_tls_listener_requires_a_client_certificate(recorder, pki, demo_clip):
    server = await recorder(listen="", tls_listen="127.0.0.1:0", tls_cert_file=pki["server_cert"],
                            tls_key_file=pki["server_key"], tls_client_ca_file=pki["ca"])
    context = ssl.create_default_context(cafile=pki["ca"])
    context.load_cert_chain(pki["client_cert"], pki["client_key"])
    client = await in_thread(SipClient, server.tls_port, "tls", context)  # the handshake needs the loop free
    dialog = Dialog(client)
    answer = await in_thread(dialog.invite, sdp([6000, 6002], labels=["1", "2"]))
    assert answer.status == 200 and "transport=tls" in answer.header("Contact")
    agent, customer = sides(demo_clip, 1)
    ports = answered_ports(answer)
    await in_thread(send_paced, [(ports[0], rtp_packets(agent)), (ports[1], rtp_packets(customer))])
    assert (await in_thread(dialog.bye)).status == 200
    (_, record), = await summarised(server)
    assert not isinstance(record, Exception)
    anonymous = ssl.create_default_context(cafile=pki["ca"])
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        stranger = await in_thread(SipClient, server.tls_port, "tls", anonymous)
        await in_thread(Dialog(stranger).request, "OPTIONS")
        await in_thread(stranger.final, 5)
    client.close()


@pytest.mark.e2e
async def test_a_call_ingest_cannot_take_is_refused_not_lost(recorder, demo_clip):
    server = await recorder(ingest={"max_active_calls": 1})
    client = SipClient(server.sip_port)
    first = Dialog(client)
    assert (await in_thread(first.invite, sdp([6000, 6002], labels=["1", "2"]))).status == 200
    second = await in_thread(Dialog(client).invite, sdp([6010, 6012], labels=["1", "2"]))
    assert second.status == 503 and second.header("Retry-After") == "30"
    assert "RESOURCE_EXHAUSTED" in warning(second)
    agent, customer = sides(demo_clip, 1)
    ports = answered_ports((await in_thread(first.invite, sdp([6000, 6002], labels=["1", "2"], version=2))))
    await in_thread(send_paced, [(ports[0], rtp_packets(agent)), (ports[1], rtp_packets(customer))])
    assert (await in_thread(first.bye)).status == 200
    (_, record), = await summarised(server)
    assert not isinstance(record, Exception)
    client.close()


@pytest.mark.e2e
async def test_an_invite_flood_over_max_sessions_is_refused_and_the_admitted_calls_record(recorder, stored_audio,
                                                                                           demo_clip):
    limit, flood = 3, 12
    server = await recorder(max_sessions=limit)
    live = Dialog(SipClient(server.sip_port))  # a call in progress when the flood comes
    answers = {live.call_id: await in_thread(live.invite, sdp([6000, 6002], labels=["1", "2"]))}
    assert answers[live.call_id].status == 200
    dialogs = [Dialog(SipClient(server.sip_port)) for _ in range(flood)]
    for dialog in dialogs:  # all sent before the server (on this loop) reads any: they arrive as one burst
        dialog.send_invite(sdp([6000, 6002], labels=["1", "2"]))
    finals = await asyncio.gather(*(in_thread(dialog.answered) for dialog in dialogs))
    refused = [final for final in finals if final.status != 200]
    assert len(refused) == flood - (limit - 1), [final.status for final in finals]
    assert all(final.status == 503 and final.header("Retry-After") == "30"
               and "siprec.max_sessions reached" in warning(final) for final in refused)
    assert metric(server, "aftercall_siprec_recordings_active") == limit
    assert metric(server, "aftercall_siprec_sip_responses_total", method="INVITE", status="503") == len(refused)
    calls = [live] + [dialog for dialog, final in zip(dialogs, finals) if final.status == 200]
    answers |= {dialog.call_id: final for dialog, final in zip(dialogs, finals)}
    # Each admitted call carries its own 2 s of the clip, so audio that went to the wrong call would show.
    agent, customer = sides(demo_clip)
    expected, streams = {}, []
    for number, dialog in enumerate(calls):
        part = slice(number * 16000, (number + 1) * 16000)
        expected[dialog.call_id.split("@")[0]] = (agent[part], customer[part])
        ports = answered_ports(answers[dialog.call_id])
        streams += [(ports[0], rtp_packets(agent[part], ssrc=2 * number + 1)),
                    (ports[1], rtp_packets(customer[part], ssrc=2 * number + 2))]
    await in_thread(send_paced, streams)
    for dialog in calls:
        assert (await in_thread(dialog.bye)).status == 200
    completed = await summarised(server, limit)
    assert len(completed) == limit and not [record for _, record in completed if isinstance(record, Exception)]
    for call_id, _ in completed:
        sip_call_id, = [key for key in expected if key in call_id]
        assert (stored_audio[(call_id, 0)], stored_audio[(call_id, 1)]) == expected.pop(sip_call_id)
    # The limit counts recordings, not INVITEs: with the calls summarised there is room again.
    later = Dialog(SipClient(server.sip_port))
    assert (await in_thread(later.invite, sdp([6000, 6002], labels=["1", "2"]))).status == 200
    assert (await in_thread(later.bye)).status == 200
    for dialog in [*dialogs, live, later]:
        dialog.client.close()


@pytest.mark.e2e
async def test_shutdown_hangs_up_and_hands_the_audio_to_ingest(recorder, demo_clip):
    server = await recorder()
    agent, customer = sides(demo_clip, 1)
    client = SipClient(server.sip_port)
    dialog = Dialog(client)
    ports = answered_ports(await in_thread(dialog.invite, sdp([6000, 6002], labels=["1", "2"])))
    await in_thread(send_paced, [(ports[0], rtp_packets(agent)), (ports[1], rtp_packets(customer))])
    await server.stop(10)
    bye = await in_thread(client.receive, 5)
    assert bye.method == "BYE" and "shutdown" in bye.header("Reason")
    assert metric(server, "aftercall_siprec_recordings_total", call_class="default", end="shutdown") == 1
    assert not server.completed or not isinstance(server.completed[0][1], Exception)
    client.close()


@pytest.mark.service
async def test_refusals_keep_what_the_sbc_sent_out_of_logs_above_debug(recorder, caplog):
    """A refusal's reason may quote a header or an SDP line, with a caller's number in it: DEBUG only."""
    server = await recorder()
    caplog.set_level(logging.DEBUG, logger="aftercall.siprec")
    client = SipClient(server.sip_port)
    client.send(b"INVITE sip:srs@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5;branch=z9hG4bKx\r\n"
                b"From +441632960123\r\n\r\n")
    garbled = await in_thread(Dialog(client).invite, "v=0\r\nm=audio +441632960123\r\n")
    assert garbled.status == 400 and "441632960123" in warning(garbled)  # the SBC is told exactly why
    quoting = [record for record in caplog.records if "441632960123" in record.getMessage()]
    assert len(quoting) == 2 and all(record.levelno == logging.DEBUG for record in quoting)
    assert any("refused with 400" in record.getMessage() and record.levelno == logging.INFO
               for record in caplog.records)
    client.close()


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.e2e
@pytest.mark.skipif(not _ipv6_loopback(), reason="this machine has no IPv6 loopback")
async def test_sip_and_rtp_over_ipv6(recorder, stored_audio, demo_clip):
    server = await recorder(listen="[::1]:0")
    agent, customer = sides(demo_clip, 2)
    client = SipClient(server.sip_port, server="::1")
    dialog = Dialog(client)
    answer = await in_thread(dialog.invite, sdp([6000, 6002], labels=["1", "2"], address="::1"))
    assert answer.status == 200 and "c=IN IP6 ::1" in answer.body.decode() and "@[::1]:" in answer.header("Contact")
    ports = answered_ports(answer)
    await in_thread(send_paced, [(ports[0], rtp_packets(agent)), (ports[1], rtp_packets(customer))], 0.02, 1.0,
                    "::1")
    assert (await in_thread(dialog.bye)).status == 200
    (call_id, _), = await summarised(server)
    assert stored_audio[(call_id, 0)] == agent and stored_audio[(call_id, 1)] == customer
    client.close()

"""The SIPREC server against real telephony software on loopback: sipp (Debian's sip-tester) as the recording
client replaying two RTP streams from a pcap, kamailio as a record-routing proxy in the path, and PJSIP (pjsua2) as a
plain SIP user agent; plus `aftercall serve siprec` as a process. The audio ingest stores is compared with the
source, byte for byte where G.711 passes through untouched."""

from __future__ import annotations

import asyncio
import glob
import json
import os
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import pytest

from aftercall.core.audio import Encoding, decode_samples, read_wav
from aftercall.evaluation.bench_siprec import free_udp_port, run_sipp, sipp_scenario, sipp_unavailable
from aftercall.evaluation.bench_tools import demo_call
from heard import assert_heard
from sip_peer import Dialog, SipClient
from test_siprec_service import pipeline, recorder, sides, stored_audio, summarised  # noqa: F401 (fixtures)

pytestmark = pytest.mark.e2e
HERE = Path(__file__).parent / "siprec"


async def _sipp(target: str, wav: bytes, work: Path) -> None:
    """One SIPREC call from sipp to `target`, the WAV's two channels replayed from a pcap at real-time pace."""
    if reason := sipp_unavailable():
        pytest.skip(reason)
    done = await asyncio.to_thread(run_sipp, target, sipp_scenario(work, wav), 1, work, 120)
    errors = (work / "sipp_errors.log").read_text() if (work / "sipp_errors.log").exists() else ""
    assert done.returncode == 0, f"sipp failed ({done.returncode}):\n{done.stdout[-2000:]}\n{errors}"


async def test_sipp_records_a_siprec_call_bit_exact(recorder, stored_audio, demo_clip, tmp_path):
    server = await recorder()
    agent, customer = sides(demo_clip)
    await _sipp(f"127.0.0.1:{server.sip_port}", demo_clip, tmp_path)
    (call_id, record), = await summarised(server)
    assert stored_audio[(call_id, 0)] == agent and stored_audio[(call_id, 1)] == customer
    summary = json.loads(record.summary_json)
    assert {turn["speaker"] for turn in summary["transcript"]} == {"agent", "customer"}
    assert_heard(" ".join(turn["text"] for turn in summary["transcript"]), "bank", "how can i help")


async def test_sipp_through_a_kamailio_proxy(recorder, stored_audio, demo_clip, tmp_path):
    if shutil.which("kamailio") is None:
        pytest.skip("kamailio is not installed (make system-deps installs it)")
    modules = glob.glob("/usr/lib/*/kamailio/modules/tm.so")
    server = await recorder()
    proxy_port = free_udp_port()
    config = (HERE / "kamailio.cfg").read_text().replace("PROXY_PORT", str(proxy_port)) \
        .replace("SRS_PORT", str(server.sip_port)).replace("MODULES_DIR", os.path.dirname(modules[0]))
    (tmp_path / "kamailio.cfg").write_text(config)
    proxy = subprocess.Popen(["kamailio", "-f", str(tmp_path / "kamailio.cfg"), "-DD", "-E", "-m", "32", "-M", "4",
                              "-Y", str(tmp_path), "-w", str(tmp_path)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        await asyncio.sleep(1)
        assert proxy.poll() is None, proxy.stdout.read().decode()[-2000:]
        clip = demo_call(4)
        await _sipp(f"127.0.0.1:{proxy_port}", clip, tmp_path)
    finally:
        proxy.terminate()
        log = proxy.communicate(timeout=10)[0].decode()
    (call_id, record), = await summarised(server)
    agent, customer = sides(clip)
    assert stored_audio[(call_id, 0)] == agent and stored_audio[(call_id, 1)] == customer
    # The BYE reached us through the proxy: the route set our 200 OK carried worked.
    assert server.metrics.siprec_recordings.labels(call_class="default", end="bye")._value.get() == 1, log


async def test_a_plain_sip_call_from_pjsua2_is_recorded(recorder, stored_audio, demo_clip, tmp_path):
    pytest.importorskip("pjsua2", reason="pjsua2-python is a test dependency (make venv installs it)")
    server = await recorder()
    agent, _ = sides(demo_clip)
    # The PBX sends one mixed stream: the clip's two sides mixed down, as PCM16 for the user agent to encode.
    left, right = decode_samples(read_wav(demo_clip).payload, Encoding.MULAW, 2)
    mixed = (left.astype("int32") + right).clip(-32768, 32767)
    with wave.open(str(tmp_path / "mixed.wav"), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(mixed.astype("<i2").tobytes())
    seconds = len(agent) / 8000 + 1
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(HERE / "pjsua_call.py"), f"sip:recorder@127.0.0.1:{server.sip_port}",
        str(tmp_path / "mixed.wav"), str(seconds), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = (await asyncio.wait_for(process.communicate(), seconds + 60))[0].decode()
    assert process.returncode == 0 and "codec PCMU" in output, output[-3000:]
    (call_id, record), = await summarised(server)
    assert call_id.startswith("sip-") and (call_id, 1) not in stored_audio  # one mixed channel
    assert len(stored_audio[(call_id, 0)]) >= len(agent) * 0.9
    summary = json.loads(record.summary_json)
    assert_heard(" ".join(turn["text"] for turn in summary["transcript"]), "bank", "how can i help")


def test_serve_siprec_runs_as_its_own_process(tmp_path):
    """`aftercall serve siprec` alone: answers OPTIONS, refuses a call when its ingest is down (503, not lost),
    exports its metrics, stops on SIGTERM."""
    config = tmp_path / "aftercall.toml"
    config.write_text('[siprec]\nlisten = "127.0.0.1:0"\nmetrics_listen = "127.0.0.1:0"\n'
                      f'ingest_server = "127.0.0.1:{free_udp_port()}"\n')
    process = subprocess.Popen([str(Path(sys.executable).parent / "aftercall"), "serve", "siprec", "--config",
                                str(config), "--data-dir", str(tmp_path / "data")],
                               stderr=subprocess.PIPE, text=True)
    try:
        line = process.stderr.readline()
        assert "serving siprec on udp+tcp 127.0.0.1:" in line, line + process.stderr.read()
        sip_port = int(line.split("udp+tcp 127.0.0.1:")[1].split(",")[0])
        metrics_port = int(line.split("metrics on port ")[1].split()[0])
        client = SipClient(sip_port)
        Dialog(client).request("OPTIONS")
        assert client.final().status == 200
        refused = Dialog(client).invite("v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 6000 RTP/AVP 0\r\na=label:1\r\n")
        assert refused.status == 503 and "UNAVAILABLE" in refused.header("Warning")
        import urllib.request
        page = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        assert 'aftercall_siprec_sip_responses_total{method="INVITE",status="503"} 1.0' in page
        client.close()
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0, process.stderr.read()

"""SIPREC under load: a real `aftercall serve ingest summaries siprec` subprocess, and sipp (Debian's sip-tester) as
the SBC, starting N recording sessions within a second, each replaying the two sides of a call as RTP at real-time
pace from a pcap. Measured: did every packet arrive and every summary get made, and what the server's CPU and memory
were while the calls were live."""

from __future__ import annotations

import os
import re
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

from aftercall.core.audio import read_wav
from aftercall.evaluation.bench_served import running_server
from aftercall.evaluation.bench_tools import SOURCE_ROOT, PeakRss, cpu_seconds, say

SCENARIO = SOURCE_ROOT / "tests" / "siprec" / "siprec_client.xml"
PACKET_SAMPLES = 160  # 20 ms of G.711
_SIP_LINE = r"serving siprec on udp\+tcp (\S+:\d+)"


def rtp_packets(audio: bytes, payload_type: int = 0, ssrc: int = 0x1234, first_sequence: int = 0,
                first_timestamp: int = 0) -> list[bytes]:
    """20 ms RTP packets carrying G.711 `audio` (the first with the marker bit)."""
    packets = []
    for index, offset in enumerate(range(0, len(audio), PACKET_SAMPLES)):
        header = struct.pack("!BBHII", 0x80, payload_type | (0x80 if index == 0 else 0),
                             (first_sequence + index) % 65536, (first_timestamp + offset) % 2 ** 32, ssrc)
        packets.append(header + audio[offset: offset + PACKET_SAMPLES])
    return packets


def write_pcap(path: Path, streams: list[tuple[int, bytes]], payload_type: int = 0) -> None:
    """A pcap (Ethernet, IPv4, UDP) of one RTP stream per (destination port, G.711 audio), 20 ms apart: what sipp's
    `play_pcap_audio` replays, sending each packet to the answer's port plus its offset from the lowest port."""
    records = []
    for stream_index, (port, audio) in enumerate(streams):
        for index, packet in enumerate(rtp_packets(audio, payload_type, ssrc=0x1000 + stream_index)):
            records.append((index * 0.02 + stream_index * 0.0001, port, packet))
    records.sort()
    lowest = min(port for port, _ in streams)
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]  # pcap header, link type Ethernet
    for moment, port, payload in records:
        udp = struct.pack("!HHHH", 4000 + port - lowest, port, 8 + len(payload), 0) + payload
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, socket.inet_aton("127.0.0.1"),
                         socket.inet_aton("127.0.0.1")) + udp
        frame = b"\x00" * 12 + b"\x08\x00" + ip
        seconds = int(moment)
        out.append(struct.pack("<IIII", seconds, int((moment - seconds) * 1e6), len(frame), len(frame)) + frame)
    path.write_bytes(b"".join(out))


def sipp_scenario(folder: Path, wav: bytes, tail_ms: int = 600) -> Path:
    """The SIPREC client scenario for sipp, set to replay `wav`'s two channels (agent on label 1) and hang up
    `tail_ms` after the audio ends."""
    audio = read_wav(wav)
    write_pcap(folder / "call.pcap", [(6000, audio.payload[0::2]), (6002, audio.payload[1::2])])
    hold_ms = len(audio.payload) // 2 // 8 + tail_ms
    scenario = folder / "siprec_client.xml"
    scenario.write_text(SCENARIO.read_text().replace("PCAP_FILE", str(folder / "call.pcap"))
                        .replace("HOLD_MS", str(hold_ms)))
    return scenario


def free_udp_port() -> int:
    """A UDP port on loopback that nothing holds now (for sipp's media, a proxy)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def sipp_unavailable() -> str | None:
    if shutil.which("sipp") is None:
        return "sipp is not installed (make system-deps installs sip-tester)"
    if os.geteuid() != 0:
        return "sipp replays pcap RTP through a raw socket, which needs root"
    return None


def run_sipp(target: str, scenario: Path, calls: int, folder: Path, timeout_s: float) -> subprocess.CompletedProcess:
    """`calls` SIPREC sessions from one sipp, all started within a second; sipp exits 0 only if every one
    completed its scenario."""
    return subprocess.run(
        ["sipp", target, "-sf", str(scenario), "-m", str(calls), "-l", str(calls), "-r", str(calls), "-rp", "1000",
         "-i", "127.0.0.1", "-mi", "127.0.0.1", "-mp", str(free_udp_port()), "-timeout", f"{int(timeout_s)}s",
         "-nostdin", "-trace_err", "-error_file", str(folder / "sipp_errors.log")],
        cwd=folder, capture_output=True, text=True, timeout=timeout_s + 30)


def _total(samples: list, name: str, **labels) -> float:
    """The sum of a metric's samples whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(sample.value for sample in samples if sample.name == name and wanted <= set(sample.labels.items()))


def siprec_figures(wav: bytes, calls: int, scratch: Path) -> dict[str, Any]:
    if reason := sipp_unavailable():
        say(f"siprec: skipped ({reason})")
        return {"skipped": reason}
    scratch.mkdir(parents=True, exist_ok=True)
    config = scratch / "aftercall.toml"
    config.write_text(f'[siprec]\nlisten = "127.0.0.1:0"\nrtp_port_min = 44000\nrtp_port_max = 44999\n'
                      f'max_sessions = {max(200, calls)}\n')
    agent_side = read_wav(wav).payload[0::2]  # stereo G.711: one byte per sample per channel
    audio_s = len(agent_side) / 8000
    scenario = sipp_scenario(scratch, wav)
    with running_server(scratch, "ingest", "summaries", "siprec", "--config", str(config),
                        ready=_SIP_LINE) as server:
        sip_address = re.search(_SIP_LINE, server.log.read_text()).group(1)
        say(f"siprec: {calls} concurrent SIPREC calls of {audio_s:g} s from sipp at real-time pace")
        cpu_before, started = cpu_seconds(server.process.pid), time.monotonic()
        with PeakRss(server.process.pid) as memory:
            sipp = run_sipp(sip_address, scenario, calls, scratch, audio_s + 120)
        live_s, live_cpu = time.monotonic() - started, cpu_seconds(server.process.pid) - cpu_before
        successful = re.search(r"Successful call\s+\|\s+\d+\s+\|\s+(\d+)", sipp.stdout)
        # One core recognises about 20 s of audio a second: wait at most as long as the calls lasted, per call.
        give_up = time.monotonic() + 60 + calls * audio_s
        while _total(server.samples(), "aftercall_pipeline_calls_completed_total") < calls \
                and time.monotonic() < give_up:
            time.sleep(0.5)
        drain_s = time.monotonic() - started - live_s
        metrics = server.samples()
    packets = len(rtp_packets(agent_side))
    rtp = {result: int(_total(metrics, "aftercall_siprec_rtp_packets_total", result=result))
           for result in ("recorded", "duplicate", "late", "other_payload", "malformed", "unexpected_source")}
    jitter_count = _total(metrics, "aftercall_siprec_rtp_jitter_seconds_count")
    figures = {
        "calls": calls, "call_seconds": round(audio_s, 1), "sipp_exit": sipp.returncode,
        "sipp_successful": int(successful.group(1)) if successful else 0,
        "summaries": int(_total(metrics, "aftercall_pipeline_calls_completed_total")),
        "rtp_packets_sent": calls * 2 * packets, "rtp": rtp,
        "rtp_lost_s": round(_total(metrics, "aftercall_siprec_rtp_lost_seconds_total"), 3),
        "mean_jitter_ms": round(1000 * _total(metrics, "aftercall_siprec_rtp_jitter_seconds_sum")
                                / jitter_count, 2) if jitter_count else None,
        "recordings_ended": {sample.labels["end"]: int(sample.value) for sample in metrics
                             if sample.name == "aftercall_siprec_recordings_total"},
        "live_wall_s": round(live_s, 1), "live_server_cpu_s": round(live_cpu, 1),
        "live_server_cpu_share_of_one_core": round(live_cpu / live_s, 3),
        "live_server_peak_rss_mib": round(memory.peak_mib), "drain_after_last_call_s": round(drain_s, 1),
        "sipp_errors": (scratch / "sipp_errors.log").read_text()[-500:]
        if (scratch / "sipp_errors.log").exists() else ""}
    say(f"siprec: {figures['sipp_successful']}/{calls} sipp calls completed, {figures['summaries']} summaries, "
        f"{rtp['recorded']}/{figures['rtp_packets_sent']} RTP packets recorded, server CPU "
        f"{figures['live_server_cpu_share_of_one_core']:.0%} of a core while live, peak RSS "
        f"{figures['live_server_peak_rss_mib']} MiB")
    return figures

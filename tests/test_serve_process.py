"""`aftercall serve` and `aftercall stream` as real processes: TLS and mutual TLS, kill -9 and restart, SIGTERM,
and the metrics endpoint scraped by a real Prometheus."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import threading
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import grpc
import pytest

from aftercall.core.rpc import client_channel
from aftercall.v1 import ingest_pb2 as pb
from aftercall.v1 import ingest_pb2_grpc as pb_grpc
from aftercall.v1 import summaries_pb2 as spb
from aftercall.v1 import summaries_pb2_grpc as spb_grpc
from conftest import ROOT, free_port, run_cli, wav_header

pytestmark = pytest.mark.e2e
_READY = re.compile(r"serving .* on (\S+):(\d+)(?:, metrics on port (\d+))?")


class Server:
    """`aftercall serve` in a subprocess, bound to free ports it reports on stderr."""

    def __init__(self, data_dir: Path, *args: str, env: dict | None = None, listen: str = "127.0.0.1:0"):
        self.log = data_dir.parent / f"serve-{time.monotonic_ns()}.log"
        self._log_handle = open(self.log, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "aftercall", "serve", "--listen", listen, "--metrics-listen",
             "127.0.0.1:0", "--data-dir", str(data_dir), *args],
            stderr=self._log_handle, stdout=subprocess.DEVNULL, cwd=ROOT, env={**os.environ, **(env or {})})
        deadline = time.monotonic() + 60
        while not (match := _READY.search(self.log.read_text())):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"server did not start:\n{self.log.read_text()}")
            time.sleep(0.1)
        self.address = f"127.0.0.1:{match.group(2)}"
        self.metrics_port = int(match.group(3)) if match.group(3) else None

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        code = self.process.wait(timeout)
        self._log_handle.close()
        return code


@pytest.fixture
def servers(tmp_path):
    started: list[Server] = []

    def start(*args: str, data_dir: Path | None = None, env: dict | None = None) -> Server:
        server = Server(data_dir or tmp_path / "data", *args, env=env)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.stop(signal.SIGKILL)


def _call_messages(call_id: str, payload: bytes) -> list[pb.CallAudio]:
    """A whole stereo mu-law call as a PBX streams it: CallStart, 200 ms chunks, CallEnd."""
    messages = [pb.CallAudio(start=pb.CallStart(
        call_id=call_id, encoding=pb.AUDIO_ENCODING_MULAW, sample_rate_hz=8000,
        channel_roles=[pb.CHANNEL_ROLE_AGENT, pb.CHANNEL_ROLE_CUSTOMER]))]
    messages += [pb.CallAudio(chunk=pb.AudioChunk(sequence=i, audio=payload[o : o + 3200]))
                 for i, o in enumerate(range(0, len(payload), 3200))]
    messages.append(pb.CallAudio(end=pb.CallEnd()))
    return messages


def _wait_for_summary(address: str, call_id: str, timeout: float = 180, **tls) -> spb.SummaryRecord:
    deadline = time.monotonic() + timeout
    with client_channel(address, **tls) as channel:
        stub = spb_grpc.SummariesStub(channel)
        while True:
            try:
                return stub.Get(spb.GetSummaryRequest(call_id=call_id))
            except grpc.RpcError as error:
                if error.code() is not grpc.StatusCode.NOT_FOUND or time.monotonic() > deadline:
                    raise
            time.sleep(0.3)


def _assert_nowhere_in_the_clear(data_dir: Path, log: Path, secrets: tuple[bytes, ...]) -> None:
    files = [p for p in data_dir.rglob("*") if p.is_file()] + [log]
    assert any(p.suffix == ".sealed" or p.name.startswith("aftercall.db") for p in files)
    for path in files:
        content = path.read_bytes()
        for secret in secrets:
            assert secret not in content, (path, secret[:20])


def test_serve_and_stream_console_scripts_round_trip(servers, tmp_path, demo_clip):
    server = servers(env={"AFTERCALL_INGEST__INTERIM_INTERVAL_S": "3"})
    clip = tmp_path / "clip.wav"
    clip.write_bytes(demo_clip)
    result = run_cli("stream", clip, "--server", server.address, "--call-id", "cli-1", "--speed", "20",
                     "--chunk-ms", "40", "--interim", "--agent-id", "agent-4711")
    assert result.returncode == 0, result.stderr
    assert re.search(r"interim +\d+\.\ds (agent|customer): \w", result.stderr), result.stderr
    summary = json.loads(result.stdout)
    assert summary["call_id"] == "cli-1" and summary["audio_seconds"] == pytest.approx(14.0)
    assert "summary" in result.stderr and "after the end of the call" in result.stderr
    again = run_cli("stream", clip, "--server", server.address, "--call-id", "cli-1")
    assert again.returncode == 2 and "ALREADY_EXISTS" in again.stderr and "Traceback" not in again.stderr
    listed = run_cli("summaries", "list", "--server", server.address)
    assert [r["call_id"] for r in json.loads(listed.stdout)] == ["cli-1"]
    assert run_cli("summaries", "list", "--limit", "0", "--server", server.address).returncode == 2
    missing = run_cli("summaries", "get", "nope", "--server", server.address)
    assert missing.returncode == 2 and "NOT_FOUND" in missing.stderr
    assert server.stop(signal.SIGTERM) == 0
    # The vault: nothing said in the call, and no one's id, is anywhere on disk or in the log in the clear.
    said = [turn["text"][:16].encode() for turn in summary["transcript"] if len(turn["text"]) >= 16]
    written = [summary["narrative"][:24].encode(), *(e["value"].encode() for e in summary["entities"])]
    assert len(said) >= 2 and written
    _assert_nowhere_in_the_clear(tmp_path / "data", server.log, (*said, *written, b"agent-4711"))


def test_kill_9_then_restart_still_summarises_every_received_call(servers, tmp_path, demo_clip):
    data = tmp_path / "data"
    server = servers(data_dir=data)
    from aftercall.core.audio import read_wav

    payload = read_wav(demo_clip).payload
    received = []
    with client_channel(server.address) as channel:
        stub = pb_grpc.CallIngestStub(channel)
        for index in range(3):
            call_id = f"crash-{index}"
            events = stub.StreamCall(iter(_call_messages(call_id, payload)))
            for event in events:
                if event.WhichOneof("event") == "received":  # durable from here on
                    received.append(call_id)
                    events.cancel()
                    break
        stub.SubmitRecording(pb.SubmitRecordingRequest(call_id="crash-rec", wav=demo_clip))
    server.stop(signal.SIGKILL)
    assert received == ["crash-0", "crash-1", "crash-2"]
    # Spooled audio as it would sit in a per-channel file, and the submitted recording as it was sent.
    _assert_nowhere_in_the_clear(data, server.log, (payload[8000:8800:2], demo_clip[20000:20400]))
    restarted = servers(data_dir=data)
    for call_id in [*received, "crash-rec"]:
        record = _wait_for_summary(restarted.address, call_id)
        assert json.loads(record.summary_json)["call_id"] == call_id and record.complete
    assert "resuming" in restarted.log.read_text(), "the kill must have left calls unfinished"
    assert not any((data / "spool").iterdir()), "spooled audio is removed once its summary is stored"


def test_kill_9_mid_call_resumes_with_the_stretches_recognised_live(servers, tmp_path, summariser, transcriber):
    """A call killed while it streams, after part of it was recognised live: on restart it is summarised from its
    spooled audio, reusing the checkpointed stretches, with the transcript the batch path gives."""
    from aftercall.core.audio import parse_wav, read_wav
    from aftercall.config import Config
    from aftercall.evaluation.bench_tools import demo_call
    from aftercall.pipeline import Pipeline
    from aftercall.summarise.taxonomy import load_taxonomy

    data, wav = tmp_path / "data", demo_call(75)
    # Sent far faster than real time: the recogniser must not be judged behind (ingest.live_max_lag_s).
    server = servers(data_dir=data, env={"AFTERCALL_INGEST__LIVE_MAX_LAG_S": "86400"})

    def checkpointed() -> int:
        with sqlite3.connect(f"file:{data / 'aftercall.db'}?mode=ro", uri=True) as reader:
            return reader.execute("SELECT COUNT(*) FROM recognised_groups").fetchone()[0]

    def messages():
        yield from _call_messages("killed-live", read_wav(wav).payload)[:-1]  # every chunk, no CallEnd
        deadline = time.monotonic() + 120
        while not checkpointed() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2)  # the last chunks sent reach the spool (written unbuffered, as they arrive)
        server.stop(signal.SIGKILL)

    with client_channel(server.address) as channel, pytest.raises(grpc.RpcError):
        for _ in pb_grpc.CallIngestStub(channel).StreamCall(messages()):
            pass
    reused = checkpointed()
    assert reused >= 1, "a stretch was recognised and checkpointed before the kill"
    restarted = servers(data_dir=data, env={"AFTERCALL_LOGGING__LEVEL": "INFO"})
    record = _wait_for_summary(restarted.address, "killed-live")
    assert "reusing" in restarted.log.read_text()
    assert checkpointed() == 0, "the checkpoints go once the redacted transcript is stored"
    batch = Pipeline(Config(), load_taxonomy(), summariser, transcriber_factory=lambda: transcriber).run(
        parse_wav(wav), ("agent", "customer"))
    said = [re.findall(r"[a-z0-9\[\]]+", " ".join(t["text"] for t in summary["transcript"]).lower())
            for summary in (json.loads(record.summary_json), batch)]
    assert said[0] == said[1]


def test_sigterm_lets_the_call_in_flight_finish_then_exits(servers, demo_clip):
    server = servers(env={"AFTERCALL_SERVER__SHUTDOWN_GRACE_S": "60"})
    from aftercall.core.audio import read_wav

    payload = read_wav(demo_clip).payload
    received = threading.Event()
    events = []

    def call():
        messages = _call_messages("in-flight", payload)
        with client_channel(server.address) as channel:
            for event in pb_grpc.CallIngestStub(channel).StreamCall(iter(messages), timeout=120):
                events.append(event.WhichOneof("event"))
                if events[-1] == "received":
                    received.set()

    client = threading.Thread(target=call)
    client.start()
    assert received.wait(60)
    started = time.monotonic()
    assert server.stop(signal.SIGTERM, timeout=90) == 0
    client.join(10)
    assert events[-1] == "summary", events  # the call in flight was finished, not cut off
    assert time.monotonic() - started < 60
    assert "stopping: no new calls" in server.log.read_text()
    with pytest.raises(grpc.RpcError):  # and nothing listens any more
        with client_channel(server.address) as channel:
            spb_grpc.SummariesStub(channel).Get(spb.GetSummaryRequest(call_id="in-flight"), timeout=3)


# -- TLS ------------------------------------------------------------------------------------------------------------
def _tls_env(pki: dict, mutual: bool) -> dict:
    env = {"AFTERCALL_SERVER__TLS_CERT_FILE": pki["server_cert"], "AFTERCALL_SERVER__TLS_KEY_FILE": pki["server_key"]}
    if mutual:
        env["AFTERCALL_SERVER__TLS_CLIENT_CA_FILE"] = pki["ca"]
    return env


def test_tls_and_mutual_tls_on_grpc_and_metrics(servers, pki):
    server = servers(env=_tls_env(pki, mutual=True))
    identity = {"ca_file": pki["ca"], "cert_file": pki["client_cert"], "key_file": pki["client_key"]}
    quiet = bytes(8000 * 2 * 2)
    with client_channel(server.address, **identity) as channel:
        ingest = pb_grpc.CallIngestStub(channel)
        ingest.SubmitRecording(pb.SubmitRecordingRequest(
            call_id="tls-1", wait=True, wav=wav_header(1, 2, 8000, 16, len(quiet)) + quiet), timeout=60)
        # Under mutual TLS the certificate says who approves; the metadata cannot override it.
        approved = spb_grpc.SummariesStub(channel).Approve(
            spb.ApproveSummaryRequest(call_id="tls-1", expected_version=1), metadata=(("x-aftercall-user", "mallory"),))
        assert approved.approved_by == "supervisor.sam"
    for refused in ({"ca_file": pki["ca"]}, {}):  # no client certificate / no TLS at all
        with client_channel(server.address, **refused) as channel:
            with pytest.raises(grpc.RpcError) as caught:
                spb_grpc.SummariesStub(channel).Get(spb.GetSummaryRequest(call_id="tls-1"), timeout=5)
            assert caught.value.code() is grpc.StatusCode.UNAVAILABLE

    url = f"https://localhost:{server.metrics_port}/metrics"
    context = ssl.create_default_context(cafile=pki["ca"])
    context.load_cert_chain(pki["client_cert"], pki["client_key"])
    assert b"aftercall_ingest_calls_accepted_total" in urllib.request.urlopen(url, context=context, timeout=10).read()
    for refused in (ssl.create_default_context(cafile=pki["ca"]), None):  # no client certificate / plaintext
        with pytest.raises(OSError):
            if refused is None:
                urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read()
            else:
                urllib.request.urlopen(url, context=refused, timeout=5).read()


def test_the_console_is_served_beside_the_summaries_and_stops_on_sigterm(servers):
    server = servers("summaries", "console", env={"AFTERCALL_CONSOLE__LISTEN": "127.0.0.1:0"})
    deadline = time.monotonic() + 30
    while not (match := re.search(r"serving console on (http://127\.0\.0\.1:\d+/)", server.log.read_text())):
        assert time.monotonic() < deadline, server.log.read_text()
        time.sleep(0.1)
    with urllib.request.urlopen(match.group(1) + "queue") as response:  # single-user mode: no sign-in on loopback
        page = response.read().decode()
    assert response.status == 200 and "single-user mode" in page and "Nothing to review" in page
    assert server.stop() == 0


def test_misconfiguration_fails_fast_naming_the_key(pki, tmp_path):
    loose = tmp_path / "loose.key"
    shutil.copy(pki["server_key"], loose)
    loose.chmod(0o644)
    data = ["--data-dir", str(tmp_path / "d")]
    locked = tmp_path / "locked"
    locked.mkdir()
    with socket.socket() as taken, open(locked / "ingest.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as a running ingest holds it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        cases = {
            "server.tls_key_file": ({"AFTERCALL_SERVER__TLS_CERT_FILE": pki["server_cert"],
                                     "AFTERCALL_SERVER__TLS_KEY_FILE": str(loose)}, ["--listen", "127.0.0.1:0"]),
            "server.listen: 0.0.0.0:0 is not loopback and TLS is off": ({}, ["--listen", "0.0.0.0:0"]),
            "server.tls_cert_file: needs server.tls_key_file": (
                {"AFTERCALL_SERVER__TLS_CERT_FILE": pki["server_cert"]}, []),
            f"server.listen: cannot bind {busy}": ({}, ["--listen", busy]),
            f"server.metrics_listen: cannot bind {busy}": ({}, ["--listen", "127.0.0.1:0", "--metrics-listen", busy]),
            "server.data_dir: cannot use /proc/nowhere": ({}, ["--listen", "127.0.0.1:0", "--data-dir", "/proc/nowhere"]),
            "unknown service 'billing' (known: ingest, summaries, console, asr, siprec, triton)": ({}, ["billing"]),
            "another aftercall ingest is using": ({}, ["--listen", "127.0.0.1:0", "--data-dir", str(locked)]),
            "triton runs on its own": ({}, ["ingest", "triton"]),
            f"console.listen: cannot bind {busy}": ({"AFTERCALL_CONSOLE__LISTEN": busy},
                                                    ["summaries", "console", "--listen", "127.0.0.1:0"]),
            "crm.secret_file: the webhooks are signed": ({"AFTERCALL_CRM__ENDPOINTS": "https://crm.example/hook"},
                                                         ["summaries"]),
            "smtp.from_address": ({"AFTERCALL_SMTP__HOST": "relay.example"}, ["console"]),
            "no roles are set, so anyone who reaches 0.0.0.0:0": (
                {"AFTERCALL_CONSOLE__LISTEN": "0.0.0.0:0", "AFTERCALL_SERVER__ALLOW_PLAINTEXT_REMOTE": "true"},
                ["console"]),
        }
        for fragment, (env, args) in cases.items():
            args = ["serve", "--metrics-listen", "127.0.0.1:0", *data, *args]
            result = run_cli(*args, env=env, timeout=60)
            assert result.returncode == 2 and fragment in result.stderr, (fragment, result.stderr)
            assert "Traceback" not in result.stderr


# -- metrics ----------------------------------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian prometheus not installed (make test installs it)")
def test_real_prometheus_scrapes_every_stage(servers, tmp_path, demo_clip):
    server = servers()
    clip = tmp_path / "clip.wav"
    clip.write_bytes(demo_clip)
    assert run_cli("stream", clip, "--server", server.address, "--call-id", "m-1").returncode == 0
    scraped = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).read()
    lint = subprocess.run(["promtool", "check", "metrics"], input=scraped, capture_output=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr

    config = tmp_path / "prometheus.yml"
    config.write_text(f"global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: aftercall\n"
                      f"    static_configs: [{{targets: ['127.0.0.1:{server.metrics_port}']}}]\n")
    web_port = free_port()
    prometheus = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{web_port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        values = {}
        queries = {
            "completed": "aftercall_pipeline_calls_completed_total",
            "latency": "aftercall_pipeline_post_call_latency_seconds_count",
            "asr": 'aftercall_pipeline_stage_duration_seconds_count{stage="asr"}',
            "redactions": "sum(aftercall_redact_redactions_total)",
            "audio": "aftercall_ingest_audio_seconds_total",
        }
        deadline = time.monotonic() + 60
        while len(values) < len(queries) and time.monotonic() < deadline:
            for name, query in queries.items():
                values.update({name: v for v in [_instant(web_port, query)] if v is not None})
            time.sleep(0.5)
    finally:
        prometheus.terminate()
        prometheus.wait(10)
    assert values["completed"] == 1 and values["latency"] == 1 and values["asr"] == 1
    assert values["audio"] == pytest.approx(14.0) and values["redactions"] >= 1


def _instant(port: int, query: str) -> float | None:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    try:
        body = json.loads(urllib.request.urlopen(url, timeout=5).read())
    except OSError:
        return None
    result = body.get("data", {}).get("result", [])
    return float(result[0]["value"][1]) if result else None

"""The served path under load: a real `aftercall serve` subprocess, calls streamed to it at real-time pace by the
reference PBX client (what `aftercall stream --realtime` runs) from threads, concurrency level by level.

Post-call latency is what the client sees: from sending CallEnd to receiving the stored summary. The server's own
metrics (stage durations) and /proc (memory, CPU time) say where the time went.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from aftercall.evaluation.bench_tools import PeakRss, cpu_seconds, percentile, rss_mib, say

# Post-call latency above this multiple of a lone call's is where the server stopped keeping up.
SATURATION_FACTOR = 2.0


def console_script() -> str:
    """The `aftercall` entry point installed beside this interpreter (the one a site runs)."""
    return str(Path(sys.executable).with_name("aftercall"))


@dataclass
class Server:
    process: subprocess.Popen
    address: str
    metrics_url: str
    log: Path  # its stderr

    def samples(self) -> list:
        """Every sample the server's /metrics endpoint shows now (name, labels, value)."""
        from prometheus_client.parser import text_string_to_metric_families

        text = urllib.request.urlopen(self.metrics_url, timeout=10).read().decode()
        return [sample for family in text_string_to_metric_families(text) for sample in family.samples]

    def by_label(self, name: str, label: str) -> dict[str, float]:
        """The samples of metric `name` now, by the value of their `label`."""
        return {sample.labels[label]: sample.value for sample in self.samples() if sample.name == name}

    def live_outcomes(self) -> dict[str, float]:
        """Calls counted so far by how they were recognised (`aftercall_ingest_live_recognition_total`)."""
        return self.by_label("aftercall_ingest_live_recognition_total", "outcome")

    def stage_seconds(self) -> dict[str, float]:
        """Seconds spent so far in each pipeline stage (the server's `aftercall_pipeline_stage_duration_seconds`)."""
        return self.by_label("aftercall_pipeline_stage_duration_seconds_sum", "stage")


@contextlib.contextmanager
def running_server(scratch: Path, *arguments: str, ready: str = "",
                   settings: dict[str, str] | None = None) -> Iterator[Server]:
    """`aftercall serve [ARGUMENTS]` on free loopback ports, its data and key file in `scratch`, once it listens
    (and its stderr matches `ready`, when given); stopped (SIGTERM) at the end. `settings`: environment overrides
    of its configuration (`AFTERCALL_INGEST__MAX_LIVE_CALLS`)."""
    log = scratch / "serve.log"
    env = {**os.environ, **(settings or {}), "AFTERCALL_VAULT__KEY_FILE": str(scratch / "keys.json")}
    with open(log, "w") as stderr:
        process = subprocess.Popen([console_script(), "serve", *arguments, "--listen", "127.0.0.1:0",
                                    "--metrics-listen", "127.0.0.1:0", "--data-dir", str(scratch / "data")],
                                   stderr=stderr, stdout=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 120
        # The line `aftercall serve` prints once it listens names both ports.
        while not (match := re.search(r" on (\S+:\d+), metrics on port (\d+)", log.read_text())) \
                or not re.search(ready, log.read_text()):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"aftercall serve did not start:\n{log.read_text()}")
            time.sleep(0.1)
        yield Server(process, match.group(1), f"http://127.0.0.1:{match.group(2)}/metrics", log)
    finally:
        process.terminate()
        process.wait(60)


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_level(server: Server, wav: bytes, calls: int, spread_s: float, label: str = "level",
              busy_hour: bool = False) -> dict[str, Any]:
    """`calls` calls streamed at real-time pace, arriving evenly over `spread_s` seconds. `busy_hour`: each caller
    is a line that, once its call ends, streams another straight away, which lasts until every line's first call
    has ended and 10 s more: with `spread_s` the call's length, each measured (first) call ends while all the other
    lines are in a call, as in a contact centre's busy hour."""
    from aftercall.core.rpc import client_channel
    from aftercall.evaluation.bench_tools import demo_call
    from aftercall.ingest.client import stream_call

    results: list[tuple[float, float, float]] = []  # (hang-up, summary received, audio seconds), monotonic
    errors: list[str] = []
    lock = threading.Lock()

    def one(index: int) -> None:
        time.sleep(index * spread_s / calls)
        try:
            with client_channel(server.address) as channel:
                result = stream_call(channel, wav, f"{label}{calls}-{index}", speed=1.0)
            received = time.monotonic()
            with lock:
                results.append((received - result.post_call_latency_s, received, result.audio_seconds))
            if busy_hour:
                with client_channel(server.address) as channel:
                    stream_call(channel, demo_call((calls - 1 - index) * spread_s / calls + 10.0),
                                f"{label}{calls}-{index}-next", speed=1.0)
        except Exception as exc:  # noqa: BLE001 - a failed call is a result to report
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}")

    say(f"served: {calls} concurrent call(s) at real-time pace{', busy hour' if busy_hour else ''}")
    stages_before, server_cpu, client_cpu = server.stage_seconds(), cpu_seconds(server.process.pid), _cpu_self()
    started = time.monotonic()
    with PeakRss(server.process.pid) as memory:
        threads = [threading.Thread(target=one, args=(index,)) for index in range(calls)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    wall = time.monotonic() - started
    stages_after = server.stage_seconds()
    latencies = [received - hung_up for hung_up, received, _ in results]
    audio = sum(seconds for *_, seconds in results)
    level = {"calls": calls, "completed": len(results), "failed": len(errors), "errors": errors[:3],
             "wall_s": round(wall, 1), "audio_s": round(audio, 1),
             "throughput_audio_s_per_s": round(audio / wall, 2),
             "server_peak_rss_mib": round(memory.peak_mib),
             "server_cpu_s": round(cpu_seconds(server.process.pid) - server_cpu, 1),
             "client_cpu_s": round(_cpu_self() - client_cpu, 1),
             "stage_busy_s": {stage: round(stages_after[stage] - stages_before.get(stage, 0.0), 2)
                              for stage in stages_after}}
    if results:
        # From the first hang-up to the last summary the server only works through calls that have ended: under
        # saturation that is its capacity, in seconds of call audio per second.
        drain = max(received for _, received, _ in results) - min(hung_up for hung_up, _, _ in results)
        level.update({f"p{q}_s": round(percentile(latencies, q / 100), 2) for q in (50, 95, 99)})
        level.update({"max_s": round(max(latencies), 2), "drain_x_real_time": round(audio / drain, 1)})
    say(f"served: {calls} concurrent: p50 {level.get('p50_s')} s, p95 {level.get('p95_s')} s, {len(errors)} failed, "
        f"server peak RSS {level['server_peak_rss_mib']} MiB")
    return level


def console_stream(server: Server, wav_path: Path) -> dict[str, Any]:
    """One call through the real console script, `aftercall stream --realtime`, which prints its post-call latency
    (to 0.1 s): the threads above must measure the same thing."""
    say("served: 1 call through `aftercall stream --realtime`")
    done = subprocess.run([console_script(), "stream", str(wav_path), "--server", server.address, "--realtime",
                           "--call-id", "console-1"], capture_output=True, text=True, timeout=600)
    match = re.search(r"summary ([\d.]+) s after the end of the call", done.stderr)
    if done.returncode or not match:
        raise RuntimeError(f"aftercall stream failed (exit {done.returncode}): {done.stderr.strip()}")
    return {"post_call_latency_s": float(match.group(1)), "stderr": done.stderr.strip().splitlines()[-1]}


def stalled_streams(server: Server, wav: bytes, count: int) -> dict[str, Any]:
    """`count` streams that send one second of audio and then go quiet: what do they cost the server?"""
    from aftercall.core.audio import read_wav
    from aftercall.core.rpc import client_channel
    from aftercall.v1 import ingest_pb2 as pb
    from aftercall.v1 import ingest_pb2_grpc as pb_grpc

    audio = read_wav(wav)
    second = audio.payload[: audio.sample_rate * audio.channels]
    release = threading.Event()
    opened = threading.Semaphore(0)
    pid = server.process.pid
    before = rss_mib(pid)

    def one(index: int) -> None:
        def messages():
            yield pb.CallAudio(start=pb.CallStart(call_id=f"stall-{index}", encoding=pb.AUDIO_ENCODING_MULAW,
                                                  sample_rate_hz=audio.sample_rate, channel_roles=[1, 2]))
            yield pb.CallAudio(chunk=pb.AudioChunk(sequence=0, audio=second))
            opened.release()
            release.wait(300)
            yield pb.CallAudio(end=pb.CallEnd())

        with client_channel(server.address) as channel:
            for _ in pb_grpc.CallIngestStub(channel).StreamCall(messages()):
                pass

    threads = [threading.Thread(target=one, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for _ in range(count):
        opened.acquire()
    time.sleep(2)
    held = rss_mib(pid)
    release.set()
    for thread in threads:
        thread.join()
    say(f"served: {count} stalled streams: server RSS {before:.0f} -> {held:.0f} MiB")
    return {"streams": count, "rss_before_mib": round(before), "rss_held_mib": round(held),
            "per_stream_kib": round((held - before) * 1024 / count, 1)}


def saturation(levels: list[dict[str, Any]]) -> dict[str, Any]:
    """Where latency stops being flat, the capacity that implies, and the stage that used the time."""
    lone = levels[0]
    flat_limit = SATURATION_FACTOR * lone["p50_s"]
    saturated = next((level["calls"] for level in levels if level["p95_s"] > flat_limit), None)
    # The most loaded level measured the capacity best: the server was never idle while calls waited.
    busiest = levels[-1]
    busy: dict[str, float] = {}
    for level in levels:
        for stage, seconds in level["stage_busy_s"].items():
            busy[stage] = busy.get(stage, 0.0) + seconds
    bottleneck = max(busy, key=busy.get)
    return {"baseline_p50_s": lone["p50_s"], "flat_limit_p95_s": round(flat_limit, 2),
            "saturated_at_calls": saturated, "capacity_x_real_time": busiest["drain_x_real_time"],
            "capacity_measured_at_calls": busiest["calls"],
            "sustainable_realtime_calls": int(busiest["drain_x_real_time"]),
            "bottleneck_stage": bottleneck, "bottleneck_share": round(busy[bottleneck] / sum(busy.values()), 3),
            "stage_busy_s": {stage: round(seconds, 1) for stage, seconds in busy.items()}}


def served_figures(wav: bytes, levels: list[int], spread_s: float, stalled: int, scratch: Path) -> dict[str, Any]:
    """Every concurrency level, the console-script check and the stalled streams, on one server."""
    wav_path = scratch / "call.wav"
    wav_path.write_bytes(wav)
    with running_server(scratch) as server:
        say("served: warm-up call (loads the models)")
        run_level(server, wav, 1, 0.0, "warm-up")
        results = [run_level(server, wav, calls, spread_s) for calls in levels]
        console = console_stream(server, wav_path)
        stall = stalled_streams(server, wav, stalled)
        server_peak = rss_mib(server.process.pid, "VmHWM")
    figures = {"levels": results, "console_stream": console, "stalled_streams": stall,
               "server_peak_rss_mib": round(server_peak)}
    if all(level["completed"] for level in results):
        figures["saturation"] = saturation(results)
    return figures


def _recognised(server: Server, *level: Any, **options: Any) -> dict[str, Any]:
    """`run_level`, with how its calls (busy-hour lines' next calls included) were recognised: live, or, where the
    appliance fell behind, after they ended."""
    before = server.live_outcomes()
    figures = run_level(server, *level, **options)
    return {"recognised": {outcome: round(count - before.get(outcome, 0.0))
                           for outcome, count in server.live_outcomes().items()}, **figures}


def live_figures(lengths_s: tuple[float, ...], levels: tuple[int, ...], cut_off_s: float,
                 scratch: Path) -> dict[str, Any]:
    """Post-call latency against call length: calls streamed in real time and recognised while they last (the
    default), at each level (more than one call: a busy hour, see run_level); and, on a second server with
    `ingest.max_live_calls = 0`, one call at a time recognised after it ends, as before live recognition. Each call
    ends as the demo call does (goodbyes, then 0.8 s of silence); one more, of `cut_off_s`, is cut off
    mid-sentence (a dropped line: nothing of its last group could be recognised before the end)."""
    from aftercall.evaluation.bench_tools import demo_call

    runs = []
    for mode, settings, mode_levels in (("live", {}, levels),
                                        ("after_call", {"AFTERCALL_INGEST__MAX_LIVE_CALLS": "0"}, levels[:1])):
        directory = scratch / mode
        directory.mkdir()
        with running_server(directory, settings=settings) as server:
            # Long enough to load every model a call uses (the disposition embedder among them).
            say(f"live: {mode} server, warm-up call (loads the models)")
            run_level(server, demo_call(min(30.0, *lengths_s), ending=True), 1, 0.0, "warm-up")
            for seconds in lengths_s:
                wav = demo_call(seconds, ending=True)
                for calls in mode_levels:
                    say(f"live: {mode}, {seconds / 60:g} min call(s)")
                    level = _recognised(server, wav, calls, seconds, f"{mode}-{seconds:g}s-", busy_hour=calls > 1)
                    runs.append({"mode": mode, "minutes": round(seconds / 60, 2), "ending": "goodbye", **level})
            if mode == "live":
                say(f"live: {cut_off_s / 60:g} min call cut off mid-sentence")
                level = _recognised(server, demo_call(cut_off_s), 1, 0.0, f"cut-{cut_off_s:g}s-")
                runs.append({"mode": mode, "minutes": round(cut_off_s / 60, 2), "ending": "cut_off", **level})
    return {"runs": runs}

#!/usr/bin/env python3
"""Benchmark of the served path (`make bench`): post-call latency at 1, 10 and 50 concurrent streamed calls, the
server's peak memory, and the served path's overhead over the in-process pipeline on the same audio.

Every figure comes from one run on this machine; compare ratios, not seconds, across machines. Writes
reports/bench.md and reports/bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from aftercall.core.audio import parse_wav, read_wav  # noqa: E402
from aftercall.core.config import Config  # noqa: E402
from aftercall.core.rpc import client_channel  # noqa: E402
from aftercall.ingest.client import stream_call  # noqa: E402
from aftercall.pipeline import build_pipeline  # noqa: E402
from conftest import free_port, wav_header  # noqa: E402


def clip(seconds: float) -> bytes:
    wav = read_wav((ROOT / "samples" / "demo_call.wav").read_bytes())
    payload = wav.payload[: int(seconds * wav.sample_rate) * wav.channels]
    return wav_header(7, wav.channels, wav.sample_rate, 8, len(payload)) + payload


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def start_server(data_dir: Path) -> tuple[subprocess.Popen, str, Path]:
    log = data_dir.parent / "serve.log"
    process = subprocess.Popen([sys.executable, "-m", "aftercall", "serve", "--listen", "127.0.0.1:0",
                                "--metrics-listen", "127.0.0.1:0", "--data-dir", str(data_dir)],
                               stderr=open(log, "w"), stdout=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.monotonic() + 60
    while not (match := re.search(r"on (\S+:\d+)", log.read_text())):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"server did not start:\n{log.read_text()}")
        time.sleep(0.1)
    return process, match.group(1), log


def peak_rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def burst(address: str, wav: bytes, concurrency: int, label: str) -> dict:
    """`concurrency` calls streamed at once (as fast as flow control allows), so they all hang up together."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def one(index: int) -> None:
        try:
            with client_channel(address) as channel:
                result = stream_call(channel, wav, f"{label}-{index}", chunk_ms=100)
            with lock:
                latencies.append(result.post_call_latency_s)
        except Exception as exc:  # noqa: BLE001 - a failed call is a result to report
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}")

    started = time.monotonic()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for index, thread in enumerate(threads):
        thread.join()
    wall = time.monotonic() - started
    print(f"bench: {concurrency} concurrent: done in {wall:.1f} s, {len(errors)} error(s)", file=sys.stderr)
    return {"concurrency": concurrency, "calls": len(latencies), "errors": errors[:5], "wall_s": round(wall, 2),
            "p50_s": round(percentile(latencies, 0.5), 2) if latencies else None,
            "p95_s": round(percentile(latencies, 0.95), 2) if latencies else None,
            "max_s": round(max(latencies), 2) if latencies else None}


def current_rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


def stalled(address: str, wav: bytes, count: int, pid: int) -> dict:
    """`count` streams that send one second of audio and then go quiet: what do they cost the server?"""
    from aftercall.v1 import ingest_pb2 as pb
    from aftercall.v1 import ingest_pb2_grpc as pb_grpc

    audio = read_wav(wav)
    second = audio.payload[: audio.sample_rate * audio.channels]
    release = threading.Event()
    opened = threading.Semaphore(0)
    before = current_rss_mib(pid)

    def one(index: int) -> None:
        def messages():
            yield pb.CallAudio(start=pb.CallStart(call_id=f"stall-{index}", encoding=pb.AUDIO_ENCODING_MULAW,
                                                  sample_rate_hz=audio.sample_rate, channel_roles=[1, 2]))
            yield pb.CallAudio(chunk=pb.AudioChunk(sequence=0, audio=second))
            opened.release()
            release.wait(300)
            yield pb.CallAudio(end=pb.CallEnd())

        with client_channel(address) as channel:
            for _ in pb_grpc.CallIngestStub(channel).StreamCall(messages()):
                pass

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for _ in range(count):
        opened.acquire()
    time.sleep(2)
    held = current_rss_mib(pid)
    release.set()
    for thread in threads:
        thread.join()
    print(f"bench: {count} stalled streams: RSS {before:.0f} -> {held:.0f} MiB", file=sys.stderr)
    return {"streams": count, "rss_before_mib": round(before), "rss_held_mib": round(held),
            "per_stream_kib": round((held - before) * 1024 / count, 1)}


def triton_vs_in_process(scratch: Path, requests: int = 40, concurrency: int = 8) -> dict:
    """The summarisation stage alone, the same redacted transcript: in process vs through tritonserver."""
    import dataclasses
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    from aftercall.core.config import TritonConfig
    from aftercall.core.transcript import parse_transcript
    from aftercall.redact import Redactor
    from aftercall.summarise.summariser import EmbeddedSummariser
    from aftercall.summarise.taxonomy import load_taxonomy
    from aftercall.summarise.triton import TritonSummariser
    from aftercall.tritonserver import start_triton

    transcript = Redactor().redact_transcript(parse_transcript((ROOT / "samples" / "demo_call.json").read_bytes()))
    taxonomy = load_taxonomy()
    config = dataclasses.replace(Config(), triton=dataclasses.replace(TritonConfig(), http_port=free_port(),
                                                                       metrics_port=free_port()))
    triton = start_triton(config, f"127.0.0.1:{free_port()}", scratch / "triton")
    try:
        backends = {"in_process": EmbeddedSummariser(), "triton": TritonSummariser(TritonConfig(url=triton.grpc_address))}
        figures = {}
        for name, backend in backends.items():
            backend.summarise(transcript.transcript, taxonomy)  # warm
            started = time.perf_counter()
            for _ in range(requests):
                backend.summarise(transcript.transcript, taxonomy)
            sequential = (time.perf_counter() - started) / requests
            started = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                list(pool.map(lambda _: backend.summarise(transcript.transcript, taxonomy), range(requests)))
            figures[name] = {"latency_ms": round(sequential * 1000, 1),
                             "throughput_per_s": round(requests / (time.perf_counter() - started), 1)}
        text = urllib.request.urlopen(f"http://127.0.0.1:{config.triton.metrics_port}/metrics", timeout=10).read()
    finally:
        triton.stop()
    samples = {}
    for line in text.decode().splitlines():
        if line.startswith("nv_inference_") and 'model="call_summariser"' in line:
            samples[line.split("{")[0]] = float(line.split()[-1])
    success = samples.get("nv_inference_request_success", 0)
    figures["triton_metrics"] = {
        "requests": success, "executions": samples.get("nv_inference_exec_count", 0),
        "mean_batch": round(success / max(1.0, samples.get("nv_inference_exec_count", 1)), 2),
        "mean_queue_ms": round(samples.get("nv_inference_queue_duration_us", 0) / max(1.0, success) / 1000, 2),
        "mean_compute_ms": round(samples.get("nv_inference_compute_infer_duration_us", 0) / max(1.0, success) / 1000,
                                 2)}
    figures["latency_ratio"] = round(figures["triton"]["latency_ms"] / figures["in_process"]["latency_ms"], 2)
    print(f"bench: triton {figures}", file=sys.stderr)
    return figures


def llm_summariser(scratch: Path) -> dict:
    """call_summariser_llm on the CPU stand-in (SmolLM2-135M on llama.cpp) over the 12 regression calls: how long a
    summary takes, and how often the LLM's answer passes validation and grounding (the rest fall back)."""
    import dataclasses
    from collections import Counter

    from aftercall.core.config import TritonConfig
    from aftercall.core.transcript import parse_transcript
    from aftercall.redact import Redactor
    from aftercall.summarise.taxonomy import load_taxonomy
    from aftercall.summarise.triton import TritonSummariser
    from aftercall.tritonserver import start_triton

    config = dataclasses.replace(Config(), triton=dataclasses.replace(
        TritonConfig(), http_port=free_port(), metrics_port=free_port(), model_config_name="cpu",
        load_models=("call_summariser", "call_summariser_llm", "llm")))
    triton = start_triton(config, f"127.0.0.1:{free_port()}", scratch / "triton-llm")
    calls = sorted((ROOT / "tests" / "calls").glob("*.json"))
    outcomes: Counter = Counter()
    timings = {"call_summariser": [], "call_summariser_llm": []}
    try:
        for index, path in enumerate(calls, 1):
            transcript = Redactor().redact_transcript(parse_transcript(path.read_bytes())).transcript
            for model in timings:
                backend = TritonSummariser(TritonConfig(url=triton.grpc_address, model=model, timeout_s=600))
                started = time.perf_counter()
                summary = backend.summarise(transcript, load_taxonomy())
                timings[model].append(time.perf_counter() - started)
            fallback = summary["generator"]["fallback"]
            outcomes[re.sub(r"\d+", "N", fallback) if fallback else "LLM answer used"] += 1
            print(f"bench: llm {index}/{len(calls)} {path.stem}: {fallback or 'used'}", file=sys.stderr)
    finally:
        triton.stop()
    figures = {name: {"mean_s": round(sum(t) / len(t), 2), "max_s": round(max(t), 2)} for name, t in timings.items()}
    figures["calls"] = len(calls)
    figures["outcomes"] = dict(outcomes.most_common())
    figures["latency_ratio"] = round(figures["call_summariser_llm"]["mean_s"] / figures["call_summariser"]["mean_s"], 1)
    print(f"bench: llm {figures}", file=sys.stderr)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clip-seconds", type=float, default=30.0, help="audio per call (default 30 s of the demo)")
    parser.add_argument("--levels", default="1,10,50", help="concurrency levels (default 1,10,50)")
    parser.add_argument("--stalled", type=int, default=100, help="stalled streams to hold open (default 100)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports")
    args = parser.parse_args()
    wav = clip(args.clip_seconds)
    levels = [int(x) for x in args.levels.split(",")]

    # In-process baseline: the same pipeline `aftercall summarise` runs, warm, on the same audio.
    pipeline = build_pipeline(Config())
    audio = parse_wav(wav)
    pipeline.run(audio, ("agent", "customer"))
    started = time.perf_counter()
    pipeline.run(audio, ("agent", "customer"))
    in_process_s = time.perf_counter() - started
    print(f"bench: in-process pipeline {in_process_s:.2f} s for {audio.duration:.0f} s of audio", file=sys.stderr)

    with tempfile.TemporaryDirectory() as scratch:
        process, address, _ = start_server(Path(scratch) / "data")
        try:
            burst(address, wav, 1, "warm")  # load the models before measuring
            results = [burst(address, wav, level, f"c{level}") for level in levels]
            peak = peak_rss_mib(process.pid)
            stall = stalled(address, wav, args.stalled, process.pid)
        finally:
            process.terminate()
            process.wait(60)
        triton = triton_vs_in_process(Path(scratch))
        llm = llm_summariser(Path(scratch))
    single = next((r for r in results if r["concurrency"] == 1), None)
    report = {
        "machine": f"{os.cpu_count()} cores", "clip_seconds": args.clip_seconds,
        "in_process_pipeline_s": round(in_process_s, 2), "levels": results, "server_peak_rss_mib": round(peak),
        "served_over_in_process": round(single["p50_s"] / in_process_s, 2) if single and single["p50_s"] else None,
        "stalled_streams": stall,
        "summarisation_triton_vs_in_process": triton,
        "llm_summariser_cpu_stand_in": llm,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"# aftercall served-path benchmark ({report['machine']}, {args.clip_seconds:g} s stereo mu-law calls)", "",
        "Post-call latency: from the client sending CallEnd to receiving the stored summary. Calls in a burst are",
        "streamed at once and hang up together (the worst case for the queue).", "",
        "| concurrent calls | p50 (s) | p95 (s) | max (s) | burst wall (s) | errors |", "|---|---|---|---|---|---|",
        *[f"| {r['concurrency']} | {r['p50_s']} | {r['p95_s']} | {r['max_s']} | {r['wall_s']} | {len(r['errors'])} |"
          for r in results], "",
        f"- Server peak RSS: {report['server_peak_rss_mib']} MiB.",
        f"- In-process pipeline (what `aftercall summarise` runs), warm: {report['in_process_pipeline_s']} s; "
        f"served path at 1 call, p50: {single['p50_s'] if single else 'n/a'} s; ratio "
        f"**{report['served_over_in_process']}**.",
        f"- {stall['streams']} streams that sent 1 s of audio and stalled: server RSS {stall['rss_before_mib']} -> "
        f"{stall['rss_held_mib']} MiB ({stall['per_stream_kib']} KiB per open stream).", "",
        "Summarisation stage alone (the demo call's redacted transcript), in process vs through tritonserver:", "",
        "| path | latency (ms, one at a time) | throughput (/s, 8 clients) |", "|---|---|---|",
        *[f"| {name} | {triton[name]['latency_ms']} | {triton[name]['throughput_per_s']} |"
          for name in ("in_process", "triton")], "",
        f"- Latency ratio Triton / in process: **{triton['latency_ratio']}**. Triton's own metrics: "
        f"{triton['triton_metrics']['requests']:.0f} requests in {triton['triton_metrics']['executions']:.0f} "
        f"executions (mean batch {triton['triton_metrics']['mean_batch']}), mean queue "
        f"{triton['triton_metrics']['mean_queue_ms']} ms, mean compute {triton['triton_metrics']['mean_compute_ms']} ms.",
        "",
        f"LLM summariser on the CPU stand-in (SmolLM2-135M, llama.cpp, 2 threads), the {llm['calls']} regression calls:",
        "",
        "| model | mean (s) | max (s) |", "|---|---|---|",
        *[f"| {name} | {llm[name]['mean_s']} | {llm[name]['max_s']} |" for name in ("call_summariser",
                                                                              "call_summariser_llm")], "",
        f"- Ratio LLM / embedded: **{llm['latency_ratio']}**. Outcomes: "
        + "; ".join(f"{reason}: {count}" for reason, count in llm["outcomes"].items()) + ".",
        "",
    ]
    (args.out / "bench.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

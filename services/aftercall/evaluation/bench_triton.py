"""The summarisation stage through a real tritonserver (`aftercall.tritonserver.start_triton`) against the same
stage in process, and the LLM summariser on its CPU stand-in."""

from __future__ import annotations

import contextlib
import dataclasses
import re
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

from aftercall.evaluation.bench_tools import DEMO_JSON, SOURCE_ROOT, say
from aftercall.evaluation.scratch import free_port


@contextlib.contextmanager
def _tritonserver(scratch: Path, **settings) -> Iterator[tuple[Any, int]]:
    """tritonserver on free loopback ports; yields (the process, its metrics port)."""
    from aftercall.config import Config
    from aftercall.summarise.config import TritonConfig
    from aftercall.tritonserver import start_triton

    triton_config = dataclasses.replace(TritonConfig(), http_port=free_port(), metrics_port=free_port(), **settings)
    triton = start_triton(dataclasses.replace(Config(), triton=triton_config), f"127.0.0.1:{free_port()}", scratch)
    try:
        yield triton, triton_config.metrics_port
    finally:
        triton.stop()


def _redacted(path: Path):
    from aftercall.core.transcript import parse_transcript
    from aftercall.redact import Redactor

    return Redactor().redact_transcript(parse_transcript(path.read_bytes())).transcript


def triton_vs_in_process(scratch: Path, requests: int, concurrency: int = 8) -> dict[str, Any]:
    """The summarisation stage alone, the demo call's redacted transcript: in process vs through tritonserver, one
    request at a time (latency) and from `concurrency` clients (throughput)."""
    from aftercall.summarise.config import TritonConfig
    from aftercall.summarise.summariser import EmbeddedSummariser
    from aftercall.summarise.taxonomy import load_taxonomy
    from aftercall.summarise.triton import TritonSummariser

    transcript, taxonomy = _redacted(DEMO_JSON), load_taxonomy()
    say("triton: starting tritonserver (call_summariser)")
    with _tritonserver(scratch / "triton") as (triton, metrics_port):
        backends = {"in_process": EmbeddedSummariser(),
                    "triton": TritonSummariser(TritonConfig(url=triton.grpc_address))}
        figures: dict[str, Any] = {}
        for name, backend in backends.items():
            backend.summarise(transcript, taxonomy)  # warm
            started = time.perf_counter()
            for _ in range(requests):
                backend.summarise(transcript, taxonomy)
            sequential = (time.perf_counter() - started) / requests
            started = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                list(pool.map(lambda _: backend.summarise(transcript, taxonomy), range(requests)))
            figures[name] = {"latency_ms": round(sequential * 1000, 1),
                             "throughput_per_s": round(requests / (time.perf_counter() - started), 1)}
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    samples = {line.split("{")[0]: float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("nv_inference_") and 'model="call_summariser"' in line}
    success = samples.get("nv_inference_request_success", 0)
    executions = samples.get("nv_inference_exec_count", 0)
    figures.update({
        "requests_each": requests, "clients": concurrency,
        "triton_metrics": {
            "requests": success, "executions": executions, "mean_batch": round(success / max(1.0, executions), 2),
            "mean_queue_ms": round(samples.get("nv_inference_queue_duration_us", 0) / max(1.0, success) / 1000, 2),
            "mean_compute_ms": round(samples.get("nv_inference_compute_infer_duration_us", 0) / max(1.0, success)
                                     / 1000, 2)},
        "latency_ratio": round(figures["triton"]["latency_ms"] / figures["in_process"]["latency_ms"], 2),
        "throughput_ratio": round(figures["triton"]["throughput_per_s"] / figures["in_process"]["throughput_per_s"],
                                  2)})
    say(f"triton: latency {figures['triton']['latency_ms']} ms vs {figures['in_process']['latency_ms']} ms in process")
    return figures


def llm_summariser(scratch: Path) -> dict[str, Any]:
    """call_summariser_llm on the CPU stand-in (SmolLM2-135M on llama.cpp) over the regression calls: how long a
    summary takes, and how often the LLM's answer passes validation and grounding (the rest fall back)."""
    from aftercall.summarise.config import TritonConfig
    from aftercall.summarise.taxonomy import load_taxonomy
    from aftercall.summarise.triton import TritonSummariser

    calls = sorted((SOURCE_ROOT / "tests" / "calls").glob("*.json"))
    outcomes: Counter = Counter()
    timings: dict[str, list[float]] = {"call_summariser": [], "call_summariser_llm": []}
    say("llm: starting tritonserver (call_summariser, call_summariser_llm, llm on its CPU config)")
    with _tritonserver(scratch / "triton-llm", model_config_name="cpu",
                       load_models=("call_summariser", "call_summariser_llm", "llm")) as (triton, _):
        for index, path in enumerate(calls, 1):
            transcript = _redacted(path)
            for model in timings:
                backend = TritonSummariser(TritonConfig(url=triton.grpc_address, model=model, timeout_s=600))
                started = time.perf_counter()
                summary = backend.summarise(transcript, load_taxonomy())
                timings[model].append(time.perf_counter() - started)
            fallback = summary["generator"]["fallback"]
            outcomes[re.sub(r"\d+", "N", fallback) if fallback else "LLM answer used"] += 1
            say(f"llm: {index}/{len(calls)} {path.stem}: {fallback or 'LLM answer used'}")
    figures: dict[str, Any] = {name: {"mean_s": round(sum(t) / len(t), 2), "max_s": round(max(t), 2)}
                               for name, t in timings.items()}
    figures["calls"] = len(calls)
    figures["outcomes"] = dict(outcomes.most_common())
    figures["latency_ratio"] = round(figures["call_summariser_llm"]["mean_s"] / figures["call_summariser"]["mean_s"],
                                     1)
    return figures

"""A real tritonserver (from the nvidia-pytriton wheel) on model_repository/, and the Triton summariser backend."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from aftercall.config import Config
from aftercall.core.errors import BackendUnavailableError, UserError
from aftercall.core.transcript import Transcript, Turn, parse_transcript
from aftercall.redact import Redactor
from aftercall.summarise.config import TritonConfig
from aftercall.summarise.taxonomy import Disposition, load_taxonomy
from aftercall.summarise.triton import TritonSummariser, client_tls
from aftercall.tritonserver import start_triton
from conftest import DEMO_JSON, free_port, run_cli


@pytest.fixture(scope="module")
def triton(tmp_path_factory):
    """The CPU configuration with the LLM path: call_summariser (no CPU variant: its only config),
    call_summariser_llm and the llama.cpp stand-in for `llm` (both from configs/cpu.pbtxt)."""
    config = dataclasses.replace(Config(), triton=dataclasses.replace(
        TritonConfig(), http_port=free_port(), metrics_port=free_port(), model_config_name="cpu",
        load_models=("call_summariser", "call_summariser_llm", "llm")))
    process = start_triton(config, f"127.0.0.1:{free_port()}", tmp_path_factory.mktemp("triton"))
    yield process, config
    process.stop()


def triton_client(config: TritonConfig, url: str):
    """A synchronous client for what the tests do by hand (load, unload, statistics, raw requests)."""
    import tritonclient.grpc as grpcclient

    return grpcclient.InferenceServerClient(url, **client_tls(config))


@pytest.fixture(scope="module")
def redacted() -> Transcript:
    return Redactor().redact_transcript(parse_transcript(DEMO_JSON.read_bytes())).transcript


@pytest.mark.service
def test_triton_model_gives_the_embedded_summary(triton, redacted, summariser):
    process, _ = triton
    backend = TritonSummariser(TritonConfig(url=process.grpc_address))
    assert backend.summarise(redacted, load_taxonomy()) == summariser.summarise(redacted, load_taxonomy())
    site = (Disposition("FRAUD", "Fraud", "The customer's card was stolen or used for fraud"),
            Disposition("BILLING", "Billing", "A question about a bill"))
    assert backend.summarise(redacted, site)["disposition"]["code"] == "FRAUD"


@pytest.mark.service
def test_concurrent_requests_are_batched_and_a_bad_one_fails_alone(triton, redacted):
    process, config = triton
    backend = TritonSummariser(TritonConfig(url=process.grpc_address))
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: backend.summarise(redacted, load_taxonomy()), range(8)))
    assert all(r == results[0] for r in results)

    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = triton_client(config.triton, process.grpc_address)
    over_limit = json.dumps({"turns": [{"speaker": "agent", "text": "hi"}] * 5001}).encode()
    for document, message in ((b'{"turns": "not a list"}', '"turns" list'),
                              (over_limit, "more than transcript.max_turns = 5000"),
                              (b'{"turns": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply")):
        bad = grpcclient.InferInput("TRANSCRIPT_JSON", [1, 1], "BYTES")
        bad.set_data_from_numpy(np.array([[document]], dtype=np.object_))
        with pytest.raises(InferenceServerException, match=message) as refused:
            client.infer("call_summariser", [bad])
        assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(UserError, match="refused the transcript"):
        backend.summarise(Transcript((Turn("robot", "beep"),)), load_taxonomy())
    assert backend.summarise(redacted, load_taxonomy()) == results[0]  # the model is still serving

    assert successes(config, "call_summariser") >= 9
    statistics = client.get_inference_statistics("call_summariser", as_json=True)["model_stats"][0]
    assert max(int(b["batch_size"]) for b in statistics["batch_stats"]) > 1, "dynamic batching formed no batch"


def successes(config: Config, model: str) -> float:
    """Triton's own count of successful requests to a model, from its Prometheus endpoint."""
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{config.triton.metrics_port}/metrics", timeout=10).read()
    lines = [line for line in metrics.decode().splitlines()
             if line.startswith(f'nv_inference_request_success{{model="{model}"')]
    return float(lines[0].split()[-1]) if lines else 0.0


def llm_request(client, prompt: str, parameters: dict) -> str:
    """One request to the decoupled `llm` model, as the vLLM backend is asked: over a gRPC stream."""
    import queue

    import tritonclient.grpc as grpcclient

    answers: queue.Queue = queue.Queue()
    inputs = [grpcclient.InferInput("text_input", [1], "BYTES"), grpcclient.InferInput("stream", [1], "BOOL"),
              grpcclient.InferInput("sampling_parameters", [1], "BYTES"),
              grpcclient.InferInput("exclude_input_in_output", [1], "BOOL")]
    inputs[0].set_data_from_numpy(np.array([prompt.encode()], dtype=np.object_))
    inputs[1].set_data_from_numpy(np.array([False]))
    inputs[2].set_data_from_numpy(np.array([json.dumps(parameters).encode()], dtype=np.object_))
    inputs[3].set_data_from_numpy(np.array([True]))
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        client.async_stream_infer("llm", inputs)
        result, error = answers.get(timeout=120)
    finally:
        client.stop_stream()
    if error is not None:
        raise error
    return b"".join(result.as_numpy("text_output").reshape(-1)).decode()


@pytest.mark.service
def test_the_llm_stand_in_speaks_the_vllm_backend_io(triton):
    import jsonschema
    from tritonclient.utils import InferenceServerException

    process, config = triton
    client = triton_client(config.triton, process.grpc_address)
    schema = {"type": "object", "properties": {"mood": {"enum": ["negative", "neutral", "positive"]}},
              "required": ["mood"], "additionalProperties": False}
    prompt = "<|im_start|>user\nHow does 'I am furious' sound?<|im_end|>\n<|im_start|>assistant\n"
    text = llm_request(client, prompt, {"max_tokens": 20, "temperature": 0,
                                        "guided_decoding": json.dumps({"json": schema})})
    jsonschema.validate(json.loads(text), schema)
    with pytest.raises(InferenceServerException, match="sampling_parameters.best_of: not supported"):
        llm_request(client, prompt, {"best_of": 3})


SHORT_CALL = Transcript((
    Turn("agent", "Good morning, Northgate Bank, how can I help?"),
    Turn("customer", "Hi, my debit card was stolen yesterday and there's a payment I don't recognise."),
    Turn("agent", "I'm sorry to hear that. I've cancelled the card and raised a fraud claim for you."),
    Turn("agent", "A new card will arrive within five working days."),
    Turn("customer", "Thank you, that's a relief."),
))


@pytest.mark.service
def test_the_llm_summariser_answers_the_contract_through_triton(triton, summariser):
    """Prompt, guided decoding on the stand-in, validation and grounding, for real. The 135M stand-in's content is
    usually rejected; either way the answer must be a whole contract summary, and a used answer must be grounded."""
    from aftercall.summarise.llm import unsaid_facts

    process, config = triton
    asked = successes(config, "llm")
    summary = TritonSummariser(TritonConfig(url=process.grpc_address, model="call_summariser_llm")).summarise(
        SHORT_CALL, load_taxonomy())
    assert successes(config, "llm") == asked + 1  # the LLM was really asked
    generator = summary.pop("generator")
    assert generator["llm"] == "llm"
    embedded = summariser.summarise(SHORT_CALL, load_taxonomy())
    assert set(embedded) <= set(summary)
    if generator["fallback"] is None:
        assert summary["model"] == "aftercall-llm-0.1"
        written = [summary["reason_for_contact"], summary["issue"], summary["narrative"], *summary["actions_taken"]]
        assert not unsaid_facts(written, SHORT_CALL)
    else:  # the LLM answered (the grammar held) and a named rule turned the answer down
        assert not generator["fallback"].startswith("model llm"), generator["fallback"]
        assert summary == embedded


@pytest.mark.service
def test_the_llm_summariser_falls_back_when_the_llm_is_not_loaded(triton, redacted, summariser):
    from tritonclient.utils import InferenceServerException

    process, config = triton
    client = triton_client(config.triton, process.grpc_address)
    # Loading and unloading are the admin's: without the key nobody can load a model (code) of their own.
    with pytest.raises(InferenceServerException, match="restricted"):
        client.unload_model("llm")
    refused = urllib.request.Request(f"http://127.0.0.1:{config.triton.http_port}/v2/repository/models/llm/unload",
                                     method="POST")
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(refused, timeout=10)
    assert client.is_model_ready("llm")
    client.unload_model("llm", headers=process.admin_headers)
    try:
        summary = TritonSummariser(TritonConfig(url=process.grpc_address, model="call_summariser_llm")).summarise(
            redacted, load_taxonomy())
    finally:
        client.load_model("llm", headers=process.admin_headers)
    assert "model llm" in summary.pop("generator")["fallback"]
    assert summary == summariser.summarise(redacted, load_taxonomy())


def test_triton_down_is_a_clear_error(redacted):
    backend = TritonSummariser(TritonConfig(url=f"127.0.0.1:{free_port()}", ready_timeout_s=1))
    with pytest.raises(BackendUnavailableError, match=r"Triton at 127\.0\.0\.1:\d+: not reachable"):
        backend.summarise(redacted, load_taxonomy())


@pytest.mark.e2e
def test_riva_and_triton_together_give_the_in_process_summary(tmp_path, demo_clip):
    """The acceptance check: `aftercall summarise FILE --config X` with asr = riva and summarise = triton, both
    servers started by their console scripts, equals the embedded in-process path field by field."""
    from test_serve_process import Server

    triton_grpc, http, metrics = free_port(), free_port(), free_port()
    env = {"AFTERCALL_TRITON__HTTP_PORT": str(http), "AFTERCALL_TRITON__METRICS_PORT": str(metrics)}
    asr = Server(tmp_path / "asr", "asr")
    triton = Server(tmp_path / "triton", "triton", listen=f"127.0.0.1:{triton_grpc}", env=env)
    try:
        clip = tmp_path / "clip.wav"
        clip.write_bytes(demo_clip)
        config = tmp_path / "served.toml"
        config.write_text(f'[asr]\nbackend = "riva"\nriva_uri = "{asr.address}"\n'
                          f'[summarise]\nbackend = "triton"\n[triton]\nurl = "127.0.0.1:{triton_grpc}"\n')
        served = run_cli("summarise", clip, "--config", config, "--call-id", "c1", "--quiet")
        in_process = run_cli("summarise", clip, "--call-id", "c1", "--quiet")
    finally:
        asr.stop()
        assert triton.stop(signal.SIGTERM) == 0
    assert served.returncode == 0 and in_process.returncode == 0, served.stderr + in_process.stderr
    remote, local = json.loads(served.stdout), json.loads(in_process.stdout)
    for field in ("transcript", "reason_for_contact", "issue", "actions_taken", "resolution", "follow_ups",
                  "sentiment", "disposition", "escalation", "entities", "narrative", "redactions", "evidence"):
        assert remote[field] == local[field], field


def test_a_taxonomy_survives_the_trip_to_the_model_as_toml():
    from aftercall.summarise.taxonomy import parse_taxonomy, taxonomy_to_toml

    odd = (Disposition('Q\\"1', 'Say "hi"', "Tabs\tand\nnewlines, é and 😀"), *load_taxonomy())
    assert parse_taxonomy(taxonomy_to_toml(odd)) == odd


@pytest.mark.service
def test_triton_grpc_over_tls(tmp_path, pki, redacted):
    from aftercall.core.config import ServerConfig

    config = dataclasses.replace(Config(), server=ServerConfig(tls_cert_file=pki["server_cert"],
                                                               tls_key_file=pki["server_key"]),
                                 triton=dataclasses.replace(TritonConfig(), http_port=free_port(),
                                                            metrics_port=free_port()))
    process = start_triton(config, f"localhost:{free_port()}", tmp_path / "triton")
    try:
        secure = TritonSummariser(TritonConfig(url=process.grpc_address, tls_ca_file=pki["ca"]))
        assert secure.summarise(redacted, load_taxonomy())["disposition"]["code"] == "CARD_LOST_STOLEN"
        plaintext = TritonSummariser(TritonConfig(url=process.grpc_address, ready_timeout_s=1))
        with pytest.raises(BackendUnavailableError):
            plaintext.summarise(redacted, load_taxonomy())
    finally:
        process.stop()


@pytest.mark.service
def test_the_llm_summariser_falls_back_when_the_llm_is_too_slow(triton, summariser):
    """llm_timeout_s, set low through a config override (explicit model control), then the repository's again."""
    process, config = triton
    client = triton_client(config.triton, process.grpc_address)
    model = client.get_model_config("call_summariser_llm", as_json=True)["config"]
    model["parameters"]["llm_timeout_s"] = {"string_value": "0.05"}
    client.load_model("call_summariser_llm", config=json.dumps(model), headers=process.admin_headers)
    try:
        summary = TritonSummariser(TritonConfig(url=process.grpc_address, model="call_summariser_llm")).summarise(
            SHORT_CALL, load_taxonomy())
    finally:
        client.load_model("call_summariser_llm", headers=process.admin_headers)
    assert "model llm: no answer within llm_timeout_s (0.05 s)" == summary.pop("generator")["fallback"]
    assert summary == summariser.summarise(SHORT_CALL, load_taxonomy())


@pytest.mark.service
def test_a_bad_llm_summariser_parameter_is_named_when_the_model_loads(triton):
    from tritonclient.utils import InferenceServerException

    process, config = triton
    client = triton_client(config.triton, process.grpc_address)
    model = client.get_model_config("call_summariser_llm", as_json=True)["config"]
    model["parameters"]["max_token"] = {"string_value": "700"}
    try:
        with pytest.raises(InferenceServerException, match=r"parameters\.max_token: unknown"):
            client.load_model("call_summariser_llm", config=json.dumps(model), headers=process.admin_headers)
    finally:
        client.load_model("call_summariser_llm", headers=process.admin_headers)
    assert client.is_model_ready("call_summariser_llm")


def test_a_model_not_in_the_repository_is_named_at_start(tmp_path):
    from aftercall.core.errors import ConfigError

    config = dataclasses.replace(Config(), triton=dataclasses.replace(TritonConfig(), load_models=("summarizer",)))
    with pytest.raises(ConfigError, match="triton.load_models: .* has no model 'summarizer'"):
        start_triton(config, f"127.0.0.1:{free_port()}", tmp_path / "triton")


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _running(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def _wait_for(condition, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return value


def _serve_triton(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / f"serve-{time.monotonic_ns()}.log"
    env = {**os.environ, "AFTERCALL_TRITON__HTTP_PORT": str(free_port()),
           "AFTERCALL_TRITON__METRICS_PORT": str(free_port())}
    with open(log, "w") as handle:
        process = subprocess.Popen([sys.executable, "-m", "aftercall", "serve", "triton", "--listen",
                                    f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path / "data")],
                                   stderr=handle, stdout=subprocess.DEVNULL, env=env)
    return process, log


@pytest.mark.e2e
@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
def test_serve_triton_stops_while_starting_and_never_leaves_an_orphan(tmp_path):
    process, log = _serve_triton(tmp_path)
    triton = _wait_for(lambda: _children(process.pid))[0]
    process.send_signal(signal.SIGTERM)  # models still loading: the readiness wait gives up at once
    assert process.wait(30) == 0, log.read_text()
    assert "stopped while tritonserver was starting" in log.read_text()
    _wait_for(lambda: not _running(triton), timeout=15)

    process, log = _serve_triton(tmp_path)
    _wait_for(lambda: "serving triton" in log.read_text() or process.poll() is not None)
    assert process.poll() is None, log.read_text()
    triton = _children(process.pid)[0]
    process.kill()  # no chance to clean up: tritonserver must go by itself
    process.wait(10)
    _wait_for(lambda: not _running(triton), timeout=15)

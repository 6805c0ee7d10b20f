"""A real tritonserver (from the nvidia-pytriton wheel) on model_repository/, and the Triton summariser backend."""

from __future__ import annotations

import dataclasses
import json
import signal
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from aftercall.core.config import Config, TritonConfig
from aftercall.core.errors import BackendUnavailableError, UserError
from aftercall.core.transcript import Transcript, Turn, parse_transcript
from aftercall.redact import Redactor
from aftercall.summarise.taxonomy import Disposition, load_taxonomy
from aftercall.summarise.triton import TritonSummariser, triton_client
from aftercall.tritonserver import start_triton
from conftest import DEMO_JSON, free_port, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def triton(tmp_path_factory):
    config = dataclasses.replace(Config(), triton=dataclasses.replace(
        TritonConfig(), http_port=free_port(), metrics_port=free_port()))
    process = start_triton(config, f"127.0.0.1:{free_port()}", tmp_path_factory.mktemp("triton"))
    yield process, config
    process.stop()


@pytest.fixture(scope="module")
def redacted() -> Transcript:
    return Redactor().redact_transcript(parse_transcript(DEMO_JSON.read_bytes())).transcript


def test_triton_model_gives_the_embedded_summary(triton, redacted, summariser):
    process, _ = triton
    backend = TritonSummariser(TritonConfig(url=process.grpc_address))
    assert backend.summarise(redacted, load_taxonomy()) == summariser.summarise(redacted, load_taxonomy())
    site = (Disposition("FRAUD", "Fraud", "The customer's card was stolen or used for fraud"),
            Disposition("BILLING", "Billing", "A question about a bill"))
    assert backend.summarise(redacted, site)["disposition"]["code"] == "FRAUD"


def test_concurrent_requests_are_batched_and_a_bad_one_fails_alone(triton, redacted):
    process, config = triton
    backend = TritonSummariser(TritonConfig(url=process.grpc_address))
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: backend.summarise(redacted, load_taxonomy()), range(8)))
    assert all(r == results[0] for r in results)

    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = triton_client(config.triton, process.grpc_address)
    bad = grpcclient.InferInput("TRANSCRIPT_JSON", [1, 1], "BYTES")
    bad.set_data_from_numpy(np.array([[b'{"turns": "not a list"}']], dtype=np.object_))
    with pytest.raises(InferenceServerException, match='"turns" list'):
        client.infer("call_summariser", [bad])
    with pytest.raises(UserError, match="refused the transcript"):
        backend.summarise(Transcript((Turn("robot", "beep"),)), load_taxonomy())
    assert backend.summarise(redacted, load_taxonomy()) == results[0]  # the model is still serving

    metrics = urllib.request.urlopen(f"http://127.0.0.1:{config.triton.metrics_port}/metrics", timeout=10).read()
    success = [line for line in metrics.decode().splitlines()
               if line.startswith('nv_inference_request_success{model="call_summariser"')]
    assert success and float(success[0].split()[-1]) >= 9


def test_triton_down_is_a_clear_error(redacted):
    backend = TritonSummariser(TritonConfig(url=f"127.0.0.1:{free_port()}", ready_timeout_s=1))
    with pytest.raises(BackendUnavailableError, match=r"Triton at 127\.0\.0\.1:\d+: not reachable"):
        backend.summarise(redacted, load_taxonomy())


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

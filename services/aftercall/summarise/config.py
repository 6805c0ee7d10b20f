"""The [summarise] and [triton] sections: which summariser, the site's taxonomy and templates, and the Triton
endpoint."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from aftercall.core.config import Section, check_client_tls, parse_address, setting
from aftercall.core.errors import ConfigError
from aftercall.summarise.templates import parse_templates


@dataclass(frozen=True)
class SummariseConfig(Section):
    """Which summariser writes the summary, with the site's disposition taxonomy and per-queue templates."""

    # "embedded": the summariser in this process; "triton": the model triton.model on the Triton server at
    # triton.url.
    backend: str = setting("embedded", one_of=("embedded", "triton"))
    # Empty: the default taxonomy shipped with aftercall.
    taxonomy: str = ""
    # Below this cosine similarity no disposition fits and the code is UNKNOWN.
    min_disposition_similarity: float = setting(0.15, between=(-1.0, 1.0))
    # Per queue (CallMetadata.queue): fields left out and the site's own sections (aftercall.summarise.templates):
    # [summarise.templates.pharmacy] omit = ["customer_tried"], medication = ["dose", "tablet"].
    templates: Mapping[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        parse_templates(self.templates)


@dataclass(frozen=True)
class TritonConfig(Section):
    """summarise.backend = "triton": the Triton endpoint; and `aftercall serve triton`, which starts one."""

    # Triton's gRPC address (on the appliance: NVIDIA's container; elsewhere `aftercall serve triton`).
    url: str = "127.0.0.1:8001"
    # The model summarise.backend = "triton" calls: call_summariser, or call_summariser_llm (the LLM path, with the
    # same inputs and outputs).
    model: str = "call_summariser"
    # The longest wait for Triton to summarise one call.
    timeout_s: float = setting(120.0, between=(1.0, 3600.0))
    # How long to wait for the server and the model to be ready before calling it unavailable.
    ready_timeout_s: float = setting(60.0, between=(0.0, 3600.0))
    # TLS to Triton trusting the system's CAs; a CA file turns TLS on too and is trusted instead.
    tls: bool = False
    # Set: TLS to Triton, trusting this CA; with cert and key files: mutual TLS.
    tls_ca_file: str = ""
    # Our client certificate (PEM) for mutual TLS to Triton, with tls_key_file.
    tls_cert_file: str = ""
    # The client certificate's private key (PEM).
    tls_key_file: str = ""
    # `aftercall serve triton`: empty = the model_repository/ beside the package's source tree.
    model_repository: str = ""
    # e.g. "cpu": each model's configs/cpu.pbtxt instead of config.pbtxt (GPU configs stay untouched).
    model_config_name: str = ""
    # The models `aftercall serve triton` loads (explicit model control): a model whose backend this machine lacks
    # (the vLLM `llm` without a GPU) is never tried. The LLM path on CPU: call_summariser_llm and llm, with "cpu".
    load_models: tuple[str, ...] = ("call_summariser",)
    # `aftercall serve triton`: Triton's HTTP port, on loopback only (local tools and the readiness check).
    http_port: int = setting(8000, between=(1, 65535))
    # `aftercall serve triton`: Triton's Prometheus metrics port, on loopback only.
    metrics_port: int = setting(8002, between=(1, 65535))

    def validate(self) -> None:
        parse_address(self.url, "config triton.url")
        if not self.load_models:
            raise ConfigError("config triton.load_models: name at least one model")
        check_client_tls(self, "triton", "tls_")

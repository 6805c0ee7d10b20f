"""The `TritonPythonModel` classes of model_repository/: each model.py there is one import from here. Importable only
inside Triton's python backend stub (it provides `triton_python_backend_utils`); the logic they call is tested
without Triton (triton_model, llm, llamacpp)."""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as AnswerTimeout  # not the builtin before Python 3.11
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from aftercall.summarise.llamacpp import BadSamplingParametersError, LlamaCppEngine
from aftercall.summarise.llm import LlmSettings, LlmSummariser, LlmUnavailableError, typed_parameters
from aftercall.summarise.triton_model import Answer, CallSummariserModel

logger = logging.getLogger(__name__)


def _parameters(args: dict[str, Any]) -> dict[str, str]:
    config = json.loads(args["model_config"])
    return {key: value["string_value"] for key, value in config.get("parameters", {}).items()}


def _strings(request, name: str) -> list[bytes] | None:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else list(tensor.as_numpy().reshape(-1))


def _bytes_tensor(name: str, values: list[bytes], shape: tuple[int, ...]) -> "pb_utils.Tensor":
    return pb_utils.Tensor(name, np.array(values, dtype=np.object_).reshape(shape))


class _SummaryModel:
    """TRANSCRIPT_JSON (+ optional TAXONOMY_TOML) in, SUMMARY_JSON out; one bad request never fails its batch."""

    _model: CallSummariserModel
    _pool: ThreadPoolExecutor | None = None  # set where requests should run concurrently (the LLM batches them)

    def execute(self, requests):
        answer = self._answer_request
        return list(self._pool.map(answer, requests)) if self._pool else [answer(r) for r in requests]

    def _answer_request(self, request):
        transcripts = _strings(request, "TRANSCRIPT_JSON")
        taxonomies = _strings(request, "TAXONOMY_TOML") or [None] * len(transcripts)
        answers: list[Answer] = [self._model.answer(t, x) for t, x in zip(transcripts, taxonomies)]
        failed = next((a.error for a in answers if a.error is not None), None)
        if failed is not None:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(failed, pb_utils.TritonError.INVALID_ARG))
        return pb_utils.InferenceResponse(
            output_tensors=[_bytes_tensor("SUMMARY_JSON", [a.summary_json for a in answers], (-1, 1))])

    def finalize(self):
        if self._pool:
            self._pool.shutdown(wait=True)


class EmbeddedSummaryModel(_SummaryModel):
    """`call_summariser`: the embedded summariser, as `aftercall summarise` runs it."""

    def initialize(self, args):
        self._model = CallSummariserModel()


class LlmSummaryModel(_SummaryModel):
    """`call_summariser_llm`: prompt, guided decoding on the `llm` model (BLS), validation, grounding, fallback."""

    def initialize(self, args):
        self._settings = LlmSettings.from_parameters(_parameters(args))
        self._model = CallSummariserModel(LlmSummariser(self._generate, self._settings))
        # The LLM batches concurrent requests itself (continuous batching): hand it a whole batch at once.
        self._pool = ThreadPoolExecutor(max_workers=self._settings.concurrent_requests,
                                        thread_name_prefix="llm-request")
        # Room for as many answers again as may still be running after their requests gave up waiting.
        self._llm_calls = ThreadPoolExecutor(max_workers=2 * self._settings.concurrent_requests,
                                             thread_name_prefix="llm-exec")

    def _generate(self, prompt: str, sampling_parameters: dict[str, Any]) -> str:
        request = pb_utils.InferenceRequest(
            model_name=self._settings.llm_model, requested_output_names=["text_output"],
            inputs=[_bytes_tensor("text_input", [prompt.encode("utf-8")], (1,)),
                    pb_utils.Tensor("stream", np.array([False])),
                    _bytes_tensor("sampling_parameters", [json.dumps(sampling_parameters).encode("utf-8")], (1,)),
                    pb_utils.Tensor("exclude_input_in_output", np.array([True]))])
        # Triton's own request timeout covers only time in a queue, not a generation that runs long: wait here.
        answer = self._llm_calls.submit(self._exec, request)
        try:
            return answer.result(timeout=self._settings.llm_timeout_s)
        except AnswerTimeout:
            raise LlmUnavailableError(f"model {self._settings.llm_model}: no answer within llm_timeout_s "
                                      f"({self._settings.llm_timeout_s:g} s)") from None

    def _exec(self, request) -> str:
        pieces: list[str] = []
        try:
            for response in request.exec(decoupled=True):
                if response.has_error():
                    raise LlmUnavailableError(f"model {self._settings.llm_model}: {response.error().message()}")
                output = pb_utils.get_output_tensor_by_name(response, "text_output")
                if output is not None:
                    pieces += [piece.decode("utf-8", errors="replace") for piece in output.as_numpy().reshape(-1)]
        except pb_utils.TritonModelException as exc:
            raise LlmUnavailableError(f"model {self._settings.llm_model}: {exc}") from None
        return "".join(pieces)

    def finalize(self):
        super().finalize()
        self._llm_calls.shutdown(wait=False, cancel_futures=True)


class LlamaCppLlmModel:
    """`llm` on CPU (configs/cpu.pbtxt): the vLLM backend's inputs and outputs, served by llama.cpp. Decoupled like
    vLLM: one final response per request, sent from a worker thread so requests overlap in llama.cpp's slots."""

    def initialize(self, args):
        settings = {"context_tokens": 4096, "threads": 2, "parallel": 1,
                    **typed_parameters(_parameters(args), {"context_tokens": int, "threads": int, "parallel": int})}
        if min(settings.values()) < 1:
            raise ValueError("parameters: context_tokens, threads and parallel must be at least 1")
        parallel = settings["parallel"]
        self._engine = LlamaCppEngine(context_tokens=settings["context_tokens"], threads=settings["threads"],
                                      parallel=parallel)
        self._engine.load()  # a model that cannot load is not READY
        self._pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="llamacpp")

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            try:
                prompt = _strings(request, "text_input")[0].decode("utf-8")
                stream = _flag(request, "stream", False)
                exclude_input = _flag(request, "exclude_input_in_output", False)
                raw = _strings(request, "sampling_parameters")
                parameters = json.loads(raw[0]) if raw else {}
                if stream:
                    raise BadSamplingParametersError("stream=true is not supported by the CPU stand-in")
                if not isinstance(parameters, dict):
                    raise BadSamplingParametersError("sampling_parameters must be a JSON object")
            except (BadSamplingParametersError, UnicodeDecodeError, json.JSONDecodeError, IndexError) as exc:
                _send_error(sender, str(exc), pb_utils.TritonError.INVALID_ARG)
                continue
            self._pool.submit(self._complete, sender, prompt, parameters, exclude_input)
        return None

    def _complete(self, sender, prompt: str, parameters: dict[str, Any], exclude_input: bool) -> None:
        if sender.is_cancelled():  # its caller gave up while it queued: do not spend the only slot on it
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            return
        try:
            text = self._engine.generate(prompt, parameters)
        except BadSamplingParametersError as exc:
            _send_error(sender, str(exc), pb_utils.TritonError.INVALID_ARG)
            return
        except Exception as exc:  # noqa: BLE001 - the request gets an error, the model stays up for the next
            logger.exception("llama.cpp failed on one request")
            _send_error(sender, f"llama.cpp failed ({type(exc).__name__})", pb_utils.TritonError.INTERNAL)
            return
        output = text if exclude_input else prompt + text  # vLLM's default echoes the prompt
        sender.send(pb_utils.InferenceResponse(output_tensors=[_bytes_tensor("text_output", [output.encode()], (1,))]),
                    flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def finalize(self):
        self._pool.shutdown(wait=True)


def _flag(request, name: str, default: bool) -> bool:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return default if tensor is None else bool(tensor.as_numpy().reshape(-1)[0])


def _send_error(sender, message: str, code) -> None:
    sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code)),
                flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

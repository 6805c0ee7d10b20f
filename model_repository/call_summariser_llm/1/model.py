"""Triton python-backend glue for `call_summariser_llm`; the class lives in aftercall.summarise.triton_backend."""

from aftercall.summarise.triton_backend import LlmSummaryModel as TritonPythonModel  # noqa: F401

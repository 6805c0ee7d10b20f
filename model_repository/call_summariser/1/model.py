"""Triton python-backend glue for `call_summariser`; the class lives in aftercall.summarise.triton_backend."""

from aftercall.summarise.triton_backend import EmbeddedSummaryModel as TritonPythonModel  # noqa: F401

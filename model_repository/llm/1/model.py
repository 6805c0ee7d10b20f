"""The CPU stand-in for `llm` (configs/cpu.pbtxt only; on a GPU the vLLM backend reads model.json instead)."""

from aftercall.summarise.triton_backend import LlamaCppLlmModel as TritonPythonModel  # noqa: F401

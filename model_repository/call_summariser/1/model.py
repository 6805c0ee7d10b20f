"""Triton python-backend glue for `call_summariser`; the work is in aftercall.summarise.triton_model."""

import numpy as np
import triton_python_backend_utils as pb_utils

from aftercall.summarise.triton_model import CallSummariserModel


class TritonPythonModel:
    def initialize(self, args):
        self._model = CallSummariserModel()

    def execute(self, requests):
        responses = []
        for request in requests:
            transcripts = pb_utils.get_input_tensor_by_name(request, "TRANSCRIPT_JSON").as_numpy().reshape(-1)
            taxonomy_tensor = pb_utils.get_input_tensor_by_name(request, "TAXONOMY_TOML")
            taxonomies = taxonomy_tensor.as_numpy().reshape(-1) if taxonomy_tensor is not None else [None] * len(
                transcripts)
            answers = [self._model.answer(t, x) for t, x in zip(transcripts, taxonomies)]
            failed = next((a.error for a in answers if a.error is not None), None)
            if failed is not None:  # this request's error, not the batch's
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(failed, pb_utils.TritonError.INVALID_ARG)))
                continue
            summaries = np.array([a.summary_json for a in answers], dtype=np.object_).reshape(-1, 1)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("SUMMARY_JSON", summaries)]))
        return responses

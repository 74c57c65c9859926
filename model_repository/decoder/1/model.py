"""Triton Python model ``decoder``: start/end logits of windows -> answers (see config.pbtxt)."""

import numpy as np
import triton_python_backend_utils as pb_utils

from preprocessing import AnswerOptions, DecoderInput, decode_requests
from runtime.backend import attempt, config_parameters, input_array, reply, response
from runtime.tensors import ANSWER_OUTPUTS, DECODER_INPUTS


class TritonPythonModel:
    def initialize(self, args):
        self.max_top_k = int(config_parameters(args)["max_top_k"])

    def execute(self, requests):
        answers = decode_requests([attempt(self._read, request) for request in requests])
        return [reply(pb_utils, "decoder", result, self._pack) for result in answers]

    def _read(self, request):
        options = AnswerOptions.from_parameters(request.parameters(), self.max_top_k)
        tensors = [input_array(pb_utils, request, *spec) for spec in DECODER_INPUTS]
        return DecoderInput.checked(*tensors, options)

    @staticmethod
    def _pack(answers):
        text = np.array([t.encode("utf-8") for t in answers.text.ravel()], dtype=object).reshape(answers.text.shape)
        return response(pb_utils, dict(zip(ANSWER_OUTPUTS, (text, answers.score, answers.start, answers.end))))

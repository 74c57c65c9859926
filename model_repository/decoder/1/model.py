"""Triton Python model ``decoder``: start/end logits of windows -> answers (see config.pbtxt)."""

import numpy as np
import triton_python_backend_utils as pb_utils

from preprocessing import AnswerOptions, DecoderInput, DecoderLimits, decode_requests
from runtime.backend import attempt, config_parameters, input_array, reply, response, sibling_parameters
from runtime.tensors import ANSWER_OUTPUTS, DECODER_INPUTS


class TritonPythonModel:
    def initialize(self, args):
        # the answer options' bounds (this config), the windows and contexts the tokenizer makes (its config)
        tokenizer = sibling_parameters(args, "tokenizer", DecoderLimits.FROM_TOKENIZER)
        self.limits = DecoderLimits.from_config(config_parameters(args), tokenizer)

    def execute(self, requests):
        answers = decode_requests([attempt(self._read, request) for request in requests])
        return [reply(pb_utils, "decoder", result, self._pack) for result in answers]

    def _read(self, request):
        limits = self.limits
        options = AnswerOptions.from_parameters(request.parameters(), limits.max_top_k, limits.max_answer_len)
        tensors = [input_array(pb_utils, request, *spec) for spec in DECODER_INPUTS]
        return DecoderInput.checked(*tensors, options, limits)

    @staticmethod
    def _pack(answers):
        text = np.array([t.encode("utf-8") for t in answers.text.ravel()], dtype=object).reshape(answers.text.shape)
        return response(pb_utils, dict(zip(ANSWER_OUTPUTS, (text, answers.score, answers.start, answers.end))))

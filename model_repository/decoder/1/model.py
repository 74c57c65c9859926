"""Triton Python model ``decoder``: start/end logits of windows -> answers (see config.pbtxt)."""

import time

import numpy as np
import triton_python_backend_utils as pb_utils

from preprocessing import AnswerOptions, DecoderLimits
from preprocessing.outcomes import attempt
from runtime.backend import config_parameters, input_array, reply, response, sibling_parameters
from runtime.decode_batch import DecoderInput, decode_requests, measure_paces
from runtime.scheduling import Budget
from runtime.tensors import ANSWER_OUTPUTS, DECODER_INPUTS


class TritonPythonModel:
    def initialize(self, args):
        # the answer options' bounds (this config), the windows and contexts the tokenizer makes (its config)
        parameters = config_parameters(args)
        tokenizer = sibling_parameters(args, "tokenizer", DecoderLimits.FROM_TOKENIZER)
        self.limits = DecoderLimits.from_config(parameters, tokenizer)  # refuses a missing or unknown parameter
        # a batch's requests, smallest first, as far as they fit in batch_budget_ms; a request whose spans (or
        # whose replays, once its probabilities are known) would take longer than max_request_ms is refused
        batch_ms, request_ms = int(parameters["batch_budget_ms"]), int(parameters["max_request_ms"])
        self.budget = None
        if batch_ms or request_ms:
            seconds = batch_ms / 1000 if batch_ms else float("inf")
            self.budget = Budget(seconds, request_seconds=request_ms / 1000 or None)
            measure_paces(self.budget, self.limits.max_seq_len)

    def execute(self, requests):
        started = time.monotonic()
        answers = decode_requests([attempt(self._read, request) for request in requests], self.budget, started)
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

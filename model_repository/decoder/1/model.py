"""Triton Python model ``decoder``: start/end logits -> answers (see config.pbtxt)."""

import numpy as np
import triton_python_backend_utils as pb_utils

from preprocessing import AnswerOptions, decode
from serving.backend import error_response

INPUTS = ("start_logits", "end_logits", "token_offsets", "word_offsets", "window_question")


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(self._answer(request))
            except Exception as error:
                responses.append(error_response(pb_utils, error))
        return responses

    @staticmethod
    def _answer(request):
        tensors = [pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in INPUTS]
        contexts = [c.decode("utf-8") for c in pb_utils.get_input_tensor_by_name(request, "context").as_numpy()]
        options = AnswerOptions.from_parameters(request.parameters())  # already checked by the tokenizer step
        answers = decode(*tensors, contexts, options)
        text = np.array([t.encode("utf-8") for t in answers.text.ravel()], dtype=object).reshape(answers.text.shape)
        outputs = {"answer": text, "score": answers.score, "start": answers.start, "end": answers.end}
        if options.top_k == 1:
            outputs = {name: value[:, 0] for name, value in outputs.items()}
        return pb_utils.InferenceResponse([pb_utils.Tensor(name, value) for name, value in outputs.items()])

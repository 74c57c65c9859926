"""Triton Python model ``tokenizer``: question/context strings -> doc-stride windows (see config.pbtxt)."""

import numpy as np
import triton_python_backend_utils as pb_utils

from preprocessing import (
    TOKENIZER_PARAMETERS,
    AnswerOptions,
    DecoderLimits,
    QATokenizer,
    RequestLimits,
    WindowSettings,
    read_pairs,
)
from preprocessing.outcomes import answered, attempt, then
from runtime.backend import (
    MemoryTrimmer,
    checked_parameters,
    input_array,
    reply,
    response,
    sibling_parameters,
    version_dir,
)
from runtime.scheduling import Budget
from runtime.tensors import window_tensors
from runtime.tokenize_batch import tokenize_requests

# an execute that read this many characters gives the memory it freed back to the system (runtime.backend)
TRIM_AFTER_CHARS = 100_000


class TritonPythonModel:
    def initialize(self, args):
        parameters = checked_parameters(args, "tokenizer", TOKENIZER_PARAMETERS)
        self.limits = RequestLimits.from_config(parameters)
        # the answer options' bounds, checked before any work
        decoder = sibling_parameters(args, "decoder", DecoderLimits.OWN)
        self.max_top_k, self.max_answer_len = int(decoder["max_top_k"]), int(decoder["max_answer_len"])
        self.tokenizer = QATokenizer(
            version_dir(args) / parameters["tokenizer_file"],
            WindowSettings.from_config(parameters),
            parallel=parameters["parallel_encoding"] == "true",
            cache_bytes=int(parameters["context_cache_bytes"]),
        )
        self.trimmer = MemoryTrimmer(TRIM_AFTER_CHARS)
        budget_ms = int(parameters["batch_budget_ms"])
        self.budget = Budget(budget_ms / 1000) if budget_ms else None

    def execute(self, requests):
        read = [attempt(self._read, request) for request in requests]
        texts = [then(r, _texts) for r in read]
        windows = tokenize_requests(self.tokenizer, texts, self.limits.max_windows, self.budget)
        replies = [reply(pb_utils, "tokenizer", then(w, _with_contexts, r), self._pack) for w, r in zip(windows, read)]
        self.trimmer.after(sum(len(c) for i in answered(texts) for c in texts[i][1]))
        return replies

    def _read(self, request):
        """(questions, contexts, the contexts' raw bytes); options refused here, before any work."""
        contexts = input_array(pb_utils, request, "context", np.object_).ravel()
        questions = input_array(pb_utils, request, "question", np.object_).ravel()
        AnswerOptions.from_parameters(request.parameters(), self.max_top_k, self.max_answer_len)
        return (*read_pairs(questions, contexts, self.limits), contexts)

    @staticmethod
    def _pack(result):
        return response(pb_utils, window_tensors(*result))


def _texts(read):
    """(questions, contexts) of what ``_read`` returned."""
    return read[:2]


def _with_contexts(windows, read):
    """The windows with the contexts' raw bytes, which the decoder receives as they came."""
    return windows, read[2]

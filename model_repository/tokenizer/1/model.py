"""Triton Python model ``tokenizer``: question/context strings -> doc-stride windows (see config.pbtxt)."""

import triton_python_backend_utils as pb_utils

from preprocessing import AnswerOptions, InputError, QATokenizer, RequestLimits, WindowSettings, decode_texts
from serving.backend import config_parameters, error_response, version_dir

OUTPUTS = ("input_ids", "attention_mask", "token_type_ids", "token_offsets", "word_offsets", "window_question")


class TritonPythonModel:
    def initialize(self, args):
        parameters = config_parameters(args)
        self.limits = RequestLimits.from_config(parameters)
        settings = WindowSettings(**{key: int(parameters[key]) for key in ("max_seq_len", "doc_stride", "max_question_len")})
        self.tokenizer = QATokenizer(version_dir(args) / parameters["tokenizer_file"], settings)

    def execute(self, requests):
        texts, responses = {}, {}
        for i, request in enumerate(requests):
            try:
                texts[i] = self._read(request)
            except Exception as error:
                responses[i] = error_response(pb_utils, error)
        for i, windows in self._encode(texts).items():
            responses[i] = error_response(pb_utils, windows) if isinstance(windows, Exception) else self._pack(windows)
        return [responses[i] for i in range(len(requests))]

    def _read(self, request):
        questions = decode_texts(pb_utils.get_input_tensor_by_name(request, "question").as_numpy(), "question")
        contexts = decode_texts(pb_utils.get_input_tensor_by_name(request, "context").as_numpy(), "context",
                                self.limits.max_context_chars)
        if len(questions) != len(contexts):
            raise InputError(f"{len(questions)} questions but {len(contexts)} contexts; send one context per question")
        if len(questions) > self.limits.max_questions:
            raise InputError(f"{len(questions)} questions in one request; the limit is {self.limits.max_questions}")
        AnswerOptions.from_parameters(request.parameters(), self.limits.max_top_k)  # refuse bad options early
        return questions, contexts

    def _encode(self, texts):
        """Windows per request, from one tokenizer call for all of them; when that call refuses the batch,
        each request is tokenized alone so that only the bad one gets the error."""
        if not texts:
            return {}
        try:
            windows = self.tokenizer.encode([q for qs, _ in texts.values() for q in qs],
                                            [c for _, cs in texts.values() for c in cs])
        except InputError as error:
            if len(texts) == 1:
                return {i: error for i in texts}
            return {i: self._encode({i: pair})[i] for i, pair in texts.items()}
        result, first = {}, 0
        for i, (questions, _) in texts.items():
            result[i] = windows.select(first, len(questions))
            first += len(questions)
            if len(result[i].window_question) > self.limits.max_windows:
                result[i] = InputError(f"the contexts make {len(result[i].window_question)} windows of "
                                       f"{self.tokenizer.settings.max_seq_len} tokens; the limit is "
                                       f"{self.limits.max_windows} per request")
        return result

    @staticmethod
    def _pack(windows):
        return pb_utils.InferenceResponse([pb_utils.Tensor(name, getattr(windows, name)) for name in OUTPUTS])

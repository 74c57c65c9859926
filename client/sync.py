"""``TritonQA``: question answering against the ``electra_qa`` ensemble over gRPC."""

from __future__ import annotations

import time
from typing import Any, Sequence

import tritonclient.grpc as grpcclient

from client import _protocol as protocol
from client.answer import Answer
from client.connection import RetryPlan
from client.errors import translate


class TritonQA(protocol.ClientBase):
    """A client for the served ELECTRA QA model; a drop-in for ``pipeline('question-answering')``.

    >>> with TritonQA("localhost:8001") as qa:
    ...     qa.ask("Who wrote it?", "It was written by Ada Lovelace.").text
    """

    _grpc = grpcclient

    def ask(self, question: str, context: str, *, top_k: int = 1, max_answer_len: int = 15,
            handle_impossible_answer: bool = False, align_to_words: bool = True) -> Answer | list[Answer]:
        """The best answer (``top_k=1``) or the ``top_k`` best answers, best first."""
        options = protocol.Options(top_k, max_answer_len, handle_impossible_answer, align_to_words)
        answers = self._infer([(question, context)], options)[0]
        return answers[0] if top_k == 1 else answers

    def ask_many(self, pairs: Sequence[tuple[str, str]], *, top_k: int = 1, max_answer_len: int = 15,
                 handle_impossible_answer: bool = False, align_to_words: bool = True) -> list:
        """Answers to several (question, context) pairs, sent in one request: one ``Answer`` per pair for
        ``top_k=1``, else a list of answers per pair."""
        options = protocol.Options(top_k, max_answer_len, handle_impossible_answer, align_to_words)
        return protocol.flatten(self._infer(list(pairs), options), top_k)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The pipeline's call form and result: ``qa({'question': q, 'context': c})`` ->
        ``{'score', 'start', 'end', 'answer'}``."""
        pairs, single, options = protocol.pipeline_examples(args, kwargs)
        return protocol.pipeline_result(self._infer(pairs, options), single)

    def is_ready(self) -> bool:
        """Whether the server is up and ``electra_qa`` is ready to answer."""
        try:
            return self._client.is_server_ready(headers=self.headers) and self._client.is_model_ready(self.model, headers=self.headers)
        except Exception:
            return False

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "TritonQA":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _infer(self, pairs: list[tuple[str, str]], options: protocol.Options) -> list[list[Answer]]:
        inputs = protocol.build_inputs(grpcclient, pairs)
        plan = RetryPlan(self.retry, self.timeout_s)
        while True:
            timeout_s = plan.remaining_s()  # raises DeadlineExceededError once the call's time is spent
            try:
                result = self._client.infer(self.model, inputs, outputs=protocol.requested_outputs(grpcclient),
                                          parameters=options.parameters(), headers=self.headers,
                                          client_timeout=timeout_s)
                break
            except Exception as raw:
                error = translate(raw)
                error.__cause__ = raw
                time.sleep(plan.delay_s(error))
        return protocol.parse_answers(result, len(pairs))

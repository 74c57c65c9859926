"""What the sync and async clients share: request building, response parsing and the pipeline call form.
No I/O here; ``TritonQA`` and ``AsyncTritonQA`` only add the transport."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from client.answer import Answer
from client.connection import TLS, ChannelSettings, RetryPolicy
from client.errors import InvalidInputError

DEFAULT_URL = "localhost:8001"
DEFAULT_MODEL = "electra_qa"
OUTPUTS = ("answer", "score", "start", "end")
# pipeline('question-answering') arguments that are server configuration here (config.pbtxt).
SERVER_SIDE = {"doc_stride": 128, "max_seq_len": 384, "max_question_len": 64, "padding": "do_not_pad"}


@dataclass(frozen=True)
class Options:
    """The answer options, sent as request parameters (same names as the pipeline's arguments)."""

    top_k: int = 1
    max_answer_len: int = 15
    handle_impossible_answer: bool = False
    align_to_words: bool = True

    def parameters(self) -> dict[str, Any]:
        return asdict(self)


class ClientBase:
    """The constructor both clients share; subclasses name their tritonclient module in ``_grpc``."""

    _grpc: Any

    def __init__(self, url: str = DEFAULT_URL, *, model: str = DEFAULT_MODEL, timeout_s: float | None = 30.0,
                 retry: RetryPolicy = RetryPolicy(), tls: TLS | None = None, api_key: str | None = None,
                 api_key_header: str = "x-api-key", headers: Mapping[str, str] | None = None,
                 channel: ChannelSettings = ChannelSettings(), verbose: bool = False):
        """``timeout_s`` bounds each call, retries included; ``retry`` retries UNAVAILABLE only; ``tls``
        turns on gRPC over TLS; ``api_key`` answers a server started with ``--api-key HEADER=VALUE``
        (Triton's restricted inference protocol); ``headers`` go with every request."""
        self.url, self.model, self.timeout_s, self.retry = url, model, timeout_s, retry
        self.headers = request_headers(headers, api_key, api_key_header)
        self._client = self._grpc.InferenceServerClient(url, verbose=verbose, channel_args=channel.channel_args(),
                                                        **(tls.client_kwargs() if tls else {}))


def request_headers(headers: Mapping[str, str] | None, api_key: str | None, api_key_header: str) -> dict[str, str]:
    """Headers for every request; Triton's restricted protocol reads the key from ``triton-grpc-protocol-<header>``."""
    result = dict(headers or {})
    if api_key is not None:
        result[f"triton-grpc-protocol-{api_key_header}"] = api_key
    return result


def build_inputs(grpc_module: Any, pairs: Sequence[tuple[str, str]]) -> list:
    """``question`` and ``context`` BYTES tensors of shape [N] for a module with ``InferInput``
    (``tritonclient.grpc`` or ``tritonclient.grpc.aio``)."""
    if not pairs:
        raise InvalidInputError("no question to ask: pass at least one (question, context) pair")
    tensors = []
    for index, name in enumerate(("question", "context")):
        values = np.array([_utf8(pair[index], name, i) for i, pair in enumerate(pairs)], dtype=object)
        tensor = grpc_module.InferInput(name, [len(pairs)], "BYTES")
        tensor.set_data_from_numpy(values)
        tensors.append(tensor)
    return tensors


def requested_outputs(grpc_module: Any) -> list:
    return [grpc_module.InferRequestedOutput(name) for name in OUTPUTS]


def parse_answers(result: Any, n_questions: int) -> list[list[Answer]]:
    """Per question, its answers best first (filler entries for missing answers dropped)."""
    text, score, start, end = (result.as_numpy(name) for name in OUTPUTS)
    text, score, start, end = (np.asarray(a).reshape(n_questions, -1) for a in (text, score, start, end))
    return [
        [Answer(t.decode("utf-8") if isinstance(t, bytes) else str(t), float(s), int(b), int(e))
         for t, s, b, e in zip(text[q], score[q], start[q], end[q]) if b >= 0]
        for q in range(n_questions)
    ]


def pipeline_examples(args: tuple, kwargs: dict) -> tuple[list[tuple[str, str]], bool, Options]:
    """The inputs ``pipeline('question-answering')`` accepts, as (pairs, single, options).

    Accepted: ``qa({'question': q, 'context': c})``, ``qa([{...}, ...])``, ``qa(question=q, context=c)``,
    ``qa(question=[...], context=[...])`` (one context string is shared by every question), plus the
    pipeline's ``top_k``/``topk``, ``max_answer_len``, ``handle_impossible_answer``, ``align_to_words``.
    """
    kwargs = dict(kwargs)
    if "topk" in kwargs and "top_k" not in kwargs:
        kwargs["top_k"] = kwargs.pop("topk")
    for name, value in SERVER_SIDE.items():
        if name in kwargs and kwargs.pop(name) != value:
            raise InvalidInputError(f"{name} is set in the server's model configuration, not per call")
    options = Options(**{k: kwargs.pop(k) for k in list(kwargs) if k in Options.__dataclass_fields__})
    question, context = kwargs.pop("question", None), kwargs.pop("context", None)
    if kwargs:
        raise InvalidInputError(f"unexpected arguments: {', '.join(sorted(kwargs))}")
    if question is not None or context is not None:
        if args:
            raise InvalidInputError("pass either examples or question= and context=, not both")
        if isinstance(question, str):
            return [(question, _text(context, "context"))], True, options
        questions = list(question or [])
        contexts = [context] * len(questions) if isinstance(context, str) else list(context or [])
        if len(questions) != len(contexts):
            raise InvalidInputError(f"{len(questions)} questions but {len(contexts)} contexts")
        return list(zip(questions, contexts)), False, options
    if len(args) == 1 and isinstance(args[0], dict):
        return [_pair(args[0])], True, options
    examples = list(args[0]) if len(args) == 1 and isinstance(args[0], (list, tuple)) else list(args)
    if not examples:
        raise InvalidInputError("no question to ask")
    return [_pair(example) for example in examples], False, options


def pipeline_result(answers: list[list[Answer]], single: bool) -> Any:
    """Shape answers as the pipeline does: a dict per example, a list when an example has several."""
    shaped = [a[0].as_pipeline_dict() if len(a) == 1 else [x.as_pipeline_dict() for x in a] for a in answers]
    return shaped[0] if single else shaped


def _pair(example: Any) -> tuple[str, str]:
    if not isinstance(example, dict) or not {"question", "context"} <= set(example):
        raise InvalidInputError(f"an example must be a dict with 'question' and 'context', got {example!r}")
    return _text(example["question"], "question"), _text(example["context"], "context")


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise InvalidInputError(f"{name} must be a string, got {type(value).__name__}")
    return value


def _utf8(value: Any, name: str, index: int) -> bytes:
    try:
        return _text(value, name).encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidInputError(f"{name} {index} cannot be encoded as UTF-8: {error.reason}") from None


def flatten(answers: Iterable[list[Answer]], top_k: int) -> list:
    """``ask_many``'s result: one Answer per question for top_k 1, else a list per question."""
    return [a[0] for a in answers] if top_k == 1 else list(answers)

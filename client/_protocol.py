"""What the sync and async clients share: the public methods, request building, response parsing and the
pipeline call form, and the readiness calls with their deadline (``_readiness``: results to use, or awaitables to
await). No other I/O here: ``TritonQA`` and ``AsyncTritonQA`` add only ``_run`` (one call with its retries), the
one place where one waits and the other awaits, and ``_stream`` / ``_collect``, which drive ``client.stream``'s
window of requests in flight with threads or with asyncio tasks."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from client.answer import Answer
from client.connection import NO_RETRIES, TLS, ChannelSettings, RetryPlan, RetryPolicy, channel_target
from client.errors import InvalidInputError, ServerError
from client.names import DEFAULT_URL, ENSEMBLE
from client.stream import DEFAULT_BATCH_SIZE, DEFAULT_IN_FLIGHT, StreamSpec, check_positive

INPUT_NAMES = ("question", "context")
OUTPUT_NAMES = ("answer", "score", "start", "end")
# pipeline('question-answering') arguments that are server configuration here (config.pbtxt); the pipeline's
# fast-tokenizer path ignores max_question_len, and so does the server: any value is accepted.
SERVER_SIDE = {"doc_stride": 128, "max_seq_len": 384, "padding": "do_not_pad"}
IGNORED = ("max_question_len",)


@dataclass(frozen=True)
class Options:
    """The answer options, sent as request parameters (same names and defaults as the pipeline's arguments;
    the server's twin is ``preprocessing.AnswerOptions``)."""

    top_k: int = 1
    max_answer_len: int = 15
    handle_impossible_answer: bool = False
    align_to_words: bool = True

    def parameters(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Call:
    """One request: its tensors, its options, and how to turn the answers into the method's result."""

    pairs: list[tuple[str, str]]
    options: Options
    result: Callable[[list[list[Answer]]], Any] = field(default=lambda answers: answers)

    def infer_kwargs(self, grpc_module: Any, model: str, headers: Mapping[str, str], timeout_s: float | None) -> dict:
        """Arguments of tritonclient's ``infer``: the call's deadline bounds the wait on the client and, as the
        request's timeout, its time in the server's queues (the server refuses it once that has passed)."""
        return {
            "model_name": model,
            "inputs": build_inputs(grpc_module, self.pairs),
            "outputs": requested_outputs(grpc_module),
            "parameters": self.options.parameters(),
            "headers": dict(headers),
            "client_timeout": timeout_s,
            "timeout": None if timeout_s is None else max(1, int(timeout_s * 1_000_000)),
        }

    def finish(self, response: Any) -> Any:
        return self.result(parse_answers(response, self.pairs, self.options.top_k))


class ClientBase:
    """Everything but the transport. Subclasses name their tritonclient module in ``_grpc`` and define
    ``_run(call)``: send it (with retries) and return ``call.finish(response)`` — directly, or awaitable."""

    _grpc: Any

    def __init__(
        self,
        url: str | Sequence[str] = DEFAULT_URL,
        *,
        model: str = ENSEMBLE,
        timeout_s: float | None = 30.0,
        retry: RetryPolicy = RetryPolicy(),
        tls: TLS | None = None,
        api_key: str | tuple[str, str] | None = None,
        api_key_header: str = "x-api-key",
        headers: Mapping[str, str] | None = None,
        channel: ChannelSettings = ChannelSettings(),
        verbose: bool = False,
    ):
        """``url`` is one server (``host:port``), any gRPC target (``dns:///qa.svc:8001``: every address the
        name resolves to), or a list of ``host:port`` replicas; calls are spread over all of them
        (``channel.lb_policy``, round_robin). ``timeout_s`` bounds each call, retries included; ``retry``
        retries UNAVAILABLE only (on another replica when one is down); ``tls`` turns on gRPC over TLS;
        ``api_key`` answers a server started with ``--api-key HEADER=VALUE`` (Triton's restricted inference
        protocol): the value (sent as ``api_key_header``) or a (header, value) pair; ``headers`` go with every
        request."""
        self.url, self.model, self.timeout_s, self.retry = url, model, timeout_s, retry
        self.target = channel_target(url)
        self.headers = request_headers(headers, api_key, api_key_header)
        self._client = self._grpc.InferenceServerClient(
            self.target, verbose=verbose, channel_args=channel.channel_args(), **(tls.client_kwargs() if tls else {})
        )

    def ask(
        self,
        question: str,
        context: str,
        *,
        max_answer_len: int = 15,
        handle_impossible_answer: bool = False,
        align_to_words: bool = True,
    ) -> Answer:
        """The best answer to ``question`` from ``context``."""
        options = Options(1, max_answer_len, handle_impossible_answer, align_to_words)
        return self._run(Call([(question, context)], options, lambda answers: best(answers[0])))

    def top_answers(
        self,
        question: str,
        context: str,
        top_k: int,
        *,
        max_answer_len: int = 15,
        handle_impossible_answer: bool = False,
        align_to_words: bool = True,
    ) -> list[Answer]:
        """The ``top_k`` best answers, best first (fewer when the context holds fewer)."""
        options = Options(top_k, max_answer_len, handle_impossible_answer, align_to_words)
        return self._run(Call([(question, context)], options, lambda answers: answers[0]))

    def ask_many(
        self,
        pairs: Iterable[tuple[str, str]],
        *,
        max_answer_len: int = 15,
        handle_impossible_answer: bool = False,
        align_to_words: bool = True,
    ) -> list[Answer]:
        """The best answer to each (question, context) pair, all sent in one request."""
        options = Options(1, max_answer_len, handle_impossible_answer, align_to_words)
        return self._run(Call(list(pairs), options, lambda answers: [best(a) for a in answers]))

    def top_answers_many(
        self,
        pairs: Iterable[tuple[str, str]],
        top_k: int,
        *,
        max_answer_len: int = 15,
        handle_impossible_answer: bool = False,
        align_to_words: bool = True,
    ) -> list[list[Answer]]:
        """The ``top_k`` best answers of each pair, all sent in one request."""
        options = Options(top_k, max_answer_len, handle_impossible_answer, align_to_words)
        return self._run(Call(list(pairs), options))

    def ask_stream(
        self,
        examples: Iterable | AsyncIterable,
        *,
        top_k: int | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        in_flight: int = DEFAULT_IN_FLIGHT,
        errors: str = "raise",
        max_answer_len: int = 15,
        handle_impossible_answer: bool = False,
        align_to_words: bool = True,
    ) -> Any:
        """The answers to any number of examples, handed out lazily in input order: an ``Answer`` each (the
        ``top_k`` best as a list when ``top_k`` is given). ``examples``: (question, context) pairs or dicts
        with 'question' and 'context' (other keys are ignored) — a list, a generator, a file's lines, any
        iterable (``AsyncTritonQA``: an async iterable too). ``batch_size`` questions go in one request, at
        most ``in_flight`` requests are outstanding, and the input is read only as far ahead as those hold,
        so memory stays flat for an endless generator. Each request has its own ``timeout_s`` and retries.
        A failed example (not a pair, refused by the server, no answer within the deadline) raises its
        ``QAError`` at its place in the order (``errors="raise"``, ending the stream) or is handed out as that
        error instead of its answer (``errors="return"``). ``TritonQA`` returns an iterator;
        ``AsyncTritonQA`` an async iterator (``async for``)."""
        options = Options(1 if top_k is None else top_k, max_answer_len, handle_impossible_answer, align_to_words)
        shape = best if top_k is None else list
        return self._stream(examples, self._stream_spec(options, example_pair, shape, batch_size, in_flight, errors))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The pipeline's call forms and results: ``qa({'question': q, 'context': c})`` ->
        ``{'score', 'start', 'end', 'answer'}``, a list of those for several examples, a list per example when
        ``top_k`` > 1. Like the pipeline, a generator (any iterable but a list, tuple or dict) of example dicts
        gives an iterator of results, answered ``batch_size`` examples per request with several requests in
        flight (``ask_stream``); a list with ``batch_size`` is sent that many examples per request too."""
        kwargs = dict(kwargs)
        batch_size = kwargs.pop("batch_size", None)
        if batch_size is not None:
            check_positive("batch_size", batch_size)
        if len(args) == 1 and is_stream(args[0]) and not {"question", "context"} & set(kwargs):
            options, rest = pipeline_options(kwargs)
            unexpected(rest)
            spec = self._stream_spec(options, _pair, pipeline_item, batch_size or DEFAULT_BATCH_SIZE)
            return self._stream(args[0], spec)
        pairs, single, options = pipeline_examples(args, kwargs)
        if batch_size is not None and not single and len(pairs) > batch_size:
            return self._collect(self._stream(pairs, self._stream_spec(options, tuple, pipeline_item, batch_size)))
        return self._run(Call(pairs, options, lambda answers: pipeline_result(answers, single)))

    def _stream_spec(
        self,
        options: Options,
        to_pair: Callable[[Any], tuple[str, str]],
        shape: Callable[[list[Answer]], Any],
        batch_size: int,
        in_flight: int = DEFAULT_IN_FLIGHT,
        errors: str = "raise",
    ) -> StreamSpec:
        return StreamSpec(to_pair, lambda pairs: Call(pairs, options), shape, batch_size, in_flight, errors)

    def _readiness(self) -> Iterator[Any]:
        """The calls ``is_ready`` makes, the server's readiness and then the model's, each started when the
        previous one has answered and bounded by what is left of ``timeout_s`` (no retries): their results
        (async clients: awaitables). Raises ``DeadlineExceededError`` when no time is left."""
        plan = RetryPlan(NO_RETRIES, self.timeout_s)
        yield self._client.is_server_ready(headers=self.headers, client_timeout=plan.remaining_s())
        yield self._client.is_model_ready(self.model, headers=self.headers, client_timeout=plan.remaining_s())

    def _run(self, call: Call) -> Any:
        """Send one call (with retries) and return ``call.finish(response)``; async clients return an awaitable."""
        raise NotImplementedError

    def _stream(self, examples: Iterable | AsyncIterable, spec: StreamSpec) -> Any:
        """Drive ``client.stream.Window`` over ``examples``: an iterator (async iterator) of delivered results."""
        raise NotImplementedError

    def _collect(self, stream: Any) -> Any:
        """A list of all the results of ``_stream`` (async clients: an awaitable)."""
        raise NotImplementedError


def request_headers(
    headers: Mapping[str, str] | None, api_key: str | tuple[str, str] | None, api_key_header: str
) -> dict[str, str]:
    """Headers for every request; Triton's restricted protocol reads the key from ``triton-grpc-protocol-<header>``
    (``api_key_header``, or the header of a (header, value) pair)."""
    result = dict(headers or {})
    if isinstance(api_key, tuple):
        api_key_header, api_key = api_key
    if api_key is not None:
        result[f"triton-grpc-protocol-{api_key_header}"] = api_key
    return result


@functools.cache
def requested_outputs(grpc_module: Any) -> list:
    """The outputs every call asks for, built once per module (they are only read when a request is sent)."""
    return [grpc_module.InferRequestedOutput(name) for name in OUTPUT_NAMES]


def build_inputs(grpc_module: Any, pairs: Sequence[tuple[str, str]]) -> list:
    """``question`` and ``context`` BYTES tensors of shape [N] for a module with ``InferInput``
    (``tritonclient.grpc`` or ``tritonclient.grpc.aio``)."""
    if not pairs:
        raise InvalidInputError("no question to ask: pass at least one (question, context) pair")
    tensors = []
    for index, name in enumerate(INPUT_NAMES):
        values = np.array([_utf8(pair[index], name, i) for i, pair in enumerate(pairs)], dtype=object)
        tensor = grpc_module.InferInput(name, [len(pairs)], "BYTES")
        tensor.set_data_from_numpy(values)
        tensors.append(tensor)
    return tensors


def parse_answers(result: Any, pairs: Sequence[tuple[str, str]], top_k: int) -> list[list[Answer]]:
    """Per question, its answers best first (filler entries for missing answers dropped), checked: the server
    answers ``[N, top_k]`` for every output, each answer a span of its own context (offsets within it, ``text ==
    context[start:end]``; as the pipeline's, an answer whose word alignment puts its start after its end is
    ""); anything else raises ``ServerError`` rather than reaching the caller."""
    text, score, start, end = (result.as_numpy(name) for name in OUTPUT_NAMES)
    expected = [len(pairs), top_k]
    if not list(text.shape) == list(score.shape) == list(start.shape) == list(end.shape) == expected:
        raise ServerError(
            f"the server answered shapes {[list(a.shape) for a in (text, score, start, end)]} for {expected[0]} "
            f"questions and top_k {top_k}"
        )
    # plain Python values first (one conversion per array, not per element)
    answers = []
    for (_, context), row in zip(pairs, zip(text.tolist(), score.tolist(), start.tolist(), end.tolist())):
        found = []
        for t, s, b, e in zip(*row):
            t = t.decode("utf-8", "replace") if isinstance(t, bytes) else str(t)
            if b == e == -1 and not t:  # a question with fewer answers than top_k
                continue
            if not (0 <= b <= len(context) and 0 <= e <= len(context) and context[b:e] == t):
                raise ServerError(f"the server answered a span that is not its context's: {_short(t)} at [{b}, {e})")
            found.append(Answer(t, s, b, e))
        answers.append(found)
    return answers


def best(answers: list[Answer]) -> Answer:
    """The first answer; a question whose context yields none gets an empty one, as the pipeline gives."""
    return answers[0] if answers else Answer("", 0.0, 0, 0)


def pipeline_examples(args: tuple, kwargs: dict) -> tuple[list[tuple[str, str]], bool, Options]:
    """The inputs ``pipeline('question-answering')`` accepts, as (pairs, single, options).

    Accepted: ``qa({'question': q, 'context': c})``, ``qa([{...}, ...])``, ``qa(question=q, context=c)``,
    ``qa(q, c)``, ``qa(question=[...], context=[...])`` (one context string is shared by every question), plus
    the pipeline's ``top_k``/``topk``, ``max_answer_len``, ``handle_impossible_answer``, ``align_to_words``.
    """
    options, kwargs = pipeline_options(kwargs)
    question, context = kwargs.pop("question", None), kwargs.pop("context", None)
    unexpected(kwargs)
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
    if len(args) == 2 and all(isinstance(arg, str) for arg in args):  # qa(question, context)
        return [(args[0], args[1])], True, options
    examples = list(args[0]) if len(args) == 1 and isinstance(args[0], (list, tuple)) else list(args)
    if not examples:
        raise InvalidInputError("no question to ask")
    return [_pair(example) for example in examples], False, options


def pipeline_options(kwargs: Mapping[str, Any]) -> tuple[Options, dict[str, Any]]:
    """The answer options among the pipeline's keyword arguments, and the other arguments."""
    kwargs = dict(kwargs)
    if "topk" in kwargs and "top_k" not in kwargs:
        kwargs["top_k"] = kwargs.pop("topk")
    for name, value in SERVER_SIDE.items():
        if name in kwargs and kwargs.pop(name) != value:
            raise InvalidInputError(f"{name} is set in the server's model configuration, not per call")
    for name in IGNORED:
        kwargs.pop(name, None)
    options = Options(**{k: kwargs.pop(k) for k in list(kwargs) if k in Options.__dataclass_fields__})
    return options, kwargs


def unexpected(kwargs: Mapping[str, Any]) -> None:
    if kwargs:
        raise InvalidInputError(f"unexpected arguments: {', '.join(sorted(kwargs))}")


def is_stream(value: Any) -> bool:
    """Whether a positional argument is the pipeline's iterator form: any iterable (a generator, a dataset)
    but the call forms that answer at once (a dict, a list or tuple of them, a string)."""
    return isinstance(value, (Iterable, AsyncIterable)) and not isinstance(value, (str, bytes, Mapping, list, tuple))


def example_pair(example: Any) -> tuple[str, str]:
    """A (question, context) pair, or a dict with 'question' and 'context', as a pair."""
    if isinstance(example, Mapping):
        return _pair(example)
    if isinstance(example, (tuple, list)) and len(example) == 2:
        return _text(example[0], "question"), _text(example[1], "context")
    raise InvalidInputError(
        f"an example must be a (question, context) pair or a dict with 'question' and 'context', got {_short(example)}"
    )


def pipeline_item(answers: list[Answer]) -> Any:
    """One example's result in the pipeline's shape."""
    return pipeline_result([answers], single=True)


def pipeline_result(answers: list[list[Answer]], single: bool) -> Any:
    """Shape answers as the pipeline does: a dict per example, a list when an example has several."""
    shaped = [a[0].as_pipeline_dict() if len(a) == 1 else [x.as_pipeline_dict() for x in a] for a in answers]
    return shaped[0] if single else shaped


def _pair(example: Any) -> tuple[str, str]:
    if not isinstance(example, Mapping) or not {"question", "context"} <= set(example):
        raise InvalidInputError(f"an example must be a dict with 'question' and 'context', got {_short(example)}")
    return _text(example["question"], "question"), _text(example["context"], "context")


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise InvalidInputError(f"{name} must be a string, got {type(value).__name__}")
    return value


def _utf8(value: Any, name: str, index: int) -> bytes:
    try:
        return _text(value, name).encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidInputError(f"{name} {index} cannot be encoded as UTF-8: {error.reason}") from None

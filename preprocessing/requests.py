"""What a request may carry: its texts, its answer options (request parameters) and the server's limits."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields

from preprocessing.errors import InputError


@dataclass(frozen=True)
class RequestLimits:
    """Server-side limits on one request, set in the tokenizer model's config.pbtxt parameters. Everything here
    is checked from the request's counts and characters before any tokenization. No defaults here: the config
    is the one place they are written."""

    max_questions: int
    max_question_chars: int
    max_context_chars: int
    max_request_chars: int
    max_windows: int

    @classmethod
    def from_config(cls, parameters: Mapping[str, str]) -> RequestLimits:
        """From the tokenizer config's parameters; a missing one raises ``ValueError`` naming it."""
        return cls(**required_integers(parameters, [f.name for f in fields(cls)], "tokenizer"))


def required_integers(parameters: Mapping[str, str], names: Iterable[str], model: str) -> dict[str, int]:
    """``names`` of a model's config ``parameters`` as integers; a missing one raises ``ValueError`` naming it (the
    model does not load) rather than letting a default in code stand for it."""
    names = list(names)
    missing = [name for name in names if name not in parameters]
    if missing:
        raise ValueError(f"{model} config parameters missing: {', '.join(missing)}")
    return {name: int(parameters[name]) for name in names}


# the tokenizer config's parameters, every one required (runtime.backend.checked_parameters)
TOKENIZER_PARAMETERS = (
    "tokenizer_file",
    "max_seq_len",
    "doc_stride",
    *(f.name for f in fields(RequestLimits)),
    "parallel_encoding",
    "batch_budget_ms",
    "context_cache_bytes",
)


# the decoder config's parameters, every one required: its limits (DecoderLimits.OWN) and its time budget
DECODER_PARAMETERS = ("max_top_k", "max_answer_len", "batch_budget_ms", "max_request_ms")


@dataclass(frozen=True)
class DecoderLimits:
    """What one request to the decoder step may hold, which bounds its work: the answer options' bounds (the
    decoder's own config.pbtxt parameters, which the tokenizer step checks too), and windows and contexts no
    larger than the tokenizer step makes (its ``max_seq_len`` tokens a window, its characters limits)."""

    max_top_k: int
    max_answer_len: int
    max_seq_len: int
    max_context_chars: int
    max_request_chars: int

    OWN = ("max_top_k", "max_answer_len")
    FROM_TOKENIZER = ("max_seq_len", "max_context_chars", "max_request_chars")

    @classmethod
    def from_config(cls, parameters: Mapping[str, str], tokenizer_parameters: Mapping[str, str]) -> DecoderLimits:
        """From the decoder's parameters (exactly ``DECODER_PARAMETERS``: ``OWN`` and its time budget's) and the
        tokenizer's (``FROM_TOKENIZER`` among them); a missing, unknown or non-positive one raises ``ValueError``
        (the model does not load)."""
        known = set(DECODER_PARAMETERS)
        unknown, missing = sorted(set(parameters) - known), sorted(known - set(parameters))
        missing += [f"tokenizer's {key}" for key in cls.FROM_TOKENIZER if key not in tokenizer_parameters]
        if unknown or missing:
            raise ValueError(
                f"decoder config parameters: unknown {unknown or 'none'}, missing {missing or 'none'}; "
                f"the decoder reads {', '.join(DECODER_PARAMETERS)} and the tokenizer's {', '.join(cls.FROM_TOKENIZER)}"
            )
        values = {**{k: parameters[k] for k in cls.OWN}, **{k: tokenizer_parameters[k] for k in cls.FROM_TOKENIZER}}
        limits = cls(**{key: int(value) for key, value in values.items()})
        bad = [key for key in values if getattr(limits, key) < 1]
        if bad:
            raise ValueError(f"decoder limits must be positive integers: {', '.join(bad)}")
        return limits


@dataclass(frozen=True)
class AnswerOptions:
    """The reference pipeline's post-processing arguments, sent as request parameters of the same names."""

    top_k: int = 1
    max_answer_len: int = 15
    handle_impossible_answer: bool = False
    align_to_words: bool = True

    @classmethod
    def from_parameters(
        cls, parameters: Mapping[str, object] | str, max_top_k: int, max_answer_len: int
    ) -> AnswerOptions:
        """Options from a request's parameters (a mapping, or the JSON text the Python backend gives);
        ``max_top_k`` and ``max_answer_len`` are the server's limits (the decoder's config)."""
        if isinstance(parameters, str):
            parameters = json.loads(parameters or "{}")
        known = {f.name: f.type for f in fields(cls)}
        values: dict[str, object] = {}
        for name, value in parameters.items():
            if name not in known:
                raise InputError(f"unknown request parameter '{name}'; the parameters are {', '.join(sorted(known))}")
            wants_bool = known[name] == "bool"
            if wants_bool != isinstance(value, bool) or not isinstance(value, (bool, int)):
                kind = "a boolean" if wants_bool else "an integer"
                raise InputError(f"request parameter '{name}' must be {kind}, got {value!r}")
            values[name] = value
        options = cls(**values)
        if options.top_k < 1:
            raise InputError(f"top_k must be at least 1, got {options.top_k}")
        if options.top_k > max_top_k:
            raise InputError(f"top_k must be at most {max_top_k} (the server's limit), got {options.top_k}")
        if options.max_answer_len < 1:
            raise InputError(f"max_answer_len must be at least 1, got {options.max_answer_len}")
        if options.max_answer_len > max_answer_len:
            raise InputError(
                f"max_answer_len must be at most {max_answer_len} (the server's limit), got {options.max_answer_len}"
            )
        return options


def readable_texts(raw: Iterable[object], name: str, max_chars: int | None = None) -> list[str]:
    """UTF-8 strings from a TYPE_STRING tensor; each must hold some non-whitespace text."""
    texts = []
    for i, item in enumerate(raw):
        if max_chars is not None and isinstance(item, bytes) and len(item) > 4 * max_chars:
            # UTF-8 takes at most 4 bytes a character: refused before decoding
            raise InputError(f"{name} {i} is {len(item)} bytes long; the limit is {max_chars} characters")
        try:
            text = item.decode("utf-8") if isinstance(item, bytes) else str(item)
        except UnicodeDecodeError as error:
            raise InputError(f"{name} {i} is not valid UTF-8 ({error.reason} at byte {error.start})") from None
        if max_chars is not None and len(text) > max_chars:
            raise InputError(f"{name} {i} is {len(text)} characters long; the limit is {max_chars}")
        if not text.strip():
            raise InputError(f"{name} {i} is empty or only whitespace")
        if "\x00" in text:
            raise InputError(f"{name} {i} contains a NUL character")
        texts.append(text)
    if not texts:
        raise InputError(f"the request holds no {name}; send at least one")
    return texts


def read_pairs(
    questions: Iterable[object], contexts: Iterable[object], limits: RequestLimits
) -> tuple[list[str], list[str]]:
    """A request's (question, context) texts, checked against ``limits`` from their counts and characters only."""
    questions, contexts = list(questions), list(contexts)
    if len(questions) != len(contexts):
        raise InputError(f"{len(questions)} questions but {len(contexts)} contexts; send one context per question")
    if len(questions) > limits.max_questions:
        raise InputError(f"{len(questions)} questions in one request; the limit is {limits.max_questions}")
    question_texts = readable_texts(questions, "question", limits.max_question_chars)
    context_texts = readable_texts(contexts, "context", limits.max_context_chars)
    total = sum(map(len, question_texts)) + sum(map(len, context_texts))
    if total > limits.max_request_chars:
        raise InputError(
            f"the request holds {total} characters of questions and contexts; the limit is "
            f"{limits.max_request_chars} per request"
        )
    return question_texts, context_texts

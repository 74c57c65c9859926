"""What a request may carry: its texts, its answer options (request parameters) and the server's limits."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Iterable, Mapping

from preprocessing.errors import InputError


@dataclass(frozen=True)
class RequestLimits:
    """Server-side limits, set in the tokenizer model's config.pbtxt parameters."""

    max_questions: int = 256
    max_context_chars: int = 1_000_000
    max_windows: int = 1024
    max_top_k: int = 20

    @classmethod
    def from_config(cls, parameters: Mapping[str, str]) -> "RequestLimits":
        return cls(**{f.name: int(parameters[f.name]) for f in fields(cls) if f.name in parameters})


@dataclass(frozen=True)
class AnswerOptions:
    """The reference pipeline's post-processing arguments, sent as request parameters of the same names."""

    top_k: int = 1
    max_answer_len: int = 15
    handle_impossible_answer: bool = False
    align_to_words: bool = True

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, object] | str, max_top_k: int | None = None) -> "AnswerOptions":
        """Options from a request's parameters (a mapping, or the JSON text the Python backend gives)."""
        if isinstance(parameters, str):
            parameters = json.loads(parameters or "{}")
        known = {f.name: f.type for f in fields(cls)}
        values: dict[str, object] = {}
        for name, value in parameters.items():
            if name not in known:
                raise InputError(
                    f"unknown request parameter '{name}'; the parameters are {', '.join(sorted(known))}"
                )
            wants_bool = known[name] == "bool"
            if wants_bool != isinstance(value, bool) or not isinstance(value, (bool, int)):
                kind = "a boolean" if wants_bool else "an integer"
                raise InputError(f"request parameter '{name}' must be {kind}, got {value!r}")
            values[name] = value
        options = cls(**values)
        if options.top_k < 1:
            raise InputError(f"top_k must be at least 1, got {options.top_k}")
        if max_top_k is not None and options.top_k > max_top_k:
            raise InputError(f"top_k must be at most {max_top_k} (the server's limit), got {options.top_k}")
        if options.max_answer_len < 1:
            raise InputError(f"max_answer_len must be at least 1, got {options.max_answer_len}")
        return options


def decode_texts(raw: Iterable[object], name: str, max_chars: int | None = None) -> list[str]:
    """UTF-8 strings from a TYPE_STRING tensor; each must hold some non-whitespace text."""
    texts = []
    for i, item in enumerate(raw):
        try:
            text = item.decode("utf-8") if isinstance(item, bytes) else str(item)
        except UnicodeDecodeError as error:
            raise InputError(f"{name} {i} is not valid UTF-8 ({error.reason} at byte {error.start})") from None
        if not text.strip():
            raise InputError(f"{name} {i} is empty or only whitespace")
        if "\x00" in text:
            raise InputError(f"{name} {i} contains a NUL character")
        if max_chars is not None and len(text) > max_chars:
            raise InputError(f"{name} {i} is {len(text)} characters long; the limit is {max_chars}")
        texts.append(text)
    if not texts:
        raise InputError(f"the request holds no {name}; send at least one")
    return texts

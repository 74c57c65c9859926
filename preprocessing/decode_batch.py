"""Many requests at once, the decoder step's part: the answers of everything one ``execute`` receives.

Each request's problems stay its own: a request that is refused gets its ``InputError``, and the others are
still answered. The work is done for all of them together — one vectorised decode per set of answer options —
and split per request afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from preprocessing.arrays import stack_padded
from preprocessing.decode import DecodedAnswers, decode
from preprocessing.errors import InputError
from preprocessing.requests import AnswerOptions, DecoderLimits, readable_texts
from preprocessing.tokenize import NO_OFFSET
from runtime.tensors import window_questions


@dataclass
class DecoderInput:
    """One request to the decoder step: its windows' logits and offsets, and its questions' contexts."""

    start_logits: np.ndarray  # [W, L] float32
    end_logits: np.ndarray  # [W, L] float32
    token_offsets: np.ndarray  # [W, L, 2] int32
    word_offsets: np.ndarray  # [W, L, 2] int32
    window_question: np.ndarray  # [W] int32
    contexts: list[str]  # one per question
    options: AnswerOptions

    @classmethod
    def checked(
        cls,
        logits: np.ndarray,
        offsets: np.ndarray,
        window_context: np.ndarray,
        options: AnswerOptions,
        limits: DecoderLimits,
    ) -> DecoderInput:
        """A decoder request from its tensors (``runtime.tensors``: ``logits`` [W, L, 2], ``offsets`` [W, L, 4],
        ``window_context`` [W, 1]), refused with ``InputError`` unless they have the structure the tokenizer and
        model steps give them: consistent shapes, windows of at most ``limits.max_seq_len`` tokens, the context
        (UTF-8, within the tokenizer's characters limits) on each question's first window and only there (the
        first window opens a question). Their values (finite logits, offsets within the context) are checked by
        ``decode_requests``, for all requests at once."""
        if logits.ndim != 3 or logits.shape[0] == 0 or logits.shape[1] == 0 or logits.shape[2] != 2:
            raise InputError(f"logits must be [windows, tokens, 2], got shape {list(logits.shape)}")
        n_windows, width, _ = logits.shape
        if width > limits.max_seq_len:
            raise InputError(
                f"windows of {width} tokens; the decoder takes at most {limits.max_seq_len} "
                "(the tokenizer's max_seq_len)"
            )
        for name, array, shape in (
            ("offsets", offsets, (n_windows, width, 4)),
            ("window_context", window_context, (n_windows, 1)),
        ):
            if array.shape != shape:
                raise InputError(f"{name} must have shape {list(shape)} like logits, got {list(array.shape)}")
        questions = window_questions(window_context)
        if questions[0] != 0:
            raise InputError("window_context must hold the context on the first window of each question")
        first_windows = np.concatenate(([0], np.flatnonzero(np.diff(questions)) + 1))
        contexts = readable_texts(window_context[first_windows, 0], "context of window", limits.max_context_chars)
        total = sum(map(len, contexts))
        if total > limits.max_request_chars:
            raise InputError(
                f"the request's contexts hold {total} characters; the limit is {limits.max_request_chars} per request"
            )
        return cls(logits[..., 0], logits[..., 1], offsets[..., :2], offsets[..., 2:], questions, contexts, options)


def _invalid_rows(start_logits, end_logits, token_offsets, word_offsets, context_chars) -> list[tuple[np.ndarray, str]]:
    """Per value check, the windows (rows of the stacked batch) that fail it, with the message."""
    checks = [
        (
            ~(np.isfinite(start_logits).all(axis=1) & np.isfinite(end_logits).all(axis=1)),
            "start_logits and end_logits must be finite",
        )
    ]
    for name, offsets in (("token", token_offsets), ("word", word_offsets)):
        begin, end = offsets[..., 0], offsets[..., 1]
        ok = ((begin == NO_OFFSET) & (end == NO_OFFSET)) | ((0 <= begin) & (begin <= end) & (end <= context_chars))
        message = f"offsets: the {name} spans must be character spans within their context, or {NO_OFFSET} pairs"
        checks.append((~ok.all(axis=1), message))
    return checks


def decode_requests(requests: Sequence[DecoderInput | Exception]) -> list[DecodedAnswers | Exception]:
    """Answers of each request: one vectorised decode over the windows of all requests that share answer
    options, split per request afterwards (errors given in ``requests`` pass through). When decoding them
    together fails (a ``MemoryError``, any exception), each is decoded alone: only the request that fails
    alone gets the exception, the others are answered."""
    results: list[DecodedAnswers | Exception | None] = [r if isinstance(r, Exception) else None for r in requests]
    groups: dict[AnswerOptions, list[int]] = {}
    for i, request in enumerate(requests):
        if not isinstance(request, Exception):
            groups.setdefault(request.options, []).append(i)
    for options, members in groups.items():
        parts = [requests[i] for i in members]
        try:
            answers = _decode_together(parts, options)
        except Exception as error:  # noqa: BLE001 -- the failing request is found below; its reply holds the error
            answers = [error] if len(parts) == 1 else None
        if answers is None:  # outside the except block: the failed attempt's arrays are freed first
            answers = [_decode_alone(part, options) for part in parts]
        for i, answer in zip(members, answers):
            results[i] = answer
    return results  # type: ignore[return-value]


def _decode_alone(request: DecoderInput, options: AnswerOptions) -> DecodedAnswers | Exception:
    try:
        return _decode_together([request], options)[0]
    except Exception as error:  # noqa: BLE001 -- becomes that request's error reply
        return error


def _decode_together(parts: Sequence[DecoderInput], options: AnswerOptions) -> list[DecodedAnswers | InputError]:
    """The answers of requests that share ``options`` from one decode of all their windows, or the
    ``InputError`` that refuses a request for its values."""
    first_question = np.cumsum([0] + [len(p.contexts) for p in parts])
    first_window = np.cumsum([0] + [len(p.window_question) for p in parts])
    tensors = (
        stack_padded([p.start_logits for p in parts], 0.0),
        stack_padded([p.end_logits for p in parts], 0.0),
        stack_padded([p.token_offsets for p in parts], NO_OFFSET),
        stack_padded([p.word_offsets for p in parts], NO_OFFSET),
    )
    window_question = np.concatenate([p.window_question + f for p, f in zip(parts, first_question)])
    contexts = [c for p in parts for c in p.contexts]
    context_chars = np.fromiter(map(len, contexts), np.int64, len(contexts))[window_question][:, None]
    # a request with a bad value is refused; its windows are still decoded with the others (decoding
    # bad values answers nonsense, never fails) and its answers dropped
    request_of_window = np.repeat(np.arange(len(parts)), np.diff(first_window))
    refused = {}
    for bad_rows, message in _invalid_rows(*tensors, context_chars):
        for p in np.unique(request_of_window[bad_rows]).tolist():
            refused.setdefault(p, InputError(message))
    answers = decode(*tensors, window_question, contexts, options)
    return [
        refused.get(p) or answers.rows(begin, end)
        for p, (begin, end) in enumerate(zip(first_question[:-1], first_question[1:]))
    ]

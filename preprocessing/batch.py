"""Many requests at once: what the tokenizer and decoder steps do with everything one ``execute`` receives.

Each request's problems stay its own: a request that is refused gets its ``InputError``, and the others are
still answered. The work is done for all of them together — one tokenizer call, one vectorised decode per
set of answer options — and split per request afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from preprocessing.arrays import stack_padded
from preprocessing.decode import DecodedAnswers, decode
from preprocessing.errors import InputError
from preprocessing.requests import AnswerOptions, decode_texts
from preprocessing.tokenize import NO_OFFSET, QATokenizer, Windows


def tokenize_requests(tokenizer: QATokenizer, requests: Sequence[tuple[Sequence[str], Sequence[str]] | Exception],
                      max_windows: int) -> list[Windows | Exception]:
    """Windows of each request's (questions, contexts), or the error that refuses it (errors given in
    ``requests`` pass through).

    Every request is planned first (window bounds from character counts, exact token counts only where they
    matter), so nothing over ``max_windows`` is encoded. The pairs of all requests then go through one
    tokenizer call — or a few, each of at most ``max_windows`` planned windows, which bounds the memory a
    batch of large requests takes; a request whose windows go over the limit is refused.
    """
    results: list[Windows | Exception | None] = list(requests)
    readable = [r for r, request in enumerate(requests) if not isinstance(request, Exception)]
    pairs: list[tuple[int, str, str, int]] = []  # (request, question, context, planned windows)
    for r, planned in zip(readable, tokenizer.plan_requests([requests[r] for r in readable], max_windows)):
        if isinstance(planned, InputError):
            results[r] = planned
            continue
        questions, contexts = requests[r]
        pairs.extend(zip([r] * len(questions), questions, contexts, planned.tolist()))
        results[r] = None

    parts: dict[int, list[Windows]] = {}
    for chunk in _chunks(pairs, max_windows):
        chunk = [pair for pair in chunk if results[pair[0]] is None]
        for r, windows in _encode_chunk(tokenizer, chunk).items():
            if isinstance(windows, InputError):
                results[r] = windows
            else:
                parts.setdefault(r, []).append(windows)
                count = sum(len(p.window_question) for p in parts[r])
                if count > max_windows:
                    results[r] = InputError(f"the contexts make more than {max_windows} windows of "
                                            f"{tokenizer.settings.max_seq_len} tokens; the limit is {max_windows} "
                                            f"per request")
    for r, request_parts in parts.items():
        if results[r] is None:
            results[r] = Windows.concatenate(request_parts)
    return results  # type: ignore[return-value]


def _chunks(pairs: list[tuple[int, str, str, int]], max_windows: int):
    """Consecutive pairs whose planned windows add up to at most ``max_windows`` (one pair at least)."""
    chunk, planned = [], 0
    for pair in pairs:
        if chunk and planned + pair[3] > max_windows:
            yield chunk
            chunk, planned = [], 0
        chunk.append(pair)
        planned += pair[3]
    if chunk:
        yield chunk


def _encode_chunk(tokenizer: QATokenizer, chunk: list[tuple[int, str, str, int]]) -> dict[int, Windows | InputError]:
    """Windows per request of one chunk, from one tokenizer call; when that call refuses the chunk, each
    request is encoded alone so that only the bad one gets the error."""
    if not chunk:
        return {}
    try:
        windows = tokenizer.encode([q for _, q, _, _ in chunk], [c for _, _, c, _ in chunk])
    except InputError as error:
        requests = list(dict.fromkeys(r for r, _, _, _ in chunk))
        if len(requests) == 1:
            return {requests[0]: error}
        result: dict[int, Windows | InputError] = {}
        for r in requests:
            result.update(_encode_chunk(tokenizer, [pair for pair in chunk if pair[0] == r]))
        return result
    result, first = {}, 0
    for r in dict.fromkeys(r for r, _, _, _ in chunk):
        count = sum(1 for pair in chunk if pair[0] == r)
        result[r] = windows.select(first, count)
        first += count
    return result


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
    def checked(cls, start_logits: np.ndarray, end_logits: np.ndarray, token_offsets: np.ndarray,
                word_offsets: np.ndarray, window_question: np.ndarray, window_context: np.ndarray,
                options: AnswerOptions) -> "DecoderInput":
        """A decoder request from its tensors, refused with ``InputError`` unless they have the structure the
        tokenizer and model steps give them: consistent shapes, questions numbered 0, 1, ... with contiguous
        windows, the context (UTF-8) on each question's first window. Their values (finite logits, offsets
        within the context) are checked by ``decode_requests``, for all requests at once."""
        if start_logits.ndim != 2 or start_logits.shape[0] == 0 or start_logits.shape[1] == 0:
            raise InputError(f"start_logits must be [windows, tokens], got shape {list(start_logits.shape)}")
        n_windows, width = start_logits.shape
        for name, array, shape in (("end_logits", end_logits, (n_windows, width)),
                                   ("token_offsets", token_offsets, (n_windows, width, 2)),
                                   ("word_offsets", word_offsets, (n_windows, width, 2)),
                                   ("window_question", window_question, (n_windows, 1)),
                                   ("window_context", window_context, (n_windows, 1))):
            if array.shape != shape:
                raise InputError(f"{name} must have shape {list(shape)} like start_logits, got {list(array.shape)}")
        questions = window_question[:, 0]
        steps = np.diff(questions)
        if questions[0] != 0 or ((steps != 0) & (steps != 1)).any():
            raise InputError("window_question must number questions 0, 1, 2, ... with each question's windows "
                             "next to each other")
        first_windows = np.concatenate(([0], np.flatnonzero(steps) + 1))
        contexts = decode_texts(window_context[first_windows, 0], "context of window")
        return cls(start_logits, end_logits, token_offsets, word_offsets, questions.astype(np.int32), contexts,
                   options)


def _invalid_rows(start_logits, end_logits, token_offsets, word_offsets, context_chars) -> list[tuple[np.ndarray, str]]:
    """Per value check, the windows (rows of the stacked batch) that fail it, with the message."""
    checks = [(~(np.isfinite(start_logits).all(axis=1) & np.isfinite(end_logits).all(axis=1)),
               "start_logits and end_logits must be finite")]
    for name, offsets in (("token_offsets", token_offsets), ("word_offsets", word_offsets)):
        begin, end = offsets[..., 0], offsets[..., 1]
        ok = ((begin == NO_OFFSET) & (end == NO_OFFSET)) | ((0 <= begin) & (begin <= end) & (end <= context_chars))
        checks.append((~ok.all(axis=1), f"{name} must be character spans within their context, or {NO_OFFSET} pairs"))
    return checks


def decode_requests(requests: Sequence[DecoderInput | Exception]) -> list[DecodedAnswers | Exception]:
    """Answers of each request: one vectorised decode over the windows of all requests that share answer
    options, split per request afterwards (errors given in ``requests`` pass through)."""
    results: list[DecodedAnswers | Exception | None] = [r if isinstance(r, Exception) else None for r in requests]
    groups: dict[AnswerOptions, list[int]] = {}
    for i, request in enumerate(requests):
        if not isinstance(request, Exception):
            groups.setdefault(request.options, []).append(i)
    for options, members in groups.items():
        parts = [requests[i] for i in members]
        first_question = np.cumsum([0] + [len(p.contexts) for p in parts])
        first_window = np.cumsum([0] + [len(p.window_question) for p in parts])
        tensors = (stack_padded([p.start_logits for p in parts], 0.0),
                   stack_padded([p.end_logits for p in parts], 0.0),
                   stack_padded([p.token_offsets for p in parts], NO_OFFSET),
                   stack_padded([p.word_offsets for p in parts], NO_OFFSET))
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
        for p, (i, begin, end) in enumerate(zip(members, first_question[:-1], first_question[1:])):
            results[i] = refused.get(p) or answers.rows(begin, end)
    return results  # type: ignore[return-value]

"""Many requests at once: what the tokenizer and decoder steps do with everything one ``execute`` receives.

Each request's problems stay its own: a request that is refused gets its ``InputError``, and the others are
still answered. The work is done for all of them together — one tokenizer call, one vectorised decode per
set of answer options — and split per request afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from preprocessing.arrays import stack_padded
from preprocessing.decode import DecodedAnswers, decode
from preprocessing.errors import Busy, InputError
from preprocessing.requests import AnswerOptions, DecoderLimits, readable_texts
from preprocessing.tokenize import NO_OFFSET, QATokenizer, Windows
from runtime.tensors import window_questions

# Requests planned together (one call for their exact token counts where needed) and pairs encoded together, in
# characters (100,000 characters take ~0.2 s to encode on 2 cores)
PLAN_GROUP_CHARS = 200_000
CHUNK_CHARS = 100_000


class Budget:
    """The time one ``execute`` may spend: no request is started that would end past it, as predicted from the
    step's pace so far — seconds per unit of each kind of work it does (for the tokenizer, characters counted
    while planning and characters encoded; for the model step, tokens) — except the first. With
    ``request_seconds``, also the longest one request may take: a request whose work alone is predicted longer
    is refused (``InputError``: it would never fit), whichever place it has in its batch."""

    def __init__(self, seconds: float, min_work: int = 10_000, request_seconds: float | None = None):
        self.seconds, self.min_work, self.request_seconds = seconds, min_work, request_seconds
        self.paces: dict[str, float] = {}  # seconds per unit of each kind of work, learned from the work done

    def learn(self, kind: str, work: int, elapsed: float) -> None:
        if work >= self.min_work:  # small pieces of work measure overheads more than pace
            pace, known = elapsed / work, self.paces.get(kind)
            self.paces[kind] = pace if known is None else 0.8 * known + 0.2 * pace

    def predict(self, **work: int) -> float:
        """Seconds that ``work`` (units of each kind) takes at the paces learned (nothing for a kind not yet
        measured)."""
        return sum(units * self.paces.get(kind, 0.0) for kind, units in work.items())

    def fits(self, started: float, seconds: float) -> bool:
        """Whether work of ``seconds``, begun now, ends within the budget of an execute that began at ``started``."""
        return time.monotonic() - started + seconds < self.seconds

    def busy(self, step: str) -> Busy:
        return Busy(
            f"the {step} step had no time left for this request in its batch (budget {self.seconds:g} s, "
            f"overload); retry"
        )

    def select(
        self, requests: Sequence[object], costs: Sequence[float], started: float, step: str, begun: bool = False
    ) -> list[object]:
        """``requests`` (errors pass through), in the order given, as far as they fit in the budget together with
        their predicted ``costs`` in seconds (the first always does, unless the execute has ``begun`` other work);
        the others replaced by ``Busy``."""
        kept: list[object] = list(requests)
        total = 0.0
        for i, request in enumerate(requests):
            if isinstance(request, Exception):
                continue
            if begun and not self.fits(started, total + costs[i]):
                kept[i] = self.busy(step)
            else:
                total += costs[i]
                begun = True
        return kept

    def select_smallest(self, requests: Sequence[object], work: Sequence[int], started: float, step: str, kind: str):
        """``requests`` (errors pass through), smallest ``work`` (units of ``kind``) first, as far as they fit in the
        budget together (see ``select``); a request over ``request_seconds`` alone gets an ``InputError`` naming
        the limit."""
        kept: list[object] = list(requests)
        pace = self.paces.get(kind)
        for i, request in enumerate(requests):
            predicted = work[i] * (pace or 0.0)
            if isinstance(request, Exception) or self.request_seconds is None:
                continue
            if predicted > self.request_seconds:
                kept[i] = InputError(
                    f"the request's {work[i]:,} {kind} would take the {step} step about {predicted:.1f} s at its "
                    f"measured pace ({1 / pace:,.0f} {kind}/s); the limit is {self.request_seconds:g} s per request "
                    f"(the {step} step's max_request_ms): send shorter contexts or fewer questions"
                )
        order = sorted(range(len(requests)), key=work.__getitem__)
        chosen = self.select([kept[i] for i in order], [work[i] * (pace or 0.0) for i in order], started, step)
        for i, result in zip(order, chosen):
            kept[i] = result
        return kept


def tokenize_requests(
    tokenizer: QATokenizer,
    requests: Sequence[tuple[Sequence[str], Sequence[str]] | Exception],
    max_windows: int,
    budget: Budget | None = None,
) -> list[Windows | Exception]:
    """Windows of each request's (questions, contexts), or the error that refuses it (errors given in
    ``requests`` pass through).

    Every request is planned first (window bounds from character counts, exact token counts only where they
    matter, stopped once a text is surely over the limit), so nothing over ``max_windows`` is encoded. The pairs
    then go through the tokenizer together — in a few calls, each of at most ``max_windows`` planned windows
    (which bounds the memory a batch of large requests takes) and ``CHUNK_CHARS`` characters, or one pair; a
    request whose windows go over the limit is refused.

    Smaller requests go first. With a ``budget``, once any work is done no request is started whose work —
    the characters its plan may count exactly, then those it encodes — would end past the budget: those left
    get ``Busy`` (UNAVAILABLE, which clients retry), whether or not they would have been refused at planning.
    One execute handed many large requests — an overload, requests whose callers have given up (Triton 2.51
    does not cancel ensemble requests), or requests over the limits that only an exact count refuses — then
    takes about the budget, or one large request alone, not the sum of them all; and small requests batched
    with large ones are answered without waiting for them.
    """
    started = time.monotonic()
    results: list[Windows | Exception | None] = list(requests)
    readable = [r for r, request in enumerate(requests) if not isinstance(request, Exception)]
    size = {r: sum(map(len, requests[r][0])) + sum(map(len, requests[r][1])) for r in readable}
    readable.sort(key=size.__getitem__)
    parts: dict[int, list[Windows]] = {}
    begun = False  # whether this execute has done any work yet: the first request always runs

    for group in _groups(readable, size, PLAN_GROUP_CHARS):
        if budget is not None:
            counting = dict(zip(group, tokenizer.counting_chars([requests[r] for r in group], max_windows)))
            costs = [budget.predict(counted=counting[r], encoded=size[r]) for r in group]
            for r, kept in zip(group, budget.select([requests[r] for r in group], costs, started, "tokenizer", begun)):
                if isinstance(kept, Busy):
                    results[r] = kept
            group = [r for r in group if not isinstance(results[r], Busy)]
            begun = begun or bool(group)
        plan_started = time.monotonic()
        pairs: list[tuple[int, str, str, int]] = []  # (request, question, context, planned windows)
        for r, planned in zip(group, tokenizer.plan_requests([requests[r] for r in group], max_windows)):
            if isinstance(planned, InputError):
                results[r] = planned
                continue
            questions, contexts = requests[r]
            pairs.extend(zip([r] * len(questions), questions, contexts, planned.tolist()))
            results[r] = None
        if budget is not None:
            budget.learn("counted", sum(counting[r] for r in group), time.monotonic() - plan_started)
        for chunk in _chunks(pairs, max_windows, CHUNK_CHARS):
            chunk = [pair for pair in chunk if results[pair[0]] is None]
            chunk_started = time.monotonic()
            for r, windows in _encode_chunk(tokenizer, chunk).items():
                if isinstance(windows, InputError):
                    results[r] = windows
                else:
                    parts.setdefault(r, []).append(windows)
                    count = sum(len(p.window_question) for p in parts[r])
                    if count > max_windows:
                        results[r] = InputError(
                            f"the contexts make more than {max_windows} windows of "
                            f"{tokenizer.settings.max_seq_len} tokens; the limit is "
                            f"{max_windows} per request"
                        )
            if budget is not None and chunk:
                budget.learn("encoded", sum(len(q) + len(c) for _, q, c, _ in chunk), time.monotonic() - chunk_started)
    for r, request_parts in parts.items():
        if results[r] is None:
            results[r] = Windows.concatenate(request_parts)
    return results  # type: ignore[return-value]


def _groups(requests: list[int], size: dict[int, int], max_chars: int):
    """Consecutive requests of at most ``max_chars`` characters together (one request at least)."""
    group, chars = [], 0
    for r in requests:
        if group and chars + size[r] > max_chars:
            yield group
            group, chars = [], 0
        group.append(r)
        chars += size[r]
    if group:
        yield group


def _chunks(pairs: list[tuple[int, str, str, int]], max_windows: int, max_chars: int):
    """Consecutive pairs whose planned windows add up to at most ``max_windows`` and whose texts to at most
    ``max_chars`` characters (one pair at least)."""
    chunk, planned, chars = [], 0, 0
    for pair in pairs:
        size = len(pair[1]) + len(pair[2])
        if chunk and (planned + pair[3] > max_windows or chars + size > max_chars):
            yield chunk
            chunk, planned, chars = [], 0, 0
        chunk.append(pair)
        planned += pair[3]
        chars += size
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

"""Many requests at once, the decoder step's part: the answers of everything one ``execute`` receives (the
per-execute floor over ``preprocessing.decode``'s per-window spans).

Each request's problems stay its own: a request that is refused gets its ``InputError`` (or, past the step's
time budget, the budget's ``Busy``), and the others are still answered. The work is done for all of them
together — one vectorised decode per set of answer options — and split per request afterwards.

Under a budget the work is predicted in two parts, each at a pace measured at load (``measure_paces``): the
span band every window has (windows x width x answer lengths), known from the request's shapes, and the
reference's replay of a window whose spans score 0 (n x n products), known only once its probabilities are
(logits so low they underflow, made on purpose or not, cost it a replay for each window).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from preprocessing.arrays import stack_padded
from preprocessing.decode import DecodedAnswers, decode, reference_spans
from preprocessing.errors import InputError
from preprocessing.outcomes import Outcome, Refused, answered, attempt
from preprocessing.requests import AnswerOptions, DecoderLimits, readable_texts
from preprocessing.tokenize import NO_OFFSET
from runtime.scheduling import Budget
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


def band_work(request: DecoderInput) -> int:
    """The span scores a request's windows compute: windows x width x answer lengths."""
    n_windows, width = request.start_logits.shape
    return n_windows * width * min(request.options.max_answer_len, width)


def measure_paces(budget: Budget, max_seq_len: int, max_answer_len: int = 15) -> None:
    """Anchor ``budget``'s two paces (``Budget.anchor``), before any request: the span band on 64 windows of
    ``max_seq_len`` tokens, and the replay of one such window's n x n products (the costliest per product: the
    widest), each the faster of two runs after a first that warms up."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(64, max_seq_len)).astype(np.float32)
    offsets = np.stack([np.arange(max_seq_len), np.arange(max_seq_len) + 1], axis=-1).astype(np.int32)
    offsets = np.broadcast_to(offsets, (64, max_seq_len, 2)).copy()
    request = DecoderInput(
        logits,
        logits,
        offsets,
        offsets,
        np.arange(64, dtype=np.int32),
        ["x" * (max_seq_len + 1)] * 64,
        AnswerOptions(max_answer_len=max_answer_len),
    )
    keep = np.ones(max_seq_len, bool)
    band_mask = np.triu(np.ones((max_seq_len, max_seq_len), np.float32))
    p = np.full(max_seq_len, 1.0 / max_seq_len, np.float32)
    for kind, work, run in (
        ("band", band_work(request), lambda: _decode_together([request], request.options)),
        ("replay", max_seq_len**2, lambda: reference_spans(p, p, keep, 12, band_mask)),
    ):
        run()
        times = []
        for _ in range(2):
            started = time.perf_counter()
            run()
            times.append(time.perf_counter() - started)
        budget.anchor(kind, work, min(times))


def decode_requests(
    requests: Sequence[Outcome[DecoderInput]], budget: Budget | None = None, started: float | None = None
) -> list[Outcome[DecodedAnswers]]:
    """Answers of each request: one vectorised decode over the windows of all requests that share answer
    options, split per request afterwards (refusals given in ``requests`` pass through). When decoding them
    together fails (a ``MemoryError``, any exception), each is decoded alone: only the request that fails
    alone is refused with the exception, the others are answered.

    With a ``budget`` (its paces anchored: ``measure_paces``), requests go smallest band first as far as they
    fit in the execute that began at ``started``, the others ``Busy``; a request whose band alone is over the
    budget's per-request limit is refused; so is one whose windows' replays would take it past that limit
    (``InputError`` saying so), known once its probabilities are, without running them."""
    started = time.monotonic() if started is None else started
    outcomes: list = list(requests)
    if budget is not None:
        work = [0 if isinstance(r, Refused) else band_work(r) for r in requests]
        outcomes = budget.select_smallest(outcomes, work, started, "decoder", "band")
    groups: dict[AnswerOptions, list[int]] = {}
    for i in answered(outcomes):
        groups.setdefault(outcomes[i].options, []).append(i)
    for options, members in groups.items():
        parts = [outcomes[i] for i in members]
        decode_started = time.monotonic()
        answers = attempt(_decode_together, parts, options, budget)
        if isinstance(answers, Refused):
            if len(parts) == 1:
                answers = [answers]
            else:  # each alone, so that only the failing one is refused
                answers = None  # the failed attempt's arrays (held by its traceback) are freed first
                answers = [_decode_alone(part, options, budget) for part in parts]
        if budget is not None:
            budget.learn("band", sum(map(band_work, parts)), time.monotonic() - decode_started)
        for i, answer in zip(members, answers):
            outcomes[i] = answer
    return outcomes


def _decode_alone(request: DecoderInput, options: AnswerOptions, budget: Budget | None) -> Outcome[DecodedAnswers]:
    together = attempt(_decode_together, [request], options, budget)
    return together if isinstance(together, Refused) else together[0]


def _decode_together(
    parts: Sequence[DecoderInput], options: AnswerOptions, budget: Budget | None = None
) -> list[Outcome[DecodedAnswers]]:
    """The answers of requests that share ``options`` from one decode of all their windows, or the refusal
    (``InputError``) of a request for its values or, under a ``budget``, for the replays its windows would
    need."""
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
            refused.setdefault(p, Refused(InputError(message)))

    def replayable(windows: np.ndarray, products: np.ndarray) -> np.ndarray:
        """The windows whose request may have its replays: each request's within the per-request limit."""
        of_request = request_of_window[windows]
        for p in np.unique(of_request).tolist():
            seconds = budget.predict(band=band_work(parts[p]), replay=int(products[of_request == p].sum()))
            if p not in refused and budget.request_seconds is not None and seconds > budget.request_seconds:
                refused[p] = Refused(
                    InputError(
                        f"the request's logits leave {int((of_request == p).sum())} of its "
                        f"{len(parts[p].window_question)} windows without a span of positive score (their "
                        "probabilities underflow): replaying the reference's choice among them would hold the "
                        f"decoder step longer than its limit of {budget.request_seconds:g} s per request "
                        "(max_request_ms)"
                    )
                )
        return np.array([int(p) not in refused for p in of_request], dtype=bool)

    answers = decode(*tensors, window_question, contexts, options, replayable if budget is not None else None)
    return [
        refused.get(p) or answers.rows(begin, end)
        for p, (begin, end) in enumerate(zip(first_question[:-1], first_question[1:]))
    ]

"""Many requests at once, the tokenizer step's part: the windows of everything one ``execute`` receives (the
per-execute floor over ``preprocessing.tokenize``'s per-pair windows).

Each request's problems stay its own: a request that is refused gets its ``InputError`` (or, past the step's
time budget, the budget's ``Busy``) as its ``Refused`` outcome, and the others are still encoded. The work is
done for all of them together — a few tokenizer calls — and split per request afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from preprocessing.errors import InputError
from preprocessing.outcomes import Outcome, Refused, answered
from preprocessing.tokenize import QATokenizer, Windows
from runtime.scheduling import Budget

# Requests planned together (one call for their exact token counts where needed) and pairs encoded together, in
# characters (100,000 characters take ~0.2 s to encode on 2 cores)
PLAN_GROUP_CHARS = 200_000
CHUNK_CHARS = 100_000


Texts = tuple[Sequence[str], Sequence[str]]  # a request's (questions, contexts)


def tokenize_requests(
    tokenizer: QATokenizer, requests: Sequence[Outcome[Texts]], max_windows: int, budget: Budget | None = None
) -> list[Outcome[Windows]]:
    """Windows of each request's (questions, contexts), or ``Refused`` with the error that refuses it (refusals
    given in ``requests`` pass through).

    Every request is planned first (window bounds from character counts, exact token counts only where they
    matter, stopped once a text is surely over the limit), so nothing over ``max_windows`` is encoded. The pairs
    then go through the tokenizer together — in a few calls, each of at most ``max_windows`` planned windows
    (which bounds the memory a batch of large requests takes) and ``CHUNK_CHARS`` characters, or one pair; a
    request whose windows go over the limit is refused.

    Smaller requests go first. With a ``budget``, once a tenth of it is spent or planned (``Budget.head_start``)
    no request is started whose work — the characters its plan may count exactly, then those it encodes —
    would end past the budget: those left
    get ``Busy`` (UNAVAILABLE, which clients retry), whether or not they would have been refused at planning.
    One execute handed many large requests — an overload, requests whose callers have given up (Triton 2.51
    does not cancel ensemble requests), or requests over the limits that only an exact count refuses — then
    takes about the budget, or one large request alone, not the sum of them all; and small requests batched
    with large ones are answered without waiting for them.
    """
    batch = _Batch(tokenizer, requests, max_windows, budget)
    readable = sorted(answered(requests), key=batch.size.__getitem__)
    for group in _groups(readable, batch.size, PLAN_GROUP_CHARS):
        batch.encode(batch.plan(batch.admit(group)))
    return batch.outcomes()


class _Batch:
    """One execute's requests on their way to windows: each one's refusal, or the windows made so far."""

    def __init__(self, tokenizer: QATokenizer, requests: Sequence[Outcome[Texts]], max_windows: int, budget):
        self.tokenizer, self.requests, self.max_windows, self.budget = tokenizer, requests, max_windows, budget
        self.started = time.monotonic()
        self.refused = {r: request for r, request in enumerate(requests) if isinstance(request, Refused)}
        self.size = {r: sum(map(len, requests[r][0])) + sum(map(len, requests[r][1])) for r in answered(requests)}
        self.parts: dict[int, list[Windows]] = {}
        self.counting: dict[int, int] = {}  # the characters each admitted request's plan may count
        self.begun = False  # whether this execute has done any work yet: the first request always runs

    def admit(self, group: list[int]) -> list[int]:
        """The group's requests that fit in the budget, in order; the others refused with ``Busy``."""
        if self.budget is None:
            return group
        texts = [self.requests[r] for r in group]
        self.counting.update(zip(group, self.tokenizer.counting_chars(texts, self.max_windows)))
        costs = [self.budget.predict(counted=self.counting[r], encoded=self.size[r]) for r in group]
        kept = self.budget.select(texts, costs, self.started, "tokenizer", self.begun)
        self.refused.update((r, outcome) for r, outcome in zip(group, kept) if isinstance(outcome, Refused))
        group = [r for r in group if r not in self.refused]
        self.begun = self.begun or bool(group)
        return group

    def plan(self, group: list[int]) -> list[tuple[int, str, str, int]]:
        """(request, question, context, planned windows) of the group's pairs; a request surely over the limit,
        or that the pipeline cannot window, refused."""
        started = time.monotonic()
        pairs = []
        for r, planned in zip(group, _plan_group(self.tokenizer, [self.requests[r] for r in group], self.max_windows)):
            if isinstance(planned, Refused):
                self.refused[r] = planned
                continue
            questions, contexts = self.requests[r]
            pairs.extend(zip([r] * len(questions), questions, contexts, planned.tolist()))
        if self.budget is not None:
            self.budget.learn("counted", sum(self.counting[r] for r in group), time.monotonic() - started)
        return pairs

    def encode(self, pairs: list[tuple[int, str, str, int]]) -> None:
        """The pairs' windows, a few tokenizer calls; a request whose windows go over the limit refused."""
        for chunk in _chunks(pairs, self.max_windows, CHUNK_CHARS):
            chunk = [pair for pair in chunk if pair[0] not in self.refused]
            started = time.monotonic()
            for r, windows in _encode_chunk(self.tokenizer, chunk).items():
                if isinstance(windows, Refused):
                    self.refused[r] = windows
                    continue
                self.parts.setdefault(r, []).append(windows)
                if sum(len(p.window_question) for p in self.parts[r]) > self.max_windows:
                    self.refused[r] = Refused(
                        InputError(
                            f"the contexts make more than {self.max_windows} windows of "
                            f"{self.tokenizer.settings.max_seq_len} tokens; the limit is {self.max_windows} per request"
                        )
                    )
            if self.budget is not None and chunk:
                encoded = sum(len(q) + len(c) for _, q, c, _ in chunk)
                self.budget.learn("encoded", encoded, time.monotonic() - started)

    def outcomes(self) -> list[Outcome[Windows]]:
        return [self.refused.get(r) or Windows.concatenate(self.parts[r]) for r in range(len(self.requests))]


def _plan_group(tokenizer: QATokenizer, requests: list, max_windows: int) -> list[Outcome[np.ndarray]]:
    """``plan_requests`` of the group; when the tokenizer fails on the group's texts, each request is planned
    alone, so that only the one it fails on is refused."""
    try:
        return tokenizer.plan_requests(requests, max_windows)
    except InputError as error:
        if len(requests) == 1:
            return [Refused(error)]
        return [_plan_group(tokenizer, [request], max_windows)[0] for request in requests]


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


def _encode_chunk(tokenizer: QATokenizer, chunk: list[tuple[int, str, str, int]]) -> dict[int, Outcome[Windows]]:
    """Windows per request of one chunk, from one tokenizer call; when that call refuses the chunk, each
    request is encoded alone so that only the bad one is refused."""
    if not chunk:
        return {}
    try:
        windows = tokenizer.encode([q for _, q, _, _ in chunk], [c for _, _, c, _ in chunk])
    except InputError as error:
        requests = list(dict.fromkeys(r for r, _, _, _ in chunk))
        if len(requests) == 1:
            return {requests[0]: Refused(error)}
        result: dict[int, Outcome[Windows]] = {}
        for r in requests:
            result.update(_encode_chunk(tokenizer, [pair for pair in chunk if pair[0] == r]))
        return result
    result, first = {}, 0
    for r in dict.fromkeys(r for r, _, _, _ in chunk):
        count = sum(1 for pair in chunk if pair[0] == r)
        result[r] = windows.select(first, count)
        first += count
    return result

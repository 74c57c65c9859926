"""Many requests at once, the tokenizer step's part: the windows of everything one ``execute`` receives (the
per-execute floor over ``preprocessing.tokenize``'s per-pair windows).

Each request's problems stay its own: a request that is refused gets its ``InputError`` (or, past the step's
time budget, the budget's ``Busy``), and the others are still encoded. The work is done for all of them
together — a few tokenizer calls — and split per request afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from preprocessing.errors import InputError
from preprocessing.tokenize import QATokenizer, Windows
from runtime.scheduling import Budget

# Requests planned together (one call for their exact token counts where needed) and pairs encoded together, in
# characters (100,000 characters take ~0.2 s to encode on 2 cores)
PLAN_GROUP_CHARS = 200_000
CHUNK_CHARS = 100_000


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
                if isinstance(kept, Exception):  # the budget's Busy: the group holds no errors
                    results[r] = kept
            group = [r for r in group if not isinstance(results[r], Exception)]
            begun = begun or bool(group)
        plan_started = time.monotonic()
        pairs: list[tuple[int, str, str, int]] = []  # (request, question, context, planned windows)
        for r, planned in zip(group, _plan_group(tokenizer, [requests[r] for r in group], max_windows)):
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


def _plan_group(tokenizer: QATokenizer, requests: list, max_windows: int) -> list:
    """``plan_requests`` of the group; when the tokenizer fails on the group's texts, each request is planned
    alone, so that only the one it fails on gets the error."""
    try:
        return tokenizer.plan_requests(requests, max_windows)
    except InputError as error:
        if len(requests) == 1:
            return [error]
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

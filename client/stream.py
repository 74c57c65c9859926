"""Answering a stream of examples (a generator, a file, a dataset of any length): the order of work, without
I/O. ``TritonQA`` drives it with a small thread pool, ``AsyncTritonQA`` with asyncio tasks; both send each
request through their ``_run`` (deadline and retries per request).

Examples are taken from the input ``batch_size`` at a time; each batch (a ``Chunk``) is one request, and at
most ``in_flight`` requests are outstanding. The next examples are read only when a request's answers have
been handed on, so memory holds at most ``in_flight * batch_size`` examples and their answers however long
the input is, and answers come out in input order. A chunk is sent when it is full or the input ends.

An example that cannot be sent (not a question/context pair) fails alone, at its place in the order. When the
server refuses a request as invalid input, the chunk is split in halves and asked again until the refused
examples are found, so the others are still answered (this also covers a chunk over a per-request limit of
the server, such as its windows per request).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from client.answer import Answer
from client.errors import InvalidInputError, QAError

DEFAULT_BATCH_SIZE = 16  # questions per request (the server accepts up to 256 by default)
DEFAULT_IN_FLIGHT = 4  # requests outstanding at once
ERRORS = ("raise", "return")
END = object()  # what a driver passes to ``Window.add`` when the input is exhausted

# What an example ends as: its answers (best first), or why it has none.
Outcome = list[Answer] | QAError


@dataclass(frozen=True)
class StreamSpec:
    """How to answer a stream: how to turn an example into a (question, context) pair (raising
    ``InvalidInputError`` when it is none), pairs into one request (a ``Call`` answering with a list of
    answers per pair) and an example's answers into the result handed out; request size, concurrency, and
    what to do with a failed example."""

    to_pair: Callable[[Any], tuple[str, str]]
    make_call: Callable[[list[tuple[str, str]]], Any]
    shape: Callable[[list[Answer]], Any]
    batch_size: int = DEFAULT_BATCH_SIZE
    in_flight: int = DEFAULT_IN_FLIGHT
    errors: str = "raise"

    def __post_init__(self) -> None:
        check_positive("batch_size", self.batch_size)
        check_positive("in_flight", self.in_flight)
        if self.errors not in ERRORS:
            raise ValueError(f"errors must be one of {ERRORS}, got {self.errors!r}")

    def deliver(self, outcome: Outcome) -> Any:
        """The result handed out for one example: its shaped answers; for a failed example the error is
        raised (``errors="raise"``) or handed out in place of the answers (``errors="return"``)."""
        if isinstance(outcome, QAError):
            if self.errors == "raise":
                raise outcome
            return outcome
        return self.shape(outcome)


@dataclass(eq=False)
class Chunk:
    """Consecutive examples sent as one request: per example, its pair, or the error that keeps it unsent."""

    first: int  # input position of its first example
    slots: list[tuple[str, str] | QAError] = field(default_factory=list)

    def settlement(self, spec: StreamSpec) -> Settlement:
        return Settlement(self, spec.make_call)


class Settlement:
    """The requests that answer one chunk, one at a time: first all its sendable examples together; when the
    server refuses that as invalid input, each half again, down to single examples, which fail alone.

        settlement = chunk.settlement(spec)
        while (call := settlement.next_call()) is not None:
            try:
                settlement.answered(run(call))
            except QAError as error:
                settlement.failed(error)
        settlement.outcomes    # one per example, in order
    """

    def __init__(self, chunk: Chunk, make_call: Callable[[list[tuple[str, str]]], Any]):
        self.chunk, self._make_call = chunk, make_call
        self.outcomes: list[Any] = [slot if isinstance(slot, QAError) else None for slot in chunk.slots]
        sendable = [i for i, slot in enumerate(chunk.slots) if not isinstance(slot, QAError)]
        self._queue: deque[list[int]] = deque([sendable] if sendable else [])
        self._asking: list[int] = []

    def next_call(self) -> Any:
        """The next request to send (a ``Call`` answering with one list of answers per pair), or None: done."""
        if not self._queue:
            return None
        self._asking = self._queue.popleft()
        return self._make_call([s for i in self._asking if not isinstance(s := self.chunk.slots[i], QAError)])

    def answered(self, answers: list[list[Answer]]) -> None:
        for i, answer in zip(self._asking, answers):
            self.outcomes[i] = answer

    def failed(self, error: QAError) -> None:
        if isinstance(error, InvalidInputError) and len(self._asking) > 1:
            middle = len(self._asking) // 2
            self._queue.extendleft([self._asking[middle:], self._asking[:middle]])
            return
        for i in self._asking:
            self.outcomes[i] = (
                at_example(error, self.chunk.first + i, alone=True) if isinstance(error, InvalidInputError) else error
            )


class Window:
    """The examples in flight. A driver repeats:

    while window.wants_example():
        chunk = window.add(next(source, END))        # a full (or the last) chunk, or None
        if chunk is not None:
            window.sent(chunk, start(chunk))         # start: a future or task settling the chunk
    head = window.oldest()                           # (chunk, handle), or None: all answered
    if head is None:
        return
    outcomes = wait(head[1])                         # the chunk's settlement.outcomes
    window.done(head[0])
    for outcome in outcomes:
        yield spec.deliver(outcome)
    """

    def __init__(self, spec: StreamSpec):
        self.spec = spec
        self._position = 0
        self._filling = Chunk(0)
        self._sent: deque[tuple[Chunk, Any]] = deque()
        self._ended = False

    def wants_example(self) -> bool:
        """Whether to read another example now: the input goes on and fewer than ``in_flight`` requests are out."""
        return not self._ended and len(self._sent) < self.spec.in_flight

    def add(self, example: Any) -> Chunk | None:
        """Take the next example (or ``END``); returns a chunk ready to send when this one fills it."""
        if example is END:
            self._ended = True
            chunk, self._filling = self._filling, Chunk(self._position)
            return chunk if chunk.slots else None
        try:
            slot: tuple[str, str] | QAError = self.spec.to_pair(example)
        except InvalidInputError as error:
            slot = at_example(error, self._position)
        self._filling.slots.append(slot)
        self._position += 1
        if len(self._filling.slots) < self.spec.batch_size:
            return None
        chunk, self._filling = self._filling, Chunk(self._position)
        return chunk

    def sent(self, chunk: Chunk, handle: Any) -> None:
        self._sent.append((chunk, handle))

    def oldest(self) -> tuple[Chunk, Any] | None:
        """The chunk whose answers come next, with its handle; None when every example has been handed out."""
        return self._sent[0] if self._sent else None

    def done(self, chunk: Chunk) -> None:
        """Forget the oldest chunk: its requests are over (its outcomes are being handed out)."""
        assert self._sent and self._sent[0][0] is chunk, "chunks are done in the order they were sent"
        self._sent.popleft()

    def handles(self) -> Iterator[Any]:
        """The handles of the requests still out (to cancel them when the consumer stops early)."""
        return (handle for _, handle in self._sent)


def check_positive(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def at_example(error: InvalidInputError, position: int, alone: bool = False) -> InvalidInputError:
    """The error, naming the example's position in the input (also kept apart: ``.example``, and ``.reason``
    the message without it). The server's message for a request of one example calls it "question 0" /
    "context 0": that index is dropped."""
    message = str(error)
    if alone:
        message = re.sub(r"^(question|context) 0\b", r"\1", message)
    located = InvalidInputError(f"example {position}: {message}")
    located.example, located.reason = position, message
    return located

"""The server's time budgets: how much of an ``execute`` the tokenizer and model steps may spend, and the
refusal (``Busy``, UNAVAILABLE, worth retrying) of a request they had no time left for."""

from __future__ import annotations

from collections.abc import Sequence
from time import monotonic

from preprocessing.errors import InputError
from preprocessing.outcomes import Refused


class Busy(RuntimeError):
    """The step had no time left for the request in this batch (overload); the caller may retry."""


class Budget:
    """The time one ``execute`` may spend: no request is started that would end past it, as predicted from the
    step's pace so far — seconds per unit of each kind of work it does (for the tokenizer, characters counted
    while planning and characters encoded; for the model step, tokens) — except one whose work ahead of it in
    the execute is under a tenth of the budget (``head_start``): the first, or a large request behind a question or
    two (a health probe's), which waits little for them and would gain nothing from a retry. With
    ``request_seconds``, also the longest one request may take: a request whose work alone is predicted longer
    is refused (``InputError``: it would never fit), whichever place it has in its batch."""

    def __init__(self, seconds: float, min_work: int = 10_000, request_seconds: float | None = None):
        self.seconds, self.min_work, self.request_seconds = seconds, min_work, request_seconds
        self.head_start = seconds / 10
        self.paces: dict[str, float] = {}  # seconds per unit of each kind of work, learned from the work done
        self.bounds: dict[str, tuple[float, float]] = {}  # what a learned pace is kept within (``anchor``)

    def anchor(self, kind: str, work: int, elapsed: float, slower: float = 4.0) -> None:
        """The pace of ``kind`` measured before any request (on work as costly per unit as any request's), and
        the bounds learning keeps it within: never faster than that, at most ``slower`` times slower. What the
        requests themselves teach (a caller's crafted work can be much cheaper per unit than it is counted)
        then never makes the step expect a request to take less than it will."""
        pace = elapsed / work
        self.paces[kind], self.bounds[kind] = pace, (pace, slower * pace)

    def learn(self, kind: str, work: int, elapsed: float) -> None:
        if work >= self.min_work:  # small pieces of work measure overheads more than pace
            pace, known = elapsed / work, self.paces.get(kind)
            pace = pace if known is None else 0.8 * known + 0.2 * pace
            low, high = self.bounds.get(kind, (0.0, float("inf")))
            self.paces[kind] = min(max(pace, low), high)

    def predict(self, **work: int) -> float:
        """Seconds that ``work`` (units of each kind) takes at the paces learned (nothing for a kind not yet
        measured)."""
        return sum(units * self.paces.get(kind, 0.0) for kind, units in work.items())

    def fits(self, started: float, seconds: float) -> bool:
        """Whether work of ``seconds``, begun now, ends within the budget of an execute that began at ``started``."""
        return monotonic() - started + seconds < self.seconds

    def busy(self, step: str) -> Busy:
        return Busy(
            f"the {step} step had no time left for this request in its batch (budget {self.seconds:g} s, "
            f"overload); retry"
        )

    def select(
        self, requests: Sequence[object], costs: Sequence[float], started: float, step: str, begun: bool = False
    ) -> list[object]:
        """``requests`` (refusals pass through), in the order given, as far as they fit in the budget together with
        their predicted ``costs`` in seconds, or start within its ``head_start`` (the first always runs, unless the
        execute has ``begun`` other work); the others refused with ``Busy``."""
        kept: list[object] = list(requests)
        total = 0.0
        for i, request in enumerate(requests):
            if isinstance(request, Refused):
                continue
            ahead = monotonic() - started + total  # the execute's work before this request, done or predicted
            if begun and ahead >= self.head_start and not self.fits(started, total + costs[i]):
                kept[i] = Refused(self.busy(step))
            else:
                total += costs[i]
                begun = True
        return kept

    def select_smallest(self, requests: Sequence[object], work: Sequence[int], started: float, step: str, kind: str):
        """``requests`` (refusals pass through), smallest ``work`` (units of ``kind``) first, as far as they fit in
        the budget together (see ``select``); a request over ``request_seconds`` alone is refused with an
        ``InputError`` naming the limit."""
        kept: list[object] = list(requests)
        pace = self.paces.get(kind)
        for i, request in enumerate(requests):
            predicted = work[i] * (pace or 0.0)
            if isinstance(request, Refused) or self.request_seconds is None:
                continue
            if predicted > self.request_seconds:  # the message gives no pace: nothing to tune a request against
                kept[i] = Refused(
                    InputError(
                        f"the request's {work[i]:,} {kind} would hold the {step} step longer than its limit of "
                        f"{self.request_seconds:g} s per request (max_request_ms): send shorter contexts or fewer "
                        "questions"
                    )
                )
        order = sorted(range(len(requests)), key=work.__getitem__)
        chosen = self.select([kept[i] for i in order], [work[i] * (pace or 0.0) for i in order], started, step)
        for i, result in zip(order, chosen):
            kept[i] = result
        return kept

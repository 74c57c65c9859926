"""Steady load for the fault tests: threads asking one question over and over, each call's outcome kept."""

from __future__ import annotations

import threading
import time
from typing import NamedTuple

from client import Answer, QAError, TritonQA
from testkit.cases import CASES


class Outcome(NamedTuple):
    started: float  # time.monotonic()
    result: Answer | QAError
    duration_s: float


def keep_asking(qa: TritonQA, stop: threading.Event, outcomes: list[Outcome], lock: threading.Lock) -> None:
    """Ask the SQuAD case with ``qa`` until ``stop`` is set; every call ends in ``outcomes``, answer or error."""
    while not stop.is_set():
        started = time.monotonic()
        try:
            result = qa.ask(*CASES["squad"])
        except QAError as error:
            result = error
        with lock:
            outcomes.append(Outcome(started, result, time.monotonic() - started))


def answered_since(outcomes: list[Outcome], since: float) -> int:
    """Calls begun after ``since`` (time.monotonic()) that were answered."""
    return sum(1 for o in list(outcomes) if o.started > since and not isinstance(o.result, QAError))

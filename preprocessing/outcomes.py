"""A request's outcome in a step that handles many at once: its result, or ``Refused`` with the error its reply
carries. Work done for many requests keeps each one's refusal its own: refused requests pass through what the
others go on to, and each reply is made from one outcome."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
U = TypeVar("U")


@dataclass(frozen=True)
class Refused:
    """A request that is not answered: ``InputError`` for the caller's mistake, ``runtime.scheduling.Busy`` for
    no time left (retry), ``StepFault`` or any other exception for the step's own failure."""

    error: BaseException


Outcome = T | Refused  # generic: Outcome[Windows]


def attempt(function: Callable[..., T], *args) -> Outcome[T]:
    """``function(*args)``, or ``Refused`` with the exception it raised."""
    try:
        return function(*args)
    except Exception as error:  # noqa: BLE001 -- becomes that request's error reply
        return Refused(error)


def then(outcome: Outcome[T], function: Callable[..., U], *args) -> Outcome[U]:
    """``function(outcome, *args)`` attempted on a result; a refusal passed on."""
    return outcome if isinstance(outcome, Refused) else attempt(function, outcome, *args)


def refusal(outcome: object) -> BaseException | None:
    """The error that refuses ``outcome``; None for a result."""
    return outcome.error if isinstance(outcome, Refused) else None


def answered(outcomes: Sequence[object]) -> list[int]:
    """The positions of the results (not refused) in ``outcomes``."""
    return [i for i, outcome in enumerate(outcomes) if not isinstance(outcome, Refused)]

"""The steps' time budgets (runtime.scheduling): the smallest requests that fit go first, the rest are ``Busy``;
a request over the per-request limit is refused wherever it stands. (The tokenizer step under a budget:
test_tokenize_batch.py.)"""

import pytest

from preprocessing import InputError
from preprocessing.outcomes import Refused, refusal
from runtime.scheduling import Budget, Busy

NOW = 1000.0


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch):
    """The budget's clock stands still at NOW: what is admitted follows from the predicted costs alone."""
    monkeypatch.setattr("runtime.scheduling.monotonic", lambda: NOW)


def test_a_budget_selects_the_smallest_requests_that_fit_and_refuses_the_rest():
    budget = Budget(1.0)
    budget.paces["tokens"] = 0.1  # 10 tokens a second
    error = Refused(InputError("bad"))
    kept = budget.select_smallest(["a", "b", error, "c", "d"], [6, 2, 0, 3, 1], NOW, "encoder", "tokens")
    assert kept[1:4] == ["b", error, "c"] and kept[4] == "d"  # 1 + 2 + 3 tokens: 0.6 s
    assert isinstance(refusal(kept[0]), Busy) and "the encoder step had no time left" in str(refusal(kept[0]))
    chosen = budget.select_smallest(["big", "bigger"], [50, 60], NOW, "encoder", "tokens")
    assert chosen[0] == "big" and isinstance(refusal(chosen[1]), Busy)  # the first runs
    # an execute that has spent half its budget on other work starts nothing more past it
    refused = budget.select(["big"], [5.0], NOW - 0.5, "tokenizer", begun=True)[0]
    assert isinstance(refusal(refused), Busy)


def test_a_request_that_starts_within_a_tenth_of_the_budget_runs_however_long():
    budget = Budget(10.0)
    budget.paces["tokens"] = 0.01
    # 0.05 s ahead of a 50 s request: it runs; 2 s ahead of it (over a tenth of 10 s): Busy
    assert budget.select_smallest(["probe", "large"], [5, 5_000], NOW, "encoder", "tokens") == [
        "probe",
        "large",
    ]
    kept = budget.select_smallest(["many", "large"], [200, 5_000], NOW, "encoder", "tokens")
    assert kept[0] == "many" and isinstance(refusal(kept[1]), Busy)


def test_a_request_over_the_per_request_limit_is_refused_wherever_it_stands_in_its_batch():
    budget = Budget(1.0, request_seconds=2.0)
    kept = budget.select_smallest(["huge", "small"], [30, 1], NOW, "encoder", "tokens")
    assert kept == ["huge", "small"]  # no pace measured yet: nothing is predicted over the limit
    budget.paces["tokens"] = 0.1
    kept = budget.select_smallest(["huge", "alone"], [30, 19], NOW, "encoder", "tokens")
    # 3 s: over the limit; 1.9 s: the first, it runs
    assert isinstance(refusal(kept[0]), InputError) and kept[1] == "alone"
    assert str(refusal(kept[0])) == (  # no pace, no predicted time: nothing a caller could tune a request against
        "the request's 30 tokens would hold the encoder step longer than its limit of 2 s per request "
        "(max_request_ms): send shorter contexts or fewer questions"
    )
    unlimited = Budget(1.0)
    unlimited.paces["tokens"] = 0.1
    assert unlimited.select_smallest(["huge"], [10**6], NOW, "encoder", "tokens") == ["huge"]


def test_the_pace_learned_stays_within_the_bounds_of_the_pace_measured_before_any_request():
    """Requests teach the pace (a busier machine, cheaper work), but a caller's crafted work — windows whose
    attention is a token wide, whatever width they are counted at — cannot teach it faster than the anchor, and
    a slow run no slower than 4 times it."""
    budget = Budget(1.0, min_work=1, request_seconds=5.0)
    budget.anchor("tokens", 1000, 1.0)  # 1,000 tokens a second, measured on full windows
    for _ in range(40):
        budget.learn("tokens", 10_000, 0.001)  # "10,000 tokens in a millisecond"
    assert budget.paces["tokens"] == 0.001
    refused = budget.select_smallest(["large"], [6_000], NOW, "encoder", "tokens")
    assert isinstance(refusal(refused[0]), InputError)  # still 6 s at the anchor's pace: over the limit
    for _ in range(40):
        budget.learn("tokens", 1_000, 60.0)
    assert budget.paces["tokens"] == 0.004

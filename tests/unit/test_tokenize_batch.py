"""Many requests in one tokenizer execute(): one tokenizer call for all of them (a few for large ones), each
request's failure its own, results equal to encoding each request alone; under a time budget, the smallest
first and the rest ``Busy``."""

import time

import numpy as np
import pytest

from preprocessing import InputError
from preprocessing.outcomes import Refused, refusal
from runtime.scheduling import Budget, Busy
from runtime.tokenize_batch import tokenize_requests
from testkit.cases import CASES, LONG_CONTEXT
from testkit.inputs import long_document
from tests.conftest import qa_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tiny_checkpoint):
    return qa_tokenizer(tiny_checkpoint / "tokenizer.json")


def same_windows(a, b):
    for name in ("input_ids", "attention_mask", "token_type_ids", "token_offsets", "word_offsets", "window_question"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_requests_tokenized_together_equal_each_tokenized_alone(tokenizer):
    requests = [
        (["Who?"], [CASES["squad"][1]]),
        (list(q for q, _ in CASES.values()), list(c for _, c in CASES.values())),
        (["When?"], [LONG_CONTEXT]),
    ]
    together = tokenize_requests(tokenizer, requests, max_windows=1024)
    for request, windows in zip(requests, together):
        same_windows(windows, tokenizer.encode(*request))


def test_a_bad_request_gets_its_own_error_and_the_others_their_windows(tokenizer):
    long_question = " ".join(["why"] * 299) + "?"
    given = Refused(InputError("refused earlier"))
    requests = [
        (["Who?"], ["Ada wrote it."]),
        ([long_question], [LONG_CONTEXT]),
        given,
        (["What?"], ["\u0001"]),
        (["When?"], ["In 1843."]),
    ]
    results = tokenize_requests(tokenizer, requests, max_windows=1024)
    assert "question 0 is 300 tokens long" in str(refusal(results[1]))
    assert results[2] is given
    assert "context 0 holds no token" in str(refusal(results[3]))
    same_windows(results[0], tokenizer.encode(*requests[0]))
    same_windows(results[4], tokenizer.encode(*requests[4]))


def panicking_tokenizer(tiny_checkpoint, out):
    """The tiny checkpoint's tokenizer with a pre-tokenizer regex that backtracks past the regex library's limit
    on a long run of "a" followed by "b": the library panics (pyo3's PanicException, not an Exception)."""
    from tokenizers import Regex, Tokenizer, pre_tokenizers

    library = Tokenizer.from_file(str(tiny_checkpoint / "tokenizer.json"))
    library.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r"(a|aa)+$"), behavior="isolated"), library.pre_tokenizer]
    )
    library.save(str(out))
    return qa_tokenizer(out)


@pytest.mark.parametrize("where", ["question", "context"])
def test_a_text_the_tokenizer_library_panics_on_fails_its_own_request_only(tiny_checkpoint, tmp_path, where):
    tokenizer = panicking_tokenizer(tiny_checkpoint, tmp_path / "tokenizer.json")
    bomb = "a" * 50_000 + "b"
    bad = (["Who?"], [bomb]) if where == "context" else ([bomb], [LONG_CONTEXT])
    requests = [(["Who?"], ["Ada wrote it."]), bad, (["When?"], ["In 1843."])]
    results = tokenize_requests(tokenizer, requests, max_windows=1024)
    error = refusal(results[1])
    assert isinstance(error, InputError) and "the tokenizer failed on the input" in str(error)
    same_windows(results[0], tokenizer.encode(*requests[0]))
    same_windows(results[2], tokenizer.encode(*requests[2]))


def test_large_requests_are_encoded_in_slices_and_refused_over_the_window_limit(tokenizer):
    many = ([f"Question {i}?" for i in range(40)], [CASES["squad"][1]] * 40)  # planned > 8, actual 40 windows
    few = (["Who?"] * 4, [CASES["squad"][1]] * 4)
    results = tokenize_requests(tokenizer, [few, many], max_windows=8)
    same_windows(results[0], tokenizer.encode(*few))
    assert isinstance(refusal(results[1]), InputError) and "the limit is 8 per request" in str(refusal(results[1]))
    sliced = tokenize_requests(tokenizer, [many], max_windows=64)[0]
    same_windows(sliced, tokenizer.encode(*many))


def test_under_a_budget_small_requests_go_first_and_large_ones_wait_for_another_batch(tokenizer):
    budget = Budget(0.25)
    budget.paces["encoded"] = 1e-5  # as if measured: 10 µs per character, any long context is over the budget
    budget.head_start = 0.0  # as if the requests ahead of the large one had taken a tenth of the budget
    big = (["Who shipped grain?"], [long_document(150_000)])  # a tokenizer call of its own (CHUNK_CHARS)
    small = [(["Who?"], ["Ada wrote it."]), (["What?"], [CASES["squad"][1]])]
    results = tokenize_requests(tokenizer, [big, *small, Refused(InputError("refused earlier"))], 1024, budget)
    assert isinstance(refusal(results[0]), Busy) and "retry" in str(refusal(results[0]))
    for request, windows in zip(small, results[1:3]):
        same_windows(windows, tokenizer.encode(*request))
    assert isinstance(refusal(results[3]), InputError)
    # the first request of a call always runs, however long: a large request alone is answered
    alone = tokenize_requests(tokenizer, [big, big], 1024, budget)
    same_windows(alone[0], tokenizer.encode(*big))
    assert isinstance(refusal(alone[1]), Busy)
    # without a budget everything runs
    assert not any(refusal(r) for r in tokenize_requests(tokenizer, [big, *small], 1024))


def test_a_large_request_behind_a_short_question_is_not_sent_back_to_retry(tokenizer):
    """A health probe's question batched with a document that alone takes longer than the budget: the question
    ahead takes far less than a tenth of the budget, so the document runs (it would only wait less on a retry)."""
    budget = Budget(10.0)
    budget.paces["encoded"] = 1e-4  # as if measured: the document alone is predicted at 15 s
    probe = (["What is it?"], ["It is a small test."])
    big = (["Who shipped grain?"], [long_document(150_000)])
    results = tokenize_requests(tokenizer, [big, probe], 1024, budget)
    same_windows(results[0], tokenizer.encode(*big))
    same_windows(results[1], tokenizer.encode(*probe))


def test_the_budget_learns_the_tokenizers_pace(tokenizer):
    budget = Budget(10.0)
    tokenize_requests(tokenizer, [(["When?"], [long_document(20_000)])], 1024, budget)
    assert budget.paces["encoded"] > 0 and "counted" not in budget.paces  # nothing to count exactly
    started = time.monotonic()
    assert budget.fits(started, budget.predict(encoded=1000)) and not budget.fits(started - 10, 0)
    # an exact count while planning: its pace is learned too, per character the plan may count
    tokenize_requests(tokenizer, [(["When?"], ["a " * 100_000])], 8, budget)
    assert budget.paces["counted"] > 0


def test_requests_refused_at_planning_count_against_the_budget(tokenizer):
    # contexts over max_windows that only an exact token count refuses (their character bound is not over:
    # "a " is 1 token per 2 characters, the bound 3 per character), each counted until surely over the limit
    oversized = [(["Who?"], ["a " * 150_000]) for _ in range(20)]
    small = (["Who?"], ["Ada wrote it."])
    budget = Budget(0.25)
    budget.paces["counted"] = 1e-3  # as if measured: counting any of them is predicted past the budget
    results = tokenize_requests(tokenizer, [*oversized, small], 8, budget)
    same_windows(results[-1], tokenizer.encode(*small))  # the smallest first
    refused = [r for r in results[:-1] if isinstance(refusal(r), InputError)]
    busy = [r for r in results[:-1] if isinstance(refusal(r), Busy)]
    # the first behind the small one starts within the head start and is counted; the rest are not planned
    assert len(refused) <= 1 and len(refused) + len(busy) == 20, (len(refused), len(busy))
    assert all("the limit is 8 per request" in str(refusal(r)) for r in refused)
    budget.head_start = 0.0  # as if the small one had taken a tenth of the budget: nothing more is counted
    results = tokenize_requests(tokenizer, [small, oversized[0]], 8, budget)
    same_windows(results[0], tokenizer.encode(*small))
    assert isinstance(refusal(results[1]), Busy)

"""Many requests in one decoder execute(): one decode for all of them, each request's failure its own, results
equal to decoding each request alone."""

import dataclasses
import re
import time

import numpy as np
import pytest

from preprocessing import AnswerOptions, DecoderLimits, InputError, decode
from preprocessing.outcomes import refusal
from runtime.decode_batch import DecoderInput, decode_requests, measure_paces
from runtime.tensors import window_questions, window_tensors
from testkit.cases import CASES, LONG_CONTEXT
from testkit.inputs import long_document
from tests.conftest import qa_tokenizer

LIMITS = DecoderLimits(
    max_top_k=20, max_answer_len=512, max_seq_len=384, max_context_chars=20_000, max_request_chars=40_000
)


@pytest.fixture(scope="module")
def tokenizer(tiny_checkpoint):
    return qa_tokenizer(tiny_checkpoint / "tokenizer.json")


def decoder_request(tokenizer, questions, contexts, options=AnswerOptions(), seed=0):
    """(logits, offsets, window_context, options): what the decoder step receives for these pairs."""
    windows = tokenizer.encode(questions, contexts)
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(*windows.input_ids.shape, 2)).astype(np.float32) * 4
    sent = window_tensors(windows, np.array([c.encode() for c in contexts], dtype=object))
    return logits, sent["offsets"], sent["window_context"], options


def decoded_alone(request):
    """``decode`` itself on one request's tensors."""
    logits, offsets, window_context, options = request
    questions = window_questions(window_context)
    contexts = [c.decode() for c in window_context[:, 0] if c]
    return decode(logits[..., 0], logits[..., 1], offsets[..., :2], offsets[..., 2:], questions, contexts, options)


def test_requests_decoded_together_equal_each_decoded_alone(tokenizer):
    pairs = list(CASES.values())
    requests = [
        decoder_request(tokenizer, [q], [c], AnswerOptions(top_k=k), seed=i)
        for i, ((q, c), k) in enumerate(zip(pairs, [1, 3, 1, 3, 1, 1, 3]))
    ]
    together = decode_requests([DecoderInput.checked(*r, LIMITS) for r in requests])
    for r, got in zip(requests, together):
        alone = decoded_alone(r)
        for name in ("text", "start", "end"):
            np.testing.assert_array_equal(getattr(got, name), getattr(alone, name))
        np.testing.assert_allclose(got.score, alone.score, rtol=1e-6)  # sums over a wider, padded row
        assert got.text.shape == (1, r[3].top_k)


def test_decoding_stays_bounded_for_any_max_answer_len(tokenizer):
    request = decoder_request(tokenizer, ["Who founded it?"], [LONG_CONTEXT], AnswerOptions(max_answer_len=10**9))
    short = decoder_request(tokenizer, ["Who founded it?"], [LONG_CONTEXT], AnswerOptions(max_answer_len=384))
    a, b = decode_requests([DecoderInput.checked(*request, LIMITS), DecoderInput.checked(*short, LIMITS)])
    assert (a.text == b.text).all() and (a.start == b.start).all()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: (r[0][:, :-1],) + r[1:], r"offsets must have shape \[2, \d+, 4\] like logits"),
        (lambda r: (r[0][..., :1],) + r[1:], r"logits must be \[windows, tokens, 2\]"),
        (lambda r: (np.full_like(r[0], np.nan),) + r[1:], "must be finite"),
        (lambda r: r[:2] + (np.r_[[[b""]], r[2][1:]],) + r[3:], "must hold the context on the first window"),
        (lambda r: r[:2] + (np.full_like(r[2], b""),) + r[3:], "window_context must hold the context on the first"),
        (lambda r: r[:2] + (np.full_like(r[2], b"\xff"),) + r[3:], "context of window 0 is not valid UTF-8"),
        (
            lambda r: (r[0], np.where(r[1] >= 0, r[1] + 10_000, r[1])) + r[2:],
            "the token spans must be character spans",
        ),
        (
            lambda r: (r[0], np.concatenate((r[1][..., :2], np.full_like(r[1][..., 2:], -5)), axis=2)) + r[2:],
            "the word spans must be character spans",
        ),
    ],
)
def test_decoder_refuses_tensors_no_tokenizer_makes_and_answers_the_others(tokenizer, change, message):
    request = decoder_request(tokenizer, ["Who?", "When?"], ["Ada wrote it.", "In 1843."])
    good = decoder_request(tokenizer, ["Who?"], ["Ada wrote it."])
    try:
        bad = DecoderInput.checked(*change(request), LIMITS)
    except InputError as error:  # refused for its structure
        assert re.search(message, str(error))
        return
    results = decode_requests([DecoderInput.checked(*good, LIMITS), bad, DecoderInput.checked(*good, LIMITS)])
    assert isinstance(refusal(results[1]), InputError) and re.search(message, str(refusal(results[1])))
    assert results[0].text.shape == results[2].text.shape == (1, 1)


def widened(request, width):
    """``request`` with its windows right-padded to ``width`` tokens (padding as the tokenizer pads)."""
    pad = width - request[0].shape[1]
    logits = np.pad(request[0], ((0, 0), (0, pad), (0, 0)))
    offsets = np.pad(request[1], ((0, 0), (0, pad), (0, 0)), constant_values=-1)
    return (logits, offsets, *request[2:])


def test_decoder_takes_windows_up_to_the_tokenizers_max_seq_len_and_refuses_wider_ones(tokenizer):
    request = decoder_request(tokenizer, ["Who?"], ["Ada wrote it."])
    assert DecoderInput.checked(*widened(request, LIMITS.max_seq_len), LIMITS).start_logits.shape[1] == 384
    with pytest.raises(InputError, match=r"windows of 385 tokens; the decoder takes at most 384 \(the tokenizer's"):
        DecoderInput.checked(*widened(request, LIMITS.max_seq_len + 1), LIMITS)


def test_decoder_refuses_contexts_over_the_tokenizers_characters_limits(tokenizer):
    context = "Ada wrote it. " + "x" * (LIMITS.max_context_chars - 14)
    assert len(DecoderInput.checked(*decoder_request(tokenizer, ["Who?"], [context]), LIMITS).contexts[0]) == 20_000
    with pytest.raises(InputError, match="context of window 0 is 20001 characters long; the limit is 20000"):
        DecoderInput.checked(*decoder_request(tokenizer, ["Who?"], [context + "x"]), LIMITS)
    with pytest.raises(InputError, match="context of window 0 is 80001 bytes long; the limit is 20000 characters"):
        DecoderInput.checked(*decoder_request(tokenizer, ["Who?"], ["x" * 80_001]), LIMITS)
    three = decoder_request(tokenizer, ["Who?"] * 3, [context] * 3)
    with pytest.raises(
        InputError, match="the request's contexts hold 60000 characters; the limit is 40000 per request"
    ):
        DecoderInput.checked(*three, LIMITS)


def test_a_request_whose_decoding_fails_fails_alone(tokenizer, monkeypatch):
    import runtime.decode_batch

    def decode_unless_poisoned(*args):
        if any("poison" in context for context in args[5]):
            raise MemoryError("Unable to allocate 7.45 GiB")
        return decode(*args)

    monkeypatch.setattr(runtime.decode_batch, "decode", decode_unless_poisoned)
    good = [decoder_request(tokenizer, [q], [c], seed=i) for i, (q, c) in enumerate(list(CASES.values())[:3])]
    bad = decoder_request(tokenizer, ["Who?"], ["Ada wrote the poison."])
    results = decode_requests([DecoderInput.checked(*r, LIMITS) for r in (good[0], bad, good[1], good[2])])
    assert isinstance(refusal(results[1]), MemoryError)
    for r, got in zip(good, results[:1] + results[2:]):
        alone = decoded_alone(r)
        assert got.text.tolist() == alone.text.tolist() and got.start.tolist() == alone.start.tolist()
    assert isinstance(refusal(decode_requests([DecoderInput.checked(*bad, LIMITS)])[0]), MemoryError)  # alone, too


def underflowing(tokenizer, n_windows: int):
    """A request sent straight to the decoder: windows of a long context whose logits make every span's
    probability underflow to 0 ([CLS] at 0, every token at -60: each token's probability ~1e-26, a span's
    ~1e-52, below float32's least), so that each window needs the reference's replay."""
    logits, offsets, window_context, options = decoder_request(tokenizer, ["Who?"], [long_document(50_000)])
    assert len(logits) >= n_windows
    logits = np.full_like(logits[:n_windows], -60.0)
    logits[:, 0] = 0.0
    return logits, offsets[:n_windows], window_context[:n_windows], options


def test_under_a_budget_logits_whose_replays_would_pass_the_limit_are_refused_and_the_others_answered(tokenizer):
    """The decoder's cost grows with windows x width^2 where probabilities underflow: such a request is refused
    once its probabilities show it (without replaying anything), naming why; a normal request in the same
    execute is answered as without a budget."""
    from runtime.scheduling import Budget

    limits = dataclasses.replace(LIMITS, max_context_chars=50_000, max_request_chars=100_000)
    measured = Budget(1.0)
    measure_paces(measured, limits.max_seq_len)  # what the step does at load: both paces anchored
    assert measured.paces["band"] > 0 and measured.paces["replay"] > 0 and set(measured.bounds) == {"band", "replay"}
    budget = Budget(1.0, request_seconds=0.5)  # paces set here, so that the test does not hang on this CPU's
    budget.anchor("band", 10**9, 1.0)  # a nanosecond a span score
    budget.anchor("replay", 10**6, 1.0)  # a microsecond a product: 40 windows' replays ~5.9 s, one's ~0.15 s
    replays = underflowing(tokenizer, 40)
    normal = decoder_request(tokenizer, ["Who founded it?"], [LONG_CONTEXT])
    unbudgeted = decode_requests([DecoderInput.checked(*normal, limits)])[0]
    started = time.monotonic()
    refused, answered = decode_requests(
        [DecoderInput.checked(*replays, limits), DecoderInput.checked(*normal, limits)], budget, started
    )
    assert isinstance(refusal(refused), InputError)
    assert re.fullmatch(
        r"the request's logits leave 40 of its 40 windows without a span of positive score .*: replaying the "
        r"reference's choice among them would hold the decoder step longer than its limit of 0\.5 s per request "
        r"\(max_request_ms\)",
        str(refusal(refused)),
    )
    assert (answered.text == unbudgeted.text).all() and (answered.start == unbudgeted.start).all()
    # the same logits, few enough windows to replay within the limit, are answered
    few = decode_requests([DecoderInput.checked(*underflowing(tokenizer, 1), limits)], budget)[0]
    assert refusal(few) is None


def test_under_a_budget_the_smallest_requests_go_first_and_a_band_over_the_limit_is_refused(tokenizer):
    from runtime.scheduling import Budget, Busy

    budget = Budget(0.001, request_seconds=10.0)
    budget.paces.update(band=1e-6, replay=1e-6)  # a microsecond a span score: the budget fits 1,000
    budget.head_start = 0.0  # nothing more starts once the first has run
    small = DecoderInput.checked(*decoder_request(tokenizer, ["Who?"], ["Ada wrote it."]), LIMITS)
    large = DecoderInput.checked(*decoder_request(tokenizer, ["Who founded it?"], [LONG_CONTEXT]), LIMITS)
    results = decode_requests([large, small, large], budget, time.monotonic())
    assert refusal(results[1]) is None  # the smallest runs first
    assert isinstance(refusal(results[0]), Busy) and isinstance(refusal(results[2]), Busy)
    budget.request_seconds = 1e-6
    (over,) = decode_requests([large], budget, time.monotonic())
    assert isinstance(refusal(over), InputError) and "longer than its limit" in str(refusal(over))

import pytest

from preprocessing import AnswerOptions, DecoderLimits, InputError, RequestLimits, read_pairs, readable_texts


def test_readable_texts_returns_utf8_strings():
    assert readable_texts([b"caf\xc3\xa9", "plain"], "question") == ["café", "plain"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([b"ok", b"\xff\xfe"], r"question 1 is not valid UTF-8"),
        ([b""], r"question 0 is empty or only whitespace"),
        ([b" \t\n\xc2\xa0"], r"question 0 is empty or only whitespace"),
        ([b"a\x00b"], r"question 0 contains a NUL character"),
        ([], r"the request holds no question"),
    ],
)
def test_readable_texts_refuses_bad_strings_naming_the_problem(raw, message):
    with pytest.raises(InputError, match=message):
        readable_texts(raw, "question")


def test_readable_texts_refuses_text_over_the_character_limit():
    with pytest.raises(InputError, match="context 0 is 11 characters long; the limit is 10"):
        readable_texts([b"x" * 11], "context", max_chars=10)


def test_answer_options_default_to_the_pipelines():
    assert AnswerOptions.from_parameters("", max_top_k=20, max_answer_len=512) == AnswerOptions(1, 15, False, True)


def test_answer_options_read_the_backends_json_parameters():
    options = AnswerOptions.from_parameters(
        '{"top_k":3,"handle_impossible_answer":true}', max_top_k=20, max_answer_len=512
    )
    assert options == AnswerOptions(top_k=3, handle_impossible_answer=True)


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"topk": 2}, "unknown request parameter 'topk'"),
        ({"top_k": "2"}, "'top_k' must be an integer"),
        ({"top_k": True}, "'top_k' must be an integer"),
        ({"handle_impossible_answer": 1}, "'handle_impossible_answer' must be a boolean"),
        ({"top_k": 0}, "top_k must be at least 1"),
        ({"top_k": 21}, "top_k must be at most 20"),
        ({"max_answer_len": 0}, "max_answer_len must be at least 1"),
        ({"max_answer_len": 513}, r"max_answer_len must be at most 512 \(the server's limit\), got 513"),
        ({"max_answer_len": 10**9}, "max_answer_len must be at most 512"),
    ],
)
def test_answer_options_refuse_bad_parameters(parameters, message):
    with pytest.raises(InputError, match=message):
        AnswerOptions.from_parameters(parameters, max_top_k=20, max_answer_len=512)


def test_answer_options_take_max_answer_len_up_to_the_servers_limit():
    assert AnswerOptions.from_parameters({"max_answer_len": 512}, 20, 512).max_answer_len == 512


DECODER = {"max_top_k": "20", "max_answer_len": "512", "batch_budget_ms": "1000", "max_request_ms": "1000"}
TOKENIZER = {"max_seq_len": "384", "max_context_chars": "1000", "max_request_chars": "2000", "doc_stride": "128"}


def test_decoder_limits_come_from_its_config_and_the_tokenizers():
    assert DecoderLimits.from_config(DECODER, TOKENIZER) == DecoderLimits(20, 512, 384, 1000, 2000)


@pytest.mark.parametrize(
    ("decoder", "tokenizer", "message"),
    [
        ({**DECODER, "max_answer_len": None}, TOKENIZER, r"unknown none, missing \['max_answer_len'\]"),
        ({**DECODER, "max_answer_length": "9"}, TOKENIZER, r"unknown \['max_answer_length'\], missing none"),
        (DECODER, {"max_seq_len": "384"}, r"missing \[\"tokenizer's max_context_chars\", \"tokenizer's max_request"),
        ({**DECODER, "max_answer_len": "0"}, TOKENIZER, "must be positive integers: max_answer_len"),
        ({**DECODER, "max_answer_len": "many"}, TOKENIZER, "invalid literal"),
    ],
)
def test_decoder_limits_refuse_a_missing_unknown_or_bad_key(decoder, tokenizer, message):
    with pytest.raises(ValueError, match=message):
        DecoderLimits.from_config({k: v for k, v in decoder.items() if v is not None}, tokenizer)


def test_request_limits_and_windowing_come_from_config_parameters_and_a_missing_one_is_named():
    from preprocessing import WindowSettings

    config = {"max_questions": "8", "max_question_chars": "1", "max_context_chars": "2", "max_request_chars": "5"}
    limits = RequestLimits.from_config({**config, "max_windows": "3", "tokenizer_file": "x"})
    assert (limits.max_questions, limits.max_request_chars, limits.max_windows) == (8, 5, 3)
    with pytest.raises(ValueError, match="tokenizer config parameters missing: max_windows"):
        RequestLimits.from_config(config)
    assert WindowSettings.from_config({"max_seq_len": "64", "doc_stride": "16"}) == WindowSettings(64, 16)
    with pytest.raises(ValueError, match="missing: doc_stride"):
        WindowSettings.from_config({"max_seq_len": "64"})


LIMITS = RequestLimits(
    max_questions=3, max_question_chars=10, max_context_chars=20, max_request_chars=40, max_windows=8
)


def test_read_pairs_returns_the_texts_within_the_limits():
    assert read_pairs([b"Who?"], [b"Ada wrote it."], LIMITS) == (["Who?"], ["Ada wrote it."])


@pytest.mark.parametrize(
    ("questions", "contexts", "message"),
    [
        ([b"a?"] * 4, [b"b"] * 4, "4 questions in one request; the limit is 3"),
        ([b"a?", b"b?"], [b"c"], "2 questions but 1 contexts"),
        ([b"x" * 11], [b"c"], "question 0 is 11 characters long; the limit is 10"),
        ([b"q"], [b"x" * 81], "context 0 is 81 bytes long; the limit is 20 characters"),
        (
            [b"q" * 10] * 3,
            [b"c" * 20] * 3,
            "the request holds 90 characters of questions and contexts; the limit is 40",
        ),
    ],
)
def test_read_pairs_refuses_requests_over_a_limit_before_any_work(questions, contexts, message):
    with pytest.raises(InputError, match=message):
        read_pairs(questions, contexts, LIMITS)

import pytest

from preprocessing import AnswerOptions, InputError, RequestLimits, decode_texts


def test_decode_texts_returns_utf8_strings():
    assert decode_texts([b"caf\xc3\xa9", "plain"], "question") == ["café", "plain"]


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
def test_decode_texts_refuses_bad_strings_naming_the_problem(raw, message):
    with pytest.raises(InputError, match=message):
        decode_texts(raw, "question")


def test_decode_texts_refuses_text_over_the_character_limit():
    with pytest.raises(InputError, match="context 0 is 11 characters long; the limit is 10"):
        decode_texts([b"x" * 11], "context", max_chars=10)


def test_answer_options_default_to_the_pipelines():
    assert AnswerOptions.from_parameters("") == AnswerOptions(1, 15, False, True)


def test_answer_options_read_the_backends_json_parameters():
    options = AnswerOptions.from_parameters('{"top_k":3,"handle_impossible_answer":true}', max_top_k=20)
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
    ],
)
def test_answer_options_refuse_bad_parameters(parameters, message):
    with pytest.raises(InputError, match=message):
        AnswerOptions.from_parameters(parameters, max_top_k=20)


def test_request_limits_come_from_config_parameters():
    limits = RequestLimits.from_config({"max_questions": "8", "max_top_k": "5", "tokenizer_file": "x"})
    assert (limits.max_questions, limits.max_top_k, limits.max_windows) == (8, 5, RequestLimits.max_windows)

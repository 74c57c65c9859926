"""The served ensemble answers as pipeline('question-answering') does on the same weights."""

import numpy as np
import pytest

from client import Answer, InvalidInputError
from testkit.cases import CASES
from tests.conftest import as_list, assert_same_answers
from tests.integration import raw


def rows(answers):
    return [(a.text, a.score, a.start, a.end) for a in answers]


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("top_k", [1, 3])
def test_ask_matches_the_reference_pipeline(qa, reference, case, top_k):
    question, context = CASES[case]
    got = [qa.ask(question, context)] if top_k == 1 else qa.top_answers(question, context, top_k)
    expected = as_list(reference(question=question, context=context, top_k=top_k))
    assert_same_answers(rows(got), expected)


@pytest.mark.parametrize(
    "options",
    [{"handle_impossible_answer": True, "top_k": 5}, {"max_answer_len": 4}, {"align_to_words": False, "top_k": 2}],
)
def test_answer_options_match_the_reference_pipeline(qa, reference, options):
    question, context = CASES["squad"]
    got = qa.top_answers(question, context, **{"top_k": 1, **options})
    expected = as_list(reference(question=question, context=context, **options))
    assert_same_answers(rows(got), expected)


@pytest.mark.parametrize("top_k", [1, 3])
def test_several_questions_in_one_request_match_the_reference(qa, reference, top_k):
    pairs = list(CASES.values())
    got = [[a] for a in qa.ask_many(pairs)] if top_k == 1 else qa.top_answers_many(pairs, top_k)
    assert len(got) == len(pairs)
    for answers, (question, context) in zip(got, pairs):
        expected = as_list(reference(question=question, context=context, top_k=top_k))
        assert_same_answers(rows(answers), expected)


def test_pipeline_call_form_returns_the_pipelines_dicts(qa, reference):
    question, context = CASES["card"]
    got = qa({"question": question, "context": context})
    expected = reference({"question": question, "context": context})
    assert set(got) == {"score", "start", "end", "answer"}
    assert_same_answers([(got["answer"], got["score"], got["start"], got["end"])], [expected])


def test_pipeline_call_form_with_lists_returns_a_list_per_example(qa, reference):
    examples = [{"question": q, "context": c} for q, c in list(CASES.values())[:3]]
    got = qa(examples, top_k=2)
    expected = reference(examples, top_k=2)
    assert len(got) == len(expected) == 3
    for g, e in zip(got, expected):
        assert_same_answers([(x["answer"], x["score"], x["start"], x["end"]) for x in as_list(g)], as_list(e))


def test_raw_tritonclient_request_matches_the_reference(triton_server, reference):
    """The I/O contract itself: question/context [N] strings in; answer/score/start/end out."""
    pairs = [CASES["cjk"], CASES["long"]]
    questions, contexts = zip(*pairs)
    result = raw.ask(triton_server, questions, contexts, {"top_k": 3})
    answer, score, start, end = (result.as_numpy(n) for n in ("answer", "score", "start", "end"))
    assert answer.shape == score.shape == start.shape == end.shape == (2, 3)
    assert score.dtype == np.float32 and start.dtype == end.dtype == np.int64
    for q, (question, context) in enumerate(pairs):
        got = [(a.decode(), float(s), int(b), int(e)) for a, s, b, e in zip(answer[q], score[q], start[q], end[q])]
        assert_same_answers(got, as_list(reference(question=question, context=context, top_k=3)))

    best = raw.ask(triton_server, questions, contexts)  # one fixed rank: [N, top_k] for top_k 1 too
    assert all(best.as_numpy(name).shape == (2, 1) for name in ("answer", "score", "start", "end"))


def test_answers_are_slices_of_their_context(qa):
    for question, context in CASES.values():
        for answer in qa.top_answers(question, context, 3):
            assert isinstance(answer, Answer) and answer.text == context[answer.start : answer.end]


@pytest.mark.parametrize("question_tokens", [65, 120, 200, 250, 300])
@pytest.mark.parametrize("case", ["squad", "long"])
def test_questions_longer_than_max_question_len_are_answered_like_the_reference(qa, reference, question_tokens, case):
    # the pipeline's fast tokenizer ignores max_question_len: a long question leaves less room for the context
    words = "which of the engineers founded the launch pad near the river and when".split()
    question = " ".join(words[i % len(words)] for i in range(question_tokens - 1)) + "?"
    context = CASES[case][1]
    try:
        expected = as_list(reference(question=question, context=context, top_k=2))
    except BaseException as error:  # the pipeline's tokenizer panics when the context has no room beyond the stride
        assert question_tokens > 384 - 3 - 128 and "stride" in str(error)
        with pytest.raises(InvalidInputError, match=rf"question 0 is {question_tokens} tokens long: it leaves"):
            qa.top_answers(question, context, 2)
    else:
        assert_same_answers(rows(qa.top_answers(question, context, 2)), expected)

"""The behaviours transformers' own question-answering pipeline tests check (the call forms of its
``run_pipeline_test``, the generator of ``test_small_model_pt_iterator``, ``align_to_words=False``), run
against ``TritonQA`` and against ``pipeline('question-answering')`` of 4.57.6 on the same weights, and
compared result by result."""

import types

import pytest

from tests.conftest import as_list, assert_same_answers

QUESTION = "Where did the bakery open its first shop ?"
CONTEXT = "The bakery opened its first shop in Lisbon."
OTHER = "In which trade does the bakery work ?"
JA_QUESTION, JA_CONTEXT = "どの教科書に挿し絵がありますか", "全ての学年で小学校の国語の教科書に挿し絵が使われている"


def rows(result):
    return [(x["answer"], x["score"], x["start"], x["end"]) for x in as_list(result)]


def assert_same_result(got, expected):
    """Same shape (a dict, or a list of them) and the same answers."""
    assert type(got) is type(expected)
    if isinstance(expected, dict):
        assert set(got) == set(expected) == {"answer", "score", "start", "end"}
        assert isinstance(got["answer"], str) and isinstance(got["score"], float)
        assert isinstance(got["start"], int) and isinstance(got["end"], int)
    assert_same_answers(rows(got), as_list(expected))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"question": QUESTION, "context": CONTEXT},
        {"question": QUESTION, "context": CONTEXT, "handle_impossible_answer": True},
        {"question": QUESTION, "context": CONTEXT, "top_k": 20},  # more than a short context holds
        {"question": QUESTION, "context": CONTEXT * 20},  # several windows
        {"question": QUESTION, "context": CONTEXT * 20, "batch_size": 2},
        {"question": JA_QUESTION, "context": JA_CONTEXT, "align_to_words": False},  # no spaces between words
        {"question": JA_QUESTION, "context": JA_CONTEXT},
    ],
    ids=["single", "impossible", "top_k=20", "long", "long-batch_size", "align_to_words=False", "japanese"],
)
def test_one_example_gives_the_pipelines_result(qa, reference, kwargs):
    assert_same_result(qa(**kwargs), reference(**kwargs))


def test_batch_size_does_not_change_the_answer(qa):
    one = qa(question=QUESTION, context=CONTEXT * 20)
    assert rows(qa(question=QUESTION, context=CONTEXT * 20, batch_size=2)) == rows(one)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"question": [OTHER, OTHER], "context": CONTEXT},  # several questions, one context
        {"question": [OTHER, QUESTION], "context": ["The bakery is a family firm in Porto.", CONTEXT]},
    ],
    ids=["one-context", "a-context-each"],
)
def test_several_examples_give_a_list(qa, reference, kwargs):
    got, expected = qa(**kwargs), reference(**kwargs)
    assert isinstance(got, list) and len(got) == len(expected) == 2
    for g, e in zip(got, expected):
        assert_same_result(g, e)


def test_dict_forms_and_positional_strings(qa, reference):
    examples = [{"question": QUESTION, "context": CONTEXT}, {"question": OTHER, "context": "The bakery is in trade."}]
    assert_same_result(qa(examples[0]), reference(examples[0]))
    assert_same_result(qa(QUESTION, CONTEXT), reference(QUESTION, CONTEXT))
    got, expected = qa(examples), reference(examples)
    assert len(got) == len(expected) == 2
    for g, e in zip(got, expected):
        assert_same_result(g, e)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"question": "", "context": CONTEXT},
        {"question": None, "context": CONTEXT},
        {"question": QUESTION, "context": ""},
        {"question": QUESTION, "context": None},
    ],
    ids=["empty-question", "no-question", "empty-context", "no-context"],
)
def test_missing_input_is_a_value_error(qa, reference, kwargs):
    with pytest.raises(ValueError):
        reference(**kwargs)
    with pytest.raises(ValueError):
        qa(**kwargs)


def generated(n):
    contexts = [CONTEXT, "The bakery is a family firm in Porto.", CONTEXT * 20]
    for i in range(n):
        yield {"question": QUESTION if i % 2 else OTHER, "context": contexts[i % 3]}


@pytest.mark.parametrize("options", [{"batch_size": 16}, {"batch_size": 4, "top_k": 3}, {}])
def test_a_generator_gives_the_pipelines_results_lazily_item_by_item(qa, reference, options):
    got, expected = qa(generated(30), **options), reference(generated(30), **options)
    assert not isinstance(got, list) and iter(got) is got  # an iterator, as the pipeline's
    assert not isinstance(expected, list)
    count = 0
    for g, e in zip(got, expected, strict=True):
        assert_same_result(g, e)
        count += 1
    assert count == 30


def test_a_generator_of_the_same_example_gives_the_same_answer_each_time(qa, reference):
    def data():
        for _ in range(10):
            yield {"question": QUESTION, "context": CONTEXT}

    expected = reference(question=QUESTION, context=CONTEXT)
    results = list(qa(data(), batch_size=16))
    assert len(results) == 10
    for result in results:
        assert_same_result(result, expected)
    assert isinstance(qa(data()), types.GeneratorType)

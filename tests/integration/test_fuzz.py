"""Property-based fuzzing through TritonQA and raw tritonclient: random text, random bytes, random shapes.
Every call either answers with ``answer == context[start:end]`` or is refused with INVALID_ARGUMENT; the
server stays healthy throughout."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.utils import InferenceServerException

from client import InvalidInputError
from tests.integration import raw

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=300)


@FUZZ
@given(question=texts, context=texts, top_k=st.integers(1, 4))
def test_random_text_is_answered_from_its_context_or_refused(qa, triton_server, question, context, top_k):
    try:
        answers = qa.top_answers(question, context, top_k)
    except InvalidInputError as error:
        assert str(error)  # refused with a message
    else:
        for answer in answers:
            assert answer.text == context[answer.start : answer.end]
    assert triton_server.alive()


@FUZZ
@given(questions=st.lists(st.binary(max_size=80), max_size=4), contexts=st.lists(st.binary(max_size=200), max_size=4))
def test_random_bytes_and_counts_get_answers_or_invalid_argument(triton_server, questions, contexts):
    try:
        result = raw.ask(triton_server, questions, contexts)
    except InferenceServerException as error:
        assert error.status() == "StatusCode.INVALID_ARGUMENT", error.message()
    else:
        assert len(questions) == len(contexts) > 0
        answers, starts, ends = (result.as_numpy(n)[:, 0] for n in ("answer", "start", "end"))
        for context, answer, start, end in zip(contexts, answers, starts, ends):
            assert answer.decode() == context.decode()[start:end]
    assert triton_server.alive()


@FUZZ
@given(
    parameters=st.dictionaries(
        st.sampled_from(["top_k", "max_answer_len", "handle_impossible_answer", "align_to_words", "topk"]),
        st.one_of(st.integers(-5, 50), st.booleans(), st.text(max_size=3)),
        max_size=3,
    )
)
def test_random_request_parameters_get_answers_or_invalid_argument(triton_server, parameters):
    try:
        raw.ask(triton_server, [b"Who wrote it?"], [b"Ada Lovelace wrote it in 1843."], parameters)
    except InferenceServerException as error:
        assert error.status() == "StatusCode.INVALID_ARGUMENT", error.message()
    assert triton_server.alive()

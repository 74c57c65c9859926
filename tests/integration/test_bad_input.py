"""Bad input gets INVALID_ARGUMENT with a message naming the problem, and the server keeps serving."""

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from client import InvalidInputError, ServerError, TritonQA
from testkit.cases import CASES
from testkit.servers import settled
from tests.integration import raw


@pytest.fixture(autouse=True)
def server_still_answers(qa, triton_server):
    yield
    assert triton_server.alive()
    question, context = CASES["card"]
    assert qa.ask(question, context).text


@pytest.mark.parametrize(
    ("questions", "contexts", "message"),
    [
        ([b""], [b"Some context."], "question 0 is empty or only whitespace"),
        ([b"What?"], [b"   \n\t "], "context 0 is empty or only whitespace"),
        ([b"  "], [b"Some context."], "question 0 is empty or only whitespace"),
        ([b"What?", b"\xff\xfeWho?"], [b"a", b"b"], "question 1 is not valid UTF-8"),
        ([b"What?"], [b"ok \xc3\x28"], "context 0 is not valid UTF-8"),
        ([b"What?", b"Who?"], [b"Only one context."], "2 questions but 1 contexts"),
        ([b"What?"], [b"One.", b"Two."], "1 questions but 2 contexts"),
        ([b"What?"], [b"a\x00b"], "context 0 contains a NUL character"),
        ([b"why " * 300], [b"because " * 200], "question 0 is 300 tokens long: it leaves 81 tokens"),
        ([b"What?"], [b"\x01\x02"], "context 0 holds no token"),
    ],
)
def test_bad_strings_get_invalid_argument_naming_the_problem(triton_server, questions, contexts, message):
    with pytest.raises(InferenceServerException) as error:
        raw.ask(triton_server, questions, contexts)
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert message in error.value.message()


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"topk": 3}, "unknown request parameter 'topk'"),
        ({"top_k": 0}, "top_k must be at least 1"),
        ({"top_k": 1000}, "top_k must be at most 20"),
        ({"top_k": "3"}, "'top_k' must be an integer"),
        ({"handle_impossible_answer": 1}, "'handle_impossible_answer' must be a boolean"),
    ],
)
def test_bad_options_get_invalid_argument_naming_the_option(triton_server, parameters, message):
    with pytest.raises(InferenceServerException) as error:
        raw.ask(triton_server, [b"What?"], [b"Some context."], parameters)
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert message in error.value.message()


def test_wrong_shapes_are_refused_by_triton(triton_server):
    with pytest.raises(InferenceServerException) as error:
        raw.ask(triton_server, [[b"What?"]], [[b"Some context."]])
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "unexpected shape for input" in error.value.message() and "Expected [-1], got [1,1]" in error.value.message()


def test_empty_request_is_refused(triton_server):
    with pytest.raises(InferenceServerException) as error:
        raw.ask(triton_server, np.empty(0, dtype=object), np.empty(0, dtype=object))
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_client_raises_invalid_input_error_with_the_servers_message(qa):
    with pytest.raises(InvalidInputError, match="^context 0 is empty or only whitespace$"):
        qa.ask("What?", " ")


def test_client_refuses_text_that_is_not_encodable(qa):
    with pytest.raises(InvalidInputError, match="question 0 cannot be encoded as UTF-8"):
        qa.ask("bad \ud800 surrogate", "Some context.")


def executions_and_requests(server, model, until=lambda _: True):
    """(executions, requests) of ``model`` once they stop changing (``settled``): a neighbour's last requests
    counted before a baseline, this test's own all counted after it."""

    def read():
        stats = server.admin.statistics(model)
        inference = stats["inference_stats"]
        return stats["execution_count"], int(inference["success"]["count"]) + int(inference["fail"]["count"])

    return settled(read, until)


def test_a_bad_request_does_not_fail_good_ones_sent_with_it(triton_server, qa):
    """Good and bad requests reach the tokenizer in the same execute() (fewer executions than requests): each
    bad one gets its own INVALID_ARGUMENT, every good one its answer."""
    from concurrent.futures import ThreadPoolExecutor

    def call(i):
        try:
            return qa.ask("What?" if i % 2 else "", "Forty-two is the answer.").text
        except InvalidInputError as error:
            return error

    before = executions_and_requests(triton_server, "tokenizer")
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(call, range(96)))
    after = executions_and_requests(triton_server, "tokenizer", lambda now: now[1] - before[1] >= 96)
    assert all(isinstance(r, InvalidInputError) and "question 0 is empty" in str(r) for r in results[::2])
    assert all(isinstance(r, str) and r for r in results[1::2])
    executions, requests = after[0] - before[0], after[1] - before[1]
    assert requests == 96 and executions < requests, f"{executions} executions for {requests} requests"


def test_a_bad_request_to_the_decoder_does_not_fail_good_ones_in_its_batch(triton_server, qa):
    """Malformed decoder requests sent directly, batched with the ensemble's: only they fail."""
    from concurrent.futures import ThreadPoolExecutor

    bad = {
        "logits": np.zeros((1, 4, 2), np.float32),
        "offsets": np.full((1, 4, 4), 7, np.int32),
        "window_context": np.array([[b"abc"]], dtype=object),
    }

    def call(i):
        if i % 3:
            return qa.ask(*CASES["squad"]).text
        try:
            raw.infer(triton_server, "decoder", bad)
        except InferenceServerException as error:
            return error.status()

    before = executions_and_requests(triton_server, "decoder")
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(call, range(96)))
    after = executions_and_requests(triton_server, "decoder", lambda now: now[1] - before[1] >= 96)
    assert all(r == "StatusCode.INVALID_ARGUMENT" for r in results[::3])
    assert all(isinstance(r, str) and r and not r.startswith("StatusCode") for i, r in enumerate(results) if i % 3)
    assert after[0] - before[0] < after[1] - before[1] == 96


def test_unknown_model_is_a_server_error(triton_server):
    with TritonQA(triton_server.grpc_url, model="no_such_model") as client:
        with pytest.raises(ServerError):
            client.ask("What?", "Some context.")

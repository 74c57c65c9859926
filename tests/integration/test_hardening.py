"""Bad input beyond strings, server-side limits, deadlines, retries: clear errors, and the server keeps serving."""

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from client import ENSEMBLE, NO_RETRIES, DeadlineExceededError, RetryPolicy, ServerUnavailableError, TritonQA
from testkit.cases import CASES
from testkit.inputs import long_document
from tests.integration import raw
from tests.integration.conftest import free_port


@pytest.fixture(autouse=True)
def server_still_answers(qa, triton_server):
    yield
    assert triton_server.alive()
    assert qa.ask(*CASES["card"]).text


def infer(server, tensors):
    with pytest.raises(InferenceServerException) as error:
        raw.infer(server, ENSEMBLE, [raw.tensor(name, array, dtype) for name, array, dtype in tensors])
    return error.value


text = raw.strings


def test_wrong_dtype_is_invalid_argument(triton_server):
    error = infer(
        triton_server, [("question", np.array([1, 2], np.int32), "INT32"), ("context", text(["a", "b"]), "BYTES")]
    )
    assert error.status() == "StatusCode.INVALID_ARGUMENT" and "question" in error.message()


def test_missing_input_is_invalid_argument(triton_server):
    error = infer(triton_server, [("question", text(["What?"]), "BYTES")])
    assert error.status() == "StatusCode.INVALID_ARGUMENT" and "expected 2 inputs but got 1" in error.message()


def test_ten_megabyte_context_is_refused_naming_the_limit(triton_server):
    error = infer(
        triton_server, [("question", text(["What?"]), "BYTES"), ("context", text(["word " * 2_000_000]), "BYTES")]
    )
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert "context 0 is 10000000 bytes long; the limit is 1000000 characters" in error.message()


def test_thousands_of_questions_are_refused_naming_the_limit(triton_server):
    n = 3000
    error = infer(
        triton_server, [("question", text(["What?"] * n), "BYTES"), ("context", text(["Some context."] * n), "BYTES")]
    )
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert "3000 questions in one request; the limit is 256" in error.message()


def test_deadline_is_enforced_per_call(triton_server):
    with TritonQA(triton_server.grpc_url, timeout_s=0.05) as qa:
        with pytest.raises(DeadlineExceededError):
            qa.ask("Who received the grain?", long_document(140_000))


def test_unreachable_server_is_retried_then_unavailable_within_the_deadline():
    url = f"localhost:{free_port()}"
    with (
        TritonQA(url, timeout_s=3, retry=NO_RETRIES) as once,
        TritonQA(url, timeout_s=3, retry=RetryPolicy(attempts=4, backoff_s=0.2, max_backoff_s=0.2)) as retried,
    ):
        for client in (once, retried):
            with pytest.raises(ServerUnavailableError):  # not DeadlineExceededError: the retries end within it
                client.ask("What?", "Some context.")

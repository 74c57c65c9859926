"""The client's request shaping and error translation (no server needed)."""

import pytest
from tritonclient.utils import InferenceServerException

from client import (
    ENSEMBLE,
    Answer,
    AuthenticationError,
    ChannelSettings,
    DeadlineExceededError,
    InvalidInputError,
    QAError,
    RetryPolicy,
    ServerError,
    ServerUnavailableError,
)
from client._protocol import Options, pipeline_examples, pipeline_result
from client.connection import RetryPlan
from client.errors import translate


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        ("StatusCode.INVALID_ARGUMENT", InvalidInputError),
        ("StatusCode.UNAVAILABLE", ServerUnavailableError),
        ("StatusCode.DEADLINE_EXCEEDED", DeadlineExceededError),
        ("StatusCode.INTERNAL", ServerError),
        (None, ServerError),
    ],
)
def test_translate_maps_grpc_status_to_the_exception_hierarchy(status, kind):
    error = translate(InferenceServerException("boom", status=status))
    assert type(error) is kind and isinstance(error, QAError)


def test_every_grpc_status_but_ok_has_its_exception():
    import grpc

    from client.errors import _BY_STATUS

    assert set(_BY_STATUS) == {code.name for code in grpc.StatusCode} - {"OK"}
    assert list(_BY_STATUS) == sorted(_BY_STATUS)
    for status, kind in _BY_STATUS.items():
        error = translate(InferenceServerException("boom", status=f"StatusCode.{status}"))
        assert type(error) is kind and "boom" in str(error)
        if kind is ServerError:
            assert error.status == status
    # what retrying could fix is retried (ServerUnavailableError); what the input must fix, never
    assert [s for s, k in _BY_STATUS.items() if k is ServerUnavailableError] == ["ABORTED", "UNAVAILABLE"]
    assert [s for s, k in _BY_STATUS.items() if k is InvalidInputError] == [
        "INVALID_ARGUMENT",
        "OUT_OF_RANGE",
        "RESOURCE_EXHAUSTED",
    ]


def test_translate_drops_the_ensemble_prefix_from_messages():
    error = translate(
        InferenceServerException(
            "in ensemble 'electra_qa', question 0 is empty or only whitespace", status="StatusCode.INVALID_ARGUMENT"
        )
    )
    assert str(error) == "question 0 is empty or only whitespace"


def test_timeouts_are_also_builtin_timeout_errors():
    assert issubclass(DeadlineExceededError, TimeoutError) and issubclass(InvalidInputError, ValueError)


@pytest.mark.parametrize(
    ("args", "kwargs", "pairs", "single"),
    [
        (({"question": "q", "context": "c"},), {}, [("q", "c")], True),
        ((), {"question": "q", "context": "c"}, [("q", "c")], True),
        ((), {"question": ["q1", "q2"], "context": "c"}, [("q1", "c"), ("q2", "c")], False),
        ((), {"question": ["q1", "q2"], "context": ["c1", "c2"]}, [("q1", "c1"), ("q2", "c2")], False),
        (
            ([{"question": "q1", "context": "c1"}, {"question": "q2", "context": "c2"}],),
            {},
            [("q1", "c1"), ("q2", "c2")],
            False,
        ),
    ],
)
def test_pipeline_call_forms_are_understood(args, kwargs, pairs, single):
    assert pipeline_examples(args, kwargs)[:2] == (pairs, single)


def test_pipeline_options_become_request_parameters():
    _, _, options = pipeline_examples(
        ({"question": "q", "context": "c"},), {"topk": 3, "handle_impossible_answer": True, "doc_stride": 128}
    )
    assert options == Options(top_k=3, handle_impossible_answer=True)


def test_server_side_pipeline_settings_cannot_change_per_call():
    with pytest.raises(InvalidInputError, match="max_seq_len is set in the server's model configuration"):
        pipeline_examples(({"question": "q", "context": "c"},), {"max_seq_len": 256})


def test_pipeline_call_refuses_malformed_examples():
    with pytest.raises(InvalidInputError, match="must be a dict with 'question' and 'context'"):
        pipeline_examples(({"question": "q"},), {})
    with pytest.raises(InvalidInputError, match="unexpected arguments: foo"):
        pipeline_examples(({"question": "q", "context": "c"},), {"foo": 1})


def test_pipeline_result_is_a_dict_for_one_answer_and_a_list_for_several():
    one, two = Answer("a", 0.5, 0, 1), Answer("b", 0.25, 2, 3)
    assert pipeline_result([[one]], single=True) == {"score": 0.5, "start": 0, "end": 1, "answer": "a"}
    assert pipeline_result([[one, two]], single=True)[1]["answer"] == "b"
    assert pipeline_result([[one], [one, two]], single=False)[0]["answer"] == "a"


def test_restricted_protocol_refusal_is_an_authentication_error():
    error = translate(
        InferenceServerException(
            "This protocol is restricted, expecting header 'triton-grpc-protocol-x-api-key'",
            status="StatusCode.UNAVAILABLE",
        )
    )
    assert isinstance(error, AuthenticationError) and isinstance(error, QAError)


def test_a_model_without_available_versions_is_unavailable_not_missing():
    error = translate(
        InferenceServerException(
            "Request for unknown model: 'electra_qa' has no available versions", status="StatusCode.NOT_FOUND"
        )
    )
    assert type(error) is ServerUnavailableError


def test_retry_plan_retries_unavailable_with_bounded_jittered_backoff():
    plan = RetryPlan(RetryPolicy(attempts=3, backoff_s=0.1, max_backoff_s=0.15), timeout_s=None)
    delays = [plan.next_delay_s(ServerUnavailableError("down")) for _ in range(2)]
    assert 0 <= delays[0] <= 0.1 and 0 <= delays[1] <= 0.15
    assert plan.next_delay_s(ServerUnavailableError("still down")) is None  # the third attempt was the last


@pytest.mark.parametrize(
    "error",
    [InvalidInputError("bad"), AuthenticationError("no key"), DeadlineExceededError("late"), ServerError("boom")],
)
def test_retry_plan_never_retries_other_errors(error):
    assert RetryPlan(RetryPolicy(attempts=5), timeout_s=None).next_delay_s(error) is None


def test_retry_plan_stays_within_the_deadline(monkeypatch):
    import random

    monkeypatch.setattr(random, "uniform", lambda low, high: high)  # the longest jittered delay: 10 s
    plan = RetryPlan(RetryPolicy(attempts=10, backoff_s=10, max_backoff_s=10), timeout_s=5)
    assert 0 < plan.remaining_s() <= 5
    # a delay that would end past the deadline gives up instead
    assert plan.next_delay_s(ServerUnavailableError("down")) is None


def test_options_are_the_servers_answer_options():
    """The client's Options and the server's AnswerOptions are twins (the client needs no server packages)."""
    from dataclasses import fields

    from client._protocol import Options
    from preprocessing import AnswerOptions

    assert [(f.name, f.type, f.default) for f in fields(Options)] == [
        (f.name, f.type, f.default) for f in fields(AnswerOptions)
    ]


def test_every_call_sends_its_deadline_as_the_requests_timeout():
    import tritonclient.grpc as grpcclient

    from client._protocol import Call

    kwargs = Call([("Who?", "Ada.")], Options()).infer_kwargs(grpcclient, ENSEMBLE, {}, 2.5)
    assert kwargs["client_timeout"] == 2.5 and kwargs["timeout"] == 2_500_000
    assert kwargs["parameters"] == {
        "top_k": 1,
        "max_answer_len": 15,
        "handle_impossible_answer": False,
        "align_to_words": True,
    }


def test_channel_settings_set_message_sizes_and_keepalive_explicitly():
    args = dict(ChannelSettings().channel_args())
    assert args["grpc.max_send_message_length"] == 2**31 - 1  # the server bounds what it takes
    assert args["grpc.max_receive_message_length"] == 64 * 2**20  # no answer comes near it
    assert args["grpc.keepalive_time_ms"] == 30_000 and args["grpc.keepalive_permit_without_calls"] == 1


def test_a_reply_over_the_clients_receive_limit_is_the_servers_error_not_the_callers():
    error = translate(
        InferenceServerException(
            "Received message larger than max (314572800 vs. 67108864)", status="StatusCode.RESOURCE_EXHAUSTED"
        )
    )
    assert type(error) is ServerError and "larger than this client takes" in str(error)
    assert type(translate(InferenceServerException("too big", status="StatusCode.RESOURCE_EXHAUSTED"))) is (
        InvalidInputError
    )


class Reply:
    """tritonclient's InferResult, as far as the client reads it."""

    def __init__(self, **arrays):
        self.arrays = arrays

    def as_numpy(self, name):
        return self.arrays[name]


def reply(texts, starts, ends):
    import numpy as np

    texts = np.array(texts, dtype=object)
    return Reply(
        answer=texts,
        score=np.full(texts.shape, 0.5, np.float32),
        start=np.array(starts, np.int64),
        end=np.array(ends, np.int64),
    )


def test_answers_are_checked_against_the_question_count_top_k_and_their_contexts():
    from client._protocol import parse_answers

    pairs = [("Who?", "Ada wrote it."), ("When?", "In 1843.")]
    good = reply([[b"Ada", b""], [b"1843", b"In"]], [[0, -1], [3, 0]], [[3, -1], [7, 2]])
    assert parse_answers(good, pairs, 2) == [
        [Answer("Ada", 0.5, 0, 3)],
        [Answer("1843", 0.5, 3, 7), Answer("In", 0.5, 0, 2)],
    ]
    for wrong, why in [
        (reply([[b"Ada"]] * 2, [[0]] * 2, [[3]] * 2), "shapes"),  # top_k 1 answered for top_k 2
        (reply([[b"Ada"] * 2] * 3, [[0] * 2] * 3, [[3] * 2] * 3), "shapes"),  # three questions for two
        (reply([[b"Ada", b""], [b"1843", b"In"]], [[0, -1], [3, 10**12]], [[3, -1], [7, 10**12 + 2]]), "span"),
        (reply([[b"Eve", b""], [b"1843", b"In"]], [[0, -1], [3, 0]], [[3, -1], [7, 2]]), "span"),  # not the text
        (reply([[b"Ada", b"x"], [b"1843", b"In"]], [[0, -1], [3, 0]], [[3, -1], [7, 2]]), "span"),  # a bad filler
    ]:
        with pytest.raises(ServerError, match=why):
            parse_answers(wrong, pairs, 2)


def test_api_key_is_sent_in_the_header_tritons_restricted_protocol_reads():
    from client._protocol import request_headers

    assert request_headers({"a": "b"}, "s3cret", "x-api-key") == {"a": "b", "triton-grpc-protocol-x-api-key": "s3cret"}


def test_a_dead_python_backend_stub_is_transient():
    error = translate(
        InferenceServerException("Stub process 'tokenizer_0_1' is not healthy.", status="StatusCode.INTERNAL")
    )
    assert type(error) is ServerUnavailableError


def test_channel_settings_balance_round_robin_by_default():
    assert dict(ChannelSettings().channel_args())["grpc.lb_policy_name"] == "round_robin"
    assert dict(ChannelSettings(lb_policy="pick_first").channel_args())["grpc.lb_policy_name"] == "pick_first"


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("localhost:8001", "localhost:8001"),  # a string is gRPC's own target, as it is
        ("dns:///electra-qa-grpc.electra-qa.svc:8001", "dns:///electra-qa-grpc.electra-qa.svc:8001"),
        (["qa.internal:8001"], "qa.internal:8001"),  # one address: nothing to balance, left to gRPC
        (["10.0.0.1:8001", "10.0.0.2:8001"], "ipv4:10.0.0.1:8001,10.0.0.2:8001"),
        (("localhost:9001", "127.0.0.1:9002"), "ipv4:127.0.0.1:9001,127.0.0.1:9002"),  # names resolved, IPv4 first
        (["[::1]:9001", "[fd00::2]:9002"], "ipv6:[::1]:9001,[fd00::2]:9002"),
    ],
)
def test_a_list_of_replicas_becomes_one_grpc_target(url, target):
    from client.connection import channel_target

    assert channel_target(url) == target


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ([], "non-empty list"),
        (["10.0.0.1:8001", "[::1]:8001"], "mix IPv4 and IPv6"),
        (["dns:///a:1", "b:2"], "not gRPC targets"),
        (["10.0.0.1", "10.0.0.2:8001"], "has no port"),
        (["no-such-host.invalid:1", "10.0.0.2:8001"], "cannot resolve"),
    ],
)
def test_a_list_of_replicas_that_is_not_one_family_of_host_port_addresses_is_refused(url, message):
    from client.connection import channel_target

    with pytest.raises(ValueError, match=message):
        channel_target(url)


def test_the_client_connects_to_the_target_of_its_replicas():
    from client import TritonQA

    with TritonQA(["127.0.0.1:9001", "127.0.0.1:9002"]) as qa:
        assert qa.url == ["127.0.0.1:9001", "127.0.0.1:9002"] and qa.target == "ipv4:127.0.0.1:9001,127.0.0.1:9002"


def test_the_sync_client_refuses_an_async_iterable_naming_its_twin():
    from client import TritonQA

    async def examples():
        yield {"question": "What?", "context": "Something."}

    with TritonQA("127.0.0.1:9") as qa, pytest.raises(TypeError, match="AsyncTritonQA"):
        next(iter(qa.ask_stream(examples())))


def test_the_clients_copy_of_server_side_settings_is_the_tokenizers_config():
    """The pipeline arguments the client accepts only at the server's values (doc_stride, max_seq_len) are the
    tokenizer's config's, in every config variant."""
    from client._protocol import SERVER_SIDE
    from runtime.backend import config_file_parameters
    from tests.conftest import ROOT

    tokenizer = ROOT / "model_repository" / "tokenizer"
    for config in (tokenizer / "config.pbtxt", *sorted((tokenizer / "configs").glob("*.pbtxt"))):
        parameters = config_file_parameters(config)
        for name in ("doc_stride", "max_seq_len"):
            assert SERVER_SIDE[name] == int(parameters[name]), f"{config.name}: {name}"

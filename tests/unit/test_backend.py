"""runtime.backend, the glue of the Python-backend steps, with a stand-in for ``triton_python_backend_utils``
(which exists only inside the stub process): error replies carry no server detail, and the memory trimmer."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from preprocessing import InputError
from preprocessing.outcomes import attempt
from runtime.backend import MemoryTrimmer, error_response, reply
from runtime.scheduling import Busy


class FakeTritonError:
    INVALID_ARG, INTERNAL, UNAVAILABLE = "INVALID_ARG", "INTERNAL", "UNAVAILABLE"

    def __init__(self, message, code):
        self.message, self.code = message, code


def fake_pb_utils():
    logged: list[str] = []
    pb_utils = SimpleNamespace(
        TritonError=FakeTritonError,
        InferenceResponse=lambda output_tensors=None, error=None: SimpleNamespace(tensors=output_tensors, error=error),
        Logger=SimpleNamespace(log_error=logged.append),
    )
    return pb_utils, logged


def failing(path: str):
    """An error raised deep inside a step, naming a server path, as an OSError or a library would."""

    def load():
        with open(path) as f:  # noqa: PTH123
            return f.read()

    try:
        load()
    except OSError as error:
        return error
    raise AssertionError("expected an OSError")


def test_internal_errors_reach_the_client_without_paths_or_stack_and_the_log_gets_both(tmp_path):
    pb_utils, logged = fake_pb_utils()
    secret = tmp_path / "model_repository" / "tokenizer" / "1" / "tokenizer.json"
    error = failing(str(secret))
    reply_ = error_response(pb_utils, error, "tokenizer")
    assert reply_.error.code == "INTERNAL"
    message = reply_.error.message
    assert message == ("internal error in the tokenizer step (FileNotFoundError); the server log has the details")
    assert "/" not in message and "Traceback" not in message and str(tmp_path) not in message
    assert len(logged) == 1
    assert logged[0].startswith("tokenizer: Traceback (most recent call last):")
    assert str(secret) in logged[0] and "in load" in logged[0]  # the details, for the operator


def test_a_failure_while_packing_the_reply_is_an_internal_error_too():
    pb_utils, logged = fake_pb_utils()

    def pack(_result):
        raise ValueError("cannot write /opt/electra_qa/serving/secret.py")

    out = reply(pb_utils, "decoder", object(), pack)
    assert out.error.code == "INTERNAL" and "/" not in out.error.message and "ValueError" in out.error.message
    assert "/opt/electra_qa/serving/secret.py" in logged[0]


def test_callers_mistakes_and_overload_keep_their_message_and_code():
    pb_utils, logged = fake_pb_utils()
    invalid = error_response(pb_utils, InputError("3000 questions in one request; the limit is 256"), "tokenizer")
    assert (invalid.error.code, invalid.error.message) == (
        "INVALID_ARG",
        "3000 questions in one request; the limit is 256",
    )
    busy = error_response(pb_utils, Busy("no time left; retry"), "tokenizer")
    assert (busy.error.code, busy.error.message) == ("UNAVAILABLE", "no time left; retry")
    assert logged == []


def test_non_finite_logits_fail_their_request_saying_so_and_the_log_gets_it():
    """NaN or infinite logits on a request's real tokens become INTERNAL with the reason, never an answer; what
    lies past a window's tokens is not looked at."""
    import numpy as np

    from runtime.model_inputs import finite_logits
    from runtime.tensors import pack_tokens

    ids = np.array([[101, 7, 102, 0], [101, 8, 9, 102]])
    mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]])
    tokens = pack_tokens(ids, mask, np.zeros_like(ids))
    logits = np.zeros((2, 4, 2), np.float32)
    logits[0, 3] = np.nan  # padding: not a token of the request
    assert finite_logits(logits, tokens) is logits
    logits[1, 2, 0], logits[0, 1, 1] = np.nan, -np.inf
    pb_utils, logged = fake_pb_utils()
    out = reply(pb_utils, "encoder", attempt(finite_logits, logits, tokens), lambda _: "an answer")
    assert out.error.code == "INTERNAL"
    assert out.error.message == (
        "the model step computed non-finite logits (NaN or infinity) for 2 of the request's 7 tokens; no answer is "
        "given from them"
    )
    assert logged == [f"encoder: {out.error.message}"]


def test_memory_trimmer_trims_after_large_work_only():
    trims = []
    trimmer = MemoryTrimmer(threshold=1000, delay_s=0.01)
    if trimmer._trim is None:
        pytest.skip("not glibc: nothing to trim")
    real = trimmer._trim
    trimmer._trim = lambda pad: trims.append(pad) or real(pad)
    assert not trimmer.after(999)
    assert trimmer._thread is None  # nothing started for small executes
    assert trimmer.after(1000)
    deadline = time.monotonic() + 5
    while trimmer.trims == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert trims == [0] and trimmer.trims == 1


def test_a_missing_or_unknown_config_parameter_fails_loading():
    import json

    from runtime.backend import checked_parameters

    def args(**parameters):
        return {"model_config": json.dumps({"parameters": {k: {"string_value": v} for k, v in parameters.items()}})}

    assert checked_parameters(args(a="1", b="2"), "encoder", ("a", "b")) == {"a": "1", "b": "2"}
    with pytest.raises(ValueError, match=r"encoder config parameters: unknown \['c'\], missing \['b'\]"):
        checked_parameters(args(a="1", c="3"), "encoder", ("a", "b"))


def test_another_models_parameters_must_agree_in_all_of_its_configs(tmp_path):
    """A step reading another model's limit cannot know which of its configs the server loaded: every one of them
    must give it, the same; the checked-in repository's do."""
    from runtime.backend import sibling_parameters
    from serving.configs import edit
    from serving.export import copy_repository
    from tests.conftest import ROOT

    repository = copy_repository(ROOT / "model_repository", tmp_path / "model_repository")
    args = {"model_repository": str(repository / "tokenizer")}
    assert sibling_parameters(args, "decoder", ("max_top_k",)) == {"max_top_k": "20"}
    edit(repository / "decoder" / "configs" / "torch.pbtxt", {"max_top_k": "5"})
    with pytest.raises(
        ValueError,
        match=r"decoder's max_top_k must be one value .*decoder/config.pbtxt: 20, decoder/configs/torch.pbtxt: 5",
    ):
        sibling_parameters(args, "decoder", ("max_top_k",))
    with pytest.raises(ValueError, match="decoder's no_such_key .*missing"):
        sibling_parameters(args, "decoder", ("no_such_key",))

"""The composing models called directly, as anyone who can reach the server can: each checks its own inputs,
refuses what its predecessor would never send with INVALID_ARGUMENT, fails only the bad request of a batch,
and the server keeps serving (no crash, no restart)."""

import re
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tritonclient.utils import InferenceServerException

from tests.cases import CASES
from tests.integration import raw

FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(autouse=True)
def server_still_answers(qa, triton_server):
    yield
    assert triton_server.alive()
    assert qa.ask(*CASES["card"]).text


infer, refused = raw.infer, raw.refused


def windows(n=2, width=12, mask=None):
    ids = np.full((n, width), 2000, np.int64)
    ids[:, 0], ids[:, -1] = 101, 102
    return {
        "input_ids": ids,
        "attention_mask": np.ones((n, width), np.int64) if mask is None else mask,
        "token_type_ids": np.zeros((n, width), np.int64),
    }


def token_metric(server) -> dict:
    with urllib.request.urlopen(f"{server.metrics_url}/metrics") as response:
        text = response.read().decode()
    return {kind: float(v) for kind, v in re.findall(r'electra_qa_model_tokens_total\{kind="(\w+)"\} (\S+)', text)}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda w: {**w, "attention_mask": -np.ones_like(w["attention_mask"])}, "attention_mask row must be ones"),
        (
            lambda w: {**w, "attention_mask": np.c_[np.zeros((2, 1), np.int64), w["attention_mask"][:, 1:]]},
            "attention_mask row must be ones",
        ),
        (lambda w: {**w, "input_ids": w["input_ids"] + 40_000}, "input_ids must be in [0, 30522)"),
        (lambda w: {**w, "input_ids": -w["input_ids"]}, "input_ids must be in [0, 30522)"),
        (lambda w: {**w, "token_type_ids": w["token_type_ids"] + 7}, "token_type_ids must be in [0, 2)"),
        (lambda w: windows(width=513), "windows of 513 tokens; the model takes at most 512"),
    ],
)
def test_model_step_refuses_windows_the_tokenizer_never_makes(triton_server, change, message):
    before = token_metric(triton_server)
    for _ in range(4):  # repeated: a crash or a poisoned process would show on the next call
        assert message in refused(triton_server, "electra", change(windows()))
    assert token_metric(triton_server) == before  # refused requests never reach the metrics
    logits = infer(triton_server, "electra", windows()).as_numpy("start_logits")
    assert logits.shape == (2, 12) and np.isfinite(logits).all()


def test_a_bad_request_batched_with_good_ones_fails_alone(triton_server):
    def stats():
        entry = triton_server.admin.statistics("electra")
        return entry["inference_stats"]["success"]["count"], entry["execution_count"]

    def call(i):
        w = windows(n=3, width=8 + i % 5)
        if i % 4 == 0:
            w["attention_mask"] = -w["attention_mask"]
        try:
            return infer(triton_server, "electra", w).as_numpy("start_logits").shape
        except InferenceServerException as error:
            return error.status()

    before = stats()
    with ThreadPoolExecutor(max_workers=24) as pool:
        results = list(pool.map(call, range(96)))
    after = stats()
    assert all(r == "StatusCode.INVALID_ARGUMENT" for r in results[::4])
    assert all(r == (3, 8 + i % 5) for i, r in enumerate(results) if i % 4)
    assert after[1] - before[1] < 96, "requests were never batched together"


def decoder_tensors(n_windows=1, width=6, context=b"Ada wrote it."):
    offsets = np.full((n_windows, width, 2), -1, np.int32)
    offsets[:, 1:4] = [[0, 3], [4, 9], [10, 12]]
    return {
        "start_logits": np.zeros((n_windows, width), np.float32),
        "end_logits": np.zeros((n_windows, width), np.float32),
        "token_offsets": offsets,
        "word_offsets": offsets.copy(),
        "window_question": np.zeros((n_windows, 1), np.int32),
        "window_context": np.array([[context]] + [[b""]] * (n_windows - 1), dtype=object),
    }


def test_decoder_answers_well_formed_windows_and_bounds_the_work_of_options(triton_server):
    result = infer(triton_server, "decoder", decoder_tensors(), {"top_k": 2})
    assert result.as_numpy("answer").shape == (1, 2)
    started = time.monotonic()
    assert "top_k must be at most 20" in refused(triton_server, "decoder", decoder_tensors(), {"top_k": 20_000_000})
    result = infer(triton_server, "decoder", decoder_tensors(n_windows=64, width=384), {"max_answer_len": 10**9})
    assert result.as_numpy("answer").shape == (1, 1)
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: {**t, "window_question": t["window_question"] + 3}, "window_question must number questions"),
        (lambda t: {**t, "token_offsets": t["token_offsets"] + 1000}, "token_offsets must be character spans"),
        (lambda t: {**t, "window_context": np.array([[b"\xff\xfe"]], dtype=object)}, "not valid UTF-8"),
        (lambda t: {**t, "end_logits": t["end_logits"][:, :3]}, "end_logits must have shape"),
        (lambda t: {**t, "start_logits": np.full_like(t["start_logits"], np.inf)}, "must be finite"),
    ],
)
def test_decoder_refuses_tensors_no_tokenizer_or_model_makes(triton_server, change, message):
    assert message in refused(triton_server, "decoder", change(decoder_tensors()))


def test_tokenizer_called_directly_checks_like_the_ensemble(triton_server):
    text = lambda values: np.array([[v.encode() for v in values]], dtype=object)  # noqa: E731 -- [1, N]
    out = infer(triton_server, "tokenizer", {"question": text(["Who?"]), "context": text(["Ada wrote it."])})
    assert out.as_numpy("window_context").tolist() == [[b"Ada wrote it."]]
    assert "top_k must be at most 20" in refused(
        triton_server, "tokenizer", {"question": text(["Who?"]), "context": text(["Ada."])}, {"top_k": 21}
    )


@FUZZ
@given(
    ids=hnp.arrays(np.int64, st.tuples(st.integers(1, 4), st.integers(1, 20)), elements=st.integers(-(2**40), 2**40)),
    mask_value=st.sampled_from([-1, 0, 1, 2]),
)
def test_model_step_fuzz_answers_or_refuses(triton_server, ids, mask_value):
    mask = np.full_like(ids, mask_value)
    try:
        result = infer(
            triton_server, "electra", {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        )
    except InferenceServerException as error:
        assert error.status() == "StatusCode.INVALID_ARGUMENT", error.message()
    else:
        assert result.as_numpy("start_logits").shape == ids.shape
    assert triton_server.alive()


@FUZZ
@given(
    offsets=hnp.arrays(np.int32, (2, 5, 2), elements=st.integers(-3, 40)),
    questions=hnp.arrays(np.int32, (2, 1), elements=st.integers(-1, 2)),
    top_k=st.integers(-1, 25),
)
def test_decoder_fuzz_answers_or_refuses(triton_server, offsets, questions, top_k):
    tensors = {
        "start_logits": np.zeros((2, 5), np.float32),
        "end_logits": np.ones((2, 5), np.float32),
        "token_offsets": offsets,
        "word_offsets": offsets,
        "window_question": questions,
        "window_context": np.array([[b"Some context here."], [b"Another one."]], dtype=object),
    }
    try:
        result = infer(triton_server, "decoder", tensors, {"top_k": top_k})
    except InferenceServerException as error:
        assert error.status() == "StatusCode.INVALID_ARGUMENT", error.message()
    else:
        assert result.as_numpy("answer").shape[1] == top_k
    assert triton_server.alive()

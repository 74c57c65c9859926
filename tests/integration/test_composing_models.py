"""The composing models called directly, as anyone who can reach the server can: each checks its own inputs,
refuses what its predecessor would never send with INVALID_ARGUMENT, fails only the bad request of a batch,
and the server keeps serving (no crash, no restart)."""

import re
import resource
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tritonclient.utils import InferenceServerException

from client import ENSEMBLE
from runtime.backend import config_file_parameters
from runtime.tensors import ATTENTION_BIT, pack_tokens, unpack_tokens
from serving.processes import memory_mb, stub_pids, tritonserver_pids
from testkit.cases import CASES
from testkit.servers import settled
from tests.integration import raw

FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(autouse=True)
def server_still_answers(qa, triton_server):
    yield
    assert triton_server.alive()
    assert qa.ask(*CASES["card"]).text


infer, refused = raw.infer, raw.refused


def windows(n=2, width=12, mask=None):
    """The model step's input: ``tokens`` of ``n`` windows of ``width`` tokens (``runtime.tensors``)."""
    ids = np.full((n, width), 2000, np.int64)
    ids[:, 0], ids[:, -1] = 101, 102
    return model_input(ids, np.ones((n, width), np.int64) if mask is None else mask)


def model_input(ids, mask, types=None):
    return {"tokens": pack_tokens(ids, mask, np.zeros_like(ids) if types is None else types)}


def unpacked(w):
    return dict(zip(("ids", "mask", "types"), unpack_tokens(w["tokens"])))


def token_metric(server) -> dict:
    with urllib.request.urlopen(f"{server.metrics_url}/metrics") as response:
        text = response.read().decode()
    return {kind: float(v) for kind, v in re.findall(r'electra_qa_model_tokens_total\{kind="(\w+)"\} (\S+)', text)}


def settled_token_metric(server) -> dict:
    """The token metric once it stops changing: the step sends its counts every second (runtime.backend.Counters),
    so a read right after a call may not hold it yet."""
    return settled(lambda: token_metric(server), until=bool, quiet_s=2.5)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda w: model_input(unpacked(w)["ids"], -unpacked(w)["mask"]), "attention must be ones followed by zeros"),
        (
            lambda w: model_input(unpacked(w)["ids"], np.c_[np.zeros((2, 1), np.int64), unpacked(w)["mask"][:, 1:]]),
            "attention must be ones followed by zeros",
        ),
        (lambda w: {"tokens": w["tokens"] + 2 * ATTENTION_BIT}, "attention must be ones followed by zeros"),
        (lambda w: {"tokens": w["tokens"] + 40_000}, "token ids must be in [0, 30522)"),
        (lambda w: {"tokens": -w["tokens"]}, "token ids must be in [0, 30522)"),
        (lambda w: {"tokens": w["tokens"].astype(np.int32)}, "but model 'encoder' expects 'INT64'"),
        (lambda w: windows(width=513), "windows of 513 tokens; the model takes at most 512"),
    ],
)
def test_model_step_refuses_windows_the_tokenizer_never_makes(triton_server, change, message):
    before = settled_token_metric(triton_server)
    for _ in range(4):  # repeated: a crash or a poisoned process would show on the next call
        assert message in refused(triton_server, "encoder", change(windows()))
    logits = infer(triton_server, "encoder", windows()).as_numpy("logits")
    assert logits.shape == (2, 12, 2) and np.isfinite(logits).all()
    # the metrics count the answered windows' 24 tokens and nothing of the refused requests (sent each second)
    after = settled_token_metric(triton_server)
    assert {kind: after[kind] - before.get(kind, 0) for kind in after} == {"real": 24, "executed": 24}


def test_a_bad_request_batched_with_good_ones_fails_alone(triton_server):
    def stats():
        entry = triton_server.admin.statistics("encoder")
        return entry["inference_stats"]["success"]["count"], entry["execution_count"]

    def call(i):
        w = windows(n=3, width=8 + i % 5)
        if i % 4 == 0:
            w = model_input(unpacked(w)["ids"], -unpacked(w)["mask"])
        try:
            return infer(triton_server, "encoder", w).as_numpy("logits").shape[:2]
        except InferenceServerException as error:
            return error.status()

    before = settled(stats)  # a neighbour's last requests counted first
    with ThreadPoolExecutor(max_workers=24) as pool:
        results = list(pool.map(call, range(96)))
    after = settled(stats)
    assert all(r == "StatusCode.INVALID_ARGUMENT" for r in results[::4])
    assert all(r == (3, 8 + i % 5) for i, r in enumerate(results) if i % 4)
    assert after[1] - before[1] < 96, "requests were never batched together"


def decoder_tensors(n_windows=1, width=6, context=b"Ada wrote it."):
    """The decoder step's input (``runtime.tensors``): ``n_windows`` windows of one question."""
    offsets = np.full((n_windows, width, 4), -1, np.int32)
    offsets[:, 1:4] = [[0, 3, 0, 3], [4, 9, 4, 9], [10, 12, 10, 12]]
    return {
        "logits": np.zeros((n_windows, width, 2), np.float32),
        "offsets": offsets,
        "window_context": np.array([[context]] + [[b""]] * (n_windows - 1), dtype=object),
    }


def config(server, model: str) -> dict[str, str]:
    """The parameters of ``model``'s config.pbtxt in the served repository."""
    return config_file_parameters(server.repository / model / "config.pbtxt")


def test_decoder_answers_well_formed_windows_and_bounds_the_work_of_options(triton_server):
    result = infer(triton_server, "decoder", decoder_tensors(), {"top_k": 2})
    assert result.as_numpy("answer").shape == (1, 2)
    assert "top_k must be at most 20" in refused(triton_server, "decoder", decoder_tensors(), {"top_k": 20_000_000})
    bound = int(config(triton_server, "decoder")["max_answer_len"])
    width = int(config(triton_server, "tokenizer")["max_seq_len"])
    result = infer(triton_server, "decoder", decoder_tensors(n_windows=64, width=width), {"max_answer_len": bound})
    assert result.as_numpy("answer").shape == (1, 1)


def test_decoder_refuses_windows_wider_than_the_tokenizer_makes(triton_server):
    width = int(config(triton_server, "tokenizer")["max_seq_len"])
    assert infer(triton_server, "decoder", decoder_tensors(width=width)).as_numpy("answer").shape == (1, 1)
    message = f"windows of {width + 1} tokens; the decoder takes at most {width} (the tokenizer's max_seq_len)"
    assert message in refused(triton_server, "decoder", decoder_tensors(width=width + 1))
    # one 8,000-token window asking for spans of as many tokens: refused by its width, before any work
    assert "windows of 8000 tokens" in refused(triton_server, "decoder", decoder_tensors(width=8000))


def test_decoder_and_ensemble_refuse_max_answer_len_over_the_servers_bound(triton_server):
    bound = int(config(triton_server, "decoder")["max_answer_len"])
    assert bound >= int(config(triton_server, "tokenizer")["max_seq_len"])  # every span of a window stays allowed
    result = infer(triton_server, "decoder", decoder_tensors(), {"max_answer_len": bound})
    assert result.as_numpy("answer").shape == (1, 1)
    message = f"max_answer_len must be at most {bound} (the server's limit), got {bound + 1}"
    assert message in refused(triton_server, "decoder", decoder_tensors(), {"max_answer_len": bound + 1})
    pair = {"question": raw.strings(["Who wrote it?"]), "context": raw.strings(["Ada wrote it."])}
    assert message in refused(triton_server, ENSEMBLE, pair, {"max_answer_len": bound + 1})


def contexts_tensors(contexts: list[bytes]) -> dict:
    """One window per question, each with its context."""
    tensors = decoder_tensors(n_windows=len(contexts))
    tensors["window_context"] = np.array([[c] for c in contexts], dtype=object)
    return tensors


def test_decoder_refuses_contexts_over_the_tokenizers_limits(triton_server):
    limits = config(triton_server, "tokenizer")
    limit, request_limit = int(limits["max_context_chars"]), int(limits["max_request_chars"])
    context = b"Ada wrote it." + b"x" * (limit - 13)
    assert infer(triton_server, "decoder", contexts_tensors([context])).as_numpy("answer").shape == (1, 1)
    assert f"context of window 0 is {limit + 1} characters long; the limit is {limit}" in refused(
        triton_server, "decoder", contexts_tensors([context + b"x"])
    )
    assert f"context of window 0 is {4 * limit + 1} bytes long; the limit is {limit} characters" in refused(
        triton_server, "decoder", contexts_tensors([b"x" * (4 * limit + 1)])
    )
    n = request_limit // limit + 1
    assert f"the request's contexts hold {n * limit} characters; the limit is {request_limit}" in refused(
        triton_server, "decoder", contexts_tensors([context] * n)
    )


def decoder_stub(server) -> int:
    parent = next(iter(tritonserver_pids(int(server.grpc_url.rsplit(":", 1)[1]))))
    (pid,) = stub_pids(parent, "decoder")  # one instance in the default config
    return pid


@contextmanager
def private_memory_bound(pid: int, extra_mb: float):
    """Process ``pid`` may map at most ``extra_mb`` MB of private memory more than it holds now, until the block
    ends (RLIMIT_DATA: allocations past it fail, in Python with MemoryError; shared memory is not counted)."""
    soft, hard = resource.prlimit(pid, resource.RLIMIT_DATA)
    resource.prlimit(pid, resource.RLIMIT_DATA, (int((memory_mb(pid, "VmData") + extra_mb) * 2**20), hard))
    try:
        yield
    finally:
        resource.prlimit(pid, resource.RLIMIT_DATA, (soft, hard))


def full_windows(n_windows: int, width: int, logit: float) -> dict:
    """``n_windows`` windows of ``width`` tokens, every token but [CLS] one character of the context."""
    tensors = decoder_tensors(n_windows=n_windows, width=width, context=b"x" * width)
    tensors["offsets"][:, 1:, 0] = tensors["offsets"][:, 1:, 2] = np.arange(width - 1)
    tensors["offsets"][:, 1:, 1] = tensors["offsets"][:, 1:, 3] = np.arange(1, width)
    tensors["logits"][:, 1:] = logit
    return tensors


def test_decoder_answers_the_widest_windows_of_vanishing_probabilities_within_bounded_memory(triton_server):
    """A quarter of the windows a request may hold, each as wide as the tokenizer makes them, every one of them
    replaying the reference's choice among its n x n products: answered, in bounded memory. (All of them at
    once come near the decoder's max_request_ms, which refuses such floods: test_resource_bounds.py.)"""
    width = int(config(triton_server, "tokenizer")["max_seq_len"])
    n_windows = int(config(triton_server, "tokenizer")["max_windows"]) // 4
    # -1e30: every context probability is exactly 0, the windows take the reference's zero-filled selection
    tensors = full_windows(n_windows, width, -1e30)
    with private_memory_bound(decoder_stub(triton_server), 256):
        result = infer(triton_server, "decoder", tensors, {"top_k": 20})
        assert result.as_numpy("score").shape == (1, 20) and (result.as_numpy("score") == 0).all()
        message = refused(triton_server, "decoder", full_windows(1, 8000, -1e30))  # wider than the model's windows
        assert "windows of 8000 tokens" in message


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda t: {**t, "window_context": np.array([[b""]], dtype=object)},
            "window_context must hold the context on the first window of each question",
        ),
        (lambda t: {**t, "offsets": t["offsets"] + 1000}, "the token spans must be character spans"),
        (lambda t: {**t, "window_context": np.array([[b"\xff\xfe"]], dtype=object)}, "not valid UTF-8"),
        (lambda t: {**t, "offsets": t["offsets"][:, :3]}, "offsets must have shape"),
        (lambda t: {**t, "logits": t["logits"][..., :1]}, "unexpected shape for input 'logits'"),
        (lambda t: {**t, "logits": np.full_like(t["logits"], np.inf)}, "must be finite"),
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
    raw_tokens=st.booleans(),
)
def test_model_step_fuzz_answers_or_refuses(triton_server, ids, mask_value, raw_tokens):
    tokens = {"tokens": ids} if raw_tokens else model_input(ids % 30522, np.full_like(ids, mask_value))
    try:
        result = infer(triton_server, "encoder", tokens)
    except InferenceServerException as error:
        assert error.status() == "StatusCode.INVALID_ARGUMENT", error.message()
    else:
        assert result.as_numpy("logits").shape == (*ids.shape, 2)
    assert triton_server.alive()


@FUZZ
@given(
    offsets=hnp.arrays(np.int32, (2, 5, 4), elements=st.integers(-3, 40)),
    contexts=st.lists(st.sampled_from([b"", b"Some context here.", b"Another one.", b" "]), min_size=2, max_size=2),
    top_k=st.integers(-1, 25),
)
def test_decoder_fuzz_answers_or_refuses(triton_server, offsets, contexts, top_k):
    tensors = {
        "logits": np.stack((np.zeros((2, 5), np.float32), np.ones((2, 5), np.float32)), axis=-1),
        "offsets": offsets,
        "window_context": np.array([[c] for c in contexts], dtype=object),
    }
    try:
        result = infer(triton_server, "decoder", tensors, {"top_k": top_k})
    except InferenceServerException as error:
        assert error.status() == "StatusCode.INVALID_ARGUMENT", error.message()
    else:
        assert result.as_numpy("answer").shape[1] == top_k
    assert triton_server.alive()

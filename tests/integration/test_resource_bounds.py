"""What misbehaving or overloading clients can take from the server, bounded: calls abandoned with their
responses unread (Triton 2.51 never frees them: the supervisor restarts tritonserver, drained, above a memory
limit), memory after maximal requests (given back), cancellation storms and floods of maximal requests (normal
requests keep their latency, or are refused, and the server recovers at once), and what errors tell clients
(no server paths)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2_grpc
from tritonclient.utils import InferenceServerException

from client import ENSEMBLE, NO_RETRIES, InvalidInputError, QAError, ServerUnavailableError, TritonQA
from serving.configs import edit
from serving.export import copy_repository
from serving.processes import memory_mb, stub_pids, tritonserver_pids
from testkit.cases import CASES
from testkit.inputs import long_document, squad_sized_pairs
from testkit.servers import eventually, settled
from tests.conftest import ROOT
from tests.integration import raw
from tests.integration.conftest import launch, stop
from tests.integration.flood import FLOODING

NORMAL = squad_sized_pairs(1, seed=5)[0]


def tritonserver_pid(server) -> int | None:
    """The tritonserver process serving ``server``'s gRPC port (it changes when the supervisor restarts it)."""
    return next(iter(tritonserver_pids(int(server.grpc_url.rsplit(":", 1)[1]))), None)


def stub_pid(server, model: str) -> int:
    pids = stub_pids(tritonserver_pid(server), model)
    assert pids, f"no stub process for {model}"
    return next(iter(pids))


def stream_request(model: str, question: str, context: str):
    from tritonclient.grpc._utils import _get_inference_request

    return _get_inference_request(
        model, raw.question_context(question, context, batched=True), "", "", None, 0, False, False, 0, None, None
    )


def tokenizer_answered(server) -> int:
    return int(server.admin.statistics("tokenizer")["inference_stats"]["success"]["count"])


def timed_normal_request(url: str, timeout_s: float = 2.0) -> tuple[str, float]:
    started = time.monotonic()
    try:
        with TritonQA(url, timeout_s=timeout_s) as qa:
            assert qa.ask(*NORMAL).text is not None
        outcome = "answered"
    except QAError as error:
        outcome = type(error).__name__
    return outcome, time.monotonic() - started


# --- calls abandoned with their responses unread ---------------------------------------------------------

MEMORY_LIMIT_MB = 60


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory, tiny_checkpoint, triton_server):
    """A server whose supervisor restarts tritonserver above MEMORY_LIMIT_MB of private memory."""
    workdir = tmp_path_factory.mktemp("limited")
    server = launch(
        workdir,
        tiny_checkpoint,
        triton_server.repository,
        f"--max-server-memory-mb {MEMORY_LIMIT_MB} --address 127.0.0.1",
    )
    yield server
    stop(server.process)


def test_calls_abandoned_with_big_responses_unread_are_bounded_by_a_drained_restart(limited_server):
    """A client that never reads its ModelStreamInfer responses (HTTP/2 flow control: its window stays
    closed), then goes away: Triton 2.51 keeps each response (~2x its 5.4 MB) for good — neither closing the
    stream or the channel nor --grpc-max-connection-age frees it, and shutdown waits out the exit timeout.
    The supervisor restarts tritonserver, drained, once its private memory stays above the limit."""
    first = tritonserver_pid(limited_server)
    baseline = memory_mb(first)
    channel = grpc.insecure_channel(
        limited_server.grpc_url.replace("localhost", "127.0.0.1"),
        options=[("grpc.max_receive_message_length", -1), ("grpc.http2.bdp_probe", 0)],
    )
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    request = stream_request("tokenizer", "Who shipped grain?", long_document(300_000))  # ~330 windows, 5.4 MB
    streams = []
    for _ in range(8):  # one at a time: the tokenizer takes a batch's large requests one by one
        answered = tokenizer_answered(limited_server)
        streams.append(stub.ModelStreamInfer(iter([request])))
        assert eventually(lambda n=answered: tokenizer_answered(limited_server) > n), "the tokenizer did not answer"
    over = eventually(lambda: memory_mb(first) > MEMORY_LIMIT_MB, timeout_s=10)
    held = memory_mb(first)
    for call in streams:
        call.cancel()
    channel.close()
    assert over, f"the abandoned responses hold only {held:.0f} MB (baseline {baseline:.0f} MB)"

    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        pid = tritonserver_pid(limited_server)
        if pid not in (None, first) and limited_server.ready():
            break
        time.sleep(0.5)
    else:
        pytest.fail(
            f"tritonserver still holds {memory_mb(first):.0f} MB "
            f"({held:.0f} MB with the streams open, baseline {baseline:.0f} MB)"
        )
    assert memory_mb(pid) < baseline + 30
    restarted = "private memory (limit 60 MB, --max-server-memory-mb); restarting tritonserver"
    assert restarted in limited_server.log.read_text()
    with TritonQA(limited_server.grpc_url, timeout_s=30) as qa:
        assert qa.ask(*CASES["card"]).text


def test_the_drain_the_containers_run_before_stopping_lets_requests_in_flight_finish(limited_server):
    """python -m serving.admin drain (the Kubernetes preStop hook; docker compose exec): the ensemble is
    unloaded while a long request is in flight; it is answered, and new requests are refused (UNAVAILABLE)."""
    with ThreadPoolExecutor(1) as pool, TritonQA(limited_server.grpc_url, timeout_s=60) as qa:
        answered = tokenizer_answered(limited_server)
        in_flight = pool.submit(qa.ask, "Who shipped grain?", long_document(900_000))  # ~1,000 windows: seconds
        # tokenized: on its way through the model step (seconds) when the drain begins
        assert eventually(lambda: tokenizer_answered(limited_server) > answered)
        url = limited_server.http_url.replace("localhost", "127.0.0.1")
        drained = subprocess.run(
            [sys.executable, "-m", "serving.admin", "drain", "--url", url, "--settle-s", "0", "--timeout-s", "30"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "ELECTRA_QA_ADMIN_KEY": limited_server.admin_key[1]},
        )
        assert drained.returncode == 0, drained.stderr
        assert in_flight.result().text  # finished through the composing models
    assert "drain: electra_qa UNAVAILABLE after" in drained.stdout
    with TritonQA(limited_server.grpc_url, timeout_s=60, retry=NO_RETRIES) as qa:
        with pytest.raises(ServerUnavailableError):
            qa.ask(*NORMAL)


def test_the_containers_liveness_check_reads_health_and_tritonservers_memory(triton_server):
    """python -m serving.admin live (the Kubernetes liveness probe): health answers and tritonserver's private
    memory is under the limit; the same bound as make serve's supervisor."""

    def live(url, limit):
        return subprocess.run(
            [sys.executable, "-m", "serving.admin", "live", "--url", url, "--max-memory-mb", str(limit)]
            + ["--answer-timeout-s", "60"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert live(triton_server.http_url, 1_000_000).returncode == 0
    over = live(triton_server.http_url, 0.001)
    assert over.returncode == 1 and "MB of private memory (limit 0 MB)" in over.stderr
    assert live("http://127.0.0.1:9", 1_000_000).returncode == 1


# --- memory after maximal requests ------------------------------------------------------------------------


def test_the_tokenizer_gives_back_the_memory_of_a_large_batch(triton_server):
    """glibc keeps what a batch freed; the tokenizer trims after large executes (without: +140 MB private
    memory after two 1,000-window requests, kept)."""
    pid = stub_pid(triton_server, "tokenizer")
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    client.infer("tokenizer", raw.question_context("Who?", long_document(20_000), batched=True))  # a trim
    before = settled(lambda: round(memory_mb(pid)))
    inputs = raw.question_context("Who shipped grain?", long_document(900_000), batched=True)  # 996 windows
    for _ in range(2):
        assert client.infer("tokenizer", inputs).as_numpy("tokens").shape[0] > 900
    assert eventually(lambda: memory_mb(pid) < before + 40, timeout_s=10), f"{memory_mb(pid):.0f} MB, {before} before"


# --- overload and cancellation ----------------------------------------------------------------------------
# (latency under a load sized for 2 cores: make speed)


@pytest.mark.speed
@pytest.mark.parametrize("with_timeout", [True, False], ids=["client_timeout+timeout", "client_timeout only"])
def test_a_cancellation_storm_leaves_normal_requests_their_latency(triton_server, with_timeout):
    """300 requests of 100 KB contexts whose callers give up after 5 ms. With the request timeout the steps'
    queues drop them; without it (a naive client: Triton 2.51 does not cancel ensemble requests) the tokenizer
    takes a batch's large requests one at a time within its budget and refuses the rest."""
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    inputs = raw.question_context("Who shipped grain?", long_document(100_000), batched=False)
    outcomes: list[str] = []
    options = {"client_timeout": 0.005, **({"timeout": 5000} if with_timeout else {})}
    for _ in range(300):
        client.async_infer(
            ENSEMBLE, inputs, lambda result, error: outcomes.append(str(error and error.status())), **options
        )
    outcome, latency = timed_normal_request(triton_server.grpc_url, timeout_s=10)
    assert outcome == "answered" and latency < 2.0, (outcome, latency)
    time.sleep(0.5)
    assert outcomes and set(outcomes) <= {"StatusCode.DEADLINE_EXCEEDED", "None"}


@pytest.mark.speed
def test_a_flood_of_maximal_requests_refuses_or_answers_normal_ones_in_time_and_recovers(triton_server):
    """40 clients sending ~1,000-window requests back to back for 8 s (scaled from 200 on a bigger machine),
    while a normal client (2 s deadline) asks every 0.25 s: its requests are answered in time or fail at
    their deadline, never later; within 3 s after the flood every one is answered. The flood comes from a
    process of its own, as from other machines: 40 threads serialising 900 KB each beside the normal caller
    would hold its interpreter lock past its deadline, a delay of the test's own client, not the server's."""
    flood_s = 8.0
    command = [sys.executable, "-m", "tests.integration.flood", triton_server.grpc_url, str(flood_s), "40"]
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True) as flooding:
        assert flooding.stdout.readline().strip() == FLOODING
        started = time.monotonic()
        log = []
        while time.monotonic() - started < flood_s + 6:
            at = time.monotonic() - started
            log.append((at, *timed_normal_request(triton_server.grpc_url)))
            time.sleep(max(0.0, 0.25 - (time.monotonic() - started - at)))
        ended, _ = flooding.communicate(timeout=60)
    assert flooding.returncode == 0 and "calls ended" in ended, ended
    for at, outcome, latency in log:
        assert latency < 2.5, f"a normal request sent at +{at:.1f} s took {latency:.1f} s ({outcome})"
    after = [(at, outcome) for at, outcome, _ in log if at >= flood_s + 3]
    assert after and all(outcome == "answered" for _, outcome in after), log


@pytest.mark.speed
def test_many_oversized_contexts_at_once_leave_normal_callers_their_deadlines(triton_server):
    """100 concurrent 1,000,000-character contexts over max_windows that only an exact token count refuses
    ("a " is a token per 2 characters: ~2,000 windows), from callers sending no timeout: each execute counts at
    most one of them (as far as the limit takes) before its budget is spent, the others in its batch get
    UNAVAILABLE at once, and a normal caller (2 s deadline) asking all along is answered every time. (Were
    planning outside the budget, each would be counted in full, ~0.5 s, and normal callers would wait ~45 s.)"""
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    inputs = raw.question_context("Who?", "a " * 500_000, batched=False)
    outcomes: list[str] = []
    started = time.monotonic()
    for _ in range(100):
        client.async_infer(
            ENSEMBLE,
            inputs,
            lambda result, error: outcomes.append(str(error and error.status())),
            client_timeout=60,
        )
    # normal callers from the first refusal on: the server is then working through the flood (before it, this
    # same 2-core machine's client is still serialising the flood's 100 MB, which a remote flood would not cost)
    while not outcomes and time.monotonic() - started < 40:
        time.sleep(0.01)
    log = []
    while (len(outcomes) < 100 or time.monotonic() - started < 8) and time.monotonic() - started < 40:
        log.append(timed_normal_request(triton_server.grpc_url))
    assert len(outcomes) == 100, f"{len(outcomes)} of the oversized requests answered in 40 s"
    assert len(log) >= 5, f"only {len(log)} normal requests were sent while the flood was worked through"
    assert set(outcomes) <= {"StatusCode.UNAVAILABLE", "StatusCode.INVALID_ARGUMENT"}, set(outcomes)
    assert log and all(outcome == "answered" for outcome, _ in log), log
    assert max(latency for _, latency in log) < 2.0, log


# --- what errors tell clients -----------------------------------------------------------------------------


def grpc_error(server, model, inputs, **kwargs) -> str:
    with pytest.raises(InferenceServerException) as error:
        grpcclient.InferenceServerClient(server.grpc_url).infer(model, inputs, **kwargs)
    return error.value.message()


tensor = raw.tensor


def test_errors_of_malformed_calls_name_no_server_paths(triton_server):
    text = lambda *shape: np.full(shape, b"text", dtype=object)  # noqa: E731
    messages = [
        grpc_error(
            triton_server,
            ENSEMBLE,
            [tensor("question", np.array([1], np.int32), "INT32"), tensor("context", text(1), "BYTES")],
        ),
        grpc_error(
            triton_server,
            ENSEMBLE,
            [tensor("question", text(1, 1, 1), "BYTES"), tensor("context", text(1, 1, 1), "BYTES")],
        ),
        grpc_error(triton_server, "tokenizer", [tensor("question", text(1, 1), "BYTES")]),
        grpc_error(
            triton_server,
            "tokenizer",
            [tensor("question", np.array([[1.0]], np.float32), "FP32"), tensor("context", text(1, 1), "BYTES")],
        ),
        grpc_error(triton_server, "encoder", [tensor("tokens", np.ones((1, 4), np.int32), "INT32")]),
        grpc_error(triton_server, "decoder", [tensor("logits", np.ones((1, 4), np.float32), "FP32")]),
        grpc_error(
            triton_server,
            ENSEMBLE,
            [tensor("question", text(1), "BYTES"), tensor("context", text(1), "BYTES")],
            model_version="7",
        ),
        grpc_error(triton_server, "no_such_model", [tensor("question", text(1), "BYTES")]),
        grpc_error(
            triton_server, ENSEMBLE, [tensor(name, text(1), "BYTES") for name in ("question", "context", "extra")]
        ),
    ]
    no_data = json.dumps({"inputs": [{"name": "question", "shape": [1], "datatype": "BYTES"}]}).encode()
    for body in (b"{not json", no_data):
        request = urllib.request.Request(
            f"{triton_server.http_url}/v2/models/electra_qa/infer", data=body, method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(request, timeout=10)
        messages.append(error.value.read().decode())
    paths = {str(triton_server.repository), str(ROOT), "/tmp", "/opt", "/usr", "/home", "/root", ".py", "Traceback"}
    for message in messages:
        assert message and not any(p in message for p in paths), message
        assert "/" not in message, message


# --- one request too long for the model step ----------------------------------------------------------------

REQUEST_LIMIT_MS = 100  # ~70 windows at the tiny model's pace on 2 cores (~700 windows/s)


@pytest.fixture(scope="module")
def request_limited_server(tmp_path_factory, tiny_checkpoint, triton_server):
    """A server whose model step takes at most REQUEST_LIMIT_MS per request: the tiny model stands in for one
    ~60 times slower (the base model on 2 cores takes about as long for 1 window as the tiny one for 70)."""
    workdir = tmp_path_factory.mktemp("request-limited")
    repository = copy_repository(ROOT / "model_repository", workdir / "model_repository")
    edit(repository / "encoder" / "config.pbtxt", {"max_request_ms": str(REQUEST_LIMIT_MS)})
    server = launch(workdir, tiny_checkpoint, repository)
    yield server
    stop(server.process)


def model_tokens(server) -> float:
    text = urllib.request.urlopen(f"{server.metrics_url}/metrics", timeout=10).read().decode()
    return float(re.search(r'electra_qa_model_tokens_total\{kind="real"\} (\S+)', text).group(1))


def test_a_request_too_long_for_the_model_steps_limit_is_refused_before_it_runs(request_limited_server):
    """A 300,000-character context (~330 windows: ~0.5 s of the tiny model, 2 minutes of the base model on 2 cores)
    is refused with INVALID_ARGUMENT naming max_request_ms, without running (no model tokens counted), while
    normal callers are answered; a context within the limit is answered."""
    url = request_limited_server.grpc_url
    before = model_tokens(request_limited_server)
    with ThreadPoolExecutor(4) as pool, TritonQA(url, timeout_s=30) as qa:
        normal = [pool.submit(timed_normal_request, url, 60) for _ in range(8)]
        with pytest.raises(InvalidInputError, match=r"longer than its limit of 0\.1 s per request \(max_request_ms\)"):
            qa.ask("Who shipped grain?", long_document(300_000))
        assert all(f.result()[0] == "answered" for f in normal)
        ran = model_tokens(request_limited_server) - before
        assert ran < 20 * 384, f"{ran:.0f} tokens ran"  # the normal requests' windows only
        assert qa.ask("Who shipped grain?", long_document(10_000)).text  # ~11 windows: within the limit


def test_direct_calls_of_windows_a_token_wide_cannot_teach_the_model_step_a_faster_pace(request_limited_server):
    """Windows 384 columns wide with one real token each, sent straight to the model step: were they counted at
    their width, the step would learn a pace hundreds of times too fast and then admit a request far over its
    limit. Counted in real tokens, with the learned pace kept within the one measured at load, the long request
    is still refused, and its refusal names no pace."""
    from runtime.tensors import pack_tokens

    ids = np.zeros((64, 384), np.int64)
    ids[:, 0] = 101
    mask = np.zeros_like(ids)
    mask[:, 0] = 1
    tokens = pack_tokens(ids, mask, np.zeros_like(ids))
    for _ in range(40):
        raw.infer(request_limited_server, "encoder", {"tokens": tokens})
    with TritonQA(request_limited_server.grpc_url, timeout_s=30) as qa:
        with pytest.raises(InvalidInputError) as refused:
            qa.ask("Who shipped grain?", long_document(300_000))
    assert "tokens/s" not in str(refused.value) and " at its " not in str(refused.value)


def underflowing_decoder_request() -> dict[str, np.ndarray]:
    """What a caller can send straight to the decoder within every bound: 1,024 windows of 384 tokens whose
    probabilities underflow ([CLS] at 0, every token at -60), asking for answers up to 512 tokens long: ~6 s of
    the decoder's time on 2 cores, were it run."""
    windows, width = 1024, 384
    logits = np.full((windows, width, 2), -60.0, np.float32)
    logits[:, 0] = 0.0
    context = "a " * 600
    position = np.minimum(np.arange(width), len(context) - 1)
    spans = np.stack([position, position + 1, position, position + 1], axis=-1).astype(np.int32)
    offsets = np.broadcast_to(spans, (windows, width, 4)).copy()
    window_context = np.array([[context.encode()]] + [[b""]] * (windows - 1), dtype=object)
    return {"logits": logits, "offsets": offsets, "window_context": window_context}


def test_logits_sent_straight_to_the_decoder_cannot_hold_it_while_the_ensembles_requests_wait(
    request_limited_server,
):
    """Four callers sending the decoder's costliest request over and over: each is refused before it runs
    (INVALID_ARGUMENT naming max_request_ms), and every normal question meanwhile is answered."""
    server = request_limited_server
    request, stop_at = underflowing_decoder_request(), time.monotonic() + 8

    def flood() -> list[str]:
        refusals = []
        while time.monotonic() < stop_at:
            refusals.append(raw.refused(server, "decoder", request, {"max_answer_len": 512}))
        return refusals

    with ThreadPoolExecutor(12) as pool:
        floods = [pool.submit(flood) for _ in range(4)]
        time.sleep(0.5)
        normal = [pool.submit(timed_normal_request, server.grpc_url, 60) for _ in range(8)]
        assert [f.result()[0] for f in normal] == ["answered"] * 8
        refusals = [message for f in floods for message in f.result()]
    assert refusals and all("longer than its limit of 2 s per request (max_request_ms)" in m for m in refusals)


def tokenizer_memory_mb(server) -> float:
    (server_pid,) = tritonserver_pids(int(server.grpc_url.rsplit(":", 1)[1]))
    (stub,) = stub_pids(server_pid, "tokenizer")
    return memory_mb(stub)


def test_contexts_that_normalise_to_a_token_or_two_do_not_fill_the_tokenizers_memory(request_limited_server):
    """A megabyte of control characters around one emoji: 4 bytes a character for Python, a token after
    normalising. Were they kept in a cache bounded in tokens, each would hold ~4 MB for good (156 would take the
    stub from 150 MB to 1.3 GB); bounded in bytes, with such texts never kept, 60 of them leave it where it was."""
    server = request_limited_server
    with TritonQA(server.grpc_url, timeout_s=60) as qa:
        qa.ask(*NORMAL)
        before = tokenizer_memory_mb(server)
        for i in range(60):
            qa.ask("What is it?", "\x01" * 999_000 + f" \U0001f600 cat {i}")
    # the step's memory trim runs shortly after a large execute
    trimmed = eventually(lambda: tokenizer_memory_mb(server) - before < 100, timeout_s=10)
    assert trimmed, f"the tokenizer stub grew by {tokenizer_memory_mb(server) - before:.0f} MB"


def test_no_public_metric_tells_a_caller_whether_another_sent_a_document(request_limited_server):
    text = urllib.request.urlopen(f"{request_limited_server.metrics_url}/metrics", timeout=10).read().decode()
    assert "electra_qa_context_cache" not in text

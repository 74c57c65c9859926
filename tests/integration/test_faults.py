"""Faults: the server killed under load and restarted, a Python-backend stub killed, a graceful shutdown.
Each test runs its own server (it gets killed)."""

import os
import signal
import threading
import time

import pytest

from client import QAError, RetryPolicy, TritonQA
from perf.inputs import long_document
from serving.processes import stub_pids, tritonserver_pids
from serving.serve import Supervisor
from tests.cases import CASES
from tests.integration.conftest import free_port, launch, stop
from tests.integration.load import keep_asking

CALL_TIMEOUT_S = 5.0


@pytest.fixture
def own_server(tmp_path, tiny_checkpoint, triton_server):
    ports = (free_port(), free_port(), free_port())
    servers = [launch(tmp_path, tiny_checkpoint, triton_server.repository, ports=ports)]
    yield servers, ports
    for server in servers:
        stop(server.process)


def hammer(url, stop_event, outcomes, lock):
    with TritonQA(url, timeout_s=CALL_TIMEOUT_S, retry=RetryPolicy(attempts=2, backoff_s=0.05)) as qa:
        keep_asking(qa, stop_event, outcomes, lock)


def test_server_killed_under_load_then_restarted_loses_nothing_silently(
    own_server, tmp_path, tiny_checkpoint, triton_server
):
    servers, ports = own_server
    url = servers[0].grpc_url
    outcomes, lock, stop_event = [], threading.Lock(), threading.Event()
    workers = [threading.Thread(target=hammer, args=(url, stop_event, outcomes, lock)) for _ in range(4)]
    with TritonQA(url, timeout_s=30, retry=RetryPolicy(attempts=30, backoff_s=0.2, max_backoff_s=1.0)) as survivor:
        assert survivor.ask(*CASES["card"]).text
        for w in workers:
            w.start()
        time.sleep(1.5)
        stop(servers[0].process, signal.SIGKILL)  # the whole process group: supervisor, tritonserver, stubs
        time.sleep(1.0)
        servers.append(launch(tmp_path, tiny_checkpoint, triton_server.repository, ports=ports))
        time.sleep(1.0)
        stop_event.set()
        for w in workers:
            w.join(timeout=60)
        assert not any(w.is_alive() for w in workers), "a call hung past its deadline"
        # every call ended: an answer or a clear error, never later than its deadline
        results = [o.result for o in outcomes]
        assert results and all(isinstance(r, QAError) or r.text for r in results)
        assert max(o.duration_s for o in outcomes) < CALL_TIMEOUT_S + 1.0
        assert any(isinstance(r, QAError) for r in results) and any(not isinstance(r, QAError) for r in results)
        # the client built before the crash works again without being rebuilt
        assert survivor.ask(*CASES["card"]).text


def test_killed_python_stub_is_replaced_and_the_next_requests_succeed(own_server):
    servers, _ = own_server
    server = servers[0]
    tritonserver = next(iter(tritonserver_pids(int(server.grpc_url.rsplit(":", 1)[1]))))
    time.sleep(2 * Supervisor.POLL_S)  # the watchdog arms on its first poll after the server is ready
    stubs = stub_pids(tritonserver)
    assert len(stubs) >= 3  # tokenizer, electra, decoder
    os.kill(sorted(stubs)[0], signal.SIGKILL)
    # the supervisor in `make serve` restarts the server; a retrying client rides through it
    with TritonQA(
        server.grpc_url, timeout_s=60, retry=RetryPolicy(attempts=100, backoff_s=0.2, max_backoff_s=1.0)
    ) as qa:
        for _ in range(3):
            assert all(qa.ask(*CASES[name]).text for name in ("card", "squad", "cjk", "emoji"))
    assert "restarting tritonserver" in server.log.read_text()


def test_graceful_shutdown_finishes_in_flight_requests(own_server):
    servers, _ = own_server
    server = servers[0]
    result = {}

    def ask_long():
        with TritonQA(server.grpc_url, timeout_s=60) as qa:
            try:
                result["answer"] = qa.ask("Who received the grain?", long_document(140_000))
            except QAError as error:
                result["error"] = error

    tokenized = server.admin.statistics("tokenizer")["inference_stats"]["success"]["count"]
    thread = threading.Thread(target=ask_long)
    thread.start()
    # in flight between two steps: tokenized, not yet answered -- where Triton's own shutdown would fail it
    deadline = time.monotonic() + 30
    while server.admin.statistics("tokenizer")["inference_stats"]["success"]["count"] == tokenized:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.killpg(server.process.pid, signal.SIGTERM)  # as a terminal's Ctrl-C reaches make and the supervisor
    thread.join(timeout=60)
    assert "answer" in result, result.get("error")
    server.process.wait(timeout=60)
    log = server.log.read_text()
    assert "Exit timeout expired" not in log and "successfully unloaded 'electra_qa'" in log
    with TritonQA(server.grpc_url, timeout_s=2) as qa:  # and it is gone
        with pytest.raises(QAError):
            qa.ask(*CASES["card"])

"""Faults: the server killed under load and restarted, tritonserver crashed or killed under make serve's
supervisor, a Python-backend stub killed, a graceful shutdown. Each test runs its own server (it gets killed)."""

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from client import QAError, RetryPolicy, TritonQA
from serving.admin import AdminClient
from serving.processes import mapped_shm, stub_pids, tritonserver_pids
from serving.supervisor import PROBE_S, Supervisor
from testkit.cases import CASES
from testkit.inputs import long_document
from testkit.servers import eventually
from tests.integration.conftest import free_port, launch, stop
from tests.integration.load import answered_since, keep_asking
from tests.integration.raw import deep_json_body

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
        assert eventually(lambda: answered_since(outcomes, 0) >= 4)  # the load is on
        stop(servers[0].process, signal.SIGKILL)  # the whole process group: supervisor, tritonserver, stubs
        time.sleep(1.0)  # down for a while: the calls meanwhile fail
        relaunched = time.monotonic()
        servers.append(launch(tmp_path, tiny_checkpoint, triton_server.repository, ports=ports))
        assert eventually(lambda: answered_since(outcomes, relaunched) >= 4)  # the load reached the new server
        stop_event.set()
        for w in workers:
            w.join(timeout=60)
        assert not any(w.is_alive() for w in workers), "a call hung past its deadline"
        # every call ended: an answer or a clear error, never later than its deadline
        results = [o.result for o in outcomes]
        assert results and all(isinstance(r, QAError) or r.text for r in results)
        assert any(isinstance(r, QAError) for r in results) and any(not isinstance(r, QAError) for r in results)
        # the client built before the crash works again without being rebuilt
        assert survivor.ask(*CASES["card"]).text


def watched(server, tritonserver: int) -> None:
    """Once the supervisor watches ``tritonserver``'s stubs (it arms at the first readiness)."""
    line = f"watching tritonserver {tritonserver} and its"
    assert eventually(lambda: line in server.log.read_text()), "the supervisor never watched the stubs"


def test_killed_python_stub_is_replaced_and_the_next_requests_succeed(own_server):
    servers, _ = own_server
    server = servers[0]
    tritonserver = next(iter(tritonserver_pids(int(server.grpc_url.rsplit(":", 1)[1]))))
    watched(server, tritonserver)
    stubs = stub_pids(tritonserver)
    assert len(stubs) >= 3  # tokenizer, encoder, decoder
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


# --- make serve's supervisor: tritonserver ending without being asked to ---------------------------------

# a gRPC question right after a restart: the client's reconnection and the default retries
# what catches a restart that never comes, not a slow one (a restart takes 2-3 s on 2 cores, tiny model)
RESTART_DEADLINE_S = 120.0


def grpc_port(server) -> int:
    return int(server.grpc_url.rsplit(":", 1)[1])


def tritonserver_of(server) -> int:
    pids = tritonserver_pids(grpc_port(server))
    assert len(pids) == 1, pids
    return next(iter(pids))


def wait_for_a_new_tritonserver(server, old: int, bound_s: float = RESTART_DEADLINE_S) -> float:
    """Seconds until a tritonserver other than ``old`` serves ``server``'s port and is ready."""
    started, admin = time.monotonic(), AdminClient(server.http_url.replace("localhost", "127.0.0.1"))
    while time.monotonic() - started < bound_s:
        if tritonserver_pids(grpc_port(server)) - {old} and admin.ready():
            return time.monotonic() - started
        assert server.alive(), f"make serve ended; its log:\n{server.log.read_text()[-3000:]}"
        time.sleep(0.01)
    pytest.fail(f"no new tritonserver ready within {bound_s} s; its log:\n{server.log.read_text()[-3000:]}")


def crash_over_http(server) -> None:
    url = f"{server.http_url.replace('localhost', '127.0.0.1')}/v2/models/electra_qa/infer"
    request = urllib.request.Request(url, data=deep_json_body(), method="POST")
    with pytest.raises(OSError):  # the connection closes without a response
        urllib.request.urlopen(request, timeout=30)


def test_a_body_that_crashes_tritonserver_sent_again_after_each_restart_never_ends_make_serve(own_server):
    """The body that crashes tritonserver, sent again the moment each new server is ready (before a
    supervisor that watched only after its first poll would see it): the supervisor starts a new one every
    time (its back-off growing: 0, 1, 2 s), and the last one answers."""
    server = own_server[0][0]
    for _ in range(3):
        old = tritonserver_of(server)
        crash_over_http(server)
        wait_for_a_new_tritonserver(server, old)
    assert server.alive()
    with TritonQA(server.grpc_url) as qa:
        assert qa.ask(*CASES["card"]).text
    log = server.log.read_text()
    assert log.count("tritonserver ended (killed by SIGSEGV); restarting tritonserver") == 3
    assert "a crash loop?); the next one in 2 s" in log


def test_tritonserver_killed_is_restarted_at_once_and_default_clients_see_no_failure(own_server):
    """SIGKILL to tritonserver alone: the supervisor starts a new one at once; clients with the default
    retries (RetryPolicy(), timeout_s=30) ride through: every call is answered."""
    server = own_server[0][0]
    outcomes, lock, stop_event = [], threading.Lock(), threading.Event()

    def ask_with_defaults():
        with TritonQA(server.grpc_url) as qa:
            keep_asking(qa, stop_event, outcomes, lock)

    workers = [threading.Thread(target=ask_with_defaults) for _ in range(2)]
    for w in workers:
        w.start()
    assert eventually(lambda: answered_since(outcomes, 0) >= 4)  # the load is on
    old = tritonserver_of(server)
    os.kill(old, signal.SIGKILL)
    wait_for_a_new_tritonserver(server, old)
    restarted = time.monotonic()
    assert eventually(lambda: answered_since(outcomes, restarted) >= 20)  # calls to the new server
    stop_event.set()
    for w in workers:
        w.join(timeout=60)
    failures = [o.result for o in outcomes if isinstance(o.result, QAError)]
    assert not failures, f"{len(failures)} of {len(outcomes)} calls failed, first: {failures[0]!r}"
    assert "tritonserver ended (killed by SIGKILL); restarting tritonserver" in server.log.read_text()


def test_a_dead_stub_gets_tritonserver_killed_and_its_shared_memory_removed(own_server):
    """A stub killed: the supervisor kills tritonserver (a model whose stub is dead never unloads: a graceful
    stop would only wait), starts a new one, and removes the dead server's /dev/shm regions."""
    server = own_server[0][0]
    old = tritonserver_of(server)
    watched(server, old)
    stubs = stub_pids(old)
    regions = mapped_shm(stubs)
    assert len(stubs) >= 3 and len(regions) >= 3  # tokenizer, encoder, decoder: a region each
    os.kill(sorted(stubs)[0], signal.SIGKILL)
    wait_for_a_new_tritonserver(server, old)
    assert "died; killing and restarting tritonserver" in server.log.read_text()  # killed, not drained
    assert not [r for r in regions if Path(r).exists()], "the dead server's shared memory is left in /dev/shm"
    with TritonQA(server.grpc_url) as qa:
        assert qa.ask(*CASES["squad"]).text


def live(server, *args) -> subprocess.CompletedProcess:
    """The containers' liveness command against ``server``'s own HTTP port."""
    url = server.http_url.replace("localhost", "127.0.0.1")
    return subprocess.run(
        [sys.executable, "-m", "serving.admin", "live", "--url", url, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def unsupervised_server(tmp_path, tiny_checkpoint, triton_server):
    """tritonserver as the containers run it: nothing restarts it (make serve --no-supervise execs it)."""
    server = launch(tmp_path, tiny_checkpoint, triton_server.repository, serve_args="--no-supervise")
    yield server
    for pid in tritonserver_pids(grpc_port(server)):
        for stub in stub_pids(pid):  # a stopped stub does not stop
            os.kill(stub, signal.SIGCONT)
    stop(server.process)


@pytest.mark.parametrize("fault", ["killed", "stopped"])
def test_liveness_fails_when_a_step_can_no_longer_answer_while_health_stays_green(unsupervised_server, fault):
    """What callers see, not what /v2/health says: a stub killed (as the kernel kills one for memory) or stopped
    leaves Triton's health and readiness green; the liveness command asks a question and fails, saying why."""
    server = unsupervised_server
    assert live(server, "--answer-timeout-s", "60").returncode == 0  # answered, however busy the machine
    (stub,) = stub_pids(tritonserver_of(server), "tokenizer")
    os.kill(stub, signal.SIGKILL if fault == "killed" else signal.SIGSTOP)
    failed = live(server)
    assert failed.returncode == 1, failed.stderr
    # a stopped stub: no answer in time, or Triton's own heartbeat has found it not healthy by then
    whys = ("not healthy",) if fault == "killed" else ("not healthy", "no answer within 4 s")
    assert "live: electra_qa does not answer" in failed.stderr, failed.stderr
    assert any(why in failed.stderr for why in whys), failed.stderr
    assert AdminClient(server.http_url.replace("localhost", "127.0.0.1")).live()  # health alone says all is well


def test_a_stuck_stub_gets_tritonserver_restarted_by_the_supervisor(tmp_path, tiny_checkpoint, triton_server):
    """A stub stopped (SIGSTOP): no process died, health stays green, but no question is answered; after
    PROBE_FAILURES probes in a row (make serve's default, a question every PROBE_S) the supervisor kills
    tritonserver and starts a new one, which answers."""
    server = launch(tmp_path, tiny_checkpoint, triton_server.repository, serve_args=f"--probe-s {PROBE_S:g}")
    try:
        old = tritonserver_of(server)
        watched(server, old)
        (stub,) = stub_pids(old, "encoder")
        os.kill(stub, signal.SIGSTOP)
        bound_s = (Supervisor.PROBE_FAILURES + 1) * (PROBE_S + Supervisor.PROBE_TIMEOUT_S)
        wait_for_a_new_tritonserver(server, old, bound_s + RESTART_DEADLINE_S)
        with contextlib.suppress(ProcessLookupError):  # the guard killed it with its server: gone, or dying
            os.kill(stub, signal.SIGCONT)
        with TritonQA(server.grpc_url) as qa:
            assert qa.ask(*CASES["squad"]).text
        assert "answered no question 3 times in a row" in server.log.read_text()
    finally:
        stop(server.process)


def test_sighup_drains_and_stops_make_serve_as_sigterm_does(own_server):
    """A closing terminal's SIGHUP: the ensemble drained, tritonserver stopped, make serve done (no restart)."""
    server = own_server[0][0]
    old = tritonserver_of(server)
    os.killpg(server.process.pid, signal.SIGHUP)  # make and the supervisor, as a terminal's hangup reaches them
    deadline = time.monotonic() + 60
    while old in tritonserver_pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert old not in tritonserver_pids(), "tritonserver still runs"
    log = server.log.read_text()
    assert "successfully unloaded 'electra_qa'" in log  # drained: the ensemble unloaded before the stop
    assert "restarting tritonserver" not in log


def test_a_stub_over_its_memory_limit_gets_tritonserver_restarted_drained(tmp_path, tiny_checkpoint, triton_server):
    """--max-stub-memory-mb bounds the stubs as --max-server-memory-mb bounds tritonserver: here 1 MB, which
    every stub holds more than, so the first server is restarted after MEMORY_GRACE_S."""
    server = launch(tmp_path, tiny_checkpoint, triton_server.repository, serve_args="--max-stub-memory-mb 1")
    try:
        old = tritonserver_of(server)
        wait_for_a_new_tritonserver(server, old, Supervisor.MEMORY_GRACE_S + RESTART_DEADLINE_S)
        assert re.search(r"Python-backend stub \d+ holds \d+ MB of private memory \(limit 1 MB", server.log.read_text())
    finally:
        stop(server.process)

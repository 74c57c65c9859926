"""Every call of both clients keeps to ``timeout_s``, readiness included, against a server that accepts the
connection and never answers (no Triton needed: a TCP listener that reads nothing and writes nothing)."""

import asyncio
import socket
import threading

import pytest

from client import NO_RETRIES, AsyncTritonQA, DeadlineExceededError, TritonQA

TIMEOUT_S = 1.0
# a call without a deadline never returns from this server: ending at all is keeping to timeout_s (how close
# it keeps to it is a matter of the machine's pace)
BOUND_S = 60.0


@pytest.fixture
def silent_server():
    """``host:port`` of a listener that accepts every connection and keeps it open without a byte in reply."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted, stop = [], threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


def within_bound(call):
    """``call()``'s result (or exception), failing the test when it has none after BOUND_S."""
    outcome: list = []

    def target() -> None:
        try:
            outcome.append(call())
        except Exception as error:
            outcome.append(error)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(BOUND_S)
    assert not thread.is_alive(), f"no result within {BOUND_S} s (timeout_s={TIMEOUT_S})"
    return outcome[0]


def test_is_ready_is_false_at_its_deadline_when_the_server_never_answers(silent_server):
    qa = TritonQA(silent_server, timeout_s=TIMEOUT_S, retry=NO_RETRIES)
    try:
        ready = within_bound(qa.is_ready)
    finally:
        qa.close()
    assert ready is False


def test_ask_raises_deadline_exceeded_when_the_server_never_answers(silent_server):
    qa = TritonQA(silent_server, timeout_s=TIMEOUT_S)
    try:
        error = within_bound(lambda: qa.ask("Who?", "Ada."))
    finally:
        qa.close()
    assert isinstance(error, DeadlineExceededError)


def test_async_is_ready_and_ask_keep_to_timeout_s_too(silent_server):
    async def main():
        async with AsyncTritonQA(silent_server, timeout_s=TIMEOUT_S, retry=NO_RETRIES) as qa:
            ready = await asyncio.wait_for(qa.is_ready(), BOUND_S)
            with pytest.raises(DeadlineExceededError):
                await asyncio.wait_for(qa.ask("Who?", "Ada."), BOUND_S)
            return ready

    assert asyncio.run(main()) is False

"""The stream form (``ask_stream``, the pipeline's generator form) without a server: the clients' real
drivers over a fake transport that answers each question with itself and refuses empty questions."""

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from client import Answer, AsyncTritonQA, InvalidInputError, ServerUnavailableError, TritonQA
from client.stream import StreamSpec


class Transport:
    """What the fake clients' ``_run`` does: one request per call, answered after ``delay_s``; records the
    requests and the most ever outstanding at once."""

    def __init__(self, delay_s: float = 0.0, down: set[str] = frozenset()):
        self.delay_s, self.down = delay_s, down
        self.requests: list[list[str]] = []
        self.outstanding = self.most_outstanding = 0
        self.lock = threading.Lock()

    def begin(self, call):
        with self.lock:
            self.requests.append([q for q, _ in call.pairs])
            self.outstanding += 1
            self.most_outstanding = max(self.most_outstanding, self.outstanding)

    def end(self, call):
        with self.lock:
            self.outstanding -= 1
        if any(q in self.down for q, _ in call.pairs):
            raise ServerUnavailableError("connection refused")
        empty = [i for i, (q, _) in enumerate(call.pairs) if not q]
        if empty:
            raise InvalidInputError(f"question {empty[0]} is empty or only whitespace")
        return call.result([[Answer(q, 0.5, 0, len(q))] for q, _ in call.pairs])


class FakeQA(TritonQA):
    def __init__(self, transport):
        super().__init__("localhost:1")
        self.transport = transport

    def _run(self, call):
        self.transport.begin(call)
        time.sleep(self.transport.delay_s)
        return self.transport.end(call)


class FakeAsyncQA(AsyncTritonQA):
    def __init__(self, transport):
        super().__init__("localhost:1")
        self.transport = transport

    async def _run(self, call):
        self.transport.begin(call)
        await asyncio.sleep(self.transport.delay_s)
        return self.transport.end(call)


def examples(n: int, pulled: list[int] | None = None) -> Iterator[dict]:
    for i in range(n):
        if pulled is not None:
            pulled.append(i)
        yield {"question": f"q{i}", "context": "c"}


def test_answers_come_lazily_in_input_order_with_bounded_requests_in_flight():
    transport, pulled = Transport(delay_s=0.002), []
    qa = FakeQA(transport)
    stream = qa.ask_stream(examples(1000, pulled), batch_size=8, in_flight=3)
    assert pulled == []  # nothing is read before the first answer is asked for
    for consumed, answer in enumerate(stream, start=1):
        assert answer.text == f"q{consumed - 1}"
        assert len(pulled) - consumed <= 3 * 8  # read ahead: at most what the requests in flight hold
    assert consumed == 1000
    assert transport.most_outstanding <= 3 and len(transport.requests) == 125
    assert all(len(request) == 8 for request in transport.requests)


def test_the_pipeline_form_of_a_generator_is_an_iterator_and_a_list_stays_a_list():
    transport = Transport()
    qa = FakeQA(transport)
    results = qa(examples(5), batch_size=2)
    assert not isinstance(results, list) and transport.requests == []
    assert [r["answer"] for r in results] == [f"q{i}" for i in range(5)]
    assert transport.requests == [["q0", "q1"], ["q2", "q3"], ["q4"]]
    assert [r["answer"] for r in qa(list(examples(3)))] == ["q0", "q1", "q2"]  # one request, as before
    assert len(transport.requests) == 4
    batched = qa(list(examples(3)), batch_size=2)  # a list with batch_size: that many per request
    assert isinstance(batched, list) and [r["answer"] for r in batched] == ["q0", "q1", "q2"]
    assert transport.requests[4:] == [["q0", "q1"], ["q2"]]
    assert qa({"question": "q", "context": "c"}, batch_size=2)["answer"] == "q"  # one example: a dict


def test_an_invalid_example_raises_at_its_place():
    items = list(examples(10))
    items[5] = {"question": "q5"}  # no context
    got = []
    with pytest.raises(InvalidInputError, match=r"^example 5: an example must be a dict"):
        for result in FakeQA(Transport())(iter(items), batch_size=4):
            got.append(result["answer"])
    assert got == ["q0", "q1", "q2", "q3", "q4"]


def test_examples_the_server_refuses_are_found_and_reported_alone():
    items = [(f"q{i}", "c") for i in range(16)]
    items[3] = ("", "c")
    items[11] = (None, "c")  # refused before sending
    transport = Transport()
    results = list(FakeQA(transport).ask_stream(items, batch_size=8, errors="return"))
    answered = [i for i in range(16) if i not in (3, 11)]
    assert [results[i].text for i in answered] == [f"q{i}" for i in answered]
    assert isinstance(results[3], InvalidInputError)
    assert str(results[3]) == "example 3: question is empty or only whitespace"
    assert results[3].example == 3 and results[3].reason == "question is empty or only whitespace"
    assert isinstance(results[11], InvalidInputError) and "question must be a string" in str(results[11])
    # the refused request of 8 was split in halves down to the empty question: 1 + 2 + 2 + 2 requests, not 8
    assert len(transport.requests) == 1 + 2 + 2 + 2 + 1


def test_a_request_that_fails_otherwise_fails_each_of_its_examples():
    items = [(f"q{i}", "c") for i in range(6)]
    results = list(FakeQA(Transport(down={"q4"})).ask_stream(items, batch_size=3, errors="return"))
    assert [r.text for r in results[:3]] == ["q0", "q1", "q2"]
    assert all(isinstance(r, ServerUnavailableError) for r in results[3:])
    with pytest.raises(ServerUnavailableError):
        list(FakeQA(Transport(down={"q4"})).ask_stream(items, batch_size=3))


def test_top_k_hands_out_a_list_per_example():
    results = list(FakeQA(Transport()).ask_stream([("q", "c")], top_k=3))
    assert results == [[Answer("q", 0.5, 0, 1)]]


def test_stopping_early_sends_nothing_more():
    transport, pulled = Transport(), []
    stream = FakeQA(transport).ask_stream(examples(10**9, pulled), batch_size=4, in_flight=2)
    assert [next(stream).text for _ in range(10)] == [f"q{i}" for i in range(10)]
    stream.close()
    sent = len(transport.requests)
    assert sent <= 10 // 4 + 1 + 2 and len(pulled) <= sent * 4 + 4


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"in_flight": -1}, {"errors": "ignore"}, {"batch_size": 2.5}])
def test_stream_settings_are_checked(kwargs):
    with pytest.raises(ValueError):
        StreamSpec(lambda e: e, lambda pairs: pairs, lambda a: a, **kwargs)


def test_async_stream_takes_sync_and_async_iterables_in_order():
    async def agen(n):
        for example in examples(n):
            await asyncio.sleep(0)
            yield example

    async def main():
        transport = Transport(delay_s=0.001)
        qa = FakeAsyncQA(transport)
        from_async = [a.text async for a in qa.ask_stream(agen(50), batch_size=4, in_flight=3)]
        from_sync = [r["answer"] async for r in qa(examples(50), batch_size=4)]
        batched = await qa(list(examples(5)), batch_size=2)
        bad = [(f"q{i}", "c") for i in range(5)]
        bad[2] = ("", "c")
        with_errors = [r async for r in qa.ask_stream(bad, batch_size=5, errors="return")]
        return transport, from_async, from_sync, batched, with_errors

    transport, from_async, from_sync, batched, with_errors = asyncio.run(main())
    assert from_async == from_sync == [f"q{i}" for i in range(50)]
    assert [r["answer"] for r in batched] == [f"q{i}" for i in range(5)]
    assert isinstance(with_errors[2], InvalidInputError) and [r.text for i, r in enumerate(with_errors) if i != 2] == [
        "q0",
        "q1",
        "q3",
        "q4",
    ]
    assert transport.most_outstanding <= 4

"""``TritonQA``: question answering against the ``electra_qa`` ensemble over gRPC."""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import tritonclient.grpc as grpcclient

from client._protocol import Call, ClientBase
from client.connection import RetryPlan
from client.errors import QAError, translate
from client.stream import END, Chunk, Outcome, StreamSpec, Window


class TritonQA(ClientBase):
    """A client for the served ELECTRA QA model; a drop-in for ``pipeline('question-answering')``.

    >>> with TritonQA("localhost:8001") as qa:
    ...     qa.ask("Who wrote it?", "It was written by Ada Lovelace.").text
    """

    _grpc = grpcclient

    def is_ready(self) -> bool:
        """Whether the server is up and ``electra_qa`` is ready to answer; False too when the server cannot be
        reached or gives no answer within ``timeout_s``."""
        try:
            return all(self._readiness())
        except Exception:
            return False

    def close(self) -> None:
        """Close the gRPC channel (``with`` does it on exit)."""
        self._client.close()

    def __enter__(self) -> TritonQA:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, call: Call) -> Any:
        plan = RetryPlan(self.retry, self.timeout_s)
        while True:
            kwargs = call.infer_kwargs(grpcclient, self.model, self.headers, plan.remaining_s())
            try:
                return call.finish(self._client.infer(**kwargs))
            except Exception as raw:
                error = translate(raw)
                delay_s = plan.next_delay_s(error)
                if delay_s is None:
                    raise error from raw
            time.sleep(delay_s)

    def _stream(self, examples: Iterable | AsyncIterable, spec: StreamSpec) -> Iterator[Any]:
        """``client.stream.Window`` driven by a pool of ``in_flight`` threads (gRPC calls wait outside the GIL);
        the input is read in the caller's thread."""
        if not isinstance(examples, Iterable):
            raise TypeError(f"TritonQA streams an iterable, got {type(examples).__name__} (async: AsyncTritonQA)")
        window, source = Window(spec), iter(examples)
        pool = ThreadPoolExecutor(max_workers=spec.in_flight, thread_name_prefix="TritonQA-stream")
        try:
            while True:
                while window.wants_example():
                    chunk = window.add(next(source, END))
                    if chunk is not None:
                        window.sent(chunk, pool.submit(self._settle, chunk, spec))
                head = window.oldest()
                if head is None:
                    return
                outcomes = head[1].result()
                window.done(head[0])
                for outcome in outcomes:
                    yield spec.deliver(outcome)
        finally:  # also when the consumer stops early: requests not started are dropped
            pool.shutdown(wait=False, cancel_futures=True)

    def _settle(self, chunk: Chunk, spec: StreamSpec) -> list[Outcome]:
        settlement = chunk.settlement(spec)
        while (call := settlement.next_call()) is not None:
            try:
                settlement.answered(self._run(call))
            except QAError as error:
                settlement.failed(error)
        return settlement.outcomes

    def _collect(self, stream: Iterator[Any]) -> list[Any]:
        return list(stream)

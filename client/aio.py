"""``AsyncTritonQA``: the asyncio twin of ``TritonQA`` (same methods, awaited), on ``tritonclient.grpc.aio``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Any

import tritonclient.grpc.aio as grpcclient

from client._protocol import Call, ClientBase
from client.connection import RetryPlan
from client.errors import QAError, translate
from client.stream import END, Chunk, Outcome, StreamSpec, Window


class AsyncTritonQA(ClientBase):
    """``async with AsyncTritonQA(url) as qa: answer = await qa.ask(question, context)``"""

    _grpc = grpcclient

    async def is_ready(self) -> bool:
        """Whether the server is up and ``electra_qa`` is ready to answer; False too when the server cannot be
        reached or gives no answer within ``timeout_s``."""
        try:
            for ready in self._readiness():
                if not await ready:
                    return False
            return True
        except Exception:
            return False

    async def close(self) -> None:
        """Close the gRPC channel (``async with`` does it on exit)."""
        await self._client.close()

    async def __aenter__(self) -> AsyncTritonQA:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _run(self, call: Call) -> Any:
        plan = RetryPlan(self.retry, self.timeout_s)
        while True:
            kwargs = call.infer_kwargs(grpcclient, self.model, self.headers, plan.remaining_s())
            try:
                return call.finish(await self._client.infer(**kwargs))
            except Exception as raw:
                error = translate(raw)
                delay_s = plan.next_delay_s(error)
                if delay_s is None:
                    raise error from raw
            await asyncio.sleep(delay_s)

    async def _stream(self, examples: Iterable | AsyncIterable, spec: StreamSpec) -> AsyncIterator[Any]:
        """``client.stream.Window`` driven by asyncio tasks, one per request in flight."""
        window = Window(spec)
        if isinstance(examples, AsyncIterable):
            source = aiter(examples)
            pull = lambda: anext(source, END)  # noqa: E731
        else:
            iterator = iter(examples)

            async def pull() -> Any:
                return next(iterator, END)

        try:
            while True:
                while window.wants_example():
                    chunk = window.add(await pull())
                    if chunk is not None:
                        window.sent(chunk, asyncio.ensure_future(self._settle(chunk, spec)))
                head = window.oldest()
                if head is None:
                    return
                outcomes = await head[1]
                window.done(head[0])
                for outcome in outcomes:
                    yield spec.deliver(outcome)
        finally:  # also when the consumer stops early
            for task in window.handles():
                task.cancel()

    async def _settle(self, chunk: Chunk, spec: StreamSpec) -> list[Outcome]:
        settlement = chunk.settlement(spec)
        while (call := settlement.next_call()) is not None:
            try:
                settlement.answered(await self._run(call))
            except QAError as error:
                settlement.failed(error)
        return settlement.outcomes

    async def _collect(self, stream: AsyncIterator[Any]) -> list[Any]:
        return [result async for result in stream]

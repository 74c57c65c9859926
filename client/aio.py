"""``AsyncTritonQA``: the asyncio twin of ``TritonQA`` (same methods, awaited), on ``tritonclient.grpc.aio``."""

from __future__ import annotations

import asyncio
from typing import Any

import tritonclient.grpc.aio as grpcclient

from client._protocol import Call, ClientBase
from client.connection import RetryPlan
from client.errors import translate


class AsyncTritonQA(ClientBase):
    """``async with AsyncTritonQA(url) as qa: answer = await qa.ask(question, context)``"""

    _grpc = grpcclient

    async def is_ready(self) -> bool:
        try:
            return await self._client.is_server_ready(headers=self.headers) and await self._client.is_model_ready(
                self.model, headers=self.headers)
        except Exception:
            return False

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> "AsyncTritonQA":
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

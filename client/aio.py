"""``AsyncTritonQA``: the asyncio twin of ``TritonQA`` (same methods, awaited), on ``tritonclient.grpc.aio``."""

from __future__ import annotations

import asyncio
from typing import Any, Sequence

import tritonclient.grpc.aio as grpcclient

from client import _protocol as protocol
from client.answer import Answer
from client.connection import RetryPlan
from client.errors import translate


class AsyncTritonQA(protocol.ClientBase):
    """``async with AsyncTritonQA(url) as qa: answer = await qa.ask(question, context)``"""

    _grpc = grpcclient

    async def ask(self, question: str, context: str, *, top_k: int = 1, max_answer_len: int = 15,
                  handle_impossible_answer: bool = False, align_to_words: bool = True) -> Answer | list[Answer]:
        options = protocol.Options(top_k, max_answer_len, handle_impossible_answer, align_to_words)
        answers = (await self._infer([(question, context)], options))[0]
        return answers[0] if top_k == 1 else answers

    async def ask_many(self, pairs: Sequence[tuple[str, str]], *, top_k: int = 1, max_answer_len: int = 15,
                       handle_impossible_answer: bool = False, align_to_words: bool = True) -> list:
        options = protocol.Options(top_k, max_answer_len, handle_impossible_answer, align_to_words)
        return protocol.flatten(await self._infer(list(pairs), options), top_k)

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        pairs, single, options = protocol.pipeline_examples(args, kwargs)
        return protocol.pipeline_result(await self._infer(pairs, options), single)

    async def is_ready(self) -> bool:
        try:
            return await self._client.is_server_ready(headers=self.headers) and await self._client.is_model_ready(self.model, headers=self.headers)
        except Exception:
            return False

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> "AsyncTritonQA":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _infer(self, pairs: list[tuple[str, str]], options: protocol.Options) -> list[list[Answer]]:
        inputs = protocol.build_inputs(grpcclient, pairs)
        plan = RetryPlan(self.retry, self.timeout_s)
        while True:
            timeout_s = plan.remaining_s()  # raises DeadlineExceededError once the call's time is spent
            try:
                result = await self._client.infer(self.model, inputs, outputs=protocol.requested_outputs(grpcclient),
                                          parameters=options.parameters(), headers=self.headers,
                                          client_timeout=timeout_s)
                break
            except Exception as raw:
                error = translate(raw)
                error.__cause__ = raw
                await asyncio.sleep(plan.delay_s(error))
        return protocol.parse_answers(result, len(pairs))

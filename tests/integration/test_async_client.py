"""AsyncTritonQA is the awaitable twin of TritonQA: same answers, same errors."""

import asyncio

import pytest

from client import AsyncTritonQA, InvalidInputError, ServerUnavailableError
from testkit.cases import CASES


def test_async_client_gives_the_sync_clients_answers(triton_server, qa):
    async def main():
        async with AsyncTritonQA(triton_server.grpc_url) as aqa:
            single = await aqa.top_answers(*CASES["squad"], 3)
            many = await asyncio.gather(*(aqa.ask(q, c) for q, c in CASES.values()))
            card = await aqa({"question": CASES["card"][0], "context": CASES["card"][1]})
            return single, many, card

    single, many, card = asyncio.run(main())
    # scores may differ in the last float bits: windows are batched (and padded) differently per call
    assert same(single, qa.top_answers(*CASES["squad"], 3))
    assert same(many, qa.ask_many(list(CASES.values())))
    sync_card = qa({"question": CASES["card"][0], "context": CASES["card"][1]})
    assert card["answer"] == sync_card["answer"] and card["score"] == pytest.approx(sync_card["score"], rel=1e-4)


def same(answers, others):
    return len(answers) == len(others) and all(
        (a.text, a.start, a.end) == (b.text, b.start, b.end) and a.score == pytest.approx(b.score, rel=1e-4)
        for a, b in zip(answers, others)
    )


def test_async_client_raises_the_same_errors(triton_server):
    async def bad_input():
        async with AsyncTritonQA(triton_server.grpc_url) as aqa:
            await aqa.ask("What?", "")

    with pytest.raises(InvalidInputError, match="context 0 is empty"):
        asyncio.run(bad_input())


def test_unreachable_server_is_unavailable():
    from client import TritonQA
    from tests.integration.conftest import free_port

    with TritonQA(f"localhost:{free_port()}", timeout_s=5) as client:
        with pytest.raises(ServerUnavailableError):
            client.ask("What?", "Some context.")

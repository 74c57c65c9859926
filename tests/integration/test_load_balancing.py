"""Client-side load balancing: one client over two replicas (two real servers on their own ports) spreads its
calls over both (each server's own statistics), and when one replica is killed every call is still answered
within its deadline by the other."""

import asyncio
import signal
import threading
import time

import pytest

from client import ENSEMBLE, AsyncTritonQA, QAError, TritonQA
from testkit.cases import CASES
from testkit.servers import eventually, settled
from tests.integration.conftest import launch, stop, wait_ready
from tests.integration.load import answered_since, keep_asking

CALL_TIMEOUT_S = 30.0  # a deadline no fail-over comes near, on any machine: a call past it is lost


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, tiny_checkpoint, triton_server):
    """Two servers on the session server's repository, started side by side."""
    workdir = tmp_path_factory.mktemp("replicas")
    servers = [launch(workdir, tiny_checkpoint, triton_server.repository, wait=False) for _ in range(2)]
    try:
        for server in servers:
            wait_ready(server)
        yield servers
    finally:
        for server in servers:
            stop(server.process)


def answered(server, settle: bool = True) -> int:
    """Requests ``electra_qa`` of this server answered; with ``settle`` (no load), once the count stops moving."""

    def count() -> int:
        return server.admin.statistics(ENSEMBLE)["inference_stats"]["success"]["count"]

    return settled(count) if settle else count()


def test_one_client_spreads_its_calls_over_every_replica(replicas):
    before = [answered(server) for server in replicas]
    with TritonQA([server.grpc_url for server in replicas], timeout_s=CALL_TIMEOUT_S) as qa:
        assert qa.target.startswith("ipv4:127.0.0.1:")
        for _ in range(40):
            assert qa.ask(*CASES["card"]).text
    spread = [answered(server) - count for server, count in zip(replicas, before)]
    assert sum(spread) == 40
    assert min(spread) >= 10, spread  # round_robin: about half each


def test_async_client_spreads_its_calls_too(replicas):
    async def ask_all():
        async with AsyncTritonQA([server.grpc_url for server in replicas], timeout_s=CALL_TIMEOUT_S) as qa:
            for _ in range(4):  # sequential rounds: every subchannel is connected after the first
                answers = await asyncio.gather(*(qa.ask(*CASES["squad"]) for _ in range(8)))
                assert all(answer.text for answer in answers)

    before = [answered(server) for server in replicas]
    asyncio.run(ask_all())
    spread = [answered(server) - count for server, count in zip(replicas, before)]
    assert sum(spread) == 32 and min(spread) >= 6, spread


def test_a_killed_replica_loses_no_call(replicas):
    """Calls in flight on the killed replica fail with UNAVAILABLE and are retried (the default policy) on
    the live one; later calls go to the live one only."""
    survivor, victim = replicas
    outcomes, lock, stop_event = [], threading.Lock(), threading.Event()

    with TritonQA([server.grpc_url for server in replicas], timeout_s=CALL_TIMEOUT_S) as qa:
        workers = [threading.Thread(target=keep_asking, args=(qa, stop_event, outcomes, lock)) for _ in range(4)]
        for worker in workers:
            worker.start()
        assert eventually(lambda: answered(victim, settle=False) > 0 and answered(survivor, settle=False) > 0)
        victim_before = answered(victim, settle=False)
        survivor_at_kill = answered(survivor, settle=False)
        killed_at = time.monotonic()
        stop(victim.process, signal.SIGKILL)  # the whole process group: make, supervisor, tritonserver, stubs
        assert eventually(lambda: answered_since(outcomes, killed_at + 0.5) > 20)
        stop_event.set()
        for worker in workers:
            worker.join(timeout=60)
    assert not any(worker.is_alive() for worker in workers), "a call hung past its deadline"
    errors = [o.result for o in outcomes if isinstance(o.result, QAError)]
    assert not errors, errors[:3]
    assert victim_before > 0 and not victim.alive()  # both replicas served before the kill
    after = [o.result for o in outcomes if o.started > killed_at + 0.5]
    assert len(after) > 20 and all(result.text for result in after)
    assert answered(survivor) - survivor_at_kill >= len(after)
